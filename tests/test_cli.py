"""The `oxcache` command-line tool against the session's real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import Depends, FastAPI, Header
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from oxcache.cli import main
from tests.conftest import RedisServer, free_port, sync_client
from tests.test_cluster import sentinel_setup  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent


def user_id(x_user: str = Header()) -> str:
    return x_user


class Site:
    """An app with tagged and per-user endpoints on a Redis store with its own prefix."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = "cli-" + uuid.uuid4().hex[:10]
        self.store = Cache(url, prefix=self.prefix, timeout=2.0, per_host=False)
        self.app = FastAPI(lifespan=self.store.lifespan)
        store = self.store

        @self.app.get("/items/{id}")
        @cache(expire=60, tags=["items", "item:{id}"], store=store, name="item")
        async def item(id: int) -> dict[str, Any]:
            return {"id": id, "name": f"item {id}"}

        @self.app.get("/me")
        @cache(expire=60, per_user=user_id, store=store, name="me")
        async def me(user: str = Depends(user_id)) -> dict[str, str]:
            return {"user": user}

        self.client = TestClient(self.app)

    def __enter__(self) -> Site:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(None, None, None)

    def fill(self) -> dict[str, str]:
        """Two item entries and one entry for each of users a and b; the items' ETags."""
        etags = {}
        for id in (1, 2):
            response = self.client.get(f"/items/{id}")
            assert response.headers["x-fastapi-cache"] == "Miss"
            etags[f"item(id={id})"] = response.headers["etag"]
        for user in ("a", "b"):
            assert self.client.get("/me", headers={"x-user": user}).status_code == 200
        return etags

    def key(self, local: str) -> str:
        return f"{self.prefix}:tests.test_cli.{local}"

    def cli(self, *args: str, prefix: bool = True) -> Any:
        base = ["--url", self.url] + (["--prefix", self.prefix] if prefix else [])
        return base + list(args)


