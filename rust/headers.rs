//! HTTP headers: `If-None-Match` (RFC 9110 13.1.2), request `Cache-Control` (RFC 9111 5.2.1)
//! and response `Cache-Control` (RFC 9111 5.2.2, RFC 5861).
//!
//! Both scan bytes: every delimiter is ASCII, and every non-ASCII byte of UTF-8 is a valid
//! `etagc`, so byte scanning gives the same answer as scanning code points.

use std::borrow::Cow;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// RFC 9111 section 1.2.2: delta-seconds too large to represent are sent as 2^31.
pub const DELTA_MAX: u64 = 2_147_483_648;

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_etagc(b: u8) -> bool {
    b > 0x20 && b != 0x7f && b != b'"'
}

fn skip_ows(h: &[u8], mut i: usize) -> usize {
    while i < h.len() && is_ows(h[i]) {
        i += 1;
    }
    i
}

/// Whether the member ends at `i` (after optional whitespace): a comma or the end.
fn member_ends(h: &[u8], i: usize) -> Option<usize> {
    let j = skip_ows(h, i);
    if j == h.len() || h[j] == b',' {
        Some(j)
    } else {
        None
    }
}

fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// The UTF-8 bytes of a Python str; lone surrogates (which no `&str` can hold) are kept as
/// their 3-byte encodings, all >= 0x80 like any other non-ASCII code point, so scanning
/// the bytes treats them as the spec treats every non-ASCII code point.
fn str_bytes<'a>(s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(text) = s.to_str() {
        return Ok(Cow::Borrowed(text.as_bytes()));
    }
    let py = s.py();
    let encoded = s.call_method1(intern!(py, "encode"), ("utf-8", "surrogatepass"))?;
    Ok(Cow::Owned(encoded.cast::<PyBytes>()?.as_bytes().to_vec()))
}

/// RFC 9110 weak comparison of `header` (an If-None-Match value) against our `etag`.
pub fn matches(header: &[u8], etag: &[u8]) -> bool {
    let ours = opaque(etag);
    let h = header;
    let mut i = 0;
    while i < h.len() {
        let b = h[i];
        if is_ows(b) || b == b',' {
            i += 1;
            continue;
        }
        let start = i;
        if b == b'*' {
            if member_ends(h, i + 1).is_some() {
                return true;
            }
        } else {
            let mut j = i;
            if h[j..].starts_with(b"W/") {
                j += 2;
            }
            if j < h.len() && h[j] == b'"' {
                let open = j;
                j += 1;
                while j < h.len() && is_etagc(h[j]) {
                    j += 1;
                }
                if j < h.len() && h[j] == b'"' {
                    if let Some(end) = member_ends(h, j + 1) {
                        if &h[open..=j] == ours {
                            return true;
                        }
                        i = end;
                        continue;
                    }
                }
            }
        }
        // Malformed: resume after the next comma from the member's start.
        i = match h[start..].iter().position(|&c| c == b',') {
            Some(offset) => start + offset + 1,
            None => h.len(),
        };
    }
    false
}

/// Whether `header`, an `If-None-Match` value, matches `etag` (RFC 9110 section 13.1.2).
///
/// `*` matches; otherwise the comma-separated entity-tags are compared weakly (a `W/` on
/// either side is ignored). Malformed members are skipped. Never raises.
#[pyfunction]
pub fn if_none_match(header: &Bound<'_, PyString>, etag: &Bound<'_, PyString>) -> bool {
    match (str_bytes(header), str_bytes(etag)) {
        (Ok(h), Ok(e)) => matches(&h, &e),
        _ => false,
    }
}

/// The request directives of a `Cache-Control` header (RFC 9111 section 5.2.1).
#[pyclass(frozen, eq, hash, get_all, module = "oxcache._core")]
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct RequestCacheControl {
    /// `no-cache`: the client wants a response not served from a cache without validation.
    pub no_cache: bool,
    /// `no-store`: nothing of this request or its response may be stored.
    pub no_store: bool,
    /// `max-age=N`: the client accepts no response older than N seconds.
    pub max_age: Option<u64>,
    /// `max-stale[=N]`: the client accepts a response stale by up to N seconds (2^31: any).
    pub max_stale: Option<u64>,
    /// `min-fresh=N`: the client wants a response fresh for at least N more seconds.
    pub min_fresh: Option<u64>,
    /// `only-if-cached`: the client wants only a stored response.
    pub only_if_cached: bool,
}

