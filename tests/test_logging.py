"""oxcache's warnings reach the console under a real `uvicorn app:app`, with uvicorn's default
logging and with an application's own logging configuration, each line exactly once."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from oxcache.logs import ConsoleFallback, install
from tests.conftest import free_port

#: An app whose startup logs three warnings: Redis unreachable (nothing listens on the
#: port), an endpoint whose `@cache` sits above the route decorator, `@cache` on a POST.
APP = """
from fastapi import FastAPI
from oxcache import Cache, cache

store = Cache(url="redis://127.0.0.1:{dead}/0")
app = FastAPI(lifespan=store.lifespan)


@cache(expire=60, store=store)
@app.get("/items/{{id}}")
async def item(id: int) -> dict:
    return {{"id": id}}


@app.post("/search")
@cache(expire=60, store=store)
async def search(q: str) -> dict:
    return {{"q": q}}
"""

DICT_CONFIG = """
import logging.config

logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"app": {"format": "APPLOG %(levelname)s [%(name)s] %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "app",
                         "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["err"], "level": "INFO"},
})
"""


def serve(tmp_path: Path, prelude: str = "", *options: str) -> list[str]:
    """Start `uvicorn app:app` on the app above (after `prelude`), wait for its startup to
    complete, stop it, and return the lines it printed (stdout and stderr)."""
    (tmp_path / "app.py").write_text(prelude + APP.format(dead=free_port()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(free_port()), *options],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "Application startup complete" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(60), "uvicorn did not start:\n" + "\n".join(lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=30)
    return lines


def containing(lines: list[str], text: str) -> list[str]:
    return [line for line in lines if text in line]


def test_warnings_reach_the_console_under_uvicorns_default_logging(tmp_path: Path) -> None:
    lines = serve(tmp_path)
    fail = containing(lines, "CONNECT_FAIL")
    assert len(fail) == 1, lines
    assert fail[0].startswith("WARNING:oxcache:CONNECT_FAIL: Redis at redis://127.0.0.1:")
    order = containing(lines, "above the route decorator")
    assert len(order) == 1, lines
    assert order[0].startswith("WARNING:oxcache:app.item is never cached")
    post = containing(lines, "only GET and HEAD")
    assert len(post) == 1, lines
    assert post[0].startswith("WARNING:oxcache:app.search is never cached: its route takes POST")
    # Warnings only: the INFO events stay quiet unless asked for.
    assert containing(lines, "CONNECT_BEGIN") == []


def test_an_apps_dict_config_prints_each_warning_once_in_its_format(tmp_path: Path) -> None:
    lines = serve(tmp_path, DICT_CONFIG)
    fail = containing(lines, "CONNECT_FAIL")
    assert len(fail) == 1, lines
    assert fail[0].startswith("APPLOG WARNING [oxcache] CONNECT_FAIL")
    assert len(containing(lines, "is never cached")) == 2, lines
    # The app asked for INFO on the root logger: oxcache's INFO events follow it, once.
    assert len(containing(lines, "CONNECT_BEGIN")) == 1, lines


def test_basic_config_prints_each_warning_once(tmp_path: Path) -> None:
    lines = serve(tmp_path, "import logging\nlogging.basicConfig(level=logging.INFO)\n")
    assert len(containing(lines, "CONNECT_FAIL")) == 1, lines
    assert len(containing(lines, "CONNECT_BEGIN")) == 1, lines
    assert len(containing(lines, "is never cached")) == 2, lines


def test_uvicorn_log_config_naming_the_oxcache_logger_prints_each_line_once(
    tmp_path: Path,
) -> None:
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config["loggers"]["oxcache"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    (tmp_path / "log.json").write_text(json.dumps(config))
    lines = serve(tmp_path, "", "--log-config", "log.json")
    fail = containing(lines, "CONNECT_FAIL")
    assert len(fail) == 1, lines
    assert fail[0].startswith("WARNING:  CONNECT_FAIL")  # uvicorn's own format
    assert len(containing(lines, "CONNECT_BEGIN")) == 1, lines
    assert len(containing(lines, "is never cached")) == 2, lines


def test_setting_the_oxcache_level_to_info_shows_every_event_without_a_handler(
    tmp_path: Path,
) -> None:
    prelude = 'import logging\nlogging.getLogger("oxcache").setLevel(logging.INFO)\n'
    lines = serve(tmp_path, prelude)
    assert containing(lines, "CONNECT_BEGIN")[0].startswith("INFO:oxcache:CONNECT_BEGIN")
    assert len(containing(lines, "CONNECT_FAIL")) == 1, lines


def test_the_fallback_is_silent_once_any_handler_would_print(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In process, without pytest's handlers: the fallback prints only while nothing else
    would, and installing it twice adds one handler."""
    logger = logging.getLogger("oxcache")
    root = logging.getLogger()
    assert install() is install()
    assert sum(isinstance(h, ConsoleFallback) for h in logger.handlers) == 1
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        logger.warning("alone %d", 1)
        assert capsys.readouterr().err == "WARNING:oxcache:alone 1\n"
        mine = logging.StreamHandler(sys.stdout)
        root.addHandler(mine)
        logger.warning("configured")
        out = capsys.readouterr()
        assert out.err == ""
        assert out.out == "configured\n"
        root.removeHandler(mine)
        logger.propagate = False  # an app that cut oxcache off from the root: still heard
        logger.warning("cut off")
        assert capsys.readouterr().err == "WARNING:oxcache:cut off\n"
    finally:
        logger.propagate = True
        root.handlers[:] = saved
