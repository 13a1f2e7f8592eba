"""The key layout: which of an endpoint's arguments go into its key and how (secrets as a
hash, dependencies), the parts a request adds (`@user`, `@vary:`, `@query`, `@origin`), and
the names of a store's indexes and locks. The key text itself is written by the Rust core
(`cache_key`, docs/formats.md)."""

from __future__ import annotations

import inspect
import re
import string
import uuid
from collections.abc import Collection, MutableMapping
from typing import Any, Union
from urllib.parse import parse_qsl, urlencode

from fastapi import BackgroundTasks, Response
from fastapi.params import Depends as DependsParam
from fastapi.security import SecurityScopes
from pydantic import SecretBytes, SecretStr
from starlette.requests import HTTPConnection

from oxcache._core import cache_key, secret_digest, secret_digest_bytes
from oxcache.errors import ConfigError
from oxcache.signature import annotated_metadata, annotation_types, is_ignored_annotation

__all__ = [
    "ALWAYS_IGNORED",
    "SECRET_HEADERS",
    "EndpointKeys",
    "KeySpace",
    "Secret",
    "UserId",
    "call_parts",
    "is_secret_name",
    "normalize_user_id",
    "origin_part",
    "request_origin",
    "secret",
    "undeclared_query",
]

#: Arguments of these types never affect the body, or cannot be keyed: always left out.
ALWAYS_IGNORED: tuple[type[Any], ...] = (HTTPConnection, Response, BackgroundTasks, SecurityScopes)

#: Request headers whose values are credentials: a key holds their hash, never the value.
SECRET_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"x-api-key"})

#: Parameters keyed by hash, never in clear: passwords, tokens, keys, secrets, sessions.
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:password|passwd|pwd|passphrase|secret|token|apikey|api_key|credentials?|"
    r"authorization|cookie|session_?id|private_key)(?:_|$)",
    re.IGNORECASE,
)

UserId = Union[str, int, uuid.UUID]
"""What a `per_user` dependency may return: a stable id of the user."""


def normalize_user_id(user_id: object) -> str:
    """The text form of a user id used in keys and indexes: `42`, `"42"` and
    `UUID("...")` are written as `42`, `42` and the UUID's canonical text."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int, uuid.UUID)):
        raise TypeError(
            f"a per_user dependency must return a str, int or UUID user id, got "
            f"{type(user_id).__name__}"
        )
    return str(int(user_id)) if isinstance(user_id, int) else str(user_id)


class Secret:
    """A secret argument's stand-in in a key: `Secret("#<xxh3-128 of its canonical form>")`."""

    __slots__ = ("digest",)

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __cache_key__(self) -> str:
        return self.digest


def secret(value: Any) -> Any:
    """What a secret argument is keyed as: a `Secret` holding the hash of its canonical
    form (a pydantic `SecretStr`/`SecretBytes` by its value), None for None."""
    if value is None:
        return None
    if isinstance(value, (SecretStr, SecretBytes)):
        value = value.get_secret_value()
    return Secret(secret_digest(value))


def is_secret_name(name: str) -> bool:
    """Whether a parameter of this name is keyed by a hash, never in clear."""
    return _SECRET_NAME.search(name) is not None


def call_parts(
    user: str | None,
    vary_names: tuple[bytes, ...],
    varied: dict[bytes, bytes] | None,
    query: str | None = None,
    origin: str | None = None,
) -> list[tuple[str, Any]] | None:
    """The parts of a key that are not arguments, in this order: `@user` (a per-user
    endpoint's user id), `@vary:<header>` (each varying header's value, credentials as a
    hash, None when absent), `@query` (the query parameters an endpoint that takes the
    `Request` did not declare, see `undeclared_query`) and `@origin` (the request's scheme,
    host and root path, see `request_origin`). No Python parameter can have these
    names."""
    if user is None and varied is None and query is None and origin is None:
        return None
    parts: list[tuple[str, Any]] = []
    if user is not None:
        parts.append(("@user", user))
    if varied is not None:
        for name in vary_names:
            raw = varied.get(name)
            part: str | None
            if raw is not None and name in SECRET_HEADERS:
                part = secret_digest_bytes(raw)
            else:
                part = None if raw is None else raw.decode("latin-1").strip()
            parts.append(("@vary:" + name.decode("latin-1"), part))
    if query is not None:
        parts.append(("@query", query))
    if origin is not None:
        parts.append(("@origin", origin))
    return parts


