"""The README's first command and the seed's README scenarios, over real HTTP and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_demo_shows_miss_hit_and_304_over_real_http(backend: str, redis_url: str) -> None:
    env = {"REDIS_URL": redis_url} if backend == "redis" else {"REDIS_URL": ""}
    result = run(["examples/demo.py"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "x-myapi-cache: Miss" in out and "x-myapi-cache: Hit" in out
    assert "HTTP 304" in out
    assert "miss, hit and 304 as expected" in out
    assert '"password_hash"' not in out


PROBE = """
import json, sys
from fastapi.testclient import TestClient
sys.path.insert(0, ".")
from examples.app import app
with TestClient(app) as client:
    r = client.get("/get_user", params={"id": 2})
    print(json.dumps({"etag": r.headers["etag"], "body": r.text}))
"""


def test_etag_is_the_same_in_processes_with_different_hash_seeds() -> None:
    seen = []
    for seed in ("1", "2", "random"):
        result = run(["-c", PROBE], {"PYTHONHASHSEED": seed, "REDIS_URL": ""})
        assert result.returncode == 0, result.stderr
        seen.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert seen[0] == seen[1] == seen[2]


def test_seed_readme_scenarios_on_the_example_app() -> None:
    sys.path.insert(0, str(ROOT))
    from fastapi.testclient import TestClient

    from examples.app import app, get_user, store

    with TestClient(app) as client:
        assert client.get("/data_no_cache").headers.get("x-myapi-cache") is None
        for path in ("/immutable_data", "/dynamic_data", "/cache_one_day", "/cache_two_hours"):
            assert client.get(path).headers["x-myapi-cache"] in ("Miss", "Hit")
            assert client.get(path).headers["x-myapi-cache"] == "Hit"
        assert client.get("/cache_two_hours").headers["cache-control"] == "max-age=7200"
        assert client.get("/dynamic_data").headers["cache-control"] == "max-age=30"

        user = client.get("/get_user", params={"id": 1})
        assert user.json() == {"id": 1, "name": "Ada", "email": "ada@example.com"}
        assert store.key_for(get_user, id=1) == "myapi-cache:examples.app.get_user(id=1)"
        assert client.get("/get_user", params={"id": 99}).status_code == 404
        assert client.get("/get_user", params={"id": 99}).status_code == 404

        for day in ("20190509", "20190510"):
            miss = client.get("/scoreboard", params={"game_date": day})
            hit = client.get("/scoreboard", params={"game_date": day})
            assert (
                miss.json()
                == hit.json()
                == {"date": f"{day[:4]}-{day[4:6]}-{day[6:]}", "games": 15}
            )
            assert hit.headers["x-myapi-cache"] == "Hit"
        assert client.get("/scoreboard", params={"game_date": "20200101"}).status_code == 400


def test_per_user_login_update_logout_on_the_example_app() -> None:
    sys.path.insert(0, str(ROOT))
    from fastapi.testclient import TestClient

    from examples.app import app

    with TestClient(app) as client:
        assert client.get("/me/prefs").status_code == 401
        tokens = {u: client.post("/login", params={"user_id": u}).json()["token"] for u in (1, 2)}
        auth = {u: {"Authorization": f"Bearer {t}"} for u, t in tokens.items()}
        for user, theme in ((1, "dark"), (2, "light")):
            miss = client.get("/me/prefs", headers=auth[user])
            hit = client.get("/me/prefs", headers=auth[user])
            assert miss.json() == hit.json() == {"user": user, "theme": theme}
            assert hit.headers["x-myapi-cache"] == "Hit"
            assert hit.headers["cache-control"] == "private, max-age=300"
        update = client.put("/me/prefs", params={"theme": "solar"}, headers=auth[1])
        assert update.status_code == 200
        assert client.get("/me/prefs", headers=auth[1]).json()["theme"] == "solar"
        assert client.get("/me/prefs", headers=auth[2]).headers["x-myapi-cache"] == "Miss"
        assert client.get("/me/prefs", headers=auth[2]).headers["x-myapi-cache"] == "Hit"
        assert client.post("/logout", headers=auth[2]).json() == {"deleted": 1}
        assert client.get("/me/prefs", headers=auth[2]).status_code == 401
        assert client.get("/me/prefs", headers=auth[1]).headers["x-myapi-cache"] == "Hit"
