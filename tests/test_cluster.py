"""Redis Cluster and Sentinel: what the behaviour suite (run on the cluster through
`backend_kind`) does not show. Keys spread over every node, invalidation and clear across
nodes, the same keys and entries as on one Redis, a primary killed under load, a Sentinel
failover. Every loop is bounded in count and time; every server binds 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot

from oxcache import Cache, ClusterBackend, ConfigError, RedisBackend, SentinelBackend, cache
from oxcache.backends.cluster import cluster_url, is_cluster_url
from oxcache.backends.sentinel import parse_sentinel_url
from tests.conftest import RedisCluster, RedisServer, free_port, redis_binary, sync_client


def item_app(store: Cache, **options: Any) -> tuple[FastAPI, Any]:
    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store, tags=["items", "item:{id}"], **options)
    async def item(id: int) -> dict[str, Any]:
        return {"id": id, "name": f"item {id}"}

    app.router.lifespan_context = store.lifespan
    return app, item


def primaries_holding(url: str, keys: list[str]) -> set[str]:
    """The primaries (host:port) that hold each of `keys`."""
    client = sync_client(url)
    assert isinstance(client, redis.RedisCluster)
    try:
        return {client.get_node_from_key(key).name for key in keys}
    finally:
        client.close()


def test_cluster_urls_translate_and_other_urls_do_not() -> None:
    assert cluster_url("redis+cluster://u:p@10.0.0.1:7000") == "redis://u:p@10.0.0.1:7000"
    assert cluster_url("rediss+cluster://h:7000") == "rediss://h:7000"
    assert cluster_url("redis://h:6379/0") == "redis://h:6379/0"
    assert is_cluster_url("REDIS+CLUSTER://h:7000")
    assert not is_cluster_url("redis://h:7000")


def test_sentinel_urls_name_sentinels_service_and_master_options() -> None:
    sentinels, service, options = parse_sentinel_url(
        "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2"
    )
    assert sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert service == "mymaster"
    assert options == {"password": "s@cret", "db": 2}
    assert parse_sentinel_url("rediss+sentinel://h/svc") == ([("h", 26379)], "svc", {"ssl": True})
    with pytest.raises(ValueError):
        parse_sentinel_url("redis+sentinel://h:26379")  # no service name


def test_cluster_and_sentinel_arguments_are_checked() -> None:
    with pytest.raises(ConfigError):
        Cache(cluster=True)
    with pytest.raises(ConfigError):
        Cache(sentinel=[("127.0.0.1", 26379)])  # no service_name
    with pytest.raises(ConfigError):
        Cache("redis://h", sentinel=[("127.0.0.1", 26379)], service_name="m")


def test_cluster_and_sentinel_clients_are_built_without_a_warning() -> None:
    # redis-py 8 warns when a synchronous `redis.retry.Retry` is given to an asyncio client
    # (and converts it): the backends pass the asyncio one. Nothing connects here.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClusterBackend("redis+cluster://127.0.0.1:1")
        SentinelBackend([("127.0.0.1", 1)], "mymaster")


def test_cluster_true_and_the_url_scheme_make_a_cluster_backend(cluster_url: str) -> None:
    plain = "redis://" + cluster_url.split("://", 1)[1]
    assert isinstance(Cache(plain, cluster=True).backend, ClusterBackend)
    assert isinstance(Cache(cluster_url).backend, ClusterBackend)
    assert type(Cache(plain).backend) is RedisBackend


def test_entries_spread_over_every_primary_and_each_invalidation_finds_them_all(
    cluster_url: str,
) -> None:
    store = Cache(cluster_url, prefix="spread", timeout=2.0)
    app, item = item_app(store)
    ids = range(60)
    with TestClient(app) as client:
        for i in ids:
            assert client.get(f"/item/{i}").headers["x-fastapi-cache"] == "Miss"
        keys = [store.key_for(item, "http://testserver", id=i) for i in ids]
        # The entries and the "items" index live on several nodes: every write and the
        # invalidation below crossed slots, and nothing failed with CROSSSLOT.
        assert len(primaries_holding(cluster_url, keys)) == 3
        assert len({key_slot(k.encode()) for k in keys}) > 50
        assert store.stats()["errors"] == 0
        assert client.portal.call(store.invalidate_tag, "items") == 60
        for i in ids:
            assert client.get(f"/item/{i}").headers["x-fastapi-cache"] == "Miss"
        assert client.portal.call(store.invalidate_tag, "item:7") == 1
        assert client.get("/item/7").headers["x-fastapi-cache"] == "Miss"
        assert client.get("/item/8").headers["x-fastapi-cache"] == "Hit"
        assert client.portal.call(store.clear) >= 60
    assert store.stats()["errors"] == 0


def script_calls(cluster_url: str) -> dict[str, int]:
    """EVAL and EVALSHA calls so far, summed over the cluster's primaries."""
    raw = sync_client(cluster_url)
    assert isinstance(raw, redis.RedisCluster)
    try:
        found = {"eval": 0, "evalsha": 0}
        for node in raw.get_primaries():
            stats = raw.info("commandstats", target_nodes=node)
            for name in found:
                found[name] += int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        return found
    finally:
        raw.close()