def undeclared_query(
    query_string: bytes, declared: Collection[str], path_params: Collection[str] = ()
) -> str | None:
    """The query parameters a `Request` could show the endpoint beyond the ones it declares,
    as a canonical query string (None when there are none): the pairs as Starlette's
    `request.query_params` holds them, in the request's order, re-encoded; a parameter named
    like a secret (`token`, `api_key`, ...) by a hash of its value. A declared name that is
    also a path parameter counts as undeclared: FastAPI fills it from the path."""
    if not query_string:
        return None
    pairs = [
        (name, secret_digest(value) if _SECRET_NAME.search(name) else value)
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if name not in declared or name in path_params
    ]
    return urlencode(pairs) if pairs else None


def request_origin(scope: MutableMapping[str, Any], host: bytes | None) -> str:
    """Where the request was addressed: `scheme://host`, plus the root path the app is
    mounted under when there is one (`https://example.com/api`), exactly as received (no
    case or port folding: an endpoint may echo them). From the ASGI scope, so after proxy
    middleware (uvicorn's `--proxy-headers` sets the scheme from `X-Forwarded-Proto`);
    without a Host header (HTTP/1.0), the server's address."""
    if host is None:
        server = scope.get("server")
        host = b"" if not server else f"{server[0]}:{server[1]}".encode("latin-1")
    origin = str(scope.get("scheme", "http")) + "://" + host.decode("latin-1")
    root = scope.get("root_path")
    return origin + root if root else origin


#: Argument classes a `KeySpace` remembers before it starts over.
_LEFT_OUT_MAX = 1024

_origin_parts: dict[tuple[Any, Any, Any], list[tuple[str, Any]]] = {}
_ORIGIN_MEMO_MAX = 4096


def origin_part(scope: MutableMapping[str, Any], host: bytes | None) -> list[tuple[str, Any]]:
    """`[("@origin", request_origin(scope, host))]`, the key part of a request's origin,
    made once per origin and shared (callers never change it): a hit pays a dict lookup."""
    memo = (
        scope.get("scheme"),
        host if host is not None else scope.get("server"),
        scope.get("root_path"),
    )
    found = _origin_parts.get(memo)
    if found is None:
        if len(_origin_parts) >= _ORIGIN_MEMO_MAX:  # forged Host headers cannot grow it
            _origin_parts.clear()
        found = _origin_parts[memo] = [("@origin", request_origin(scope, host))]
    return found


