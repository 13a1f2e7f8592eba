"""The quick start page's code and the response it shows, checked against the real thing."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import RedisServer

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


def section(title: str) -> str:
    start = PAGE.index(f"## {title}\n")
    end = PAGE.find("\n## ", start + 1)
    return PAGE[start : end if end != -1 else len(PAGE)]


def test_quickstart_installs_the_distribution_and_a_server() -> None:
    """`uvicorn app:app` must work after the page's own install line: the line installs the
    published distribution name and uvicorn."""
    install = section("Install")
    first = re.search(r"```bash\n(.*?)```", install, re.S)
    assert first is not None
    words = first.group(1).split()
    assert words[:3] == ["pip", "install", "fastapi-oxcache"], words
    assert any(w.strip("\"'").startswith("uvicorn") for w in words), words
    # The checkout variant installs a server too.
    assert re.search(r"pip install \. \"uvicorn\[standard\]\"", install)
    assert "uvicorn app:app" in PAGE


def cli_lines() -> list[list[str]]:
    block = re.search(r"```bash\n(.*?)```", section("Look inside the cache"), re.S)
    assert block is not None
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("oxcache ")]


def test_quickstart_cli_lines_read_the_quickstart_app_on_redis(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """The "Look inside" section, run as the page says: app.py switched to its Redis line,
    one request to uvicorn's address, then each `oxcache` line as a command, every one naming
    the Redis it reads.
    In fresh processes, as a user has them (and keys name the module `app` only once)."""
    lines = cli_lines()
    assert len(lines) >= 3 and all(line[1] == "--url" for line in lines), lines
    assert "Redis" in section("Look inside the cache")
    code = next(b for b in re.findall(r"```python\n(.*?)```", PAGE, re.S) if "# app.py" in b)
    memory_line = next(line for line in code.splitlines() if line.startswith("store = Cache()"))
    redis_line = next(line for line in code.splitlines() if "store = Cache(url=" in line)
    page_url = re.search(r'url="([^"]+)"', redis_line)
    assert page_url is not None
    # The page's app with its Redis line in place of the memory one, on this test's Redis.
    redis_code = redis_line.lstrip("# ").replace(page_url[1], own_redis.url)
    (tmp_path / "app.py").write_text(code.replace(memory_line, redis_code))
    request = (
        "from fastapi.testclient import TestClient\nimport app\n"
        "with TestClient(app.app, base_url='http://127.0.0.1:8000') as client:\n"
        "    print(client.get('/items/1').headers['x-fastapi-cache'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTHONPATH")}
    served = subprocess.run(
        [sys.executable, "-c", request], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert served.stdout.split() == ["Miss"], served.stderr

    outputs = []
    for line in lines:
        assert line[2] == page_url[1], line
        command = [sys.executable, "-m", "oxcache", "--url", own_redis.url, *line[3:]]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, (line, result.stderr)
        outputs.append(result.stdout)
    stats, keys, show = outputs[:3]
    assert re.search(r"entries: 1\b", stats), stats
    assert keys.split() == [lines[2][-1]], keys  # the one key is the one `show` names
    assert '{"id":1}' in show, show


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
