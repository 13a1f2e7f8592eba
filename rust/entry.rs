//! The cache entry envelope: a fixed 68-byte head (status, times, digests, lengths, the
//! generations stamp, and a check over the head), a compact header block, then the body.
//! Every byte is covered: the head check covers the head, which holds the digests of the
//! header block and of the body. Layout in `docs/formats.md`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyTuple};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::etag::{digest, format_etag, DETACH_THRESHOLD};
use crate::EntryError;

pub const MAGIC: &[u8; 3] = b"OXC";
pub const VERSION: u8 = 2;
pub const HEAD_SIZE: usize = 68;
/// Where the head check starts: it covers every byte of the head before it.
const CHECK_AT: usize = 60;

/// Well-known header pairs written as `0x00, code`.
const WELL_KNOWN: [(&[u8], &[u8]); 3] = [
    (b"content-type", b"application/json"),
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-type", b"text/html; charset=utf-8"),
];

/// A stored header: name and value bytes, borrowed from the entry.
pub type HeaderPair<'a> = (&'a [u8], &'a [u8]);

/// The fixed-size head of an entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub digest: u128,
    pub body_len: u32,
    pub headers_len: u16,
    pub generations: u64,
    pub headers_digest: u64,
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Read the head; errors name what is wrong.
pub fn read_head(data: &[u8]) -> Result<Head, String> {
    if data.len() < HEAD_SIZE {
        return Err(format!(
            "too short for a cache entry ({} bytes, the head alone is {HEAD_SIZE})",
            data.len()
        ));
    }
    if &data[..3] != MAGIC {
        return Err("not an oxcache entry (wrong magic bytes)".to_owned());
    }
    if data[3] != VERSION {
        return Err(format!(
            "cache entry of format version {}, this oxcache reads version {VERSION}",
            data[3]
        ));
    }
    if xxh3_64(&data[..CHECK_AT]) != be_u64(&data[CHECK_AT..HEAD_SIZE]) {
        return Err("cache entry head does not match its check (corrupted)".to_owned());
    }
    let status = u16::from_be_bytes([data[4], data[5]]);
    if !(100..=999).contains(&status) {
        // Only a head written on purpose gets here: encode_entry never writes one.
        return Err(format!(
            "cache entry with status {status}, not from 100 to 999"
        ));
    }
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&data[22..38]);
    Ok(Head {
        status,
        created_ms: be_u64(&data[6..14]),
        expires_ms: be_u64(&data[14..22]),
        digest: u128::from_be_bytes(digest),
        body_len: u32::from_be_bytes([data[38], data[39], data[40], data[41]]),
        headers_len: u16::from_be_bytes([data[42], data[43]]),
        generations: be_u64(&data[44..52]),
        headers_digest: be_u64(&data[52..60]),
    })
}

/// Encode the header block.
pub fn encode_headers(headers: &[HeaderPair<'_>]) -> Result<Vec<u8>, String> {
    let mut block = Vec::new();
    for (name, value) in headers {
        if let Some(code) = WELL_KNOWN.iter().position(|(n, v)| n == name && v == value) {
            block.push(0);
            block.push(code as u8 + 1);
            continue;
        }
        if name.is_empty() || name.len() > 255 {
            return Err(format!(
                "a header name must be 1 to 255 bytes, got {}",
                name.len()
            ));
        }
        if value.len() > usize::from(u16::MAX) {
            return Err(format!(
                "a header value must be at most 65535 bytes, got {}",
                value.len()
            ));
        }
        block.push(name.len() as u8);
        block.extend_from_slice(name);
        block.extend_from_slice(&(value.len() as u16).to_be_bytes());
        block.extend_from_slice(value);
    }
    if block.len() > usize::from(u16::MAX) {
        return Err(format!(
            "the header block must be at most 65535 bytes, got {}",
            block.len()
        ));
    }
    Ok(block)
}

/// Decode the header block into (name, value) slices.
pub fn decode_headers(block: &[u8]) -> Result<Vec<HeaderPair<'_>>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let truncated = || "truncated header block".to_owned();
    while i < block.len() {
        let n = usize::from(block[i]);
        if n == 0 {
            let code = usize::from(*block.get(i + 1).ok_or_else(truncated)?);
            let pair = code
                .checked_sub(1)
                .and_then(|c| WELL_KNOWN.get(c))
                .ok_or_else(|| format!("unknown well-known header code {code}"))?;
            out.push(*pair);
            i += 2;
            continue;
        }
        let name = block.get(i + 1..i + 1 + n).ok_or_else(truncated)?;
        let at = i + 1 + n;
        let len = block.get(at..at + 2).ok_or_else(truncated)?;
        let v = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let value = block.get(at + 2..at + 2 + v).ok_or_else(truncated)?;
        out.push((name, value));
        i = at + 2 + v;
    }
    Ok(out)
}