def test_misses_run_the_scripts_by_sha_and_reload_them_where_a_node_lost_them(
    cluster_url: str,
) -> None:
    # A miss's lease went by EVAL, the script's text every time (half of a miss's bytes).
    store = Cache(cluster_url, prefix="sha-" + uuid.uuid4().hex[:8], timeout=2.0)
    app, _ = item_app(store)
    with TestClient(app) as client:
        before = script_calls(cluster_url)
        for i in range(30):
            assert client.get(f"/item/{i}").headers["x-fastapi-cache"] == "Miss"
        after = script_calls(cluster_url)
        assert after["eval"] == before["eval"]
        assert after["evalsha"] - before["evalsha"] >= 30
        # Scripts gone from every node (a restart, a promoted replica): NOSCRIPT, the
        # script is loaded again, and the miss is served and stored as usual.
        raw = sync_client(cluster_url)
        assert isinstance(raw, redis.RedisCluster)
        try:
            for node in raw.get_primaries():
                raw.execute_command("SCRIPT", "FLUSH", target_nodes=node)
        finally:
            raw.close()
        for i in range(30, 40):
            assert client.get(f"/item/{i}").headers["x-fastapi-cache"] == "Miss"
            assert client.get(f"/item/{i}").headers["x-fastapi-cache"] == "Hit"
        assert script_calls(cluster_url)["eval"] == before["eval"]
        client.portal.call(store.clear)
    assert store.stats()["errors"] == 0


def test_keys_and_entries_on_the_cluster_are_those_of_one_redis(
    cluster_url: str, redis_url: str
) -> None:
    bodies: dict[str, tuple[str, bytes, bytes | None]] = {}
    for name, url in (("cluster", cluster_url), ("redis", redis_url)):
        store = Cache(url, prefix="same", timeout=2.0)
        app, item = item_app(store)
        with TestClient(app) as client:
            client.get("/item/1")
            key = store.key_for(item, "http://testserver", id=1)
            raw = sync_client(url)
            value = raw.get(key)
            raw.close()
            bodies[name] = (key, client.get("/item/1").content, value)
            client.portal.call(store.clear)
    key = 'same:tests.test_cluster.item(id=1,@origin="http://testserver")'
    assert bodies["cluster"][0] == bodies["redis"][0] == key
    assert bodies["cluster"][1] == bodies["redis"][1]
    # Same format: the entries differ only in their times, in the fixed-size head.
    cluster_value, redis_value = bodies["cluster"][2], bodies["redis"][2]
    assert cluster_value is not None and redis_value is not None
    assert len(cluster_value) == len(redis_value)
    assert cluster_value[-20:] == redis_value[-20:]