class KeySpace:
    """The keys of one store: entries under `prefix:`, its indexes and locks under
    `prefix:@<kind>:` (entry keys start with a module name, which never starts with `@`),
    the argument types it leaves out of keys (`ignore_arg_types`), and whether a request's
    origin (scheme, host, root path) is part of every key (`per_host`)."""

    __slots__ = ("ignored", "left_out", "per_host", "prefix", "start")

    def __init__(
        self, prefix: str = "", ignored: tuple[type[Any], ...] = (), per_host: bool = True
    ) -> None:
        self.prefix = prefix
        #: What every key of the store starts with: `prefix:`, or nothing.
        self.start = f"{prefix}:" if prefix else ""
        self.ignored = ignored
        self.per_host = per_host
        #: Argument classes -> whether their values are left out of keys (`leaves_out`).
        self.left_out: dict[type[Any], bool] = {}

    def leaves_out(self, value: Any) -> bool:
        """Whether `value` is left out of keys by its type (`ALWAYS_IGNORED`, `ignored`),
        answered once per class: `isinstance` against an abstract base class (`Request` is
        a `Mapping`) costs hundreds of nanoseconds an argument."""
        cls = type(value)
        found = self.left_out.get(cls)
        if found is None:
            if len(self.left_out) >= _LEFT_OUT_MAX:
                self.left_out.clear()
            found = self.left_out[cls] = isinstance(value, ALWAYS_IGNORED + self.ignored)
        return found

    def local(self, key: str) -> str:
        """`key` without the `prefix:`."""
        return key[len(self.start) :]

    def index(self, kind: str, name: str) -> str:
        """The name of an index (or lock) of `kind`."""
        return f"{self.start}@{kind}:{name}"

    def user_index(self, user_id: UserId) -> str:
        """The index listing every entry cached for `user_id`."""
        return self.index("user", normalize_user_id(user_id))

    def tag_index(self, tag: str) -> str:
        """The index listing every entry cached with `tag`."""
        return self.index("tag", tag)

    def variants_index(self, key: str) -> str:
        """The index listing the variants of the base key `key`: its users, origins, `vary`
        values, undeclared queries and dependency values."""
        return self.index("variants", self.local(key))

    def lock_name(self, key: str) -> str:
        """The lock a miss of `key` takes when `lock_timeout` is set."""
        return self.index("lock", self.local(key))

    def generation(self, index: str) -> str:
        """The key holding the generation token of `index` (`prefix:@gen:<kind>:<name>` for
        `prefix:@<kind>:<name>`): entries listed in the index record it, and invalidating
        the index deletes it."""
        return self.start + "@gen:" + index[len(self.start) + 1 :]

    def generations(self, indexes: list[str]) -> tuple[str, ...]:
        """The generations of `indexes`, in the same order."""
        return tuple(self.generation(index) for index in indexes)

    def kind(self, key: str) -> str:
        """`entry`, or the index kind (`user`, `tag`, `variants`, `lock`) of a key."""
        local = self.local(key)
        if local.startswith("@"):
            return local[1:].partition(":")[0] or "other"
        return "entry"

    def endpoint(self, key: str) -> str:
        """The `module.function` part of an entry key."""
        return self.local(key).partition("(")[0]


