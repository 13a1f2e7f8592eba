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
    shown_key = re.search(r"show '(.*?)'", PAGE)
    assert shown_key is not None  # the key the page shows is GET /items/1's, as served
    assert module.store.key_for(module.item, "http://127.0.0.1:8000", id=1) == shown_key.group(1)
    assert module.store.key_for(module.item, id=1) == "app.item(id=1)"  # the base key


def test_the_architecture_map_names_what_exists() -> None:
    """docs/architecture.md sends a reader into the code: every `oxcache.module.name` it
    cites resolves, and every module and test file it names is there."""
    import importlib

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "architecture.md").read_text()
    cited = set(re.findall(r"`(oxcache(?:\.\w+)+)`", page))
    assert cited, "the map cites no code"
    for dotted in sorted(cited):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                assert hasattr(found, attr), dotted
                found = getattr(found, attr)
            break
    for module in set(re.findall(r"\b([a-z_]+\.py)\b", page)) - {"include.py"}:
        found_files = list((root / "python" / "oxcache").rglob(module)) + list(
            (root / "tests").rglob(module)  # tests/conformance/ too
        )
        assert found_files, f"{module} is named in docs/architecture.md but does not exist"
    for test_file in set(re.findall(r"`(tests/[\w/]+\.py)`", page)):
        assert (root / test_file).exists(), test_file