def test_clear_scans_every_primary_and_leaves_foreign_keys(cluster_url: str) -> None:
    raw = sync_client(cluster_url)
    assert isinstance(raw, redis.RedisCluster)
    foreign = [f"foreign:{i}" for i in range(30)] + [f"cl*ar-lookalike:{i}" for i in range(30)]
    ours = [f"cl*ar:k{i}" for i in range(90)]
    for key in foreign + ours:
        raw.set(key, b"x")
    assert len({raw.get_node_from_key(k).name for k in ours}) == 3
    store = Cache(cluster_url, prefix="cl*ar", timeout=2.0)
    assert anyio.run(store.clear) == 90
    assert sum(raw.exists(k) for k in ours) == 0
    assert sum(raw.exists(k) for k in foreign) == 60
    for key in foreign:
        raw.delete(key)
    raw.close()


def test_a_redis_cluster_client_passed_in_is_used_and_never_closed(cluster_url: str) -> None:
    async def main() -> None:
        client = AsyncRedisCluster.from_url(cluster_url_to_redis(cluster_url))
        store = Cache(client=client, prefix="passed", timeout=2.0)
        assert isinstance(store.backend, ClusterBackend)
        assert not store.backend.owns_connection
        async with store:
            await store.write("passed:k", b"not an entry", 10_000, [store.tag_index("t")])
            assert await store.invalidate_tag("t") == 1
        assert await client.ping(target_nodes=AsyncRedisCluster.PRIMARIES)
        await client.aclose()

    anyio.run(main)


def cluster_url_to_redis(url: str) -> str:
    return "redis://" + url.split("://", 1)[1]


def test_a_primary_killed_during_requests_costs_no_500_and_caching_resumes(
    own_cluster: RedisCluster,
) -> None:
    # A killed node refuses connections at once; the timeout only bounds how long any one
    # request may wait on the cluster while its replica takes over.
    store = Cache(own_cluster.url, prefix="ckill", timeout=0.5, retry_after=0.1)
    app, item = item_app(store)
    victim = own_cluster.primary_ports()[0]
    with own_cluster.client() as raw:
        victim_ids = [
            i
            for i in range(40)
            if raw.get_node_from_key(store.key_for(item, "http://testserver", id=i)).port == victim
        ]
    assert victim_ids, "no key of the test lives on the primary to kill"
    statuses: list[int] = []
    slowest = 0.0
    killed_at = resumed = None
    deadline = time.monotonic() + 90
    with TestClient(app) as client:
        for i in range(30_000):
            if i == 300:
                own_cluster.node(victim).kill()  # SIGKILL: no goodbye to the clients
                killed_at = i
            n = victim_ids[i % len(victim_ids)] if i % 2 else i % 40
            started = time.monotonic()
            response = client.get(f"/item/{n}")
            slowest = max(slowest, time.monotonic() - started)
            statuses.append(response.status_code)
            assert response.json() == {"id": n, "name": f"item {n}"}
            # A hit on a key of the dead primary's slots: its replica serves them now.
            if (
                killed_at is not None
                and n in victim_ids
                and response.headers.get("x-fastapi-cache") == "Hit"
            ):
                resumed = i
                break
            assert time.monotonic() < deadline, "caching did not resume after the failover"
    assert set(statuses) == {200}
    assert resumed is not None and killed_at is not None
    assert store.stats()["errors"] > 0  # the outage was seen, and served uncached
    # The requirement is a bound: no request waited long on the dead node (timeout 0.5 s).
    assert slowest < 5.0