#[pymethods]
impl RequestCacheControl {
    #[new]
    #[pyo3(signature = (*, no_cache=false, no_store=false, max_age=None, max_stale=None, min_fresh=None, only_if_cached=false))]
    fn new(
        no_cache: bool,
        no_store: bool,
        max_age: Option<u64>,
        max_stale: Option<u64>,
        min_fresh: Option<u64>,
        only_if_cached: bool,
    ) -> Self {
        Self {
            no_cache,
            no_store,
            max_age,
            max_stale,
            min_fresh,
            only_if_cached,
        }
    }

    fn __repr__(&self) -> String {
        fn opt(v: Option<u64>) -> String {
            v.map_or_else(|| "None".to_owned(), |n| n.to_string())
        }
        format!(
            "RequestCacheControl(no_cache={}, no_store={}, max_age={}, max_stale={}, min_fresh={}, only_if_cached={})",
            py_bool(self.no_cache),
            py_bool(self.no_store),
            opt(self.max_age),
            opt(self.max_stale),
            opt(self.min_fresh),
            py_bool(self.only_if_cached),
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn strip_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Split at commas outside quoted strings.
fn split_members(h: &[u8]) -> Vec<&[u8]> {
    let mut members = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut i = 0;
    while i < h.len() {
        let b = h[i];
        if in_quote {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_quote = false;
            }
        } else if b == b'"' {
            in_quote = true;
        } else if b == b',' {
            members.push(&h[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    members.push(&h[start..]);
    members
}

/// Unquote a quoted-string value; None if it is not exactly one well-formed quoted string.
fn unquote(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 1;
    while i < v.len() {
        match v[i] {
            b'\\' => {
                out.push(*v.get(i + 1)?);
                i += 2;
            }
            b'"' => return (i == v.len() - 1).then_some(out),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

fn delta_seconds(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if n > DELTA_MAX {
            return Some(DELTA_MAX);
        }
    }
    Some(n)
}

/// A directive's value: `Some(Some(v))` a valid (unquoted) value, `Some(None)` an invalid
/// quoted string, `None` no `=` at all.
type DirectiveValue = Option<Option<Vec<u8>>>;

/// Call `found` with each well-formed directive of a Cache-Control header: its name in ASCII
/// lowercase and its value (both forms, request and response, share this grammar).
fn for_each_directive(header: &[u8], mut found: impl FnMut(&[u8], &DirectiveValue)) {
    for member in split_members(header) {
        let member = strip_ows(member);
        let (name, value) = match member.iter().position(|&b| b == b'=') {
            Some(eq) => (strip_ows(&member[..eq]), Some(strip_ows(&member[eq + 1..]))),
            None => (member, None),
        };
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            continue;
        }
        let name = name.to_ascii_lowercase();
        let value: DirectiveValue = value.map(|v| {
            if v.first() == Some(&b'"') {
                unquote(v)
            } else {
                Some(v.to_vec())
            }
        });
        found(&name, &value);
    }
}

fn number(value: &DirectiveValue) -> Option<u64> {
    match value {
        Some(Some(v)) => delta_seconds(v),
        _ => None,
    }
}

fn smallest(old: Option<u64>, n: u64) -> Option<u64> {
    Some(old.map_or(n, |old| old.min(n)))
}

/// Parse request Cache-Control directives as `docs/formats.md` specifies.
pub fn parse(header: &[u8]) -> RequestCacheControl {
    let mut cc = RequestCacheControl::default();
    for_each_directive(header, |name, value| match name {
        b"no-cache" => cc.no_cache = true,
        b"no-store" => cc.no_store = true,
        b"only-if-cached" => cc.only_if_cached = true,
        b"max-age" => {
            if let Some(n) = number(value) {
                cc.max_age = smallest(cc.max_age, n);
            }
        }
        b"min-fresh" => {
            if let Some(n) = number(value) {
                cc.min_fresh = Some(cc.min_fresh.map_or(n, |old| old.max(n)));
            }
        }
        b"max-stale" => {
            let n = if value.is_none() {
                Some(DELTA_MAX)
            } else {
                number(value)
            };
            if let Some(n) = n {
                cc.max_stale = smallest(cc.max_stale, n);
            }
        }
        _ => {}
    });
    cc
}

/// Parse the request directives of a `Cache-Control` header (RFC 9111 section 5.2.1).
///
/// Case-insensitive names, quoted values, repeated directives (the most restrictive wins),
/// delta-seconds clamped at 2147483648; unknown directives and garbage are ignored. Never raises.
#[pyfunction]
pub fn parse_cache_control(header: &Bound<'_, PyString>) -> RequestCacheControl {
    str_bytes(header).map_or_else(|_| RequestCacheControl::default(), |h| parse(&h))
}

/// The response directives of a `Cache-Control` header (RFC 9111 section 5.2.2, RFC 5861).
#[pyclass(frozen, eq, hash, get_all, module = "oxcache._core")]
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct ResponseCacheControl {
    /// `no-store`: no cache may store the response.
    pub no_store: bool,
    /// `no-cache` (also `no-cache="field"`): not reused without validation.
    pub no_cache: bool,
    /// `private` (also `private="field"`): a shared cache must not store the response.
    pub private: bool,
    /// `public`: any cache may store the response.
    pub public: bool,
    /// `must-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `proxy-revalidate`: never served stale by a shared cache.
    pub proxy_revalidate: bool,
    /// `max-age=N`; an invalid value counts as 0 (stale, RFC 9111 section 4.2.1).
    pub max_age: Option<u64>,
    /// `s-maxage=N` (shared caches); an invalid value counts as 0.
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate=N` (RFC 5861 section 3); an invalid value is ignored.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861 section 4); an invalid value is ignored.
    pub stale_if_error: Option<u64>,
}

#[pymethods]
impl ResponseCacheControl {
    #[new]
    #[pyo3(signature = (*, no_store=false, no_cache=false, private=false, public=false, must_revalidate=false, proxy_revalidate=false, max_age=None, s_maxage=None, stale_while_revalidate=None, stale_if_error=None))]
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
    fn new(
        no_store: bool,
        no_cache: bool,
        private: bool,
        public: bool,
        must_revalidate: bool,
        proxy_revalidate: bool,
        max_age: Option<u64>,
        s_maxage: Option<u64>,
        stale_while_revalidate: Option<u64>,
        stale_if_error: Option<u64>,
    ) -> Self {
        Self {
            no_store,
            no_cache,
            private,
            public,
            must_revalidate,
            proxy_revalidate,
            max_age,
            s_maxage,
            stale_while_revalidate,
            stale_if_error,
        }
    }

    fn __repr__(&self) -> String {
        fn opt(v: Option<u64>) -> String {
            v.map_or_else(|| "None".to_owned(), |n| n.to_string())
        }
        format!(
            "ResponseCacheControl(no_store={}, no_cache={}, private={}, public={}, must_revalidate={}, proxy_revalidate={}, max_age={}, s_maxage={}, stale_while_revalidate={}, stale_if_error={})",
            py_bool(self.no_store),
            py_bool(self.no_cache),
            py_bool(self.private),
            py_bool(self.public),
            py_bool(self.must_revalidate),
            py_bool(self.proxy_revalidate),
            opt(self.max_age),
            opt(self.s_maxage),
            opt(self.stale_while_revalidate),
            opt(self.stale_if_error),
        )
    }
}

/// Parse response Cache-Control directives as `docs/formats.md` specifies.
pub fn parse_response(header: &[u8]) -> ResponseCacheControl {
    let mut cc = ResponseCacheControl::default();
    for_each_directive(header, |name, value| match name {
        b"no-store" => cc.no_store = true,
        b"no-cache" => cc.no_cache = true,
        b"private" => cc.private = true,
        b"public" => cc.public = true,
        b"must-revalidate" => cc.must_revalidate = true,
        b"proxy-revalidate" => cc.proxy_revalidate = true,
        // Invalid freshness information makes the response stale (RFC 9111 section 4.2.1).
        b"max-age" => cc.max_age = smallest(cc.max_age, number(value).unwrap_or(0)),
        b"s-maxage" => cc.s_maxage = smallest(cc.s_maxage, number(value).unwrap_or(0)),
        b"stale-while-revalidate" => {
            if let Some(n) = number(value) {
                cc.stale_while_revalidate = smallest(cc.stale_while_revalidate, n);
            }
        }
        b"stale-if-error" => {
            if let Some(n) = number(value) {
                cc.stale_if_error = smallest(cc.stale_if_error, n);
            }
        }
        _ => {}
    });
    cc
}

/// Parse the response directives of a `Cache-Control` header (RFC 9111 section 5.2.2 and
/// the RFC 5861 extensions).
///
/// Case-insensitive names, quoted values, qualified `no-cache`/`private` read as the plain
/// directives, repeated numbers (the smallest wins), an invalid `max-age` or `s-maxage` read
/// as 0; unknown directives and garbage are ignored. Never raises.
#[pyfunction]
pub fn parse_response_cache_control(header: &Bound<'_, PyString>) -> ResponseCacheControl {
    str_bytes(header).map_or_else(|_| ResponseCacheControl::default(), |h| parse_response(&h))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &[u8] = b"\"abc\"";

    #[test]
    fn if_none_match_forms() {
        assert!(matches(b"\"abc\"", TAG));
        assert!(matches(b"W/\"abc\"", TAG));
        assert!(matches(b"\"abc\"", b"W/\"abc\""));
        assert!(matches(b"*", TAG));
        assert!(matches(b" * ", TAG));
        assert!(matches(b"\"x\", \"abc\"", TAG));
        assert!(matches(b"\"x\" ,\t W/\"abc\" ", TAG));
        assert!(matches(b"garbage, \"abc\"", TAG));
        assert!(matches(b"\"a,b\", \"abc\"", TAG));
        assert!(!matches(b"", TAG));
        assert!(!matches(b"\"abcd\"", TAG));
        assert!(!matches(b"abc", TAG));
        assert!(!matches(b"\"abc", TAG));
        assert!(!matches(b"\"abc\"x", TAG));
        assert!(!matches(b"w/\"abc\"", TAG));
        assert!(!matches(b"*x", TAG));
        assert!(!matches(b"\"ab c\"", b"\"ab c\""));
        assert!(matches(b"W/\"abc\"", b"W/\"abc\""));
        assert!(matches(b"*,", TAG));
        assert!(matches(b"\t*\t,\"x\"", TAG));
        assert!(!matches(b"* x, \"y\"", TAG));
        assert!(matches(b"* x, \"abc\"", TAG));
        assert!(!matches(b"\"abc\" x", TAG));
        assert!(matches(b"\"abc\" x, \"abc\"", TAG));
        assert!(matches(b"W/W/\"x\", \"abc\"", TAG));
        assert!(matches(b"\"\"", b"\"\""));
        assert!(matches(
            "\"\u{e9}\u{80}\"".as_bytes(),
            "\"\u{e9}\u{80}\"".as_bytes()
        ));
        assert!(!matches(b"\"a\x7f\", \"a\x7f\"", b"\"a\x7f\""));
        assert!(!matches(b",,, ,\t", TAG));
        assert!(!matches(b"W/", TAG));
        assert!(!matches(b"W/abc", TAG));
        assert!(matches(b"x\"abc\", \"abc\"", TAG));
        assert!(!matches(b"\"abc\"\"abc\"", TAG));
    }

    #[test]
    fn cache_control_directives() {
        let cc =
            parse(b"No-Cache, MAX-AGE=\"60\", max-age=30, min-fresh=5, min-fresh=9, max-stale");
        assert!(cc.no_cache);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(30));
        assert_eq!(cc.min_fresh, Some(9));
        assert_eq!(cc.max_stale, Some(DELTA_MAX));
        let cc = parse(b"max-age=99999999999999999999999, max-stale=10, max-stale");
        assert_eq!(cc.max_age, Some(DELTA_MAX));
        assert_eq!(cc.max_stale, Some(10));
        assert_eq!(parse(b""), RequestCacheControl::default());
        assert_eq!(
            parse(b",,,=,\"\",max-age=abc,max-age=-1,max-age="),
            RequestCacheControl::default()
        );
        assert!(parse(b"x=\"a,no-store\", only-if-cached").only_if_cached);
        assert!(!parse(b"x=\"a,no-store\"").no_store);
        assert_eq!(parse(b"max-age=\"6\"0").max_age, None);
        assert_eq!(parse(b"max-age=\"6\\0\"").max_age, Some(60));
        assert_eq!(parse(b"max-age=\"60").max_age, None);
        assert_eq!(parse(b"max-age=\"60\\\"").max_age, None);
        assert_eq!(parse(b"max-age=\"\"").max_age, None);
        assert_eq!(parse(b" \tmax-age \t= \t 7 \t").max_age, Some(7));
        assert_eq!(parse(b"max-age=2147483648").max_age, Some(DELTA_MAX));
        assert_eq!(parse(b"max-age=2147483649").max_age, Some(DELTA_MAX));
        assert_eq!(parse(b"max-age=007").max_age, Some(7));
        assert_eq!(parse(b"max-age=+7").max_age, None);
        assert_eq!(parse("max-age=\u{0663}".as_bytes()).max_age, None);
        assert_eq!(parse(b"max-stale=").max_stale, None);
        assert_eq!(parse(b"max-stale=x").max_stale, None);
        assert_eq!(parse(b"max-stale=5, max-stale").max_stale, Some(5));
        assert!(parse(b"no-store=\"junk").no_store);
        assert!(parse(b"NO-STORE=").no_store);
        assert!(!parse(b"no store").no_store);
        assert!(!parse("no-stor\u{e9}".as_bytes()).no_store);
        assert!(!parse(b"\"a,no-store").no_store);
        assert!(parse(b"x=\"a\\\",\", no-store").no_store);
        assert!(!parse(b"x=\"a\\\",no-store\"").no_store);
    }

    #[test]
    fn response_cache_control_directives() {
        let cc = parse_response(b"Public, MAX-AGE=60, s-maxage=\"30\", must-revalidate");
        assert!(cc.public && cc.must_revalidate && !cc.no_store && !cc.private);
        assert_eq!((cc.max_age, cc.s_maxage), (Some(60), Some(30)));
        let cc = parse_response(b"no-cache=\"set-cookie, x\", private=\"a\", no-store");
        assert!(cc.no_cache && cc.private && cc.no_store);
        assert_eq!(cc.max_age, None);
        assert_eq!(parse_response(b"max-age=abc").max_age, Some(0));
        assert_eq!(parse_response(b"max-age").max_age, Some(0));
        assert_eq!(parse_response(b"max-age=60, max-age=-1").max_age, Some(0));
        assert_eq!(parse_response(b"max-age=60, max-age=30").max_age, Some(30));
        assert_eq!(parse_response(b"s-maxage=\"7").s_maxage, Some(0));
        assert_eq!(
            parse_response(b"max-age=99999999999999999999").max_age,
            Some(DELTA_MAX)
        );
        let cc = parse_response(b"stale-while-revalidate=30, stale-if-error=x, stale-if-error=9");
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(9));
        assert_eq!(
            parse_response(b"stale-while-revalidate").stale_while_revalidate,
            None
        );
        assert_eq!(parse_response(b""), ResponseCacheControl::default());
        assert!(!parse_response(b"x=\"a,no-store\"").no_store);
        assert!(parse_response(b"x=\"a\\\",\", proxy-revalidate").proxy_revalidate);
        assert!(!parse_response(b"privat, no store, public-x").private);
    }
}
