"""What fastapi-redis-cache's users asked for and never got (its issues #32, #33, #52, #53,
#56, #57, #60, #61, #62, #64, #65, #66, #67, #69, #70, #72, #77, #85), each with a test on a
real Redis and in memory."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI

from oxcache import Cache, cache
from tests.apps import MakeStore, client_for
from tests.conftest import free_port


def test_decorator_above_the_route_is_detected_at_startup(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """#33, #77: `@cache` above `@app.get` silently caches nothing in every peer."""
    store = make_store()
    app = FastAPI()

    @cache(expire=60, store=store)
    @app.get("/wrong")
    async def wrong_order() -> dict[str, int]:
        return {"a": 1}

    @app.get("/right")
    @cache(expire=60, store=store)
    async def right_order() -> dict[str, int]:
        return {"a": 1}

    with caplog.at_level(logging.WARNING, "oxcache"), client_for(app, store):
        pass
    messages = [r.getMessage() for r in caplog.records if "never cached" in r.getMessage()]
    assert len(messages) == 1 and "wrong_order" in messages[0] and "below" in messages[0]


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
        assert client.portal.call(store.clear) == 1
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
