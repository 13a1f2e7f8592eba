"""Checks built distributions before anyone installs them: `python scripts/check_dist.py
dist/*.whl dist/*.tar.gz`. Exits 1 naming every problem found.

A wheel must be named `fastapi_oxcache`, tagged `cp310-abi3` and for manylinux2014 (glibc 2.17)
or older, both in its file name and in its WHEEL file, and its extension must need no glibc
symbol newer than 2.17 (so it installs on any Linux with glibc 2.17 or newer: RHEL 7, Ubuntu
20.04, Debian 11 and later). Wheels and sdists must carry the LICENSE file and metadata that
pins nothing and names no peer library (the benchmarks' pins live in benches/requirements.txt,
never in the package metadata).
"""

from __future__ import annotations

import email
import email.message
import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST_NAME = "fastapi-oxcache"
FILE_NAME = "fastapi_oxcache"  # the distribution name as wheel and sdist file names spell it
MAX_GLIBC = (2, 17)  # manylinux2014
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
PEERS = {"fastapi-redis-cache", "fastapi-cache2", "cashews", "fastapi-cachex", "aiocache"}
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
SDIST_FILES = (
    "LICENSE",
    "README.md",
    "pyproject.toml",
    "Cargo.toml",
    "Cargo.lock",
    "rust/lib.rs",
    "python/oxcache/__init__.py",
    "python/oxcache/_core.pyi",
    "python/oxcache/py.typed",
)
WHEEL_FILES = ("oxcache/__init__.py", "oxcache/_core.pyi", "oxcache/py.typed")


def platform_glibc(tag: str) -> tuple[int, int] | None:
    """The glibc a manylinux platform tag requires; None for a tag that is not manylinux."""
    arch_free = re.sub(r"_(x86_64|i686|aarch64|armv7l|ppc64le|ppc64|s390x|riscv64)$", "", tag)
    if arch_free in LEGACY_MANYLINUX:
        return LEGACY_MANYLINUX[arch_free]
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)", arch_free)
    return (int(match[1]), int(match[2])) if match else None


def check_platform_tags(tags: list[str]) -> list[str]:
    """Problems with a wheel's platform tags: each must be manylinux2014 or older."""
    problems = []
    for tag in tags:
        glibc = platform_glibc(tag)
        if glibc is None:
            problems.append(f"platform tag {tag} is not a manylinux tag")
        elif glibc > MAX_GLIBC:
            problems.append(
                f"platform tag {tag} needs glibc {glibc[0]}.{glibc[1]}, newer than manylinux2014 "
                f"(glibc {MAX_GLIBC[0]}.{MAX_GLIBC[1]}): build with `make wheel`"
            )
    return problems


def glibc_versions_needed(binary: bytes) -> set[tuple[int, int]]:
    """The GLIBC_x.y symbol versions an ELF shared object names (in its .dynstr)."""
    return {(int(a), int(b)) for a, b in re.findall(rb"GLIBC_(\d+)\.(\d+)", binary)}


def check_metadata(text: str, where: str) -> list[str]:
    """Problems with core metadata (a wheel's METADATA or an sdist's PKG-INFO)."""
    meta: email.message.Message = email.message_from_string(text)
    problems = []
    if meta["Name"] != DIST_NAME:
        problems.append(f"{where}: Name is {meta['Name']!r}, not {DIST_NAME!r}")
    if meta["License-Expression"] != "MIT":
        problems.append(f"{where}: License-Expression is {meta['License-Expression']!r}, not MIT")
    if "LICENSE" not in (meta.get_all("License-File") or []):
        problems.append(f"{where}: no License-File: LICENSE")
    classifiers = set(meta.get_all("Classifier") or [])
    for version in SUPPORTED_PYTHONS:
        if f"Programming Language :: Python :: {version}" not in classifiers:
            problems.append(f"{where}: no classifier for Python {version}")
    for requirement in meta.get_all("Requires-Dist") or []:
        name = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        if name in PEERS:
            problems.append(f"{where}: Requires-Dist names a peer library: {requirement}")
        elif re.search(r"(?<![<>!~=])===?", requirement.split(";", 1)[0]):
            problems.append(f"{where}: Requires-Dist pins an exact version: {requirement}")
    return problems


