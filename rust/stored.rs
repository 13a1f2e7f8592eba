//! The two forms an entry is stored in: plain (an encoded entry, `entry`) or compressed
//! (`b"OXZ\x01"`, the entry's 68-byte head, then the rest of the entry as one LZ4 block).
//! Layout in `docs/formats.md`, section "Compressed entries". Everything that reads a value
//! from storage (the store, the CLI) goes through `decode_stored` / `peek_stored`.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::codec::{compress, decompress_exact, detach_if_large};
use crate::entry::{self, read_head, Entry, EntryHead, HEAD_SIZE};
use crate::EntryError;

/// The first bytes of a compressed entry: `OXZ` and codec 1 (LZ4 block).
pub const MAGIC: &[u8; 4] = b"OXZ\x01";
/// How many bytes peek either form: the prefix and the entry's head (`GETRANGE key 0 71`).
pub const STORED_HEAD_SIZE: usize = MAGIC.len() + HEAD_SIZE;
/// An LZ4 block expands at most about 255 times (plus a few bytes for a short block).
const MAX_RATIO: usize = 255;
const MAX_SLACK: usize = 16;

/// A compressed entry's parts, checked as far as they can be without decompressing.
#[derive(Debug)]
pub struct Packed<'a> {
    /// The entry's head, byte for byte.
    pub head: &'a [u8],
    /// The LZ4 block of the header block and body.
    pub block: &'a [u8],
    /// What the block must decompress to: `headers_len + body_len` bytes.
    pub size: usize,
}

impl Packed<'_> {
    /// The length of the plain entry it holds.
    pub fn plain_len(&self) -> usize {
        HEAD_SIZE + self.size
    }
}

fn packed_error(e: String) -> String {
    format!("compressed entry: {e}")
}

/// The parts of a compressed entry; `None` when `data` is not one (a plain entry, or anything
/// else: decoding it as plain says what is wrong). An error for a short or foreign head or a
/// head claiming more than the block can expand to.
pub fn packed_parts(data: &[u8]) -> Result<Option<Packed<'_>>, String> {
    let Some(rest) = data.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let head = read_head(rest).map_err(packed_error)?;
    let size = usize::from(head.headers_len) + head.body_len as usize;
    let block = &data[STORED_HEAD_SIZE..];
    if size
        > block
            .len()
            .saturating_mul(MAX_RATIO)
            .saturating_add(MAX_SLACK)
    {
        return Err(packed_error(format!(
            "its head claims {size} bytes, more than a block of {} can hold",
            block.len()
        )));
    }
    Ok(Some(Packed {
        head: &rest[..HEAD_SIZE],
        block,
        size,
    }))
}

/// Write the plain entry `packed` holds into `out` (exactly `packed.plain_len()` bytes).
pub fn unpack_into(packed: &Packed<'_>, out: &mut [u8]) -> Result<(), String> {
    out[..HEAD_SIZE].copy_from_slice(packed.head);
    decompress_exact(packed.block, &mut out[HEAD_SIZE..]).map_err(packed_error)
}

/// What `pack_entry` accepts: a plain entry whose head is valid and whose length is the one
/// its head gives (anything else could never be read back).
pub fn check_plain(data: &[u8]) -> Result<(), String> {
    let head = read_head(data)?;
    let expected = HEAD_SIZE + usize::from(head.headers_len) + head.body_len as usize;
    if data.len() != expected {
        return Err(format!(
            "cache entry length {} does not match its head ({expected})",
            data.len()
        ));
    }
    Ok(())
}

/// Whether an entry of `plain_len` bytes is stored as is, its rest compressing to a block of
/// `block_len` bytes: when the block and the prefix are no smaller than the rest they replace.
pub fn keep_plain(plain_len: usize, block_len: usize) -> bool {
    block_len + MAGIC.len() >= plain_len - HEAD_SIZE
}

/// The compressed form: prefix, head, block.
pub fn write_packed(out: &mut [u8], head: &[u8], block: &[u8]) {
    out[..MAGIC.len()].copy_from_slice(MAGIC);
    out[MAGIC.len()..STORED_HEAD_SIZE].copy_from_slice(&head[..HEAD_SIZE]);
    out[STORED_HEAD_SIZE..].copy_from_slice(block);
}

