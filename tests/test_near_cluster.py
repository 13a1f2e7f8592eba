"""The near cache on a real Redis Cluster (3 primaries, 3 replicas): a tracking connection on
every primary (backends/cluster_tracking.py), L1 hits without Redis I/O, coherence across two
worker processes, and no stale answer once a primary is killed (its replica promoted) or a
slot migrates (CLUSTER SETSLOT / MIGRATE) while requests and invalidations run."""

from __future__ import annotations

import asyncio
import bisect
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.crc import key_slot

from oxcache import Cache, NearCache, cache
from oxcache._core import encode_entry
from oxcache.backends.cluster_tracking import ClusterTracker, parse_shards
from tests.conftest import (
    CLUSTER_NODE_OPTIONS,
    RedisCluster,
    RedisServer,
    free_cluster_port,
    sync_client,
)
from tests.test_cluster_failover import wait_promoted
from tests.test_near import (
    CHANGES,
    COHERENCE_BOUND_S,
    Worker,
    change_reaches_the_other_worker,
    wait_until,
    worker_pair,
)

ITEMS = 24  # entries of /things/{n}: enough for every primary to hold some


def primaries(url: str) -> list[redis.Redis]:
    """A client of each primary of the cluster behind `url`."""
    with sync_client(url) as client:
        assert isinstance(client, redis.RedisCluster)
        return [redis.Redis(port=node.port) for node in client.get_primaries()]


def reads(nodes: list[redis.Redis]) -> int:
    """GETs and MGETs served by these nodes so far."""
    total = 0
    for node in nodes:
        stats = node.info("commandstats")
        total += sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "mget"))
    return total


@pytest.fixture
def prefix(cluster_url: str) -> Iterator[str]:
    name = "nearcl-" + uuid.uuid4().hex[:12]
    yield name
    with sync_client(cluster_url) as client:
        for key in client.scan_iter(match=f"{name}*"):
            client.unlink(key)


def near_store(url: str, prefix: str, **options: Any) -> Cache:
    near = NearCache(max_ttl=60.0, heartbeat=options.pop("heartbeat", 1.0))
    return Cache(url, prefix=prefix, near=near, **{"timeout": 2.0, **options})


def things_app(store: Cache, db: dict[int, int]) -> FastAPI:
    """`/things/{n}` answers the "database" `db[n]`, cached with the tag `thing:{n}`."""
    app = FastAPI(lifespan=store.lifespan)

    @app.get("/things/{n}")
    @cache(expire=600, store=store, tags=["thing:{n}"])
    async def things(n: int) -> dict[str, int]:
        return {"n": n, "v": db[n]}

    return app


def ready(store: Cache) -> bool:
    return store.near is not None and store.near.ready


# -- one process, the session's cluster ----------------------------------------------------


def test_every_primary_is_tracked_and_an_l1_hit_does_no_redis_io(
    cluster_url: str, prefix: str
) -> None:
    nodes = primaries(cluster_url)
    ports = [node.connection_pool.connection_kwargs for node in nodes]
    store, db = near_store(cluster_url, prefix), dict.fromkeys(range(ITEMS), 1)
    with TestClient(things_app(store, db)) as client:
        assert wait_until(lambda: ready(store))
        # A tracker on each primary, each with its connection (pub/sub, in Redis's eyes).
        tracker = store.near._tracker  # type: ignore[union-attr]
        assert isinstance(tracker, ClusterTracker)
        tracked = sorted(port for _, port in tracker.trackers)
        assert tracked == sorted(int(options["port"]) for options in ports)
        assert all(len(node.client_list(_type="pubsub")) >= 1 for node in nodes)
        for n in range(ITEMS):
            assert client.get(f"/things/{n}").headers["x-fastapi-cache"] == "Miss"
            assert client.get(f"/things/{n}").headers["x-fastapi-cache"] == "Hit"  # into L1
        counted, l1_before = reads(nodes), store.stats()["l1_hits"]
        for n in range(ITEMS):
            hit = client.get(f"/things/{n}")
            assert hit.headers["x-fastapi-cache"] == "Hit" and hit.json() == {"n": n, "v": 1}
        assert reads(nodes) == counted, "an L1 hit read from the cluster"
        assert store.stats()["l1_hits"] == l1_before + ITEMS
    for node in nodes:
        node.close()


