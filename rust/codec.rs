//! LZ4 block compression of stored entries (`Cache(compress_over=...)`), see docs/formats.md.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Inputs at least this large are (de)compressed with the interpreter released: about a
/// millisecond of LZ4 (see `etag::DETACH_THRESHOLD` for why not less).
const DETACH_THRESHOLD: usize = 512 * 1024;

/// `data` as one LZ4 block (no frame, no size prefix: the entry's head records the size).
#[pyfunction]
pub fn lz4_compress<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    let out = if data.len() >= DETACH_THRESHOLD {
        py.detach(|| lz4_flex::block::compress(data))
    } else {
        lz4_flex::block::compress(data)
    };
    PyBytes::new(py, &out)
}

/// The `size` bytes an LZ4 block decompresses to; ValueError if it is not exactly that.
#[pyfunction]
pub fn lz4_decompress<'py>(
    py: Python<'py>,
    data: &[u8],
    size: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let run = || lz4_flex::block::decompress(data, size);
    let out = if size >= DETACH_THRESHOLD {
        py.detach(run)
    } else {
        run()
    }
    .map_err(|e| PyValueError::new_err(format!("not an LZ4 block of {size} bytes: {e}")))?;
    if out.len() != size {
        return Err(PyValueError::new_err(format!(
            "LZ4 block gave {} bytes, expected {size}",
            out.len()
        )));
    }
    Ok(PyBytes::new(py, &out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let data = b"abcabcabcabcabcabcabcabc hello hello hello".repeat(50);
        let packed = lz4_flex::block::compress(&data);
        assert!(packed.len() < data.len());
        assert_eq!(
            lz4_flex::block::decompress(&packed, data.len()).unwrap(),
            data
        );
    }
}