/// Plain-Rust `pack_entry` for the tests: `None` when the entry is kept as is.
#[cfg(test)]
pub fn pack(data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    check_plain(data)?;
    let block = compress(&data[HEAD_SIZE..]);
    if keep_plain(data.len(), block.len()) {
        return Ok(None);
    }
    let mut out = vec![0; STORED_HEAD_SIZE + block.len()];
    write_packed(&mut out, data, &block);
    Ok(Some(out))
}

/// Plain-Rust `unpack_entry` for the tests.
#[cfg(test)]
pub fn unpack(data: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match packed_parts(data)? {
        None => Ok(std::borrow::Cow::Borrowed(data)),
        Some(packed) => {
            let mut out = vec![0; packed.plain_len()];
            unpack_into(&packed, &mut out)?;
            Ok(std::borrow::Cow::Owned(out))
        }
    }
}

/// The compressed form of an encoded entry, or `data` itself when LZ4 does not make it
/// smaller; `EntryError` unless `data` is a plain entry (valid head, matching length).
#[pyfunction]
pub fn pack_entry<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyBytes>> {
    let plain = data.as_bytes();
    check_plain(plain).map_err(EntryError::new_err)?;
    let rest = &plain[HEAD_SIZE..];
    let block = detach_if_large(py, rest.len(), || compress(rest));
    if keep_plain(plain.len(), block.len()) {
        return Ok(data.clone());
    }
    PyBytes::new_with(py, STORED_HEAD_SIZE + block.len(), |out| {
        write_packed(out, plain, &block);
        Ok(())
    })
}

/// The plain encoded entry a compressed one holds, or `data` itself when it is not compressed;
/// `EntryError` when the compressed form is malformed.
#[pyfunction]
pub fn unpack_entry<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyBytes>> {
    let Some(packed) = packed_parts(data.as_bytes()).map_err(EntryError::new_err)? else {
        return Ok(data.clone());
    };
    PyBytes::new_with(py, packed.plain_len(), |out| {
        detach_if_large(py, packed.size, || unpack_into(&packed, out)).map_err(EntryError::new_err)
    })
}

/// Decode a value read from storage, plain or compressed; `EntryError` for anything else.
#[pyfunction]
pub fn decode_stored(py: Python<'_>, data: &[u8]) -> PyResult<Entry> {
    match packed_parts(data).map_err(EntryError::new_err)? {
        None => entry::decode(py, data),
        Some(packed) => {
            let mut plain = vec![0; packed.plain_len()];
            detach_if_large(py, packed.size, || unpack_into(&packed, &mut plain))
                .map_err(EntryError::new_err)?;
            entry::decode(py, &plain)
        }
    }
}

