"""Which backend a `Cache(...)` call asks for, and how a backend is named in logs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from oxcache.backends.base import Backend
from oxcache.backends.cluster import ClusterBackend, is_cluster_url
from oxcache.backends.memory import MemoryBackend
from oxcache.backends.redis import RedisBackend
from oxcache.backends.sentinel import SentinelBackend, is_sentinel_url, parse_sentinel_url

__all__ = ["backend_for", "describe", "redact"]


def backend_for(
    url: str | None,
    client: Any,
    *,
    cluster: bool,
    sentinel: Sequence[tuple[str, int]] | None,
    service_name: str | None,
    timeout: float,
    max_entries: int,
    max_bytes: int,
) -> Backend:
    """The backend the arguments of `Cache` ask for: Sentinel (`sentinel=` or a
    `redis+sentinel://` URL), Cluster (`cluster=True`, a `redis+cluster://` URL or a
    `RedisCluster` client), a single Redis (`url=` or `client=`), else in memory."""
    if sentinel is not None:
        assert service_name is not None
        return SentinelBackend(sentinel, service_name, timeout=timeout)
    if url is not None and is_sentinel_url(url):
        sentinels, name, options = parse_sentinel_url(url)
        return SentinelBackend(sentinels, name, timeout=timeout, connection=options)
    if url is not None and (cluster or is_cluster_url(url)):
        return ClusterBackend(url, timeout=timeout)
    if isinstance(client, RedisCluster):
        return ClusterBackend(client=client, timeout=timeout)
    if url is not None or client is not None:
        return RedisBackend(url, client=client, timeout=timeout)
    return MemoryBackend(max_entries=max_entries, max_bytes=max_bytes)


def describe(backend: Backend, url: str | None) -> str:
    """How logs name `backend` (reached at `url`, if known): never with a password."""
    if isinstance(backend, ClusterBackend):
        return "Redis Cluster" if url is None else f"Redis Cluster at {redact(url)}"
    if isinstance(backend, SentinelBackend):
        return f"Redis Sentinel service {backend.service_name!r}"
    if isinstance(backend, RedisBackend):
        return "Redis" if url is None else f"Redis at {redact(url)}"
    return type(backend).__name__


def redact(url: str) -> str:
    """`url` with its password replaced by `***`, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"
