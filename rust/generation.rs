//! Generations: what makes an invalidation hold whatever Redis evicts. Each index an entry is
//! listed in (its user, its variants, its tags) has a generation, a random token stored under
//! a key of its own; an entry records the stamp of the tokens it was built under, and a read
//! that finds another stamp, or a token missing, is a miss. An invalidation replaces the
//! tokens. Layout in `docs/formats.md`, section "Generations".

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use xxhash_rust::xxh3::xxh3_64;

/// The stamp of `tokens`, in order: 0 for none, else the XXH3-64 of each token's length (u32,
/// big-endian) and bytes, one after the other, with 0 replaced by 1 (0 means "no index").
pub fn stamp(tokens: &[&[u8]]) -> u64 {
    if tokens.is_empty() {
        return 0;
    }
    let mut buf = Vec::with_capacity(tokens.iter().map(|t| t.len() + 4).sum());
    for token in tokens {
        buf.extend_from_slice(&(token.len() as u32).to_be_bytes());
        buf.extend_from_slice(token);
    }
    match xxh3_64(&buf) {
        0 => 1,
        h => h,
    }
}

/// The stamp an entry built under the generation `tokens` (bytes, in the order of its
/// indexes) records: 0 for no tokens. `TypeError` for anything but bytes.
#[pyfunction]
pub fn generation_stamp(tokens: Vec<Bound<'_, PyAny>>) -> PyResult<u64> {
    let mut held = Vec::with_capacity(tokens.len());
    for token in &tokens {
        held.push(
            token
                .cast::<PyBytes>()
                .map_err(|_| PyTypeError::new_err("generation tokens must be bytes"))?
                .clone(),
        );
    }
    let views: Vec<&[u8]> = held.iter().map(|b| b.as_bytes()).collect();
    Ok(stamp(&views))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tokens_is_zero_and_order_and_boundaries_count() {
        assert_eq!(stamp(&[]), 0);
        let (a, b): (&[u8], &[u8]) = (b"ab", b"c");
        assert_ne!(stamp(&[a, b]), stamp(&[b, a]));
        assert_ne!(stamp(&[b"ab", b"c"]), stamp(&[b"a", b"bc"]));
        assert_ne!(stamp(&[b""]), 0);
        let mut expected = Vec::new();
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"ab");
        assert_eq!(stamp(&[b"ab"]), xxh3_64(&expected));
    }
}
