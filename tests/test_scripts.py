"""Every Lua script the backends run declares, in KEYS, every key it touches: Dragonfly
refuses a script that touches any other (by default), and Redis Cluster routes a script by
its declared keys. Neither Redis nor Valkey enforces it, so the test watches the server
run them: under MONITOR (which shows each command a script runs, right after the EVALSHA
that ran it), a store serves misses with tags, per-user entries and the cross-worker lock,
and invalidates in every way; each command a script ran is asked for its keys (`COMMAND
GETKEYS`), and each must be one the EVALSHA declared. Every script in the backends' source
must have run, so a new script cannot escape the check."""

from __future__ import annotations

import ast
import hashlib
import pathlib
import re
import threading
import uuid
from collections import Counter
from typing import Any

import redis
from fastapi import FastAPI, Header

import oxcache.backends
from oxcache import Cache, cache
from tests.apps import client_for

BACKENDS = pathlib.Path(oxcache.backends.__file__).parent
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}
_STOP = b"oxcache-test-monitor-stop"


def scripts_in_source() -> dict[str, str]:
    """sha1 -> text of every Lua script in the backends' source (string constants that call
    `redis.call` or `redis.pcall`), as redis-py names a registered script."""
    found: dict[str, str] = {}
    for path in sorted(BACKENDS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and ("redis.call(" in text or "redis.pcall(" in text):
                found[hashlib.sha1(text.encode()).hexdigest()] = text
    return found


def unescape(raw: bytes) -> bytes:
    """One argument as MONITOR quotes it (`sdscatrepr`): `\\xHH`, `\\n`, `\\"`, ..."""
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and i + 1 < len(raw):
            nxt = raw[i + 1 : i + 2]
            if nxt == b"x":
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out += raw[i : i + 1]
        i += 1
    return bytes(out)


class Monitor:
    """MONITOR on a connection of its own, read by a thread until `stop()`."""

    def __init__(self, url: str) -> None:
        self.connection = redis.Redis.from_url(url).connection_pool.make_connection()
        self.connection.connect()
        self.connection.send_command("MONITOR")
        assert self.connection.read_response() in (b"OK", "OK")
        self.lines: list[tuple[bool, list[bytes]]] = []  # (run by a script, arguments)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for _ in range(1_000_000):  # bounded: a scenario sends a few hundred commands
            line = self.connection.read_response()
            if isinstance(line, str):
                line = line.encode("latin-1")
            if _STOP in line:
                return
            head, _, rest = line.partition(b"] ")
            args = [unescape(a) for a in _ARG.findall(rest)]
            self.lines.append((head.endswith(b"lua"), args))

    def stop(self, url: str) -> None:
        client = redis.Redis.from_url(url)
        try:
            for _ in range(100):
                client.echo(_STOP)
                self.thread.join(timeout=0.1)
                if not self.thread.is_alive():
                    break
        finally:
            client.close()
            self.connection.disconnect()
        assert not self.thread.is_alive(), "MONITOR never showed the stop marker"


def scripts_run(lines: list[tuple[bool, list[bytes]]]) -> list[tuple[str, set[bytes], list[Any]]]:
    """(sha1, declared keys, commands the script ran) for each EVAL/EVALSHA that ran one."""
    runs: list[tuple[str, set[bytes], list[Any]]] = []
    for by_script, args in lines:
        if by_script:
            assert runs, f"a script command before any EVALSHA: {args}"
            runs[-1][2].append(args)
            continue
        name = args[0].upper() if args else b""
        if name in (b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO"):
            sha = (
                args[1].decode()
                if name.startswith(b"EVALSHA")
                else hashlib.sha1(args[1]).hexdigest()
            )
            count = int(args[2])
            runs.append((sha, set(args[3 : 3 + count]), []))
    return [run for run in runs if run[2]]  # an EVALSHA refused with NOSCRIPT ran nothing


def user_id(x_user: str = Header()) -> str:
    return x_user


def scenario_app(store: Cache) -> tuple[FastAPI, Any]:
    app = FastAPI()

    @app.get("/items/{id}")
    @cache(expire=60, store=store, tags=["items", "item:{id}"])
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    @app.get("/me")
    @cache(expire=60, store=store, per_user=user_id, vary=["accept-language"])
    async def me(x_user: str = Header()) -> dict[str, str]:
        return {"user": x_user}

    return app, item


def test_every_script_declares_every_key_it_touches(redis_url: str) -> None:
    expected = scripts_in_source()
    assert expected, "no Lua script found in the backends' source"
    store = Cache(redis_url, prefix="scripts-" + uuid.uuid4().hex[:8], lock_timeout=2.0)
    app, item = scenario_app(store)
    monitor = Monitor(redis_url)
    try:
        with client_for(app, store) as client:
            for id in (1, 2, 3):
                client.get(f"/items/{id}")  # misses: the lock, an indexed write, the release
            for user in ("ann", "bob"):
                client.get("/me", headers={"X-User": user, "Accept-Language": "fr"})
            call = client.portal.call
            assert call(store.invalidate_tag, "item:1") == 1
            assert call(store.invalidate_user, "ann") == 1
            assert call(lambda: store.invalidate(item, id=2)) == 1
            assert call(store.invalidate_tag, "items") == 1
            call(lambda: store.delete([store.key_for(item, id=9)]))
            call(store.clear)
    finally:
        monitor.stop(redis_url)

    runs = scripts_run(monitor.lines)
    checker = redis.Redis.from_url(redis_url)
    undeclared: list[str] = []
    try:
        for _, declared, commands in runs:
            for args in commands:
                try:
                    keys = {
                        k.encode() if isinstance(k, str) else k
                        for k in checker.command_getkeys(*args)
                    }
                except redis.ResponseError:
                    keys = set()  # a command without keys
                undeclared += [f"{args[0]!r} touches {k!r}, not in KEYS" for k in keys - declared]
    finally:
        checker.close()
    assert undeclared == []
    ran = Counter(sha for sha, _, _ in runs)
    missing = {
        sha: text.strip().splitlines()[0] for sha, text in expected.items() if sha not in ran
    }
    assert missing == {}, "scripts the scenario never ran, so never checked"
