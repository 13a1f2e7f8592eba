"""What a response's own caching headers allow: whether it may be stored, for how long,
whether a stale copy of it may be served, and which request headers it varies on (RFC 9111
sections 3, 4.1, 4.2 and 5.2.2; RFC 5861). oxcache is a shared cache, except that the
entries of a `per_user` endpoint form a private cache of each user (RFC 9111 section 1).
The directives themselves are parsed by the Rust core (`parse_response_cache_control`)."""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import parsedate_to_datetime

from oxcache._core import ResponseCacheControl, parse_response_cache_control

__all__ = [
    "EXPIRED",
    "NO_CACHE",
    "NO_STORE",
    "PRIVATE",
    "SET_COOKIE",
    "STATUS",
    "VARY_STAR",
    "Verdict",
    "judge",
    "own_control",
    "stale_windows",
    "uncovered",
    "vary_names",
    "with_private",
]

#: Why a response is not stored (the `detail` of its Cache-Status, RFC 9211 section 2.8).
STATUS = "status"
SET_COOKIE = "set-cookie"
NO_STORE = "no-store"
NO_CACHE = "no-cache"
PRIVATE = "private"
VARY_STAR = "vary-star"
EXPIRED = "expired"

_vary_memo: dict[bytes, tuple[bytes, ...] | None] = {}
_VARY_MEMO_MAX = 1024


def vary_names(value: bytes) -> tuple[bytes, ...] | None:
    """The field names a `Vary` value lists, lower-cased (ASGI's form), in order and without
    repeats; None when it lists `*`, which no request matches (RFC 9111 section 4.1)."""
    found = _vary_memo.get(value, ())
    if found != ():
        return found
    listed = tuple(
        dict.fromkeys(n for n in (m.strip(b" \t").lower() for m in value.split(b",")) if n)
    )
    names = None if b"*" in listed else listed
    if len(_vary_memo) >= _VARY_MEMO_MAX:
        _vary_memo.clear()
    _vary_memo[value] = names
    return names


def uncovered(
    headers: Iterable[tuple[bytes, bytes]], names: tuple[bytes, ...]
) -> tuple[bytes, ...] | None:
    """The header names the `Vary` of a stored response lists beyond `names` (the varying
    headers a key holds): empty when the key covers them, None for `Vary: *`."""
    missing: tuple[bytes, ...] = ()
    for name, value in headers:
        if name == b"vary":
            listed = vary_names(value)
            if listed is None:
                return None
            missing += tuple(n for n in listed if n not in names and n not in missing)
    return missing


class Verdict:
    """What a rendered response's own headers allow: `reason` it may not be stored (None:
    it may), its own freshness `lifetime_ms` (None: it gives none), its own `control`
    (its parsed Cache-Control, None without one), and the request headers it `vary`s on."""

    __slots__ = ("control", "lifetime_ms", "reason", "vary")

    def __init__(
        self,
        reason: str | None,
        lifetime_ms: int | None = None,
        control: ResponseCacheControl | None = None,
        vary: tuple[bytes, ...] = (),
    ) -> None:
        self.reason = reason
        self.lifetime_ms = lifetime_ms
        self.control = control
        self.vary = vary


def _http_date_ms(value: bytes) -> int | None:
    try:
        parsed = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None  # RFC 9110 5.6.7: HTTP dates are GMT; a date without a zone is invalid
    return int(parsed.timestamp() * 1000)


def judge(
    status: int, headers: Iterable[tuple[bytes, bytes]], *, per_user: bool, now_ms: int
) -> Verdict:
    """Whether a response with `status` and `headers` may be stored, and for how long.

    Never stored: a status other than 2xx, `Set-Cookie` (the response is addressed to one
    client), `Vary: *` (RFC 9111 4.1), `no-store` (5.2.2.5), `no-cache` (5.2.2.4: it could
    only be reused after validation, which for oxcache means running the endpoint),
    `private` outside a per-user entry (5.2.2.7), and a response stale already: its own
    freshness lifetime is 0. That lifetime is, as RFC 9111 4.2.1 orders it, `s-maxage`
    (shared entries only), else `max-age`, else `Expires` minus `Date` (or now); an invalid
    `Expires` is in the past (5.3).
    """
    if not 200 <= status < 300:
        return Verdict(STATUS)
    control_lines: list[bytes] = []
    vary: tuple[bytes, ...] = ()
    expires = date = None
    for name, value in headers:
        if name == b"cache-control":
            control_lines.append(value)
        elif name == b"set-cookie":
            return Verdict(SET_COOKIE)
        elif name == b"vary":
            listed = vary_names(value)
            if listed is None:
                return Verdict(VARY_STAR)
            vary += tuple(n for n in listed if n not in vary)
        elif name == b"expires":
            expires = value
        elif name == b"date":
            date = value
    control = (
        parse_response_cache_control(b", ".join(control_lines).decode("latin-1"))
        if control_lines
        else None
    )
    lifetime_s: int | None = None
    if control is not None:
        if control.no_store:
            return Verdict(NO_STORE, control=control)
        if control.no_cache:
            return Verdict(NO_CACHE, control=control)
        if control.private and not per_user:
            return Verdict(PRIVATE, control=control)
        if control.s_maxage is not None and not per_user:
            lifetime_s = control.s_maxage
        elif control.max_age is not None:
            lifetime_s = control.max_age
    lifetime_ms = None if lifetime_s is None else lifetime_s * 1000
    if lifetime_ms is None and expires is not None:
        at = _http_date_ms(expires)
        origin = _http_date_ms(date) if date is not None else None
        lifetime_ms = 0 if at is None else at - (now_ms if origin is None else origin)
    if lifetime_ms is not None and lifetime_ms <= 0:
        return Verdict(EXPIRED, 0, control, vary)
    return Verdict(None, lifetime_ms, control, vary)


def own_control(headers: Iterable[tuple[bytes, bytes]]) -> ResponseCacheControl | None:
    """The parsed Cache-Control a stored response carries of its own, or None."""
    lines = [value for name, value in headers if name == b"cache-control"]
    if not lines:
        return None
    return parse_response_cache_control(b", ".join(lines).decode("latin-1"))


def stale_windows(
    control: ResponseCacheControl | None, swr_ms: int, sie_ms: int, per_user: bool
) -> tuple[int, int]:
    """How long past its freshness a stored response may be served (stale-while-revalidate,
    stale-if-error), in milliseconds: the endpoint's `stale_while_revalidate` and
    `stale_if_error` options, unless the response's own Cache-Control says otherwise. Its
    own `stale-while-revalidate=N` / `stale-if-error=N` replace the options (RFC 5861), and
    `must-revalidate`, `no-cache`, and in a shared entry `proxy-revalidate` or `s-maxage`,
    forbid any stale copy (RFC 9111 section 4.2.4)."""
    if control is None:
        return swr_ms, sie_ms
    if (
        control.must_revalidate
        or control.no_cache
        or (not per_user and (control.proxy_revalidate or control.s_maxage is not None))
    ):
        return 0, 0
    swr = control.stale_while_revalidate
    sie = control.stale_if_error
    return (
        swr_ms if swr is None else swr * 1000,
        sie_ms if sie is None else sie * 1000,
    )


def with_private(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with `private, ` before the first Cache-Control value, for a per-user
    response whose own Cache-Control does not say `private`: no shared cache downstream may
    store one user's response (RFC 9111 section 5.2.2.7)."""
    out: list[tuple[bytes, bytes]] = []
    done = False
    for name, value in headers:
        if name == b"cache-control" and not done:
            value, done = b"private, " + value, True
        out.append((name, value))
    return out
