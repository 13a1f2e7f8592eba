"""Storage backends: `MemoryBackend` (embedded default), `RedisBackend`, `ClusterBackend`
(Redis Cluster) and `SentinelBackend` (Redis Sentinel)."""

from oxcache.backends.base import Backend
from oxcache.backends.cluster import ClusterBackend
from oxcache.backends.memory import MemoryBackend
from oxcache.backends.redis import RedisBackend
from oxcache.backends.sentinel import SentinelBackend

__all__ = ["Backend", "ClusterBackend", "MemoryBackend", "RedisBackend", "SentinelBackend"]
