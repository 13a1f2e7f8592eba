"""`parse_response_cache_control`: the response directives of RFC 9111 section 5.2.2 and
RFC 5861, in Rust and in the plain-Python reference, agreeing on any input."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import oxcache._core as core
from tests import reference

IMPLS = [pytest.param(core, id="rust"), pytest.param(reference, id="reference")]
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = (
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


def fields(cc: Any) -> tuple[Any, ...]:
    return tuple(getattr(cc, name) for name in FIELDS)


directive = st.one_of(
    st.sampled_from(
        [
            "no-cache",
            "NO-STORE",
            "Private",
            "public",
            "must-revalidate",
            "proxy-revalidate",
            'no-cache="set-cookie"',
            'private="x, y"',
            "max-age",
        ]
    ),
    st.from_regex(
        r"(max-age|s-maxage|stale-while-revalidate|stale-if-error|S-MAXAGE)\s?=\s?\"?[0-9a-z-]{0,12}\"?",
        fullmatch=True,
    ),
    st.text(max_size=8),
)
cc_headers = st.lists(directive, max_size=6).map(lambda ds: ",".join(ds))


@PROPS
@given(st.one_of(st.text(), cc_headers))
@example('x="a,no-store", private')
@example("max-age=99999999999999999999, s-maxage=x")
@example("stale-while-revalidate, stale-if-error=5, stale-if-error=3")
def test_parse_response_cache_control_never_raises_and_agrees(header: str) -> None:
    assert fields(core.parse_response_cache_control(header)) == fields(
        reference.parse_response_cache_control(header)
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_response_directives_semantics(impl: ModuleType) -> None:
    cc = impl.parse_response_cache_control('Public, MAX-AGE=60, s-maxage="30", must-revalidate')
    assert fields(cc) == (False, False, False, True, True, False, 60, 30, None, None)
    # Qualified forms are read as the plain directives (RFC 9111 5.2.2.4, 5.2.2.7).
    cc = impl.parse_response_cache_control('no-cache="Set-Cookie", private="x"')
    assert cc.no_cache and cc.private and not cc.no_store
    # Invalid freshness counts as stale (RFC 9111 4.2.1); conflicting ones, the smallest.
    assert impl.parse_response_cache_control("max-age=abc").max_age == 0
    assert impl.parse_response_cache_control("max-age").max_age == 0
    assert impl.parse_response_cache_control("max-age=60, max-age=30").max_age == 30
    assert impl.parse_response_cache_control("s-maxage=-1").s_maxage == 0
    assert impl.parse_response_cache_control("max-age=99999999999999").max_age == 2147483648
    # RFC 5861 windows: an invalid one is ignored, never read as 0 or as "any".
    cc = impl.parse_response_cache_control("stale-while-revalidate=x, stale-if-error=9")
    assert (cc.stale_while_revalidate, cc.stale_if_error) == (None, 9)
    # A directive inside a quoted string is not a directive.
    assert not impl.parse_response_cache_control('x="a,no-store"').no_store
    assert fields(impl.parse_response_cache_control("")) == fields(impl.ResponseCacheControl())
