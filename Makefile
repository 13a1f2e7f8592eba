# Developer commands. `make test` and `make demo` work on a fresh machine: they create the
# virtualenv, build the Rust extension and (for tests) install and start Redis themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# maturin installs into the virtualenv named by VIRTUAL_ENV.
MATURIN := VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release
STAMP := $(VENV)/.installed
MATURIN_REQ := "maturin>=1.9.2,<2"
# The release wheels link against glibc 2.17 (manylinux2014) through zig, whatever the glibc of
# the machine that builds them; the version is the one the wheels were checked with.
ZIG_REQ := "ziglang==0.17.1"

.PHONY: install build-dev format lint lint-python lint-rust mypy stubtest test test-rust demo bench fleet-bench profile docs wheel sdist all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml Cargo.toml
	$(BIN)/pip install --quiet $(MATURIN_REQ)
	@# The distribution was called oxcache before fastapi-oxcache: drop that install, if any.
	$(BIN)/pip uninstall --quiet --yes oxcache 2>/dev/null || true
	$(MATURIN) --extras test,dev
	touch $(STAMP)

## install: the virtualenv with oxcache (editable, release build) and its test/dev tools
install: $(STAMP)

## build-dev: rebuild the Rust extension into the virtualenv
build-dev: $(STAMP)
	$(MATURIN)

format: $(STAMP)
	$(BIN)/ruff format python tests benches examples scripts
	$(BIN)/ruff check --fix python tests benches examples scripts
	cargo fmt

lint-python: $(STAMP)
	$(BIN)/ruff check python tests benches examples scripts
	$(BIN)/ruff format --check python tests benches examples scripts

lint-rust:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

mypy: $(STAMP)
	$(BIN)/mypy --strict python/oxcache

## stubtest: the hand-written _core.pyi must match the built module
stubtest: build-dev
	$(BIN)/python -m mypy.stubtest oxcache._core

lint: lint-python lint-rust mypy stubtest

test-rust:
	cargo test --quiet

## test: build, install and start Redis if needed, run every Python test
test: build-dev
	@scripts/ensure-redis
	$(BIN)/python -m pytest tests -q

## demo: the example app on the embedded (in-memory) store: a miss, a hit and a 304
demo: build-dev
	$(BIN)/python examples/demo.py

## bench: benchmarks against the peers (in process, Redis commands and memory, wrk over
## HTTP); writes benches/RESULTS.md
bench: build-dev
	@scripts/ensure-redis
	@scripts/ensure-wrk
	$(BIN)/pip install --quiet -r benches/requirements.txt
	$(BIN)/python -m pytest benches -o python_files='bench_*.py' --benchmark-only --benchmark-json=benches/results.json -p no:cacheprovider -q
	$(BIN)/python benches/with_redis.py $(BIN)/python benches/redis_stats.py benches/redis_stats.json
	$(BIN)/python benches/with_redis.py $(BIN)/python benches/http_bench.py --out benches/http.json
	$(BIN)/python benches/with_redis.py $(BIN)/python benches/http_deps_bench.py --out benches/http_deps.json
	$(BIN)/python benches/report.py benches/results.json

## fleet-bench: oxcache on 2 and 4 uvicorn workers, with and without the near cache, on one
## Redis and on a Redis Cluster of 3 primaries and 3 replicas (wrk, about 4 minutes): req/s,
## Redis commands, bytes and CPU per hit, per miss and per invalidation, connections per node;
## writes benches/fleet.json (docs/scaling.md is made from it)
fleet-bench: build-dev
	@scripts/ensure-redis
	@scripts/ensure-wrk
	$(BIN)/pip install --quiet "uvloop>=0.19" "httptools>=0.6"
	$(BIN)/python benches/fleet_bench.py --timeout 0.5 --out benches/fleet.json

## docs: the MkDocs site in site/, offline, warnings as errors (installs the docs extra)
docs: $(STAMP)
	$(MATURIN) --extras test,dev,docs
	$(BIN)/mkdocs build --strict

## profile: pyinstrument call trees of a hit (memory, Redis) and of the floors, in benches/profiles/
profile: build-dev
	@scripts/ensure-redis
	$(BIN)/pip install --quiet -r benches/requirements.txt
	for t in memory redis floor-a floor-b; do \
	  $(BIN)/python benches/with_redis.py $(BIN)/python benches/profile_hit.py $$t > benches/profiles/hit-$$t.txt || exit 1; \
	done

## wheel: the release wheel (abi3, every CPython from 3.10) for manylinux2014 (glibc 2.17+),
## linked with zig, in dist/, checked by scripts/check_dist.py
wheel: $(STAMP)
	$(BIN)/pip install --quiet $(ZIG_REQ)
	rm -f dist/*.whl
	@# maturin finds zig as `python -m ziglang` with the python on PATH: the virtualenv's.
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/maturin build --release --zig --compatibility manylinux2014 --out dist
	$(BIN)/python scripts/check_dist.py dist/*.whl

## sdist: the source distribution in dist/, checked by scripts/check_dist.py
sdist: $(STAMP)
	rm -f dist/*.tar.gz
	$(BIN)/maturin sdist --out dist
	$(BIN)/python scripts/check_dist.py dist/*.tar.gz

all: lint test-rust test

clean:
	rm -rf $(VENV) target dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
