"""What a release publishes: the distribution's name, its license, its classifiers, floors that
cover every package oxcache imports, no peer pins in any extra; and the checks CI runs on the
built wheel and sdist (scripts/check_dist.py) and on the floors (scripts/lowest_pins.py)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest brings tomli on 3.10
    import tomli as tomllib

import oxcache

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT: dict[str, Any] = PYPROJECT["project"]
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_dist = load_script("check_dist")
lowest_pins = load_script("lowest_pins")


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_distribution_is_fastapi_oxcache_and_the_import_name_stays() -> None:
    """PyPI refuses `oxcache` (too close to the existing `ox-cache`)."""
    assert PROJECT["name"] == "fastapi-oxcache"
    assert PROJECT["scripts"] == {"oxcache": "oxcache.cli:main"}
    assert PYPROJECT["tool"]["maturin"]["module-name"] == "oxcache._core"
    assert importlib.metadata.version("fastapi-oxcache") == oxcache.__version__


def test_the_license_ships_as_declared() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted" in text
    # maturin writes PEP 639 metadata (License-Expression) from 1.9.2 on.
    assert PYPROJECT["build-system"]["requires"] == ["maturin>=1.9.2,<2"]


def test_classifiers_name_each_supported_python() -> None:
    assert PROJECT["requires-python"] == f">={SUPPORTED[0]}"
    classifiers = set(PROJECT["classifiers"])
    for version in SUPPORTED:
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the expression
    assert check_dist.SUPPORTED_PYTHONS == SUPPORTED


def test_published_metadata_pins_no_peer_and_nothing_exactly() -> None:
    """The benchmarks' pinned peers live in benches/requirements.txt, never in an extra that a
    user's resolver would see."""
    published = list(PROJECT["dependencies"])
    for requirements in PROJECT.get("optional-dependencies", {}).values():
        published += requirements
    for requirement in published:
        assert requirement_name(requirement) not in check_dist.PEERS, requirement
        assert "==" not in requirement.split(";")[0], requirement
    assert "bench" not in PROJECT.get("optional-dependencies", {})
    bench = (ROOT / "benches" / "requirements.txt").read_text()
    for peer in ("fastapi-redis-cache", "fastapi-cache2", "cashews", "fastapi-cachex"):
        assert re.search(rf"^{peer}==", bench, re.M), peer
    assert "benches/requirements.txt" in (ROOT / "Makefile").read_text()


def imported_distributions() -> set[str]:
    """The third-party top-level modules python/oxcache imports."""
    found = set()
    for path in (ROOT / "python" / "oxcache").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "oxcache"}


# Optional integrations: imported only by their own module, declared by their own extra.
OPTIONAL = {"opentelemetry": "opentelemetry-api", "prometheus_client": "prometheus-client"}


def test_every_imported_package_has_a_declared_floor() -> None:
    declared = {requirement_name(r): r for r in PROJECT["dependencies"]}
    extras = {
        requirement_name(r)
        for name, requirements in PROJECT["optional-dependencies"].items()
        if name not in ("test", "dev", "docs")
        for r in requirements
    }
    imported = imported_distributions()
    assert {OPTIONAL[m] for m in imported & set(OPTIONAL)} <= extras
    assert imported - set(OPTIONAL) <= set(declared), imported
    floors = {name: lowest_pins.pin(r).split("==")[1] for name, r in declared.items()}

    def at_least(version: str, minimum: tuple[int, ...]) -> bool:
        return tuple(int(part) for part in version.split(".")) >= minimum

    # Known not to work (docs/versioning.md): pydantic 1 has no TypeAdapter; redis 5.0.0 no
    # Redis.from_pool, and up to 5.2.0 connections collected after their loop closed raise;
    # FastAPI before 0.148 fails the CachedRoute and deferred-dependency tests; anyio before
    # 4.2 makes no Event outside a running loop.
    assert at_least(floors["pydantic"], (2,))
    assert at_least(floors["redis"], (5, 2, 1))
    assert at_least(floors["fastapi"], (0, 148))
    assert at_least(floors["anyio"], (4, 2))


def test_lowest_pins_pin_each_floor_and_keep_markers() -> None:
    assert lowest_pins.pin("fastapi>=0.105.0") == "fastapi==0.105.0"
    assert lowest_pins.pin("maturin>=1.9.2,<2") == "maturin==1.9.2"
    assert lowest_pins.pin("mkdocstrings[python]>=0.26") == "mkdocstrings[python]==0.26"
    assert (
        lowest_pins.pin("uvloop>=0.19; sys_platform != 'win32'")
        == "uvloop==0.19; sys_platform != 'win32'"
    )
    with pytest.raises(ValueError, match="no `>=` floor"):
        lowest_pins.pin("redis")
    pins = lowest_pins.lowest_pins(PROJECT, ["test"])
    assert len(pins) == len(PROJECT["dependencies"]) + len(PROJECT["optional-dependencies"]["test"])
    assert all("==" in p for p in pins)


