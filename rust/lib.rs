//! `oxcache._core`: the byte work of oxcache, specified in `docs/formats.md`: every stored byte
//! format is written and read here and nowhere else.
//!
//! This file only registers; each concern lives in its own module with its tests beside it.

use pyo3::prelude::*;

mod codec;
mod entry;
mod etag;
mod generation;
mod headers;
mod key;
mod stored;

pyo3::create_exception!(
    _core,
    OxcacheError,
    pyo3::exceptions::PyException,
    "Base class of every error oxcache raises."
);
pyo3::create_exception!(
    _core,
    KeyBuildError,
    OxcacheError,
    "An argument cannot be turned into a stable cache key."
);
pyo3::create_exception!(
    _core,
    EntryError,
    OxcacheError,
    "Bytes that are not a valid cache entry of this version."
);

/// The Rust core of oxcache: canonical cache keys, XXH3 ETags, HTTP header parsing and
/// cache entries. `cache_key` turns a call into an injective, type-tagged key; `etag` gives the
/// strong entity-tag of a body; `if_none_match` and `parse_cache_control` read the request
/// headers of RFC 9110 and RFC 9111, `parse_response_cache_control` a response's own
/// directives, and none of them raises; `encode_entry`, `decode_entry` and
/// `peek_entry` read and write the versioned binary envelope a cached response is stored in, and
/// `pack_entry`, `unpack_entry`, `decode_stored` and `peek_stored` its compressed form, and
/// `generation_stamp`, `lease_value` and `is_lease` what a miss builds its entry on;
/// `secret_digest` and `secret_digest_bytes` write secrets into keys as digests. Every stored
/// byte format is specified in `docs/formats.md` and written and read only here; users import
/// from `oxcache`.
#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("OxcacheError", py.get_type::<OxcacheError>())?;
    m.add("KeyBuildError", py.get_type::<KeyBuildError>())?;
    m.add("EntryError", py.get_type::<EntryError>())?;
    m.add("KEY_FORMAT_VERSION", key::KEY_FORMAT_VERSION)?;
    m.add("KEY_HASH_THRESHOLD", key::HASH_THRESHOLD)?;
    m.add("ENTRY_VERSION", entry::VERSION)?;
    m.add("ENTRY_HEAD_SIZE", entry::HEAD_SIZE)?;
    m.add("STORED_HEAD_SIZE", stored::STORED_HEAD_SIZE)?;
    m.add_function(wrap_pyfunction!(key::cache_key, m)?)?;
    m.add_function(wrap_pyfunction!(key::secret_digest, m)?)?;
    m.add_function(wrap_pyfunction!(key::secret_digest_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(etag::etag, m)?)?;
    m.add_function(wrap_pyfunction!(headers::if_none_match, m)?)?;
    m.add_function(wrap_pyfunction!(headers::parse_cache_control, m)?)?;
    m.add_class::<headers::RequestCacheControl>()?;
    m.add_function(wrap_pyfunction!(headers::parse_response_cache_control, m)?)?;
    m.add_class::<headers::ResponseCacheControl>()?;
    m.add_function(wrap_pyfunction!(entry::encode_entry, m)?)?;
    m.add_function(wrap_pyfunction!(entry::decode_entry, m)?)?;
    m.add_function(wrap_pyfunction!(entry::peek_entry, m)?)?;
    m.add_class::<entry::Entry>()?;
    m.add_class::<entry::EntryHead>()?;
    m.add_function(wrap_pyfunction!(stored::pack_entry, m)?)?;
    m.add_function(wrap_pyfunction!(stored::unpack_entry, m)?)?;
    m.add_function(wrap_pyfunction!(stored::decode_stored, m)?)?;
    m.add_function(wrap_pyfunction!(stored::peek_stored, m)?)?;
    m.add_function(wrap_pyfunction!(generation::generation_stamp, m)?)?;
    m.add_function(wrap_pyfunction!(generation::lease_value, m)?)?;
    m.add_function(wrap_pyfunction!(generation::is_lease, m)?)?;
    m.add_function(wrap_pyfunction!(codec::lz4_compress, m)?)?;
    m.add_function(wrap_pyfunction!(codec::lz4_decompress, m)?)?;
    Ok(())
}
