"""The exceptions oxcache raises. All derive from `OxcacheError`."""

from __future__ import annotations

from oxcache._core import EntryError, KeyBuildError, OxcacheError


class ConfigError(OxcacheError, ValueError):
    """A decorator or store was configured with values that cannot work."""


class CacheUnavailable(OxcacheError):
    """The storage failed and the store was configured with `on_error="raise"`."""


__all__ = ["CacheUnavailable", "ConfigError", "EntryError", "KeyBuildError", "OxcacheError"]