/// The head of a stored value of either form, from at least its first `STORED_HEAD_SIZE`
/// bytes (a plain entry's first 68 do); `EntryError` for a short or foreign head.
#[pyfunction]
pub fn peek_stored(data: &[u8]) -> PyResult<EntryHead> {
    entry::peek(data.strip_prefix(MAGIC).unwrap_or(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{encode, reseal};

    fn big() -> Vec<u8> {
        let body = b"{\"id\": 1, \"name\": \"item\"}, ".repeat(100);
        encode(200, &[(b"content-type", b"application/json")], &body, 1, 2).expect("valid entry")
    }

    #[test]
    fn packs_keeping_the_head_and_unpacks_to_the_same_bytes() {
        let data = big();
        let packed = pack(&data).expect("plain entry").expect("compresses");
        assert_eq!(&packed[..4], b"OXZ\x01");
        assert_eq!(&packed[4..STORED_HEAD_SIZE], &data[..HEAD_SIZE]);
        assert!(packed.len() < data.len() / 5);
        assert_eq!(unpack(&packed).expect("unpacks").as_ref(), &data[..]);
        assert_eq!(unpack(&data).expect("plain").as_ref(), &data[..]);
        assert_eq!(read_head(&packed[4..]), read_head(&data));
    }

    #[test]
    fn keeps_what_lz4_does_not_shrink() {
        let small = encode(200, &[], b"abc", 1, 2).expect("valid entry");
        assert_eq!(pack(&small), Ok(None));
        let head_only = encode(304, &[], b"", 1, 2).expect("valid entry");
        assert_eq!(pack(&head_only), Ok(None));
        // The rule: block + 4 >= rest is kept plain; one byte less is packed.
        assert!(keep_plain(HEAD_SIZE + 10, 6));
        assert!(!keep_plain(HEAD_SIZE + 10, 5));
        assert!(keep_plain(HEAD_SIZE, 1));
    }

    #[test]
    fn packing_refuses_what_is_not_a_plain_entry() {
        let data = big();
        let packed = pack(&data).unwrap().unwrap();
        assert!(pack(&packed).unwrap_err().contains("magic"));
        assert!(pack(&data[..HEAD_SIZE - 1]).is_err());
        assert!(pack(&data[..data.len() - 1])
            .unwrap_err()
            .contains("does not match"));
        assert!(pack(b"").is_err());
    }

    #[test]
    fn rejects_damaged_compressed_entries() {
        let data = big();
        let packed = pack(&data).unwrap().unwrap();
        assert!(unpack(&packed[..packed.len() - 1]).is_err());
        assert!(unpack(&packed[..30]).unwrap_err().contains("too short"));
        let mut other_version = packed.clone();
        other_version[7] = 1;
        assert!(unpack(&other_version).unwrap_err().contains("version 1"));
        let mut flipped = packed.clone();
        flipped[20] ^= 4;
        assert!(unpack(&flipped).unwrap_err().contains("check"));
        // A head claiming more than 255 times the block is refused before decompressing.
        let mut huge = packed[..STORED_HEAD_SIZE + 1].to_vec();
        huge[42..46].copy_from_slice(&u32::MAX.to_be_bytes());
        reseal(&mut huge[4..]);
        assert!(unpack(&huge).unwrap_err().contains("more than a block"));
        // Exactly at the bound, the block is read (and here fails).
        let mut at_bound = packed[..STORED_HEAD_SIZE].to_vec();
        at_bound.push(0);
        at_bound[42..46].copy_from_slice(&(255 + 16u32).to_be_bytes());
        at_bound[46..48].copy_from_slice(&0u16.to_be_bytes());
        reseal(&mut at_bound[4..]);
        assert!(unpack(&at_bound).unwrap_err().contains("LZ4"));
        // Not the prefix: left as is, whatever it is.
        assert_eq!(unpack(b"OXZ").expect("not compressed").as_ref(), b"OXZ");
        assert_eq!(unpack(b"").expect("not compressed").as_ref(), b"");
    }

    #[test]
    fn never_panics_on_garbage() {
        let packed = pack(&big()).unwrap().unwrap();
        for cut in 0..packed.len() {
            let _ = unpack(&packed[..cut]);
        }
        for i in 0..packed.len() {
            for b in [0u8, 1, 0x0f, 0xf0, 0xff] {
                let mut bad = packed.clone();
                bad[i] = b;
                let _ = unpack(&bad);
            }
        }
    }

    #[test]
    fn python_functions_read_both_forms() {
        Python::initialize();
        Python::attach(|py| {
            let data = PyBytes::new(py, &big());
            let packed = pack_entry(py, &data).expect("packs");
            assert!(packed.as_bytes().starts_with(MAGIC));
            let plain = unpack_entry(py, &packed).expect("unpacks");
            assert_eq!(plain.as_bytes(), data.as_bytes());
            assert!(unpack_entry(py, &data).expect("plain").is(&data));
            let small = PyBytes::new(py, &encode(200, &[], b"x", 1, 2).unwrap());
            assert!(pack_entry(py, &small).expect("kept").is(&small));
            for stored in [&data, &packed] {
                let entry = decode_stored(py, stored.as_bytes()).expect("decodes");
                assert_eq!(entry.status, 200);
                let head = peek_stored(&stored.as_bytes()[..STORED_HEAD_SIZE]).expect("peeks");
                let body_len = entry.body.bind(py).as_bytes().len();
                assert_eq!(head.etag, entry.etag);
                assert_eq!(head.body_len as usize, body_len);
            }
            let cut = &packed.as_bytes()[..packed.as_bytes().len() - 2];
            let err = decode_stored(py, cut).err().expect("damaged");
            assert!(err.is_instance_of::<EntryError>(py));
            let cut = PyBytes::new(py, cut);
            let err = unpack_entry(py, &cut).expect_err("damaged");
            assert!(err.is_instance_of::<EntryError>(py));
            let err = pack_entry(py, &packed).expect_err("not plain");
            assert!(err.is_instance_of::<EntryError>(py));
            assert!(peek_stored(&packed.as_bytes()[..STORED_HEAD_SIZE - 1]).is_err());
        });
    }
}