/// The fields of an entry's head that the caller chooses.
pub struct Fields {
    pub status: u16,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub generations: u64,
}

/// Write a whole entry into `out` (which must be exactly the entry's size); `digest` is the
/// body's XXH3-128.
fn write_entry(out: &mut [u8], fields: &Fields, digest: u128, block: &[u8], body: &[u8]) {
    out[..3].copy_from_slice(MAGIC);
    out[3] = VERSION;
    out[4..6].copy_from_slice(&fields.status.to_be_bytes());
    out[6..14].copy_from_slice(&fields.created_ms.to_be_bytes());
    out[14..22].copy_from_slice(&fields.expires_ms.to_be_bytes());
    out[22..38].copy_from_slice(&digest.to_be_bytes());
    out[38..42].copy_from_slice(&(body.len() as u32).to_be_bytes());
    out[42..44].copy_from_slice(&(block.len() as u16).to_be_bytes());
    out[44..52].copy_from_slice(&fields.generations.to_be_bytes());
    out[52..60].copy_from_slice(&xxh3_64(block).to_be_bytes());
    let check = xxh3_64(&out[..CHECK_AT]);
    out[CHECK_AT..HEAD_SIZE].copy_from_slice(&check.to_be_bytes());
    out[HEAD_SIZE..HEAD_SIZE + block.len()].copy_from_slice(block);
    out[HEAD_SIZE + block.len()..].copy_from_slice(body);
}

/// Plain-Rust encoder for the tests (`encode_entry` writes straight into a Python bytes).
#[cfg(test)]
pub fn encode(
    status: u16,
    headers: &[HeaderPair<'_>],
    body: &[u8],
    created_ms: u64,
    expires_ms: u64,
) -> Result<Vec<u8>, String> {
    let fields = Fields {
        status,
        created_ms,
        expires_ms,
        generations: 0,
    };
    encode_with(&fields, headers, body)
}

/// `encode` with every field of the head given.
#[cfg(test)]
pub fn encode_with(
    fields: &Fields,
    headers: &[HeaderPair<'_>],
    body: &[u8],
) -> Result<Vec<u8>, String> {
    check_status_and_body(fields.status, body.len())?;
    let block = encode_headers(headers)?;
    let mut out = vec![0u8; HEAD_SIZE + block.len() + body.len()];
    write_entry(&mut out, fields, xxh3_128(body), &block, body);
    Ok(out)
}

/// The checks of `encode_entry` that do not concern headers.
pub fn check_status_and_body(status: u16, body_len: usize) -> Result<(), String> {
    if !(100..=999).contains(&status) {
        return Err(format!("status must be from 100 to 999, got {status}"));
    }
    if u32::try_from(body_len).is_err() {
        return Err(format!(
            "the body must be at most 4 GiB - 1 bytes, got {body_len}"
        ));
    }
    Ok(())
}

/// An int argument as `T`; `TypeError` for a non-int, `ValueError` for an int out of range.
fn extract_int<T: for<'a, 'py> FromPyObject<'a, 'py>>(
    value: &Bound<'_, PyAny>,
    what: &str,
    range: &str,
) -> PyResult<T> {
    if !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, not {}",
            value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        )));
    }
    value.extract::<T>().map_err(|_| {
        PyValueError::new_err(format!("{what} must be an int from {range}, got {value}"))
    })
}