class SentinelServer:
    """A `redis-server --sentinel` on a loopback port watching `master_port` as `mymaster`."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="oxcache-sentinel-")
        config = os.path.join(self.dir, "sentinel.conf")
        with open(config, "w") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 3000\n"
            )
        self.proc = subprocess.Popen(
            [redis_binary(), config, "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1.0, decode_responses=True)

    def master_port(self) -> int | None:
        try:
            with self.client() as client:
                address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        except redis.RedisError:
            return None
        return int(address[1]) if address else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def wait_for(check: Any, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[tuple[RedisServer, RedisServer, SentinelServer]]:
    """A primary, its replica in sync, and a Sentinel that knows both."""
    primary = RedisServer(extra=("--repl-diskless-sync-delay", "0"))
    replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(primary.port)))
    sentinel: SentinelServer | None = None
    try:
        with redis.Redis(port=replica.port, decode_responses=True) as r:
            wait_for(
                lambda: r.info("replication").get("master_link_status") == "up",
                "the replica to sync",
            )
        sentinel = SentinelServer(primary.port)
        with redis.Redis(port=primary.port) as p:
            # The Sentinel learns of the replica from the primary; wait until it has.
            def knows_replica() -> bool:
                assert sentinel is not None
                try:
                    with sentinel.client() as s:
                        return bool(s.execute_command("SENTINEL", "REPLICAS", "mymaster"))
                except redis.RedisError:
                    return False

            p.ping()
            wait_for(knows_replica, "the Sentinel to find the replica")
        yield primary, replica, sentinel
    finally:
        # Killed, not shut down: a primary's clean shutdown waits for its replicas.
        if sentinel is not None:
            sentinel.stop()
        replica.kill()
        primary.kill()


def test_a_redis_sentinel_url_reaches_the_master(
    sentinel_setup: tuple[RedisServer, RedisServer, SentinelServer],
) -> None:
    _, _, sentinel = sentinel_setup
    master = sentinel.master_port()
    store = Cache(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0", timeout=2.0)
    assert isinstance(store.backend, SentinelBackend)

    async def main() -> None:
        async with store:
            await store.write("via-url", b"x", 10_000)

    anyio.run(main)
    with redis.Redis(port=master) as p:
        assert p.get("via-url") == b"x"
        p.delete("via-url")


def test_sentinel_master_is_cached_on_and_a_failover_is_survived(
    sentinel_setup: tuple[RedisServer, RedisServer, SentinelServer],
) -> None:
    primary, replica, sentinel = sentinel_setup
    store = Cache(
        sentinel=[("127.0.0.1", sentinel.port)],
        service_name="mymaster",
        prefix="sent",
        timeout=2.0,
        retry_after=0.1,
    )
    assert isinstance(store.backend, SentinelBackend)
    app, item = item_app(store)
    with TestClient(app) as client:
        assert client.get("/item/1").headers["x-fastapi-cache"] == "Miss"
        assert client.get("/item/1").headers["x-fastapi-cache"] == "Hit"
        with redis.Redis(port=primary.port) as p:
            assert p.exists('sent:tests.test_cluster.item(id=1,@origin="http://testserver")')
        with sentinel.client() as s:

            def failover() -> bool:
                # NOGOODSLAVE until the Sentinel has the replica's own INFO: ask again.
                try:
                    return bool(s.execute_command("SENTINEL", "FAILOVER", "mymaster"))
                except redis.ResponseError:
                    return False

            wait_for(failover, "the Sentinel to accept a failover")
        wait_for(lambda: sentinel.master_port() == replica.port, "the failover")
        # Until the Sentinel turns the old primary into a replica, it still takes writes;
        # then they fail (READONLY) and the store must follow the Sentinel to the promoted
        # one. Bounded, and every request is served either way.
        deadline = time.monotonic() + 30
        with redis.Redis(port=replica.port) as promoted:
            for n in range(2, 10_000):
                response = client.get(f"/item/{n}")
                assert response.status_code == 200
                assert response.json() == {"id": n, "name": f"item {n}"}
                if promoted.exists(store.key_for(item, "http://testserver", id=n)):
                    break
                assert time.monotonic() < deadline, "caching did not move to the new master"
                time.sleep(0.05)
        assert client.get(f"/item/{n}").headers["x-fastapi-cache"] == "Hit"
