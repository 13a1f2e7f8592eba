//! What a miss builds its entry on, so that an invalidation holds.
//!
//! Generations: each index an entry is listed in (its user, its variants, its tags) has a
//! random token stored under a key of its own; an entry records the stamp of the tokens it
//! was built under, and a read that finds another stamp, or a token missing, is a miss. An
//! invalidation deletes the tokens, so it holds whatever Redis evicts.
//!
//! Leases: a miss puts a lease value under the entry's key before it runs the endpoint (when
//! the key holds nothing), and its write only lands while the key still holds what it held
//! then; an invalidation that deletes the key takes the lease with it. Layout in
//! `docs/formats.md`, sections "Generations" and "Leases".

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

/// The first bytes of a lease value: `OXL` and version 1.
pub const LEASE_MAGIC: &[u8; 4] = b"OXL\x01";

/// The value a miss puts under an empty key before it runs the endpoint: `OXL\x01` and
/// `token` (oxcache passes 16 random bytes). Never an entry: readers take it for a miss.
#[pyfunction]
pub fn lease_value<'py>(py: Python<'py>, token: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, LEASE_MAGIC.len() + token.len(), |out| {
        out[..LEASE_MAGIC.len()].copy_from_slice(LEASE_MAGIC);
        out[LEASE_MAGIC.len()..].copy_from_slice(token);
        Ok(())
    })
}

/// Whether a stored value is a lease (a miss in progress), not an entry.
#[pyfunction]
pub fn is_lease(data: &[u8]) -> bool {
    data.starts_with(LEASE_MAGIC)
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

    #[test]
    fn a_lease_is_never_an_entry() {
        assert!(is_lease(b"OXL\x01token"));
        assert!(!is_lease(b"OXL"));
        assert!(!is_lease(b"OXC\x02"));
        assert!(crate::entry::read_head(b"OXL\x01aaaaaaaaaaaaaaaa").is_err());
    }
}
