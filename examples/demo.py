"""`make demo`: serve examples/app.py over real HTTP and show a miss, a hit and a 304."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.app import app

SHOWN = (
    "content-length",
    "content-type",
    "cache-control",
    "expires",
    "etag",
    "age",
    "x-myapi-cache",
)


def show(title: str, response: httpx.Response) -> None:
    print(f"\n--- {title}: HTTP {response.status_code}")
    for name in SHOWN:
        if name in response.headers:
            print(f"{name}: {response.headers[name]}")
    if response.content:
        print(response.text)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s: %(message)s")
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    backend = "Redis at " + os.environ["REDIS_URL"] if os.environ.get("REDIS_URL") else "memory"
    print(f"examples/app.py on http://127.0.0.1:{port} (store: {backend})")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            first = client.get("/get_user", params={"id": 1})
            show("GET /get_user?id=1 (first request: a miss)", first)
            second = client.get("/get_user", params={"id": 1})
            show("GET /get_user?id=1 (again: a hit)", second)
            third = client.get(
                "/get_user", params={"id": 1}, headers={"If-None-Match": second.headers["etag"]}
            )
            show("GET /get_user?id=1 with If-None-Match (not modified)", third)
            ok = (
                first.headers.get("x-myapi-cache") == "Miss"
                and second.headers.get("x-myapi-cache") == "Hit"
                and third.status_code == 304
                and first.content == second.content
            )
    finally:
        server.should_exit = True
        thread.join(timeout=5)
    print("\ndemo:", "miss, hit and 304 as expected" if ok else "UNEXPECTED RESULT")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
