"""The quick start page's code and the response it shows, checked against the real thing."""

from __future__ import annotations

import re
import types
from pathlib import Path

from fastapi.testclient import TestClient

PAGE = (Path(__file__).resolve().parent.parent / "docs" / "quickstart.md").read_text()


def test_quickstart_app_answers_as_the_page_shows() -> None:
    code = next(b for b in re.findall(r"```python\n(.*?)```", PAGE, re.S) if "# app.py" in b)
    shown = re.search(r"```\nHTTP/1.1 200 OK\n(.*?)\n\n(.*?)\n```", PAGE, re.S)
    assert shown is not None
    headers = dict(line.split(": ", 1) for line in shown.group(1).splitlines())
    module = types.ModuleType("app")  # the page runs it as app.py: keys name module "app"
    exec(compile(code, "docs/quickstart.md", "exec"), module.__dict__)

    with TestClient(module.app) as client:
        miss = client.get("/items/1")
        hit = client.get("/items/1")
        not_modified = client.get("/items/1", headers={"If-None-Match": hit.headers["etag"]})
    assert miss.text == shown.group(2)
    for name, value in headers.items():
        if name != "expires":  # a date: only its presence can match
            assert miss.headers[name] == value, name
    assert "expires" in miss.headers
    assert hit.headers["x-fastapi-cache"] == "Hit" and "age" in hit.headers
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert module.store.key_for(module.item, id=1) == "app.item(id=1)"  # as `oxcache show` uses
