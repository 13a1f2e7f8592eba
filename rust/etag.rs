//! Strong ETags: XXH3-128 of the body, as 32 lowercase hex digits in quotes.

use pyo3::prelude::*;
use pyo3::types::PyString;
use xxhash_rust::xxh3::xxh3_128;

/// Bodies at least this large are hashed with the interpreter released: about a millisecond
/// of XXH3. Releasing it for less costs more than it gives: when another thread is busy (a
/// sync endpoint in the threadpool), taking the interpreter back waits for that thread's
/// switch interval, 5 ms, so at 64 KiB an ETag of 1 MiB took 5.3 ms instead of 60 us.
pub const DETACH_THRESHOLD: usize = 16 * 1024 * 1024;

/// XXH3-128 of `body`, releasing the interpreter for large bodies.
pub fn digest(py: Python<'_>, body: &[u8]) -> u128 {
    if body.len() >= DETACH_THRESHOLD {
        py.detach(|| xxh3_128(body))
    } else {
        xxh3_128(body)
    }
}

/// The entity-tag of a digest as ASCII bytes: `"` + 32 lowercase hex digits + `"`.
///
/// Written by table rather than `format!("{:032x}")`, whose generic u128 formatting cost
/// more than hashing a small body.
pub fn etag_bytes(digest: u128) -> [u8; 34] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 34];
    for (i, byte) in digest.to_be_bytes().iter().enumerate() {
        out[1 + 2 * i] = HEX[usize::from(byte >> 4)];
        out[2 + 2 * i] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

/// The entity-tag of a digest: `"` + 32 lowercase hex digits + `"`.
pub fn format_etag(digest: u128) -> String {
    etag_bytes(digest).iter().map(|&b| char::from(b)).collect()
}

/// The strong ETag of `body`: `"` + the 32 lowercase hex digits of its XXH3-128 + `"`.
#[pyfunction]
pub fn etag<'py>(py: Python<'py>, body: &[u8]) -> Bound<'py, PyString> {
    let tag = etag_bytes(digest(py, body));
    // The tag is ASCII by construction, so this conversion cannot fail.
    PyString::new(py, std::str::from_utf8(&tag).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_hex_matches_format() {
        for digest in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(format_etag(digest), format!("\"{digest:032x}\""));
        }
    }

    #[test]
    fn empty_body_has_the_published_xxh3_128() {
        assert_eq!(
            format_etag(xxh3_128(b"")),
            "\"99aa06d3014798d86001c324468d497f\""
        );
    }

    #[test]
    fn etag_is_34_chars_and_lowercase() {
        let tag = format_etag(xxh3_128(b"hello"));
        assert_eq!(tag.len(), 34);
        assert!(tag[1..33]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }
}
