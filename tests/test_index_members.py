"""How indexes list their entries (backends/base.py `index_member`): a variants index lists
each entry by the request's parts its key adds to the base key, so that Redis keeps a small
index as a listpack instead of a skiplist (about 170 bytes rather than 1,000 per entry of a
`per_host` store), and an invalidation still finds and deletes every variant. On one Redis
and on Redis Cluster."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from oxcache import Cache, cache
from oxcache.backends.base import index_member, listed_key, member_key
from tests.conftest import sync_client

# Key text: no control characters (keys never hold one).
text = st.text(st.characters(min_codepoint=32, blacklist_categories=("Cs",)), max_size=40)


@given(prefix=text, base=text, parts=text)
def test_a_variant_is_listed_by_its_parts_and_read_back_as_its_key(
    prefix: str, base: str, parts: str
) -> None:
    index = f"{prefix}@variants:{base})"
    key = f"{prefix}{base}{parts})"
    member = index_member(index, key)
    assert member_key(index, member) == key
    assert listed_key(index, member.encode()) == key.encode()
    if index.count("@variants:") == 1:
        assert member == "\x01" + parts + ")"


@given(index=text, key=text)
def test_any_other_member_is_the_key_itself(index: str, key: str) -> None:
    member = index_member(index, key)
    assert member_key(index, member) == key
    if "@variants:" not in index:
        assert member == key


def test_members_that_are_not_ours_are_read_as_they_are() -> None:
    index = "p:@variants:m.f(id=1)"
    assert listed_key(index, b"\xff\xfe not utf-8") == b"\xff\xfe not utf-8"
    assert listed_key(index, b'p:m.f(id=1,@user="a")') == b'p:m.f(id=1,@user="a")'
    assert listed_key(index, b'\x01,@user="a")') == b'p:m.f(id=1,@user="a")'


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"))


def test_a_variants_index_stays_small_and_its_invalidation_deletes_every_origin(
    url: str,
) -> None:
    prefix = "members-" + uuid.uuid4().hex[:8]
    store = Cache(url, prefix=prefix, timeout=2.0)
    runs: list[int] = []
    app = FastAPI()

    @app.get("/items/{id}")
    @cache(expire=60, store=store)
    async def item(id: int) -> dict[str, int]:
        runs.append(id)
        return {"id": id, "run": len(runs)}

    hosts = ["a.example", "b.example", "c.example.org:8080"]

    async def get_all(client: httpx.AsyncClient) -> list[str]:
        seen = []
        for host in hosts:
            response = await client.get("/items/1", headers={"host": host})
            assert response.status_code == 200
            seen.append(response.headers["x-fastapi-cache"])
        return seen

    async def scenario() -> dict[str, Any]:
        async with store:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                first = await get_all(client)
                second = await get_all(client)
                index = store.variants_index(store.key_for(item, id=1))
                sync = sync_client(url)
                try:
                    members = sync.zrange(index, 0, -1)
                    encoding = sync.object("encoding", index)
                    entries = [listed_key(index, m).decode() for m in members]
                    alive_before = sync.exists(*entries)
                    deleted = await store.invalidate(item, id=1)
                    alive_after = sync.exists(*entries)
                    index_after = sync.exists(index)
                finally:
                    sync.close()
                third = await get_all(client)
        return {
            "first": first,
            "second": second,
            "members": members,
            "encoding": encoding,
            "alive": (alive_before, alive_after, index_after),
            "deleted": deleted,
            "third": third,
        }

    found = anyio.run(scenario)
    assert found["first"] == ["Miss"] * 3 and found["second"] == ["Hit"] * 3
    assert len(found["members"]) == 3
    assert all(m.startswith(b"\x01") and len(m) <= 64 for m in found["members"])
    assert found["encoding"] in (b"listpack", b"ziplist")  # not a skiplist
    assert found["alive"] == (3, 0, 0)
    assert found["deleted"] >= 3
    assert found["third"] == ["Miss"] * 3
    assert len(runs) == 6