def test_a_change_on_any_primary_empties_its_key_from_the_l1(cluster_url: str, prefix: str) -> None:
    store = near_store(cluster_url, prefix)
    near = store.near
    assert near is not None
    keys = [f"{prefix}:k{i}" for i in range(30)]
    now = time.time_ns() // 1_000_000
    old = encode_entry(200, [], b"old", now, now + 60_000)
    new = encode_entry(200, [], b"new", now, now + 60_000)
    with sync_client(cluster_url) as raw:
        assert len({raw.get_node_from_key(key).port for key in keys}) == len(raw.get_primaries())

        async def scenario() -> None:
            async with store:
                assert await near.wait_ready(10.0)
                for key in keys:
                    assert await store.write(key, old, 60_000)
                    assert (await store.read(key)).body == b"old"  # type: ignore[union-attr]
                    assert near.get(key) is not None
                for key in keys:  # another client, on whichever node holds the key
                    raw.set(key, new, px=60_000)
                for _ in range(1000):
                    if all(near.get(key) is None for key in keys):
                        break
                    await anyio.sleep(0.01)
                assert [key for key in keys if near.get(key) is not None] == []
                for key in keys:
                    assert (await store.read(key)).body == b"new"  # type: ignore[union-attr]

        anyio.run(scenario)


def test_a_tracking_connection_lost_on_one_primary_empties_the_whole_l1(
    cluster_url: str, prefix: str
) -> None:
    store, db = near_store(cluster_url, prefix), dict.fromkeys(range(ITEMS), 1)
    nodes = primaries(cluster_url)
    with TestClient(things_app(store, db)) as client:
        assert wait_until(lambda: ready(store))
        for n in range(ITEMS):
            client.get(f"/things/{n}")
            client.get(f"/things/{n}")  # into L1
        assert len(store.near or ()) == ITEMS
        flushes = store.stats()["l1_flushes"]
        assert nodes[1].client_kill_filter(_type="pubsub") >= 1
        assert wait_until(lambda: store.stats()["l1_flushes"] > flushes)
        # Entries of every node went, not only those of the node whose connection dropped;
        # the tracker subscribes there again by itself and the L1 is used again.
        assert store.stats()["l1_entries"] == 0
        assert wait_until(lambda: ready(store))
        l1_before = store.stats()["l1_hits"]
        client.get("/things/0")
        client.get("/things/0")
        assert store.stats()["l1_hits"] == l1_before + 1
    for node in nodes:
        node.close()


def test_deleting_a_generation_on_its_node_drops_the_entries_read_under_it(
    cluster_url: str, prefix: str
) -> None:
    store, db = near_store(cluster_url, prefix), dict.fromkeys(range(ITEMS), 1)
    with TestClient(things_app(store, db)) as client, sync_client(cluster_url) as raw:
        assert wait_until(lambda: ready(store))
        for n in range(ITEMS):
            client.get(f"/things/{n}")
            client.get(f"/things/{n}")  # into L1
        db[3] = 2
        # Only the generation goes (as if its index had been evicted, or an invalidation had
        # deleted the generation and failed before the entries): the entry is still in Redis.
        generation = store.keyspace.generation(store.tag_index("thing:3"))
        assert raw.delete(generation) == 1
        assert wait_until(
            lambda: client.get("/things/3").json()["v"] == 2, timeout=COHERENCE_BOUND_S
        )
        l1_before = store.stats()["l1_hits"]
        for n in range(ITEMS):
            assert client.get(f"/things/{n}").json()["v"] == db[n]
        assert store.stats()["l1_hits"] >= l1_before + ITEMS - 1


def test_the_tracked_nodes_are_the_primaries_not_failed_empty_ones_too() -> None:
    node = [b"id", b"a", b"port", 7000, b"ip", b"10.0.0.1", b"endpoint", b"10.0.0.1"]
    reply = [
        [b"slots", [0, 100], b"nodes", [[*node, b"role", b"master", b"health", b"online"]]],
        [
            b"slots",
            [],
            b"nodes",
            [
                [b"port", 7001, b"ip", b"", b"endpoint", b"?", b"role", b"master"],
                [b"port", 7002, b"endpoint", b"x", b"role", b"master", b"health", b"fail"],
                [b"port", 7003, b"endpoint", b"y", b"role", b"replica", b"health", b"online"],
            ],
        ],
    ]
    assert parse_shards(reply, ("asked", 1)) == {("10.0.0.1", 7000), ("asked", 7001)}
    assert parse_shards([], ("asked", 1)) == set()


def test_the_listener_of_a_cluster_store_is_a_cluster_tracker(cluster_url: str) -> None:
    store = near_store(cluster_url, "p")
    tracker = store.backend.track(  # type: ignore[attr-defined]
        "p:", heartbeat=1.0, on_subscribed=list, on_changed=print, on_lost=print
    )
    assert isinstance(tracker, ClusterTracker) and not tracker.subscribed


# -- two worker processes --------------------------------------------------------------------


@pytest.fixture
def workers(cluster_url: str, prefix: str) -> Iterator[tuple[Worker, Worker]]:
    with worker_pair(cluster_url, prefix) as pair:
        yield pair


@pytest.mark.parametrize("change", CHANGES)
def test_change_in_one_worker_reaches_the_other_on_a_cluster(
    workers: tuple[Worker, Worker], cluster_url: str, prefix: str, change: str
) -> None:
    with sync_client(cluster_url) as db:
        change_reaches_the_other_worker(workers, db, prefix, change)


