"""MkDocs hook: `{! path !}` on a line of its own is replaced by that file (relative to the
repository root), so pages can show files that live outside docs/ (benches/RESULTS.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_INCLUDE = re.compile(r"^\{!\s*(?P<path>[^!]+?)\s*!\}\s*$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root = Path(config["config_file_path"]).parent

    def include(match: re.Match[str]) -> str:
        text = (root / match.group("path")).read_text(encoding="utf-8")
        # The included file's own title would be a second <h1> on the page.
        return re.sub(r"\A# .*\n", "", text)

    return _INCLUDE.sub(include, markdown)
