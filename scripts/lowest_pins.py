"""Prints the lowest versions pyproject.toml admits, one `name==floor` requirement a line:
every runtime dependency, and with `--extra NAME` that extra's too. CI installs exactly these
next to the built wheel and runs the suite's core files, so a floor is only ever declared
after it was run. A dependency without a `>=` floor is an error: it would admit anything.

    python scripts/lowest_pins.py --extra test
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def pin(requirement: str) -> str:
    """`fastapi>=0.105.0` -> `fastapi==0.105.0`; an environment marker is kept."""
    spec, _, marker = requirement.partition(";")
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)\s*(.*?)\s*", spec)
    floor = re.search(r">=\s*([^,\s]+)", match[2]) if match else None
    if match is None or floor is None:
        raise ValueError(f"{requirement!r} declares no `>=` floor")
    pinned = f"{match[1]}=={floor[1]}"
    return f"{pinned}; {marker.strip()}" if marker.strip() else pinned


def lowest_pins(project: dict[str, object], extras: list[str]) -> list[str]:
    requirements = list(project["dependencies"])  # type: ignore[call-overload]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    for extra in extras:
        if extra not in optional:
            raise ValueError(f"no extra {extra!r} in pyproject.toml")
        requirements += optional[extra]
    return [pin(r) for r in requirements]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", default=[], help="an extra to pin too")
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    try:
        pins = lowest_pins(project, args.extra)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