# -- topology events, on a cluster of each test's own -----------------------------------------


class Load:
    """Two workers (stores with their own connections and near caches) on one cluster: the
    reader serves `/things/{n}` in a loop, the writer changes `db[n]` and invalidates its
    tag, then reads it back at once. Each answer is recorded with when its request started,
    each change with when its invalidation returned (landed)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.db = dict.fromkeys(range(ITEMS), 1)
        # The production `timeout` is 50 ms; a loaded 2-core CI machine needs more to tell
        # a live node from a dead one. The heartbeat makes topology reads frequent.
        self.reader = near_store(url, prefix, timeout=0.5, heartbeat=0.2)
        self.writer = near_store(url, prefix, timeout=0.5, heartbeat=0.2)
        self.answers: list[tuple[float, int, int, int]] = []  # started, n, v, status
        self.changes: dict[int, list[tuple[float, int]]] = {}  # n -> (landed, version)
        self.own_stale: list[tuple[int, int, int]] = []  # n, served, expected
        self.errors: list[BaseException] = []
        self.focus = 0  # the item changed half the time

    async def run(self, event: Callable[[], Awaitable[None]], after_s: float = 2.0) -> None:
        """Load before, during and `after_s` after `event()` (and after the reader's L1 is
        in use again)."""
        reader_app = things_app(self.reader, self.db)
        writer_app = things_app(self.writer, self.db)
        stop = asyncio.Event()
        async with (
            self.reader,
            self.writer,
            httpx.AsyncClient(transport=httpx.ASGITransport(reader_app), base_url="http://t") as r,
            httpx.AsyncClient(transport=httpx.ASGITransport(writer_app), base_url="http://t") as w,
        ):
            assert self.reader.near is not None and await self.reader.near.wait_ready(30)
            assert self.writer.near is not None and await self.writer.near.wait_ready(30)
            for n in range(ITEMS):
                await r.get(f"/things/{n}")
            tasks = [
                asyncio.ensure_future(self._read(r, stop)),
                asyncio.ensure_future(self._write(w, stop)),
            ]
            try:
                await asyncio.sleep(0.5)
                await event()
                assert await self.reader.near.wait_ready(30), "the L1 never came back"
                # Used again once the store serves from the cluster again (its slot map
                # reloaded, its circuit closed: seconds after a failover on a loaded CI).
                l1_back, deadline = self.reader.stats()["l1_hits"], time.monotonic() + 30
                while self.reader.stats()["l1_hits"] == l1_back:
                    assert time.monotonic() < deadline, "the L1 is not used again"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(after_s)
            finally:
                stop.set()
                await asyncio.wait(tasks, timeout=30)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    self.errors.append(task.exception())  # type: ignore[arg-type]

    async def _read(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            n = self.focus if i % 3 == 0 else i % ITEMS
            started = time.monotonic()
            response = await client.get(f"/things/{n}")
            value = response.json()["v"] if response.status_code == 200 else -1
            self.answers.append((started, n, value, response.status_code))
            i += 1
            await asyncio.sleep(0.002)

    async def _write(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        rng = random.Random(7)
        while not stop.is_set():
            n = self.focus if rng.random() < 0.5 else rng.randrange(ITEMS)
            self.db[n] += 1
            version = self.db[n]
            done = await self.writer.invalidate_tag(f"thing:{n}")
            if not done.landed:
                assert await self.writer.wait_invalidations(timeout=30)
            self.changes.setdefault(n, []).append((time.monotonic(), version))
            # The worker that invalidated never serves what it invalidated.
            served = (await client.get(f"/things/{n}")).json()["v"]
            if served < version:
                self.own_stale.append((n, served, version))
            await asyncio.sleep(0.03)

    def stale(self) -> list[tuple[float, int, int, int]]:
        """The reader's answers older than a change that had landed COHERENCE_BOUND_S
        before the request started."""
        found = []
        for started, n, value, _ in self.answers:
            landed = self.changes.get(n, [])
            # The newest change landed at least the bound before this request started.
            i = bisect.bisect_right(landed, (started - COHERENCE_BOUND_S, float("inf")))
            if i and value < landed[i - 1][1]:
                found.append((started, n, value, landed[i - 1][1]))
        return found

    def check(self) -> None:
        assert self.errors == []
        assert {status for *_, status in self.answers} == {200}
        assert self.own_stale == [], "the writer served what it had just invalidated"
        assert self.stale() == [], "the reader served a stale answer past the bound"
        assert len(self.answers) > 100 and sum(map(len, self.changes.values())) > 10


def node_of(cluster: RedisCluster, key: str) -> int:
    with cluster.client() as raw:
        return int(raw.get_node_from_key(key).port)


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_no_stale_answer_when_a_primary_fails_and_its_replica_is_promoted(
    own_cluster: RedisCluster, fault: str
) -> None:
    prefix = "nearfail"
    load = Load(own_cluster.url, prefix)
    # The primary of the focused item's generation: its invalidations must reach it.
    victim = node_of(own_cluster, load.writer.keyspace.generation(load.writer.tag_index("thing:0")))
    stopped: list[Any] = []

    async def fail() -> None:
        node = own_cluster.node(victim)
        if fault == "kill":
            node.kill()  # SIGKILL while requests run: connections refused
        else:
            assert node.proc is not None  # SIGSTOP: a partition, connections hang
            os.kill(node.proc.pid, signal.SIGSTOP)
            stopped.append(node.proc)
            node.proc = None  # gone, as far as the cluster's health is concerned
        await asyncio.to_thread(wait_promoted, own_cluster, victim)

    try:
        asyncio.run(load.run(fail))
    finally:
        for proc in stopped:
            proc.kill()  # never back: its replica took over
            proc.wait(timeout=10)
    load.check()
    assert load.reader.stats()["l1_flushes"] >= 2  # the drop, and the new primary's subscription


def migrate_slot(cluster: RedisCluster, slot: int, to: int | None, pause_s: float = 0.3) -> None:
    """Move `slot` to the primary on port `to` (None: another primary) as `redis-cli
    --cluster reshard` does (SETSLOT IMPORTING / MIGRATING, MIGRATE key by key, SETSLOT NODE
    everywhere), slowly enough that requests run at every step."""
    with cluster.client() as raw:
        source = raw.nodes_manager.get_node_from_slot(slot)
        if to is None:
            to = next(node.port for node in raw.get_primaries() if node.port != source.port)
    if to == source.port:
        return
    nodes = {port: redis.Redis(port=port) for port in (source.port, to)}
    try:
        src, dst = nodes[source.port], nodes[to]
        src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        time.sleep(pause_s)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10):
            for key in keys:
                src.migrate("127.0.0.1", to, [key], 0, 5000)
                time.sleep(pause_s / 3)
        time.sleep(pause_s)
        for port in dict.fromkeys([to, source.port, *cluster.primary_ports()]):
            with redis.Redis(port=port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    finally:
        for node in nodes.values():
            node.close()
    cluster.wait_until_ok()


def join(cluster: RedisCluster) -> int:
    """A new, empty primary added to `cluster` (CLUSTER MEET), once every node knows it."""
    node = RedisServer(free_cluster_port(), CLUSTER_NODE_OPTIONS)
    cluster.nodes.append(node)  # stopped with the others
    with redis.Redis(port=cluster.primary_ports()[0]) as first:
        first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
    live = [other.port for other in cluster.nodes if other.proc is not None]
    deadline = time.monotonic() + 30
    for port in live:  # every node knows every other, handshakes done
        with redis.Redis(port=port) as client:
            while True:
                lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
                if len(lines) == len(live) and "handshake" not in "".join(lines):
                    break
                assert time.monotonic() < deadline, "the new node was not known in time"
                time.sleep(0.05)
    return node.port


@pytest.mark.parametrize("to", ["another primary", "a primary that just joined"])
def test_no_stale_answer_while_slots_migrate(own_cluster: RedisCluster, to: str) -> None:
    prefix = "nearmove"
    load = Load(own_cluster.url, prefix)
    generation = load.writer.keyspace.generation(load.writer.tag_index("thing:0"))
    joined: list[int] = []

    async def migrate() -> None:
        with own_cluster.client() as raw:
            entries = [k.decode() for k in raw.scan_iter(match=f"{prefix}:*things*n=0*")]
        assert entries, "the focused entry is not in the cluster"
        before = {key: node_of(own_cluster, key) for key in (generation, *entries)}
        if to != "another primary":
            # Nothing waits for the near caches to see the new node: slots move to it at
            # once, as a reshard right after `redis-cli --cluster add-node` would.
            joined.append(await asyncio.to_thread(join, own_cluster))
        # The slots of the focused entry and of its generation, one after the other.
        for slot in dict.fromkeys(key_slot(key.encode()) for key in before):
            target = joined[0] if joined else None
            await asyncio.to_thread(migrate_slot, own_cluster, slot, target)
        assert all(node_of(own_cluster, key) != port for key, port in before.items())
        if joined:  # the reader tracks the new primary (in `stop()` it forgets it)
            assert load.reader.near is not None and await load.reader.near.wait_ready(30)
            tracker = load.reader.near._tracker
            assert isinstance(tracker, ClusterTracker)
            tracked.extend(port for _, port in tracker.trackers)

    tracked: list[int] = []
    asyncio.run(load.run(migrate))
    load.check()
    assert joined == [] or joined[0] in tracked
