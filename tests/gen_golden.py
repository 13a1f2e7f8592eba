"""Regenerate tests/golden/*.json from tests/reference.py.

Files that do not exist yet are written; a file whose content would change is refused without
--force: only for a deliberate format change (bump the format version and note it in
CHANGELOG.md). The one input not from the reference is the LZ4 block of a compressed entry:
the format fixes how a block is read, not which valid block a writer picks, so the pinned
block is the one the Rust codec (lz4_flex) writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import reference
from tests.test_golden import GOLDEN, decode_value


def tv(t: str, v: object = None) -> dict[str, object]:
    return {"t": t, "v": v}


KEY_CASES = [
    ("myapi-cache", "api", "get_user", [("id", tv("int", "1"))]),
    # The request's parts, as the decorator appends them (KEY_FORMAT_VERSION 2).
    (
        "myapi",
        "app",
        "whoami",
        [("@query", tv("str", "page=2&q=a+b")), ("@origin", tv("str", "https://a.example.com"))],
    ),
    (
        "myapi",
        "app",
        "prefs",
        [
            ("@user", tv("str", "42")),
            ("@vary:accept-language", tv("str", "en")),
            ("@vary:x-tenant", tv("none")),
            ("@origin", tv("str", "http://127.0.0.1:8000/api")),
        ],
    ),
    (None, "api", "get_immutable_data", []),
    ("", "app", "q", [("x", tv("int", "1")), ("y", tv("none"))]),
    ("p", "m", "f", [("a", tv("str", "1,b=2")), ("b", tv("str", "3"))]),
    ("p", "m", "f", [("a", tv("str", "1")), ("b", tv("str", "2,b=3"))]),
    ("p", "m", "f", [("s", tv("str", 'quote" back\\ nl\n tab\t del\x7f é ☃ 😀'))]),
    ("p", "m", "f", [("n", tv("int", "-12345678901234567890123"))]),
    (
        "p",
        "m",
        "f",
        [("f", tv("float", "1.5")), ("g", tv("float", "1e+20")), ("h", tv("float", "-0.0"))],
    ),
    ("p", "m", "f", [("f", tv("float", "nan")), ("g", tv("float", "-inf"))]),
    ("p", "m", "f", [("b", tv("bool", True)), ("c", tv("bool", False))]),
    ("p", "m", "f", [("raw", tv("bytes", "00ff10"))]),
    ("p", "m", "f", [("u", tv("uuid", "12345678-1234-5678-1234-567812345678"))]),
    ("p", "m", "f", [("d", tv("date", "2024-01-02")), ("t", tv("time", "03:04:05.000006"))]),
    ("p", "m", "f", [("dt", tv("datetime", "2024-01-02T03:04:05.123456+00:00"))]),
    ("p", "m", "f", [("dt", tv("datetime", "2024-01-02T03:04:05"))]),
    ("p", "m", "f", [("x", tv("decimal", "1.10")), ("y", tv("decimal", "-1E+3"))]),
    ("p", "m", "f", [("e", tv("enum", "HEARTS"))]),
    ("p", "m", "f", [("l", tv("list", [tv("int", "1"), tv("str", "a"), tv("none")]))]),
    ("p", "m", "f", [("t", tv("tuple", [tv("int", "1")])), ("u", tv("tuple", []))]),
    ("p", "m", "f", [("s", tv("set", [tv("str", "b"), tv("str", "a"), tv("int", "3")]))]),
    ("p", "m", "f", [("s", tv("set", []))]),
    (
        "p",
        "m",
        "f",
        [("d", tv("dict", [[tv("str", "z"), tv("int", "1")], [tv("str", "a"), tv("list", [])]]))],
    ),
    ("p", "m", "f", [("long", tv("str", "x" * 300))]),
    (
        "p",
        "m",
        "f",
        [("tags", tv("list", [tv("str", c) for c in "abcde"])), ("id", tv("int", "7"))],
    ),
]

ETAG_CASES = [
    {"body_hex": ""},
    {"body_hex": b'{"a":1}'.hex()},
    {"body_hex": b"hello world".hex()},
    {"body_hex": bytes(range(256)).hex(), "repeat": 512},
]

INM_CASES = [
    ('"abc"', '"abc"'),
    ('W/"abc"', '"abc"'),
    ('"abc"', 'W/"abc"'),
    ("*", '"abc"'),
    (" * ", '"abc"'),
    ('"x", "abc"', '"abc"'),
    ('"x" ,\t W/"abc" ', '"abc"'),
    ('garbage, "abc"', '"abc"'),
    ('"a,b", "abc"', '"abc"'),
    ("", '"abc"'),
    ('"abcd"', '"abc"'),
    ("abc", '"abc"'),
    ('"abc', '"abc"'),
    ('"abc"x', '"abc"'),
    ('w/"abc"', '"abc"'),
    ("*x", '"abc"'),
    ('"ab c"', '"ab c"'),
    ("W/-5480454928453453778", "W/-5480454928453453778"),
]

CC_CASES = [
    "",
    "no-cache",
    "NO-STORE",
    "max-age=0",
    'max-age="60"',
    "max-age=60, max-age=30",
    "min-fresh=5, min-fresh=9",
    "max-stale",
    "max-stale=10, max-stale",
    "max-age=99999999999999999999",
    "max-age=abc",
    "max-age=-1",
    "max-age=",
    'x="a,no-store", only-if-cached',
    ",,=,",
    "private, public",
    'max-age="6"0',
    "No-Cache , Max-Age = 5",
]

RESPONSE_CC_CASES = [
    "",
    "no-store",
    "No-Cache",
    'no-cache="Set-Cookie"',
    "private",
    'private="x, y"',
    "public, max-age=60",
    "max-age=0",
    "max-age=abc",
    "max-age",
    "max-age=60, max-age=30",
    's-maxage="30", max-age=600',
    "s-maxage=-1",
    "must-revalidate, proxy-revalidate",
    "max-age=600, stale-while-revalidate=30, stale-if-error=86400",
    "stale-while-revalidate, stale-if-error=x",
    "max-age=99999999999999999999",
    'x="a,no-store", public',
]

RESPONSE_CC_FIELDS = (
    "no_store",
    "no_cache",
    "private",
    "public",
    "must_revalidate",
    "proxy_revalidate",
    "max_age",
    "s_maxage",
    "stale_while_revalidate",
    "stale_if_error",
)

ENTRY_CASES = [
    # status, headers, body, created_ms, expires_ms, generations (the stamp)
    (
        200,
        [(b"content-type", b"application/json")],
        b'{"a":1}',
        1_700_000_000_000,
        1_700_000_060_000,
        0,
    ),
    (
        201,
        [(b"content-type", b"text/plain; charset=utf-8"), (b"x-custom", b"yes")],
        b"hi",
        0,
        1,
        0x0123_4567_89AB_CDEF,
    ),
    (
        203,
        [(b"content-type", b"text/html; charset=utf-8"), (b"vary", b"accept")],
        b"",
        5,
        2**64 - 1,
        2**64 - 1,
    ),
    (200, [(b"content-type", b"application/octet-stream")], bytes(range(256)), 10, 20, 0),
]


SECRET_CASES = [
    tv("str", "hunter2"),
    tv("int", "12345"),
    tv("bytes", b"\x00\xffkey".hex()),
    tv("list", [tv("str", "a"), tv("str", "b")]),
    tv("dict", [[tv("str", "token"), tv("str", "abc")]]),
    tv("str", "s" * 300),
    tv("none"),
]

SECRET_BYTES_CASES = [b"", b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", b"session=1; theme=dark"]

STORED_CASES = [
    (
        200,
        [(b"content-type", b"application/json")],
        b"[" + b",".join(b'{"id":%d,"name":"item %d"}' % (i, i) for i in range(40)) + b"]",
        1_700_000_000_000,
        1_700_000_060_000,
    ),
    (200, [(b"content-type", b"text/plain; charset=utf-8")], b"too short to shrink", 5, 6),
]


def build() -> dict[str, object]:
    keys = []
    for prefix, module, name, args in KEY_CASES:
        values = [(arg, decode_value(value)) for arg, value in args]
        keys.append(
            {
                "prefix": prefix,
                "module": module,
                "name": name,
                "args": args,
                "key": reference.cache_key(prefix, module, name, values),
            }
        )
    etags = [
        {
            **case,
            "etag": reference.etag(bytes.fromhex(case["body_hex"]) * int(case.get("repeat", 1))),
        }
        for case in ETAG_CASES
    ]
    inm = [{"header": h, "etag": e, "match": reference.if_none_match(h, e)} for h, e in INM_CASES]
    cc = []
    for header in CC_CASES:
        p = reference.parse_cache_control(header)
        cc.append(
            {
                "header": header,
                "fields": [
                    p.no_cache,
                    p.no_store,
                    p.max_age,
                    p.max_stale,
                    p.min_fresh,
                    p.only_if_cached,
                ],
            }
        )
    response_cc = [
        {
            "header": header,
            "fields": [
                getattr(reference.parse_response_cache_control(header), name)
                for name in RESPONSE_CC_FIELDS
            ],
        }
        for header in RESPONSE_CC_CASES
    ]
    entries = [
        {
            "status": s,
            "headers": [[n.hex(), v.hex()] for n, v in h],
            "body_hex": b.hex(),
            "created_ms": c,
            "expires_ms": x,
            "generations": g,
            "entry_hex": reference.encode_entry(s, h, b, c, x, g).hex(),
        }
        for s, h, b, c, x, g in ENTRY_CASES
    ]
    from oxcache._core import lz4_compress

    secrets = [
        {"value": v, "digest": reference.secret_digest(decode_value(v))} for v in SECRET_CASES
    ]
    secrets += [
        {"raw_hex": raw.hex(), "digest": reference.secret_digest_bytes(raw)}
        for raw in SECRET_BYTES_CASES
    ]
    stored = []
    for s, h, b, c, x in STORED_CASES:
        plain = reference.encode_entry(s, h, b, c, x)
        stored.append(
            {
                "entry_hex": plain.hex(),
                "stored_hex": reference.pack_entry(plain, lz4_compress).hex(),
            }
        )
    return {
        "keys.json": keys,
        "etags.json": etags,
        "if_none_match.json": inm,
        "cache_control.json": cc,
        "response_cache_control.json": response_cc,
        "entries.json": entries,
        "secrets.json": secrets,
        "stored.json": stored,
    }


def main() -> None:
    texts = {
        name: json.dumps(cases, indent=1, ensure_ascii=False) + "\n"
        for name, cases in build().items()
    }
    changed = [
        name
        for name, text in texts.items()
        if (GOLDEN / name).exists() and (GOLDEN / name).read_text() != text
    ]
    if changed and "--force" not in sys.argv:
        sys.exit(f"refusing to overwrite {changed}: pass --force for a deliberate format change")
    GOLDEN.mkdir(exist_ok=True)
    for name, text in texts.items():
        path = GOLDEN / name
        if path.exists() and path.read_text() == text:
            print("unchanged", path)
            continue
        path.write_text(text)
        print("wrote", path)


if __name__ == "__main__":
    main()
