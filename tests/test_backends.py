"""The backends on their own: bounds, expiry, prefix-scoped clearing and the Backend
protocol, on memory and real Redis; the Redis URLs a store connects with (password and
database, unix socket, TLS; a wrong password fails open) and their redaction in logs
(backends/connect.py). Redis Cluster and Sentinel are in test_cluster.py, the read pipe in
test_pipeline.py."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from fastapi import FastAPI

from oxcache import Cache, MemoryBackend, RedisBackend, cache
from oxcache.backends.base import Backend
from tests.apps import client_for
from tests.conftest import free_port


def run(func, *args):  # type: ignore[no-untyped-def]
    return anyio.run(func, *args)


def test_memory_backend_evicts_least_recently_used_by_count() -> None:
    backend = MemoryBackend(max_entries=3)

    async def scenario() -> list[bytes | None]:
        for key in "abc":
            await backend.set(key, key.encode(), 60_000)
        await backend.get("a")  # a becomes most recently used
        await backend.set("d", b"d", 60_000)
        return [await backend.get(k) for k in "abcd"]

    assert run(scenario) == [b"a", None, b"c", b"d"]
    assert len(backend) == 3


def test_memory_backend_is_bounded_by_bytes() -> None:
    backend = MemoryBackend(max_bytes=100)

    async def scenario() -> None:
        for i in range(50):
            await backend.set(f"k{i}", bytes(30), 60_000)
            assert backend.size_bytes <= 100
        await backend.set("huge", bytes(101), 60_000)  # can never fit: not stored

    run(scenario)
    assert backend.size_bytes <= 100 and len(backend) == 3
    assert run(backend.get, "huge") is None


def test_memory_backend_honours_ttl() -> None:
    backend = MemoryBackend()
    run(backend.set, "k", b"v", 50)
    assert run(backend.get, "k") == b"v"
    time.sleep(0.08)
    assert run(backend.get, "k") is None
    assert len(backend) == 0


def test_memory_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBackend(max_entries=0)


def test_redis_backend_round_trip_head_and_ttl(redis_url: str) -> None:
    backend = RedisBackend(redis_url)

    async def scenario() -> tuple[object, ...]:
        await backend.set("oxtest:k", b"0123456789", 5_000)
        whole = await backend.get("oxtest:k")
        head = await backend.get_head("oxtest:k", 4)
        missing = await backend.get_head("oxtest:nope", 4)
        ttl = await backend.client.pttl("oxtest:k")
        await backend.delete(["oxtest:k"])
        await backend.close()
        return whole, head, missing, ttl

    whole, head, missing, ttl = run(scenario)
    assert (whole, head, missing) == (b"0123456789", b"0123", None)
    assert 0 < ttl <= 5_000  # type: ignore[operator]


def test_clear_deletes_only_keys_under_the_prefix(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("foreign:key", b"keep me")
    redis_client.set("pre*fix-lookalike:x", b"keep me too")
    store = Cache(redis_url, prefix="pre*fix")

    async def scenario() -> int:
        for i in range(1200):  # more than one SCAN batch and one UNLINK batch
            await store.backend.set(f"pre*fix:{i}", b"v", 60_000)
        deleted = await store.clear()
        await store.close()
        return deleted

    assert run(scenario) == 1200
    assert redis_client.get("foreign:key") == b"keep me"
    assert redis_client.get("pre*fix-lookalike:x") == b"keep me too"
    assert not list(redis_client.scan_iter(match="pre\\*fix:*"))
    redis_client.delete("foreign:key", "pre*fix-lookalike:x")


def test_a_client_passed_in_is_never_closed(redis_url: str) -> None:
    import redis.asyncio as aioredis

    async def scenario() -> bool:
        client = aioredis.Redis.from_url(redis_url)
        async with Cache(client=client):
            pass
        ok = bool(await client.ping())  # still usable
        await client.aclose()
        return ok

    assert run(scenario)


def test_redis_url_password_is_redacted_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import free_port

    store = Cache(f"redis://user:s3cret@127.0.0.1:{free_port()}/0", timeout=0.05)
    caplog.set_level("INFO", logger="oxcache")
    assert run(store.connect) is False
    assert "s3cret" not in caplog.text and "***" in caplog.text


def test_backend_protocol_has_index_operations() -> None:
    for name in ("set", "invalidate", "clear", "get", "get_head", "delete", "ping"):
        assert getattr(Backend, name).__isabstractmethod__


@pytest.fixture(scope="module")
def secured_redis() -> Iterator[dict[str, Any]]:
    """A redis-server with a password, a unix socket and a TLS port, on loopback."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is required for the TLS test (make test installs it)"
    workdir = Path(tempfile.mkdtemp(prefix="oxcache-tls-"))
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(workdir / "key.pem"), "-out", str(workdir / "cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port, tls_port = free_port(), free_port()
    socket_path = workdir / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--requirepass", "s3cret", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
         "--tls-port", str(tls_port), "--tls-cert-file", str(workdir / "cert.pem"),
         "--tls-key-file", str(workdir / "key.pem"), "--tls-ca-cert-file",
         str(workdir / "cert.pem"), "--tls-auth-clients", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password="s3cret", socket_timeout=0.5).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the secured redis-server did not start"
                time.sleep(0.05)
        yield {
            "port": port,
            "tls_port": tls_port,
            "socket": socket_path,
            "ca": workdir / "cert.pem",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def url_forms(server: dict[str, Any]) -> dict[str, str]:
    return {
        "password and database": f"redis://:s3cret@127.0.0.1:{server['port']}/3",
        "unix socket": f"unix://:s3cret@{server['socket']}?db=2",
        "tls": (
            f"rediss://:s3cret@127.0.0.1:{server['tls_port']}/1"
            f"?ssl_ca_certs={server['ca']}&ssl_cert_reqs=required"
        ),
    }


@pytest.mark.parametrize("form", ["password and database", "unix socket", "tls"])
def test_redis_urls_with_password_database_unix_socket_and_tls(
    secured_redis: dict[str, Any], form: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = url_forms(secured_redis)[form]
    store = Cache(url, prefix="urls", timeout=1.0)
    app = FastAPI()

    @app.get("/u")
    @cache(expire=60, store=store)
    async def u() -> dict[str, str]:
        return {"form": form}

    with caplog.at_level(logging.INFO, "oxcache"), client_for(app, store) as client:
        client.get("/u")
        assert client.get("/u").headers["x-fastapi-cache"] == "Hit"
        # the entry, its variants index and that index's generation
        assert client.portal.call(store.clear) == 3
    assert any(r.getMessage().startswith("CONNECT_SUCCESS") for r in caplog.records)
    assert "s3cret" not in "\n".join(r.getMessage() for r in caplog.records)
    if form == "password and database":  # the entry went to database 3
        plain = redis.Redis(port=secured_redis["port"], password="s3cret", db=3)
        assert plain.dbsize() == 0  # cleared above, and nothing elsewhere
        plain.close()


def test_wrong_password_fails_open_with_a_clear_log(
    secured_redis: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    store = Cache(f"redis://:wrong@127.0.0.1:{secured_redis['port']}/0", timeout=1.0)
    app = FastAPI()

    @app.get("/w")
    @cache(expire=60, store=store)
    async def w() -> int:
        return 1

    with caplog.at_level(logging.INFO, "oxcache"), client_for(app, store) as client:
        assert client.get("/w").status_code == 200
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "CONNECT_FAIL" in text and "wrong" not in text