def check_wheel(path: Path) -> list[str]:
    problems = []
    match = re.fullmatch(
        r"(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl",
        path.name,
    )
    if match is None:
        return [f"{path.name}: not a wheel file name"]
    if match["name"] != FILE_NAME:
        problems.append(f"{path.name}: named {match['name']!r}, not {FILE_NAME!r}")
    if (match["py"], match["abi"]) != ("cp310", "abi3"):
        problems.append(f"{path.name}: tagged {match['py']}-{match['abi']}, not cp310-abi3")
    platforms = match["plat"].split(".")
    problems += [f"{path.name}: {p}" for p in check_platform_tags(platforms)]
    dist_info = f"{match['name']}-{match['version']}.dist-info"
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        expected_tags = {
            f"{py}-{abi}-{plat}"
            for py in match["py"].split(".")
            for abi in match["abi"].split(".")
            for plat in platforms
        }
        wheel_file = email.message_from_string(wheel.read(f"{dist_info}/WHEEL").decode())
        if set(wheel_file.get_all("Tag") or []) != expected_tags:
            problems.append(
                f"{path.name}: WHEEL tags {sorted(wheel_file.get_all('Tag') or [])} "
                f"differ from the file name's {sorted(expected_tags)}"
            )
        for name in sorted(n for n in names if n.endswith(".so")):
            needed = glibc_versions_needed(wheel.read(name))
            too_new = sorted(v for v in needed if v > MAX_GLIBC)
            if too_new:
                problems.append(
                    f"{path.name}: {name} needs glibc symbols "
                    f"{', '.join(f'GLIBC_{a}.{b}' for a, b in too_new)}, newer than 2.17"
                )
        if not any(n.endswith(".so") for n in names):
            problems.append(f"{path.name}: no compiled extension")
        for name in WHEEL_FILES:
            if name not in names:
                problems.append(f"{path.name}: {name} is missing")
        license_name = f"{dist_info}/licenses/LICENSE"
        if license_name not in names:
            problems.append(f"{path.name}: {license_name} is missing")
        elif wheel.read(license_name) != (ROOT / "LICENSE").read_bytes():
            problems.append(f"{path.name}: {license_name} differs from LICENSE")
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        if not re.search(r"^oxcache\s*=\s*oxcache\.cli:main$", entry_points, re.M):
            problems.append(f"{path.name}: no `oxcache` command in entry_points.txt")
        problems += check_metadata(wheel.read(f"{dist_info}/METADATA").decode(), path.name)
    return problems


def check_sdist(path: Path) -> list[str]:
    match = re.fullmatch(r"(?P<name>[^-]+)-(?P<version>[^-]+)\.tar\.gz", path.name)
    if match is None:
        return [f"{path.name}: not an sdist file name"]
    problems = []
    if match["name"] != FILE_NAME:
        problems.append(f"{path.name}: named {match['name']!r}, not {FILE_NAME!r}")
    top = f"{match['name']}-{match['version']}"
    with tarfile.open(path) as sdist:
        names = set(sdist.getnames())
        for name in SDIST_FILES:
            if f"{top}/{name}" not in names:
                problems.append(f"{path.name}: {name} is missing")
        license_file = sdist.extractfile(f"{top}/LICENSE") if f"{top}/LICENSE" in names else None
        if license_file is not None and license_file.read() != (ROOT / "LICENSE").read_bytes():
            problems.append(f"{path.name}: LICENSE differs from the repository's")
        pkg_info = sdist.extractfile(f"{top}/PKG-INFO")
        if pkg_info is None:
            problems.append(f"{path.name}: no PKG-INFO")
        else:
            problems += check_metadata(pkg_info.read().decode(), path.name)
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: check_dist.py DIST_FILE...", file=sys.stderr)
        return 2
    problems = []
    for arg in argv:
        path = Path(arg)
        if not path.is_file():
            problems.append(f"{arg}: no such file")
        elif path.name.endswith(".whl"):
            problems += check_wheel(path)
        elif path.name.endswith(".tar.gz"):
            problems += check_sdist(path)
        else:
            problems.append(f"{arg}: neither a wheel nor an sdist")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"dist ok: {', '.join(Path(a).name for a in argv)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