/// Encode a cache entry (see `docs/formats.md`): status, headers as `(name, value)` bytes
/// pairs, body, creation and expiry times in Unix milliseconds, and the stamp of the
/// generations the entry was built under (`generation_stamp`; 0 for none).
///
/// Raises `ValueError` for a status outside 100..=999, a header name of 0 or over 255 bytes,
/// a header value or the header block over 65535 bytes, a body of 4 GiB or more, or times
/// or a stamp outside 0..2**64.
#[pyfunction]
#[pyo3(signature = (status, headers, body, created_ms, expires_ms, generations=None))]
pub fn encode_entry<'py>(
    py: Python<'py>,
    status: &Bound<'py, PyAny>,
    headers: &Bound<'py, PyAny>,
    body: &[u8],
    created_ms: &Bound<'py, PyAny>,
    expires_ms: &Bound<'py, PyAny>,
    generations: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let status_err =
        || PyValueError::new_err(format!("status must be from 100 to 999, got {status}"));
    let status: u16 = extract_int::<i64>(status, "status", "100 to 999")
        .and_then(|s| u16::try_from(s).map_err(|_| status_err()))?;
    let created_ms: u64 = extract_int(created_ms, "created_ms", "0 to 2**64-1")?;
    let expires_ms: u64 = extract_int(expires_ms, "expires_ms", "0 to 2**64-1")?;
    let generations: u64 = match generations {
        Some(value) => extract_int(value, "generations", "0 to 2**64-1")?,
        None => 0,
    };
    check_status_and_body(status, body.len()).map_err(PyValueError::new_err)?;
    // Keep the bytes objects alive while their slices are borrowed.
    let mut owned: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> = Vec::new();
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err("headers must hold (name, value) tuples of bytes")
            })?;
        let as_bytes = |i: usize| -> PyResult<Bound<'py, PyBytes>> {
            pair.get_item(i)?
                .cast_into::<PyBytes>()
                .map_err(|_| PyTypeError::new_err("a header name and value must be bytes"))
        };
        owned.push((as_bytes(0)?, as_bytes(1)?));
    }
    let pairs: Vec<HeaderPair<'_>> = owned
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let block = encode_headers(&pairs).map_err(PyValueError::new_err)?;
    let digest = digest(py, body);
    let len = HEAD_SIZE + block.len() + body.len();
    let size = ffi::Py_ssize_t::try_from(len)
        .map_err(|_| PyValueError::new_err("cache entry too large"))?;
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new, uninitialised bytes object of
    // n bytes (or NULL with an exception set), which we own and fill completely before anyone
    // else can see it; this skips the zero-filling of `PyBytes::new_with`.
    unsafe {
        let obj = Bound::from_owned_ptr_or_err(
            py,
            ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?
        .cast_into_unchecked::<PyBytes>();
        let buf =
            std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(obj.as_ptr()).cast::<u8>(), len);
        let fields = Fields {
            status,
            created_ms,
            expires_ms,
            generations,
        };
        write_entry(buf, &fields, digest, &block, body);
        Ok(obj)
    }
}

/// A decoded cache entry.
#[pyclass(frozen, get_all, module = "oxcache._core")]
pub struct Entry {
    /// The response status code.
    pub status: u16,
    /// The stored response headers, as `(name, value)` bytes pairs.
    pub headers: Py<PyList>,
    /// The response body.
    pub body: Py<PyBytes>,
    /// The body's strong ETag, as `etag(body)` gives it.
    pub etag: String,
    /// When the entry was stored, in Unix milliseconds.
    pub created_ms: u64,
    /// When the entry stops being fresh, in Unix milliseconds.
    pub expires_ms: u64,
    /// The stamp of the generations it was built under (`generation_stamp`; 0 for none).
    pub generations: u64,
}

#[pymethods]
impl Entry {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Entry(status={}, etag='{}', created_ms={}, expires_ms={}, body=<{} bytes>)",
            self.status,
            self.etag,
            self.created_ms,
            self.expires_ms,
            self.body.bind(py).as_bytes().len()
        )
    }
}

/// The fixed-size head of a cache entry: what a conditional request needs, without the body.
#[pyclass(frozen, get_all, module = "oxcache._core")]
pub struct EntryHead {
    /// The response status code.
    pub status: u16,
    /// The body's strong ETag.
    pub etag: String,
    /// When the entry was stored, in Unix milliseconds.
    pub created_ms: u64,
    /// When the entry stops being fresh, in Unix milliseconds.
    pub expires_ms: u64,
    /// The length of the body in bytes.
    pub body_len: u32,
    /// The stamp of the generations it was built under (`generation_stamp`; 0 for none).
    pub generations: u64,
}

