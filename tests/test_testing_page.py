"""docs/testing.md: its app and its tests, run as the page shows them (pytest in a
subprocess, in memory), pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PAGE = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text()


def block(first_line: str) -> str:
    return next(
        b for b in re.findall(r"```python\n(.*?)```", PAGE, re.S) if b.startswith(first_line)
    )


def test_the_testing_pages_tests_pass_on_its_app(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(block("# app.py"))
    (tmp_path / "test_app.py").write_text(block("# test_app.py"))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
