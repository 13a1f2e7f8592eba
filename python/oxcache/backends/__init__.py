"""Storage backends: `MemoryBackend` (embedded default) and `RedisBackend`."""

from oxcache.backends.base import Backend
from oxcache.backends.memory import MemoryBackend
from oxcache.backends.redis import RedisBackend

__all__ = ["Backend", "MemoryBackend", "RedisBackend"]