#[pymethods]
impl EntryHead {
    fn __repr__(&self) -> String {
        format!(
            "EntryHead(status={}, etag='{}', created_ms={}, expires_ms={}, body_len={})",
            self.status, self.etag, self.created_ms, self.expires_ms, self.body_len
        )
    }
}

/// Check the head, the lengths and the header block; returns the head, the decoded headers
/// and the body (whose digest the caller checks).
pub fn split(data: &[u8]) -> Result<(Head, Vec<HeaderPair<'_>>, &[u8]), String> {
    let head = read_head(data)?;
    let block_end = HEAD_SIZE + usize::from(head.headers_len);
    let expected = block_end + head.body_len as usize;
    if expected != data.len() {
        return Err(format!(
            "cache entry length {} does not match its head ({expected})",
            data.len()
        ));
    }
    let block = &data[HEAD_SIZE..block_end];
    if xxh3_64(block) != head.headers_digest {
        return Err("cache entry headers do not match their digest (corrupted)".to_owned());
    }
    let headers = decode_headers(block)?;
    Ok((head, headers, &data[block_end..]))
}

/// Decode a cache entry; raises `EntryError` for anything but an intact entry of this version.
#[pyfunction]
pub fn decode_entry(py: Python<'_>, data: &[u8]) -> PyResult<Entry> {
    decode(py, data)
}

/// The `Entry` of a plain encoded entry, or `EntryError`.
pub fn decode(py: Python<'_>, data: &[u8]) -> PyResult<Entry> {
    let (head, headers, body) = split(data).map_err(EntryError::new_err)?;
    let actual = if body.len() >= DETACH_THRESHOLD {
        py.detach(|| xxh3_128(body))
    } else {
        xxh3_128(body)
    };
    if actual != head.digest {
        return Err(EntryError::new_err(
            "cache entry body does not match its digest (corrupted)",
        ));
    }
    let list = PyList::empty(py);
    for (name, value) in headers {
        list.append(PyTuple::new(
            py,
            [PyBytes::new(py, name), PyBytes::new(py, value)],
        )?)?;
    }
    Ok(Entry {
        status: head.status,
        headers: list.unbind(),
        body: PyBytes::new(py, body).unbind(),
        etag: format_etag(head.digest),
        created_ms: head.created_ms,
        expires_ms: head.expires_ms,
        generations: head.generations,
    })
}

/// Read only the fixed-size head of an entry (`data` may be just its first 68 bytes).
#[pyfunction]
pub fn peek_entry(data: &[u8]) -> PyResult<EntryHead> {
    peek(data)
}

/// The `EntryHead` of the first `HEAD_SIZE` bytes of `data`, or `EntryError`.
pub fn peek(data: &[u8]) -> PyResult<EntryHead> {
    let head = read_head(data).map_err(EntryError::new_err)?;
    Ok(EntryHead {
        status: head.status,
        etag: format_etag(head.digest),
        created_ms: head.created_ms,
        expires_ms: head.expires_ms,
        body_len: head.body_len,
        generations: head.generations,
    })
}

