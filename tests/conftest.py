"""Shared fixtures: a real redis-server for the session, and stores on each backend."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from oxcache import Cache


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process on a loopback port, owned by the test session."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            # Never skip: a suite that needs Redis and has none must fail loudly.
            raise RuntimeError(
                "redis-server is not installed; run `make test` (it installs it) "
                "or `apt-get install redis-server`, or set REDIS_URL"
            )
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="oxcache-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = binary
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A URL of a real Redis: REDIS_URL when set, else a redis-server started for the session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend_kind: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """A factory of stores on the parametrized backend, each with its own prefix; every key
    a test wrote is deleted at teardown."""
    made: list[Cache] = []
    url = request.getfixturevalue("redis_url") if backend_kind == "redis" else None

    def make(**kwargs: object) -> Cache:
        kwargs.setdefault("prefix", "t-" + uuid.uuid4().hex[:12])
        if url:
            # Behaviour tests run on a healthy Redis: a generous timeout keeps a loaded CI
            # machine (a slow connect, a starved event loop) from looking like an outage.
            # The fault tests build their own stores with the short production timeout.
            kwargs.setdefault("timeout", 2.0)
        store = Cache(url, **kwargs) if url else Cache(**kwargs)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    if url:
        client = redis.Redis.from_url(url)
        for store in made:
            for key in client.scan_iter(match=f"{store.prefix}:*"):
                client.unlink(key)
        client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
