"""Redis Sentinel: the Redis backend on the master a set of Sentinels names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from oxcache.backends._bound import backstop
from oxcache.backends.redis import RedisBackend

__all__ = ["SENTINEL_SCHEMES", "SentinelBackend", "is_sentinel_url", "parse_sentinel_url"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names a Sentinel-managed Redis (`redis+sentinel://`)."""
    return urlsplit(url).scheme.lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, object]]:
    """Split `redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]` into
    the Sentinels' addresses, the service name and the master's connection options
    (username, password, db, ssl). The credentials are the master's; Sentinels are reached
    without them."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"not a redis+sentinel:// URL: {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        if not name:
            raise ValueError(f"a Sentinel address needs a host: {url!r}")
        sentinels.append((name, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"a redis+sentinel:// URL ends with /service or /service/db: {url!r}")
    options: dict[str, object] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    if len(path) == 2:
        options["db"] = int(path[1])
    if parts.scheme.lower() == "rediss+sentinel":
        options["ssl"] = True
    return sentinels, unquote(path[0]), options


class SentinelBackend(RedisBackend):
    """The Redis backend on the master that `sentinels` (a list of `(host, port)`) report
    for `service_name`. After a failover, new connections go to the promoted master: the
    first command on the old one fails (a miss, the circuit opens for `retry_after`) and the
    next one asks the Sentinels again. `connection` holds the master's options (password,
    username, db, ssl). The backend owns the clients it makes and closes them."""

    def __init__(
        self,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        *,
        timeout: float = 0.1,
        connection: dict[str, object] | None = None,
    ) -> None:
        # The Sentinels are asked with `timeout`; the master's commands are bounded by
        # `bounded` (see backends/_bound.py), with the socket timeout only as a backstop.
        limit = backstop(timeout)
        self.sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            [(host, int(port)) for host, port in sentinels],
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
            socket_timeout=limit,
            socket_connect_timeout=limit,
        )
        master_for: Any = self.sentinel.master_for
        master = master_for(
            service_name,
            decode_responses=False,
            retry_on_timeout=False,
            # One attempt: the store's circuit breaker is the retry policy.
            retry=Retry(NoBackoff(), 0),
            **(connection or {}),
        )
        super().__init__(client=master, timeout=timeout)
        self.owns_connection = True
        self.bound = timeout
        self.service_name = service_name

    async def close(self) -> None:
        await self.client.aclose()
        for sentinel in self.sentinel.sentinels:
            await sentinel.aclose()