/// Recompute the head check of `data` after a test changed its head on purpose.
#[cfg(test)]
pub fn reseal(data: &mut [u8]) {
    let check = xxh3_64(&data[..CHECK_AT]);
    data[CHECK_AT..HEAD_SIZE].copy_from_slice(&check.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let headers: [HeaderPair<'_>; 2] = [
            (b"content-type", b"application/json"),
            (b"x-custom", b"yes"),
        ];
        encode(200, &headers, b"{\"a\":1}", 1_000, 61_000).expect("valid entry")
    }

    #[test]
    fn round_trip() {
        let data = sample();
        assert_eq!(data.len(), HEAD_SIZE + 2 + (1 + 8 + 2 + 3) + 7);
        let (head, headers, body) = split(&data).expect("decodes");
        assert_eq!(head.status, 200);
        assert_eq!((head.created_ms, head.expires_ms), (1_000, 61_000));
        assert_eq!(head.digest, xxh3_128(b"{\"a\":1}"));
        assert_eq!(body, b"{\"a\":1}");
        assert_eq!(
            headers,
            vec![
                (&b"content-type"[..], &b"application/json"[..]),
                (&b"x-custom"[..], &b"yes"[..])
            ]
        );
    }

    #[test]
    fn rejects_damage() {
        let data = sample();
        assert!(split(&data[..HEAD_SIZE - 1]).is_err());
        assert!(split(&data[..data.len() - 1]).is_err());
        let mut longer = data.clone();
        longer.push(0);
        assert!(split(&longer).is_err());
        let mut magic = data.clone();
        magic[0] = b'X';
        assert!(read_head(&magic).is_err());
        let mut version = data.clone();
        version[3] = 1;
        assert!(read_head(&version).unwrap_err().contains("version 1"));
        assert!(decode_headers(&[0, 9]).is_err());
        assert!(decode_headers(&[0]).is_err());
        assert!(decode_headers(&[5, b'a']).is_err());
    }

    #[test]
    fn refuses_what_the_format_cannot_hold() {
        let v: &[u8] = b"v";
        assert!(encode_headers(&[(b"", v)]).is_err());
        let long_name = vec![b'a'; 256];
        assert!(encode_headers(&[(&long_name, v)]).is_err());
        let max_name = vec![b'a'; 255];
        assert!(encode_headers(&[(&max_name, v)]).is_ok());
        let long_value = vec![b'v'; 65_536];
        assert!(encode_headers(&[(b"a", &long_value)]).is_err());
        let max_value = vec![b'v'; 65_535];
        assert!(encode_headers(&[(b"a", &max_value)]).is_err()); // block = 1 + 1 + 2 + 65535
        let value = vec![b'v'; 65_535 - 4];
        assert_eq!(
            encode_headers(&[(b"a", &value)]).map(|b| b.len()),
            Ok(65_535)
        );
        assert!(encode(99, &[], b"", 0, 0).is_err());
        assert!(encode(1000, &[], b"", 0, 0).is_err());
        assert!(encode(999, &[], b"", 0, u64::MAX).is_ok());
    }

    #[test]
    fn well_known_pairs_take_two_bytes() {
        let pairs: [HeaderPair<'_>; 4] = [
            (b"content-type", b"application/json"),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"Content-Type", b"application/json"),
        ];
        let block = encode_headers(&pairs).expect("encodes");
        assert_eq!(&block[..6], &[0, 1, 0, 2, 0, 3]);
        assert_eq!(block[6], 12);
        assert_eq!(decode_headers(&block).expect("decodes"), pairs.to_vec());
    }

    #[test]
    fn head_layout_is_big_endian() {
        let fields = Fields {
            status: 304,
            created_ms: 0x0102,
            expires_ms: 0x0304,
            generations: 0x0506,
        };
        let data = encode_with(&fields, &[], b"").expect("encodes");
        assert_eq!(data.len(), HEAD_SIZE);
        assert_eq!(&data[..6], b"OXC\x02\x01\x30");
        assert_eq!(&data[6..14], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&data[14..22], &[0, 0, 0, 0, 0, 0, 3, 4]);
        assert_eq!(&data[22..38], &xxh3_128(b"").to_be_bytes());
        assert_eq!(&data[38..44], &[0, 0, 0, 0, 0, 0]);
        assert_eq!(&data[44..52], &[0, 0, 0, 0, 0, 0, 5, 6]);
        assert_eq!(&data[52..60], &xxh3_64(b"").to_be_bytes());
        assert_eq!(&data[60..68], &xxh3_64(&data[..60]).to_be_bytes());
        assert_eq!(
            format_etag(read_head(&data).expect("head").digest),
            "\"99aa06d3014798d86001c324468d497f\""
        );
    }

    #[test]
    fn every_bit_of_an_entry_is_checked() {
        let data = sample();
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut bad = data.clone();
                bad[i] ^= 1 << bit;
                let caught = match split(&bad) {
                    Err(_) => true,
                    Ok((head, _, body)) => xxh3_128(body) != head.digest,
                };
                assert!(caught, "a flip of bit {bit} of byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn a_head_written_on_purpose_with_a_bad_status_is_refused() {
        let mut data = sample();
        data[4..6].copy_from_slice(&32968u16.to_be_bytes());
        reseal(&mut data);
        assert!(read_head(&data).unwrap_err().contains("status 32968"));
    }

    #[test]
    fn never_panics_on_garbage() {
        let data = sample();
        for cut in 0..data.len() {
            let _ = split(&data[..cut]);
            let _ = decode_headers(&data[HEAD_SIZE.min(cut)..cut]);
        }
        for i in 0..data.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut bad = data.clone();
                bad[i] = b;
                let _ = split(&bad);
            }
        }
    }
}