@pytest.fixture
def site(redis_url: str) -> Iterator[Site]:
    with Site(redis_url) as made:
        yield made
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{made.prefix}:*"):
        client.unlink(key)
    client.close()


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_counts_entries_per_endpoint_user_and_tag(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    result = run_json(capsys, site.cli("stats", "--json"))
    assert result["entries"] == 4
    assert result["entry_bytes"] > 0 and result["unreadable"] == 0
    assert {k: v["entries"] for k, v in result["endpoints"].items()} == {
        "tests.test_cli.item": 2,
        "tests.test_cli.me": 2,
    }
    assert result["users"] == {"a": 1, "b": 1}
    assert result["tags"] == {"items": 2, "item:1": 1, "item:2": 1}
    # each index has its generation key (issue 17)
    assert result["indexes"] == {"gen": 6, "tag": 3, "user": 2, "variants": 1}

    assert main(site.cli("stats")) == 0
    text = capsys.readouterr().out
    assert "entries: 4" in text and "tests.test_cli.item: 2" in text and "hit rate:" in text


def test_stats_reports_a_foreign_value_as_unreadable(
    site: Site, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    redis_client.set(site.key("item(id=9)"), b'{"another": "library"}')
    result = run_json(capsys, site.cli("stats", "--json"))
    assert result["entries"] == 4 and result["unreadable"] == 1


def test_keys_by_endpoint_user_and_tag(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.fill()
    items = [site.key("item(id=1)"), site.key("item(id=2)")]
    assert run_json(capsys, site.cli("keys", "--endpoint", "item", "--json")) == items
    assert (
        run_json(capsys, site.cli("keys", "--endpoint", "tests.test_cli.item", "--json")) == items
    )
    assert run_json(capsys, site.cli("keys", "--tag", "item:2", "--json")) == items[1:]
    assert run_json(capsys, site.cli("keys", "--tag", "nope", "--json")) == []
    (mine,) = run_json(capsys, site.cli("keys", "--user", "a", "--json"))
    assert mine.startswith(site.key("me(")) and '@user="a"' in mine
    everything = run_json(capsys, site.cli("keys", "--json"))
    assert len(everything) == 4 and not any("@tag:" in k for k in everything)


def test_show_decodes_an_entry(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    etags = site.fill()
    entry = run_json(capsys, site.cli("show", site.key("item(id=1)"), "--json"))
    assert entry["status"] == 200
    assert "W/" + entry["etag"] == etags["item(id=1)"]
    assert ["content-type", "application/json"] in entry["headers"]
    assert entry["body"] == '{"id":1,"name":"item 1"}'
    assert entry["body_bytes"] == len(entry["body"])
    assert 0 <= entry["age_s"] <= 60 and 0 < entry["fresh_for_s"] <= 60
    assert 0 < entry["redis_ttl_ms"] <= 60_000

    # The key may be given without the prefix; the text form shows the same facts.
    assert main(site.cli("show", "tests.test_cli.item(id=2)", "--body", "5")) == 0
    text = capsys.readouterr().out
    assert "status: 200" in text and "content-type: application/json" in text
    assert '{"id"... (' in text and "redis ttl:" in text


def test_show_and_stats_read_a_compressed_entry(
    site: Site, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry stored LZ4-compressed (`compress_over`) is an entry to every command."""
    import asyncio

    from oxcache._core import encode_entry

    site.fill()
    body = json.dumps([{"id": i, "name": f"item {i}"} for i in range(200)]).encode()
    now = time.time_ns() // 1_000_000
    data = encode_entry(200, [(b"content-type", b"application/json")], body, now, now + 60_000)
    key = site.key("item(id=99)")

    async def write() -> None:
        writer = Cache(site.url, prefix=site.prefix, compress_over=0)
        assert await writer.write(key, data, 60_000)
        await writer.close()

    asyncio.run(write())
    assert redis_client.get(key)[:4] == b"OXZ\x01"  # stored in the compressed form
    entry = run_json(capsys, site.cli("show", key, "--json", "--body", str(len(body))))
    assert entry["status"] == 200 and entry["body"] == body.decode()
    assert entry["body_bytes"] == len(body)
    result = run_json(capsys, site.cli("stats", "--json"))
    assert result["entries"] == 5 and result["unreadable"] == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"garbage", "not an oxcache entry"),
        (b"OXC\x09" + bytes(60), "envelope version 9"),
    ],
)
def test_show_reports_a_foreign_or_corrupt_value_in_one_line(
    site: Site,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    value: bytes,
    message: str,
) -> None:
    redis_client.set(site.key("item(id=7)"), value)
    assert main(site.cli("show", site.key("item(id=7)"))) == 1
    err = capsys.readouterr().err
    assert message in err and "reads it as a miss" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_show_explains_an_index_and_a_missing_key(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    assert main(site.cli("show", f"{site.prefix}:@tag:items")) == 1
    assert "oxcache tag index" in capsys.readouterr().err
    assert main(site.cli("show", "tests.test_cli.item(id=404)")) == 1
    assert "no such key" in capsys.readouterr().err


def test_purge_by_user_dry_run_then_for_real(
    site: Site, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    (mine,) = run_json(capsys, site.cli("keys", "--user", "a", "--json"))
    assert main(site.cli("purge", "--user", "a", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert mine in out and "would delete 1 entry and 1 index key" in out
    assert redis_client.exists(mine) == 1

    assert main(site.cli("purge", "--user", "a")) == 0
    assert "deleted 1 entry and 1 index key" in capsys.readouterr().out
    assert redis_client.exists(mine) == 0
    assert redis_client.exists(f"{site.prefix}:@user:a") == 0
    assert site.client.get("/me", headers={"x-user": "a"}).headers["x-fastapi-cache"] == "Miss"
    assert site.client.get("/me", headers={"x-user": "b"}).headers["x-fastapi-cache"] == "Hit"


def test_purge_by_tag_and_by_key(
    site: Site, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    assert main(site.cli("purge", "--tag", "item:1")) == 0
    assert "deleted 1 entry and 1 index key" in capsys.readouterr().out
    assert redis_client.exists(site.key("item(id=1)"), site.key("item(id=2)")) == 1
    assert main(site.cli("purge", "--key", "tests.test_cli.item(id=2)", "--key", "nope")) == 0
    assert "deleted 1 entry\n" in capsys.readouterr().out
    assert site.client.get("/items/2").headers["x-fastapi-cache"] == "Miss"
    assert main(site.cli("purge", "--tag", "items")) == 0
    assert "deleted 1 entry and 1 index key" in capsys.readouterr().out  # item 2, again


def test_purge_all_deletes_only_under_the_prefix(
    site: Site, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    other = f"other-{uuid.uuid4().hex[:8]}:keep"
    redis_client.set(other, b"1")
    try:
        assert main(site.cli("purge", "--all", "--dry-run")) == 0
        # 6 indexes and their 6 generation keys
        assert "would delete 4 entries and 12 index keys" in capsys.readouterr().out
        assert main(site.cli("purge", "--all")) == 0
        assert "deleted 4 entries and 12 index keys" in capsys.readouterr().out
        assert list(redis_client.scan_iter(match=f"{site.prefix}:*")) == []
        assert redis_client.exists(other) == 1
    finally:
        redis_client.unlink(other)


def test_purge_refuses_unclear_requests(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(site.cli("purge")) == 2
    assert "needs --key, --endpoint, --user, --tag or --all" in capsys.readouterr().err
    assert main(site.cli("purge", "--all", prefix=False)) == 2
    assert "every key of the database" in capsys.readouterr().err
    assert main(site.cli("purge", "--all", "--tag", "x")) == 2
    capsys.readouterr()


def test_a_wrong_url_is_one_line_and_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:1/0", "stats"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oxcache: error: invalid Redis URL") and err.count("\n") == 1


def test_an_unreachable_server_is_one_line_with_the_password_hidden(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    assert main(["--url", url, "--timeout", "2", "keys"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("oxcache: error: cannot reach Redis at redis://***@127.0.0.1:")
    assert "hunter2" not in err and err.count("\n") == 1


def run_module(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oxcache", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_dash_m_oxcache_reads_redis_url_from_the_environment(site: Site) -> None:
    site.fill()
    result = run_module(
        ["--prefix", site.prefix, "keys", "--tag", "items"], {"REDIS_URL": site.url}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [site.key("item(id=1)"), site.key("item(id=2)")]

    down = run_module(["stats"], {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "cannot reach Redis" in down.stderr


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import oxcache

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"oxcache {oxcache.__version__}"
    assert oxcache.__version__[0].isdigit()


@pytest.fixture(scope="module")
def password_redis() -> Iterator[int]:
    """A redis-server that requires the password `s3cret`, on a loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--requirepass", "s3cret"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password="s3cret", socket_timeout=0.5).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_wrong_password_is_one_line_without_the_password(
    password_redis: int, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = f"redis://:hunter2@127.0.0.1:{password_redis}/0"
    assert main(["--url", wrong, "stats"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"oxcache: error: Redis at redis://***@127.0.0.1:{password_redis}/0")
    assert "refused the credentials" in err
    assert "hunter2" not in err and err.count("\n") == 1
    assert main(["--url", wrong.replace("hunter2", "s3cret"), "keys"]) == 0
    assert capsys.readouterr().out == ""


def test_a_failing_command_is_one_line_naming_the_redis_error(
    password_redis: int, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = redis.Redis(port=password_redis, password="s3cret")
    # A user who may connect and look, but not SCAN nor delete.
    admin.acl_setuser("looker", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+ping", "+info", "+type", "+get", "+pttl"])  # fmt: skip
    admin.set("p:mod.f(x=1)", b"garbage")
    url = f"redis://looker:pw@127.0.0.1:{password_redis}/0"
    try:
        assert main(["--url", url, "--prefix", "p", "keys"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("oxcache: error: Redis at redis://looker:***@127.0.0.1:")
        assert "failed: NoPermissionError: " in err and "'scan'" in err
        assert "pw@" not in err and err.count("\n") == 1
        admin.execute_command("ACL", "SETUSER", "looker", "+scan")
        assert main(["--url", url, "--prefix", "p", "purge", "--all"]) == 1
        err = capsys.readouterr().err
        assert "failed: NoPermissionError: " in err and "'unlink'" in err
        assert err.count("\n") == 1
        assert admin.exists("p:mod.f(x=1)") == 1
    finally:
        admin.acl_deluser("looker")
        admin.delete("p:mod.f(x=1)")
        admin.close()


# -- real deployments: a Redis Cluster, a Sentinel service, a database shared with others --


def test_prefix_of_tells_entries_indexes_and_other_programs_keys_apart() -> None:
    from oxcache.inspector import prefix_of

    assert prefix_of("myapi-cache:api.get_user(id=1)") == "myapi-cache"
    assert prefix_of("myapi-cache:@variants:api.get_user(id=1)") == "myapi-cache"
    assert prefix_of("a:b:@tag:item:1") == "a:b"
    assert prefix_of("api.get_user(id=1)") == ""
    assert prefix_of('api.f(url="http://x:1/(y)")') == ""
    assert prefix_of("@user:42") == ""
    assert prefix_of('p:mod.f(a=1,@user="x")') == "p"
    for foreign in ("session:user42", "celery-task-meta-1", "myhash", "q", "x:(y)"):
        assert prefix_of(foreign) is None


def fill_more(site: Site, ids: range) -> list[str]:
    for id in ids:
        assert site.client.get(f"/items/{id}").status_code == 200
    return [site.key(f"item(id={id})") for id in ids]


@pytest.fixture
def cluster_site(cluster_url: str) -> Iterator[Site]:
    with Site(cluster_url) as made:
        yield made
    client = sync_client(cluster_url)
    for key in client.scan_iter(match=f"{made.prefix}:*"):
        client.unlink(key)
    client.close()


def test_cluster_url_reads_and_purges_every_primary(
    cluster_site: Site, cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site = cluster_site
    site.fill()
    items = [site.key("item(id=1)"), site.key("item(id=2)"), *fill_more(site, range(3, 13))]
    raw = sync_client(cluster_url)
    assert isinstance(raw, redis.RedisCluster)
    assert len({raw.get_node_from_key(key).name for key in items}) >= 2  # spread over nodes
    result = run_json(capsys, site.cli("stats", "--json"))
    assert result["entries"] == 14 and result["unreadable"] == 0
    assert result["tags"]["items"] == 12
    assert sorted(run_json(capsys, site.cli("keys", "--tag", "items", "--json"))) == sorted(items)
    assert len(run_json(capsys, site.cli("keys", "--endpoint", "item", "--json"))) == 12
    assert run_json(capsys, site.cli("show", items[5], "--json"))["status"] == 200
    assert main(site.cli("stats")) == 0
    assert "entries: 14" in capsys.readouterr().out

    assert main(site.cli("purge", "--endpoint", "item", "--dry-run")) == 0
    assert "would delete 12 entries\n" in capsys.readouterr().out
    assert main(site.cli("purge", "--endpoint", "item")) == 0
    assert "deleted 12 entries\n" in capsys.readouterr().out
    assert sum(raw.exists(key) for key in items) == 0
    foreign = f"foreign-{uuid.uuid4().hex[:6]}"
    raw.set(foreign, b"keep")
    try:
        assert main(site.cli("purge", "--all", "--dry-run")) == 0
        planned = capsys.readouterr().out.splitlines()[-1]
        assert planned.startswith("dry run: would delete 2 entries and ")
        assert main(site.cli("purge", "--all")) == 0
        assert capsys.readouterr().out.strip() == "deleted" + planned.split("would delete")[1]
        assert list(raw.scan_iter(match=f"{site.prefix}:*")) == []
        assert raw.get(foreign) == b"keep"
    finally:
        raw.delete(foreign)
        raw.close()


def test_a_plain_url_of_one_cluster_node_reads_the_whole_cluster_and_says_so(
    cluster_site: Site, cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site = cluster_site
    site.fill()
    fill_more(site, range(3, 13))
    node = "redis://" + cluster_url.split("://", 1)[1]  # one node, as redis-cli would name it
    argv = ["--url", node, "--prefix", site.prefix]
    assert main([*argv, "stats", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["entries"] == 14  # not one node's share
    assert "is a node of a Redis Cluster: reading every primary" in captured.err
    assert main([*argv, "keys", "--tag", "items"]) == 0  # no MovedError
    assert len(capsys.readouterr().out.split()) == 12
    assert main([*argv, "purge", "--all", "--dry-run"]) == 0
    assert "would delete 14 entries and " in capsys.readouterr().out  # not one node's share


def test_sentinel_url_reads_the_masters_cache(
    sentinel_setup: Any,  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, _, sentinel = sentinel_setup
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
    with Site(url) as site:
        site.fill()
        result = run_json(capsys, site.cli("stats", "--json"))
        assert result["entries"] == 4 and result["users"] == {"a": 1, "b": 1}
        (mine,) = run_json(capsys, site.cli("keys", "--user", "a", "--json"))
        assert main(site.cli("purge", "--user", "a")) == 0
        assert "deleted 1 entry and 1 index key" in capsys.readouterr().out
        assert run_json(capsys, site.cli("keys", "--user", "a", "--json")) == []
        assert main(site.cli("purge", "--all")) == 0
        capsys.readouterr()
    assert mine.startswith(site.key("me("))


def test_without_prefix_another_prefixs_cache_is_named_not_misread(
    own_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, its index keys were counted as unreadable values, its endpoints as
    `prefix:module.function` and its index keys listed as entries."""
    with Site(own_redis.url) as site:
        site.fill()
    raw = redis.Redis.from_url(own_redis.url)
    raw.set("session:user42", b"{}")
    raw.set("celery-task-meta-1", b"{}")
    raw.close()
    argv = ["--url", own_redis.url]
    assert main([*argv, "stats", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["entries"] == 0 and result["unreadable"] == 0 and result["endpoints"] == {}
    # 6 indexes and their 6 generation keys
    assert result["other_prefixes"] == {site.prefix: {"entries": 4, "indexes": 12}}
    assert result["foreign"] == 2
    assert f"Pass --prefix {site.prefix} to read that cache" in captured.err
    assert main([*argv, "stats"]) == 0
    text = capsys.readouterr().out
    assert f"'{site.prefix}': 4 entries, 12 index keys" in text
    assert "other programs' keys (not oxcache's): 2" in text
    for command in (["keys"], ["keys", "--endpoint", "me"]):
        assert main([*argv, *command]) == 0
        captured = capsys.readouterr()
        assert captured.out == ""  # neither index keys nor other programs' keys
        assert f"--prefix {site.prefix}" in captured.err


def test_purge_endpoint_deletes_its_entries_and_variants_indexes_as_planned(
    site: Site, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    me = run_json(capsys, site.cli("keys", "--endpoint", "me", "--json"))
    assert len(me) == 2
    assert main(site.cli("purge", "--endpoint", "me", "--dry-run")) == 0
    listed = capsys.readouterr().out.splitlines()
    variants = f"{site.prefix}:@variants:tests.test_cli.me()"
    assert listed == [*me, variants, "dry run: would delete 2 entries and 1 index key"]
    assert main(site.cli("purge", "--endpoint", "tests.test_cli.me")) == 0
    assert capsys.readouterr().out == "deleted 2 entries and 1 index key\n"
    assert redis_client.exists(*me, variants) == 0
    assert redis_client.exists(site.key("item(id=1)")) == 1  # another endpoint's


def test_a_dry_run_refuses_what_the_purge_refuses(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.fill()
    assert main(site.cli("purge", "--all", "--dry-run", prefix=False)) == 2
    assert "every key of the database" in capsys.readouterr().err
    assert main(site.cli("purge", "--user", "a", "--dry-run")) == 0
    planned = capsys.readouterr().out.splitlines()[-1]
    assert main(site.cli("purge", "--user", "a")) == 0
    assert capsys.readouterr().out.strip() == "deleted" + planned.split("would delete")[1]


def test_a_timeout_that_is_not_positive_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--timeout", "0", "stats"]) == 2
    assert "--timeout must be a positive number" in capsys.readouterr().err