class EndpointKeys:
    """How the calls of one endpoint become keys: `prefix:module.name(arg=value,...)` over
    the parameters its annotations do not leave out, secrets as a hash, then the request's
    parts (`call_parts`); and the indexes its entries are listed in."""

    def __init__(
        self,
        module: str,
        name: str,
        params: list[inspect.Parameter],
        hints: dict[str, Any],
        tags: tuple[str, ...],
    ) -> None:
        self.module = module
        self.name = name
        self.params = params
        self.hints = hints
        self.tags = tags
        known = {p.name for p in params}
        for template in tags:
            for _, field, _, _ in string.Formatter().parse(template):
                root = re.split(r"[.\[]", field, maxsplit=1)[0] if field else field
                if field is not None and root not in known:
                    raise ConfigError(
                        f"tag {template!r} of {name} names {field!r}, which is not one "
                        f"of its parameters {sorted(known)}"
                    )
        self._names: dict[tuple[type[Any], ...], tuple[str, ...]] = {}
        #: The last `names` asked for (a store's `ignored`, the names), checked by identity.
        self._last: tuple[Any, tuple[str, ...]] = (None, ())
        #: Parameters FastAPI fills from dependencies: a caller of `store.invalidate` may
        #: not know their values, so every variant of a call is listed under the others.
        self.deps = frozenset(
            p.name
            for p in params
            if isinstance(p.default, DependsParam)
            or any(isinstance(m, DependsParam) for m in annotated_metadata(hints.get(p.name)))
        )
        self.secret_params = frozenset(
            p.name
            for p in params
            if _SECRET_NAME.search(p.name)
            or any(
                issubclass(t, (SecretStr, SecretBytes))
                for t in annotation_types(hints.get(p.name))
                if isinstance(t, type)
            )
        )

    def names(self, ignored: tuple[type[Any], ...]) -> tuple[str, ...]:
        """Parameters whose annotation does not exclude them from the key, in order."""
        names = self._names.get(ignored)
        if names is None:
            skip = ALWAYS_IGNORED + ignored
            names = tuple(
                p.name
                for p in self.params
                if p.kind is not p.VAR_KEYWORD
                and not is_ignored_annotation(self.hints.get(p.name), skip)
            )
            self._names[ignored] = names
        self._last = (ignored, names)
        return names

    def key(
        self, space: KeySpace, values: dict[str, Any], extra: list[tuple[str, Any]] | None = None
    ) -> str:
        """The key of a call; `extra` holds its `call_parts`."""
        ignored = space.ignored
        last = self._last
        names = last[1] if last[0] is ignored else self.names(ignored)
        left_out = space.left_out  # by class: `isinstance` against ABCs is slow
        args = []
        for name in names:
            if name in values:
                value = values[name]
                out = left_out.get(type(value))
                if out is None:
                    out = space.leaves_out(value)
                if not out:
                    args.append((name, value))
        if self.secret_params:
            args = [(n, secret(v) if n in self.secret_params else v) for n, v in args]
        if extra:
            args += extra
        return cache_key(space.prefix, self.module, self.name, args)

    def base_key(self, space: KeySpace, values: dict[str, Any]) -> str:
        """The key over the arguments that are not dependencies: the name of the index
        that lists every variant (users, `vary` values, dependency values) of a call."""
        if not self.deps:
            return self.key(space, values)
        return self.key(space, {k: v for k, v in values.items() if k not in self.deps})

    def indexes(
        self, space: KeySpace, values: dict[str, Any], user: str | None, variant: bool = False
    ) -> list[str]:
        """The indexes a new entry is listed in: its user's, its base entry's variants (for
        `invalidate(endpoint, **args)`) when its key is not the base key (`variant`: it has
        request parts, or dependency arguments), and its tags."""
        found: list[str] = []
        if user is not None:
            found.append(space.user_index(user))
        if variant or self.deps:
            found.append(space.variants_index(self.base_key(space, values)))
        for template in self.tags:
            found.append(space.tag_index(template.format_map(values)))
        return found

    def call_values(self, args: dict[str, Any]) -> dict[str, Any]:
        """`args` with defaults filled in as FastAPI would (dependencies are not filled)."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in args:
                values[param.name] = args[param.name]
            elif param.default is not inspect.Parameter.empty and param.name not in self.deps:
                default = param.default
                values[param.name] = getattr(default, "default", default)
        unknown = set(args) - {p.name for p in self.params}
        if unknown:
            raise ConfigError(f"{self.name} has no parameters named {sorted(unknown)}")
        return values

    def key_for_call(self, space: KeySpace, args: dict[str, Any], origin: str | None = None) -> str:
        """The key of a call with `args`: with `origin` on a `per_host` store, the key a
        request from that origin with no user, `vary` values or undeclared query gets;
        else the base key (the arguments alone)."""
        values = self.call_values(args)
        if origin is None or not space.per_host:
            return self.key(space, values)
        return self.key(space, values, call_parts(None, (), None, None, origin))

    def invalidation(self, space: KeySpace, args: dict[str, Any]) -> tuple[list[str], list[str]]:
        """The indexes and keys `store.invalidate(endpoint, **args)` deletes: the base key,
        and every variant listed under it (users, origins, `vary` values, queries)."""
        values = self.call_values(args)
        base = self.base_key(space, values)
        keys = [base]
        if self.deps and self.deps <= values.keys():
            keys.append(self.key(space, values))
        return [space.variants_index(base)], keys
