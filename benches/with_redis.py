"""Run a command with REDIS_URL pointing at a redis-server of its own on loopback (the same
server class as the tests), stopped afterwards: `python benches/with_redis.py CMD ARGS...`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the root

from tests.conftest import RedisServer

if __name__ == "__main__":
    server = RedisServer()
    try:
        # The repository root first (for `benches` and `tests`), then what the caller had.
        path = os.pathsep.join(p for p in (".", os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, REDIS_URL=server.url, PYTHONPATH=path)
        code = subprocess.call(sys.argv[1:], env=env)
    finally:
        server.stop()
    sys.exit(code)
