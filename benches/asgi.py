"""A minimal in-process ASGI driver: far cheaper than an HTTP client, so the app dominates."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Headers = list[tuple[bytes, bytes]]


async def call(
    app: Any, path: str, query: bytes = b"", headers: Headers | None = None, method: str = "GET"
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one request through the whole app (middleware, routing) and collect the response."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status = 0
    response_headers: dict[bytes, bytes] = {}
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update((k.lower(), v) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, response_headers, bytes(body)


async def lifespan(
    receive: Any,
    send: Any,
    setup: Callable[[], Awaitable[Any]] | None,
    teardown: Callable[[], Awaitable[Any]] | None,
) -> None:
    """Serve the ASGI lifespan protocol of a bench app: `setup()` at startup, `teardown()` at
    shutdown (either may be None)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if setup:
                await setup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if teardown:
                await teardown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send: Any, status: int, body: bytes) -> None:
    """Send a whole plain response (the bench apps' own `/_calls` and `/_invalidate`)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
