//! Strong ETags: XXH3-128 of the body, as 32 lowercase hex digits in quotes.

use pyo3::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

/// Bodies at least this large are hashed with the interpreter released.
pub const DETACH_THRESHOLD: usize = 64 * 1024;

/// XXH3-128 of `body`, releasing the interpreter for large bodies.
pub fn digest(py: Python<'_>, body: &[u8]) -> u128 {
    if body.len() >= DETACH_THRESHOLD {
        py.detach(|| xxh3_128(body))
    } else {
        xxh3_128(body)
    }
}

/// The entity-tag of a digest: `"` + 32 lowercase hex digits + `"`.
pub fn format_etag(digest: u128) -> String {
    format!("\"{digest:032x}\"")
}

/// The strong ETag of `body`: `"` + the 32 lowercase hex digits of its XXH3-128 + `"`.
#[pyfunction]
pub fn etag(py: Python<'_>, body: &[u8]) -> String {
    format_etag(digest(py, body))
}

#[cfg(test)]
mod tests {
    use super::*;

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
