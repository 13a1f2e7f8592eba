//! LZ4 block compression of stored entries (`Cache(compress_over=...)`), see docs/formats.md.
//!
//! This module owns the codec and when it runs with the interpreter released; `stored` lays
//! the compressed form of an entry out around it.

use pyo3::exceptions::PyValueError;
use pyo3::marker::Ungil;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Inputs at least this large are (de)compressed with the interpreter released: about a
/// millisecond of LZ4 (see `etag::DETACH_THRESHOLD` for why not less).
pub const DETACH_THRESHOLD: usize = 512 * 1024;

/// Run `work` on `len` bytes of LZ4, with the interpreter released when that is about a
/// millisecond or more of work.
pub fn detach_if_large<T, F>(py: Python<'_>, len: usize, work: F) -> T
where
    F: Ungil + FnOnce() -> T,
    T: Ungil,
{
    if len >= DETACH_THRESHOLD {
        py.detach(work)
    } else {
        work()
    }
}

/// `data` as one LZ4 block: no frame, no size prefix.
pub fn compress(data: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(data)
}

/// Fill all of `out` from the LZ4 block `block`; an error unless it gives exactly `out.len()`
/// bytes.
pub fn decompress_exact(block: &[u8], out: &mut [u8]) -> Result<(), String> {
    let size = out.len();
    let got = lz4_flex::block::decompress_into(block, out)
        .map_err(|e| format!("not an LZ4 block of {size} bytes: {e}"))?;
    if got != size {
        return Err(format!("LZ4 block gave {got} bytes, expected {size}"));
    }
    Ok(())
}

/// `data` as one LZ4 block (no frame, no size prefix: the entry's head records the size).
#[pyfunction]
pub fn lz4_compress<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    let out = detach_if_large(py, data.len(), || compress(data));
    PyBytes::new(py, &out)
}

/// The `size` bytes an LZ4 block decompresses to; ValueError if it is not exactly that.
///
/// ValueError rather than EntryError because callers may hold blocks that are not entries;
/// the entry path (`unpack_entry`, `decode_stored`) turns the same failures into EntryError.
#[pyfunction]
pub fn lz4_decompress<'py>(
    py: Python<'py>,
    data: &[u8],
    size: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, size, |out| {
        detach_if_large(py, size, || decompress_exact(data, out)).map_err(PyValueError::new_err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data = b"abcabcabcabcabcabcabcabc hello hello hello".repeat(50);
        let packed = compress(&data);
        assert!(packed.len() < data.len());
        let mut out = vec![0; data.len()];
        decompress_exact(&packed, &mut out).expect("decompresses");
        assert_eq!(out, data);
    }

    #[test]
    fn the_size_must_be_exact() {
        let data = b"hello hello hello hello hello".repeat(10);
        let packed = compress(&data);
        let mut longer = vec![0; data.len() + 1];
        assert!(decompress_exact(&packed, &mut longer)
            .unwrap_err()
            .contains("expected"));
        let mut shorter = vec![0; data.len() - 1];
        assert!(decompress_exact(&packed, &mut shorter).is_err());
        let mut out = vec![0; data.len()];
        assert!(decompress_exact(&packed[..packed.len() - 1], &mut out).is_err());
        assert!(decompress_exact(b"", &mut []).is_err()); // a block has at least one token
        assert!(decompress_exact(&[0], &mut []).is_ok());
    }
}