@pytest.mark.parametrize(
    ("tag", "glibc"),
    [
        ("manylinux2014_x86_64", (2, 17)),
        ("manylinux_2_17_x86_64", (2, 17)),
        ("manylinux_2_5_i686", (2, 5)),
        ("manylinux1_x86_64", (2, 5)),
        ("manylinux_2_34_x86_64", (2, 34)),
        ("manylinux_2_28_aarch64", (2, 28)),
        ("linux_x86_64", None),
        ("macosx_11_0_arm64", None),
    ],
)
def test_platform_glibc_reads_every_manylinux_spelling(
    tag: str, glibc: tuple[int, int] | None
) -> None:
    assert check_dist.platform_glibc(tag) == glibc


def test_a_tag_newer_than_manylinux2014_is_refused() -> None:
    assert check_dist.check_platform_tags(["manylinux2014_x86_64", "manylinux_2_17_x86_64"]) == []
    (problem,) = check_dist.check_platform_tags(["manylinux_2_34_x86_64"])
    assert "glibc 2.34, newer than manylinux2014" in problem
    (problem,) = check_dist.check_platform_tags(["linux_x86_64"])
    assert "not a manylinux tag" in problem


METADATA = """Metadata-Version: 2.4
Name: fastapi-oxcache
Version: 0.1.0
Classifier: Programming Language :: Python :: 3.10
Classifier: Programming Language :: Python :: 3.11
Classifier: Programming Language :: Python :: 3.12
Classifier: Programming Language :: Python :: 3.13
Requires-Dist: fastapi>=0.105.0
Requires-Dist: uvloop>=0.19 ; sys_platform != 'win32' and extra == 'test'
License-File: LICENSE
License-Expression: MIT
"""


def fake_wheel(tmp_path: Path, platform: str, metadata: str, so: bytes, license: bool) -> Path:
    name = f"fastapi_oxcache-0.1.0-cp310-abi3-{platform}.whl"
    dist_info = "fastapi_oxcache-0.1.0.dist-info"
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as wheel:
        for file in check_dist.WHEEL_FILES:
            wheel.writestr(file, "")
        wheel.writestr("oxcache/_core.abi3.so", so)
        tags = "".join(f"Tag: cp310-abi3-{p}\n" for p in platform.split("."))
        wheel.writestr(f"{dist_info}/WHEEL", f"Wheel-Version: 1.0\n{tags}")
        wheel.writestr(f"{dist_info}/METADATA", metadata)
        entry_points = "[console_scripts]\noxcache=oxcache.cli:main\n"
        wheel.writestr(f"{dist_info}/entry_points.txt", entry_points)
        if license:
            wheel.writestr(f"{dist_info}/licenses/LICENSE", (ROOT / "LICENSE").read_bytes())
    return path


def test_check_dist_passes_a_manylinux2014_wheel(tmp_path: Path) -> None:
    platform = "manylinux2014_x86_64.manylinux_2_17_x86_64"
    wheel = fake_wheel(tmp_path, platform, METADATA, b"\0GLIBC_2.2.5\0GLIBC_2.3.4\0", True)
    assert check_dist.check_wheel(wheel) == []


def test_check_dist_refuses_what_main_built(tmp_path: Path) -> None:
    """The wheel of `maturin build` on this machine: tagged and linked for glibc 2.34, no
    LICENSE, and a published extra pinning a peer."""
    metadata = METADATA + "Requires-Dist: cashews==7.6.0 ; extra == 'bench'\n"
    so = b"\0GLIBC_2.2.5\0GLIBC_2.34\0"
    problems = "\n".join(
        check_dist.check_wheel(fake_wheel(tmp_path, "manylinux_2_34_x86_64", metadata, so, False))
    )
    assert "manylinux_2_34_x86_64 needs glibc 2.34" in problems
    assert "needs glibc symbols GLIBC_2.34" in problems
    assert "licenses/LICENSE is missing" in problems
    assert "names a peer library: cashews==7.6.0" in problems


def test_check_dist_refuses_an_sdist_without_license_or_with_the_old_name(tmp_path: Path) -> None:
    path = tmp_path / "oxcache-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as sdist:
        data = METADATA.replace("fastapi-oxcache", "oxcache").encode()
        info = tarfile.TarInfo("oxcache-0.1.0/PKG-INFO")
        info.size = len(data)
        sdist.addfile(info, io.BytesIO(data))
    problems = "\n".join(check_dist.check_sdist(path))
    assert "named 'oxcache', not 'fastapi_oxcache'" in problems
    assert "LICENSE is missing" in problems
    assert "Name is 'oxcache'" in problems


def test_check_dist_refuses_exact_pins_but_not_extra_markers() -> None:
    assert check_dist.check_metadata(METADATA, "m") == []
    pinned = METADATA + "Requires-Dist: redis==5.0.1\n"
    assert check_dist.check_metadata(pinned, "m") == [
        "m: Requires-Dist pins an exact version: redis==5.0.1"
    ]


def test_ci_runs_the_wheel_on_each_supported_python() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"pythons=({' '.join(SUPPORTED)})" in ci
    assert "make wheel" in ci and "scripts/lowest_pins.py" in ci
