//! Canonical, injective cache keys: `prefix:module.name(arg=value,...)` (see `docs/formats.md`).
//!
//! The string work (quoting, hex, the memory-address check, hashing long values) is plain Rust
//! over `&str`/`&[u8]`; only the dispatch over Python values needs the interpreter.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple, PyType,
};
use xxhash_rust::xxh3::xxh3_128;

use crate::etag::{digest, etag_bytes};
use crate::KeyBuildError;

/// 2: a request's origin, undeclared query parameters and the headers its endpoint's `Vary`
/// names are key parts (`@origin`, `@query`, `@vary:`), see docs/formats.md.
pub const KEY_FORMAT_VERSION: u32 = 2;
/// Canonical values longer than this many bytes are replaced by `#` and their XXH3-128.
pub const HASH_THRESHOLD: usize = 256;
/// The argument value is at depth 0; a value deeper than this raises `KeyBuildError`.
pub const MAX_DEPTH: usize = 32;

/// Python types the rules dispatch on, imported once per interpreter.
struct Types {
    enum_type: Py<PyType>,
    uuid: Py<PyType>,
    datetime: Py<PyType>,
    date: Py<PyType>,
    time: Py<PyType>,
    decimal: Py<PyType>,
    base_model: Option<Py<PyType>>,
    /// `builtins.hasattr`: it clears a missing attribute's `AttributeError` in C, where
    /// pyo3's `hasattr` fetches and normalises it.
    hasattr: Py<PyAny>,
}

static TYPES: PyOnceLock<Types> = PyOnceLock::new();

fn import_type(py: Python<'_>, module: &str, name: &str) -> PyResult<Py<PyType>> {
    Ok(py
        .import(module)?
        .getattr(name)?
        .cast_into::<PyType>()?
        .unbind())
}

fn types(py: Python<'_>) -> PyResult<&'static Types> {
    TYPES.get_or_try_init(py, || {
        Ok::<Types, PyErr>(Types {
            enum_type: import_type(py, "enum", "Enum")?,
            uuid: import_type(py, "uuid", "UUID")?,
            datetime: import_type(py, "datetime", "datetime")?,
            date: import_type(py, "datetime", "date")?,
            time: import_type(py, "datetime", "time")?,
            decimal: import_type(py, "decimal", "Decimal")?,
            // pydantic is optional: without it rule 19 never applies.
            base_model: import_type(py, "pydantic", "BaseModel").ok(),
            hasattr: py.import("builtins")?.getattr("hasattr")?.unbind(),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Pure string work.

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b'"' || b == b'\\'
}

fn push_escape(out: &mut String, b: u8) {
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        _ => {
            let _ = write!(out, "\\u{:04x}", b);
        }
    }
}

/// Append a quoted string: `"`, with `"` and `\` backslash-escaped and code points below
/// U+0020 and U+007F written as `\u` + 4 lowercase hex digits, then `"`.
///
/// Every code point that needs escaping is ASCII, so copying runs of UTF-8 bytes is exact.
pub fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if needs_escape(b) {
            // `run..i` lies between ASCII bytes, so both ends are char boundaries.
            out.push_str(&s[run..i]);
            push_escape(out, b);
            run = i + 1;
        }
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Append a quoted string given as code points, lone surrogates included (as `\udxxx`).
pub fn push_quoted_code_points(out: &mut String, code_points: impl Iterator<Item = u32>) {
    out.push('"');
    for cp in code_points {
        match char::from_u32(cp) {
            Some(c) if c.is_ascii() && needs_escape(c as u8) => push_escape(out, c as u8),
            Some(c) => out.push(c),
            None => {
                let _ = write!(out, "\\u{cp:04x}");
            }
        }
    }
    out.push('"');
}

/// Append `b"` + lowercase hex + `"`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 3);
    out.push_str("b\"");
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out.push('"');
}

/// True when `s` holds ` at 0x` followed by at least four hex digits (a default repr).
pub fn has_memory_address(s: &str) -> bool {
    s.match_indices(" at 0x").any(|(i, _)| {
        s.as_bytes()[i + 6..]
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_hexdigit())
            .count()
            == 4
    })
}

/// Replace `out[start..]` by `#` + its XXH3-128 when it is longer than the threshold.
pub fn hash_if_long(out: &mut String, start: usize) {
    if out.len() - start > HASH_THRESHOLD {
        let digest = xxh3_128(&out.as_bytes()[start..]);
        out.truncate(start);
        let _ = write!(out, "#{digest:032x}");
    }
}

/// `{` + items sorted by their bytes, `,`-joined + `}`; `set()` when empty.
pub fn push_set(out: &mut String, mut items: Vec<String>) {
    if items.is_empty() {
        out.push_str("set()");
        return;
    }
    items.sort_unstable();
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push('}');
}

/// `{` + `k:v` pairs sorted by the bytes of `k`, then of `v`, `,`-joined + `}`.
pub fn push_dict(out: &mut String, mut pairs: Vec<(String, String)>) {
    pairs.sort_unstable();
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
}

/// The `KeyBuildError` message for a `str()` that holds a memory address.
pub fn memory_address_message(arg: &str, type_name: &str, text: &str) -> String {
    let shown: String = text.chars().take(100).collect();
    format!(
        "argument '{arg}' ({type_name}) has no stable cache key: str() gives '{shown}', a memory \
         address. Add {type_name} to ignore_arg_types, or give it a __str__ or __cache_key__ \
         method."
    )
}

// ---------------------------------------------------------------------------------------------
// Python values.

/// Quote a Python str, including one holding lone surrogates (which is not valid UTF-8).
fn push_quoted_py(out: &mut String, s: &Bound<'_, PyString>) -> PyResult<()> {
    if let Ok(text) = s.to_cow() {
        push_quoted(out, &text);
        return Ok(());
    }
    let py = s.py();
    let encoded = s.call_method1(intern!(py, "encode"), ("utf-32-le", "surrogatepass"))?;
    let bytes = encoded.cast::<PyBytes>()?.as_bytes();
    push_quoted_code_points(
        out,
        bytes
            .chunks_exact(4)
            .map(|u| u32::from_le_bytes([u[0], u[1], u[2], u[3]])),
    );
    Ok(())
}

/// What the slow rules need to know about a type, found once per type (`docs/formats.md`).
#[derive(Clone, Copy)]
struct TypeInfo {
    /// Rule 6: `hasattr(type(v), "__cache_key__")`. A failed lookup costs an exception, and Enum
    /// and pydantic classes add a Python-level `__getattr__` on top (about 0.9 and 0.7 us on
    /// CPython 3.11), so it is remembered.
    has_cache_key: bool,
    /// `type(v).__name__` may be read by calling `type.__getattribute__` directly: the metatype
    /// does not override `__getattribute__`. Enum classes need it: `EnumType.__getattr__` makes
    /// every attribute of the class go through a Python-level slot and a method-wrapper
    /// (about 0.3 us), though `__getattr__` itself only runs when the lookup fails, which
    /// `__name__` never does. The name itself is read each time (it may be reassigned).
    direct_name: bool,
}

/// Types seen past rules 1-5, by address. Each entry holds its type, so the address cannot be
/// reused by another type while the entry exists.
type InfoMemo = Mutex<HashMap<usize, (Py<PyType>, TypeInfo), BuildHasherDefault<AddrHasher>>>;
static INFO_MEMO: PyOnceLock<InfoMemo> = PyOnceLock::new();
/// Beyond this many types, answers are computed each time instead of remembered.
const INFO_MEMO_LIMIT: usize = 4096;

/// A hasher for object addresses: they are unique and 16-byte aligned, so one multiply
/// spreads them (SipHash is several times slower and buys nothing here).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = ((n as u64) >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// `type.__getattribute__` as a C function, and as the Python object a metatype shows
/// when it does not override it.
struct TypeGetattr {
    slot: ffi::getattrofunc,
    wrapper: Py<PyAny>,
}

static TYPE_GETATTR: PyOnceLock<TypeGetattr> = PyOnceLock::new();

fn type_getattr(py: Python<'_>) -> PyResult<&'static TypeGetattr> {
    TYPE_GETATTR.get_or_try_init(py, || {
        let type_type = py.get_type::<PyType>();
        // SAFETY: `type` is a live type object; since Python 3.10 (our floor, abi3-py310)
        // `PyType_GetSlot` also answers for static types such as `type`.
        let slot = unsafe { ffi::PyType_GetSlot(type_type.as_type_ptr(), ffi::Py_tp_getattro) };
        if slot.is_null() {
            return Err(PyTypeError::new_err("type has no tp_getattro"));
        }
        // SAFETY: the `Py_tp_getattro` slot holds a `getattrofunc`.
        let slot = unsafe { std::mem::transmute::<*mut c_void, ffi::getattrofunc>(slot) };
        let wrapper = type_type.getattr(intern!(py, "__getattribute__"))?.unbind();
        Ok(TypeGetattr { slot, wrapper })
    })
}

fn find_type_info(py: Python<'_>, ty: &Bound<'_, PyType>, t: &Types) -> PyResult<TypeInfo> {
    let has_cache_key = t
        .hasattr
        .bind(py)
        .call1((ty, intern!(py, "__cache_key__")))?
        .as_ptr()
        == py_true();
    let tg = type_getattr(py)?;
    let meta = ty.get_type();
    // SAFETY: `meta` is a live type object (the type of a type).
    let meta_slot = unsafe { ffi::PyType_GetSlot(meta.as_type_ptr(), ffi::Py_tp_getattro) };
    let direct_name = meta_slot == tg.slot as *mut c_void
        || meta.getattr(intern!(py, "__getattribute__"))?.as_ptr() == tg.wrapper.as_ptr();
    Ok(TypeInfo {
        has_cache_key,
        direct_name,
    })
}

/// The remembered facts about `type(value)`, found on first sight.
fn type_info(value: &Bound<'_, PyAny>, t: &Types) -> PyResult<TypeInfo> {
    let py = value.py();
    // SAFETY: the type of a live object is a live type object.
    let addr = unsafe { ffi::Py_TYPE(value.as_ptr()) } as usize;
    let slot = (addr >> 4) % RECENT_SLOTS;
    let recent = RECENT.try_with(|recent| {
        let (seen, info) = recent.get()[slot];
        (seen == addr).then_some(info)
    });
    if let Ok(Some(info)) = recent {
        return Ok(info);
    }
    let memo = INFO_MEMO.get_or_init(py, || Mutex::new(HashMap::default()));
    let mut remembered = None;
    if let Ok(seen) = memo.lock() {
        remembered = seen.get(&addr).map(|(_, info)| *info);
    }
    let info = match remembered {
        Some(info) => info,
        None => {
            // The lock is not held while Python code runs (it could build a key itself).
            let ty = value.get_type();
            let info = find_type_info(py, &ty, t)?;
            let Ok(mut seen) = memo.lock() else {
                return Ok(info);
            };
            if seen.len() >= INFO_MEMO_LIMIT {
                return Ok(info);
            }
            seen.entry(addr).or_insert((ty.unbind(), info)).1
        }
    };
    // Only types the memo holds (alive until exit) go in the per-thread front.
    let _ = RECENT.try_with(|recent| {
        let mut slots = recent.get();
        slots[slot] = (addr, info);
        recent.set(slots);
    });
    Ok(info)
}

/// Slots of the per-thread front of `INFO_MEMO`, by type address.
const RECENT_SLOTS: usize = 8;

thread_local! {
    /// The last types seen on this thread, each one held by `INFO_MEMO` (never removed from
    /// it), so an address here cannot belong to another type. Saves the lock and the hash.
    static RECENT: Cell<[(usize, TypeInfo); RECENT_SLOTS]> = const {
        Cell::new([(0, TypeInfo { has_cache_key: false, direct_name: false }); RECENT_SLOTS])
    };
}

/// Append `type(value).__name__`.
fn push_type_name(out: &mut String, value: &Bound<'_, PyAny>, info: TypeInfo) -> PyResult<()> {
    let py = value.py();
    let ty = value.get_type();
    let name = if info.direct_name {
        let tg = type_getattr(py)?;
        // SAFETY: `tp_getattro` of `type` called on a type object with a str name, as
        // `PyObject_GetAttr` would; it returns a new reference or NULL with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (tg.slot)(ty.as_ptr(), intern!(py, "__name__").as_ptr()),
            )?
        }
    } else {
        ty.getattr(intern!(py, "__name__"))?
    };
    // `type.__name__` is always a str; a metatype's `__getattribute__` might lie.
    let name = name.cast_into::<PyString>()?;
    out.push_str(&name.to_string_lossy());
    Ok(())
}

/// `type(value).__name__`, for error messages.
/// `type(value).__name__`, for error messages.
fn type_name(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(value.get_type().name()?.to_string_lossy().into_owned())
}

/// `isinstance` by the MRO (no `__instancecheck__` hooks), without raising.
fn is_subtype(value: &Bound<'_, PyAny>, ty: &Py<PyType>) -> bool {
    // SAFETY: both pointers are live type objects while `value` and `ty` are held.
    unsafe { ffi::PyType_IsSubtype(ffi::Py_TYPE(value.as_ptr()), ty.as_ptr().cast()) != 0 }
}

fn key_error(py: Python<'_>, message: String, cause: Option<PyErr>) -> PyErr {
    let err = KeyBuildError::new_err(message);
    if let Some(cause) = cause {
        err.set_cause(py, Some(cause));
    }
    err
}

struct Canon<'a> {
    types: &'a Types,
    arg: &'a str,
}

impl Canon<'_> {
    fn write(&self, out: &mut String, value: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        let py = value.py();
        if depth > MAX_DEPTH {
            return Err(key_error(
                py,
                format!(
                    "argument '{}' is nested more than {MAX_DEPTH} levels deep (or contains \
                     itself), so it has no cache key",
                    self.arg
                ),
                None,
            ));
        }
        // Rules 1-5 by exact type pointer, before any attribute lookup.
        if value.is_none() {
            out.push_str("None");
            return Ok(());
        }
        if value.is_exact_instance_of::<PyBool>() {
            out.push_str(bool_str(value));
            return Ok(());
        }
        if let Ok(s) = value.cast_exact::<PyString>() {
            return push_quoted_py(out, s);
        }
        if value.is_exact_instance_of::<PyInt>() {
            return write_int(out, value);
        }
        if let Ok(x) = value.cast_exact::<PyFloat>() {
            push_float_repr(out, x.value());
            return Ok(());
        }
        // Instances of these exact builtins cannot carry `__cache_key__` (no instance dict,
        // immutable type), so rules 9 and 15-18 can be taken before rule 6's lookup.
        if let Some(done) = self.write_builtin_container(out, value, depth, true)? {
            return Ok(done);
        }
        // Rule 6: an explicit key.
        let t = self.types;
        let info = type_info(value, t)?;
        if info.has_cache_key {
            let key = value
                .call_method0(intern!(py, "__cache_key__"))
                .map_err(|e| self.failed(py, value, "__cache_key__()", e))?;
            push_type_name(out, value, info)?;
            out.push('(');
            self.write(out, &key, depth + 1)?;
            out.push(')');
            return Ok(());
        }
        // Rule 7: enum members, before their int/str bases.
        if is_subtype(value, &t.enum_type) {
            let member = match value.getattr_opt(intern!(py, "_name_"))? {
                Some(name) => name,
                None => value.getattr(intern!(py, "name"))?,
            };
            push_type_name(out, value, info)?;
            out.push('.');
            // `str()` of an exact str is itself (and `PyObject_Str` checks for signals).
            match member.cast_exact::<PyString>() {
                Ok(member) => out.push_str(&member.to_string_lossy()),
                Err(_) => out.push_str(&member.str()?.to_string_lossy()),
            }
            return Ok(());
        }
        // Rule 8: subclasses of the scalar builtins, as their base value.
        if value.is_instance_of::<PyBool>() {
            out.push_str(bool_str(value));
            return Ok(());
        }
        if let Ok(s) = value.cast::<PyString>() {
            return push_quoted_py(out, s);
        }
        if value.is_instance_of::<PyInt>() {
            return write_int(out, value);
        }
        if let Ok(x) = value.cast::<PyFloat>() {
            // `float.__repr__(v)` reads the stored double, as `value()` does.
            push_float_repr(out, x.value());
            return Ok(());
        }
        // Rules 9 and 15-18 for subclasses of bytes, bytearray, list, tuple, set, dict.
        if let Some(done) = self.write_builtin_container(out, value, depth, false)? {
            return Ok(done);
        }
        // Rules 10-14: tagged strings. `datetime` is a `date`, so it comes first.
        for (ty, tag, method) in [
            (&t.uuid, "UUID", intern!(py, "__str__")),
            (&t.datetime, "datetime", intern!(py, "isoformat")),
            (&t.date, "date", intern!(py, "isoformat")),
            (&t.time, "time", intern!(py, "isoformat")),
            (&t.decimal, "Decimal", intern!(py, "__str__")),
        ] {
            if is_subtype(value, ty) {
                let text = value
                    .call_method0(method)
                    .map_err(|e| self.failed(py, value, tag, e))?;
                let text = text.cast_into::<PyString>().map_err(|e| {
                    self.failed(py, value, tag, PyTypeError::new_err(e.to_string()))
                })?;
                out.push_str(tag);
                out.push('(');
                push_quoted_py(out, &text)?;
                out.push(')');
                return Ok(());
            }
        }
        // Rule 19: pydantic models, by their field values.
        if let Some(model) = &t.base_model {
            if is_subtype(value, model) {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "mode"), intern!(py, "python"))?;
                let dumped = value
                    .call_method(intern!(py, "model_dump"), (), Some(&kwargs))
                    .map_err(|e| self.failed(py, value, "model_dump()", e))?;
                let dict = dumped.cast_into::<PyDict>().map_err(|e| {
                    self.failed(
                        py,
                        value,
                        "model_dump()",
                        PyTypeError::new_err(e.to_string()),
                    )
                })?;
                push_type_name(out, value, info)?;
                return self.write_dict(out, &dict, depth);
            }
        }
        // Rule 20: `T(` quoted str(v) `)`, unless str(v) is a default repr with an address.
        let text = value
            .str()
            .map_err(|e| self.failed(py, value, "str()", e))?;
        let start = out.len();
        push_type_name(out, value, info)?;
        let text_utf8 = text.to_string_lossy();
        if has_memory_address(&text_utf8) {
            let name = out.split_off(start);
            return Err(key_error(
                py,
                memory_address_message(self.arg, &name, &text_utf8),
                None,
            ));
        }
        out.push('(');
        push_quoted_py(out, &text)?;
        out.push(')');
        Ok(())
    }

    /// Rules 9 and 15-18. With `exact`, only for the exact builtin types (safe before rule 6).
    /// Returns `Some(())` when `value` was written.
    fn write_builtin_container(
        &self,
        out: &mut String,
        value: &Bound<'_, PyAny>,
        depth: usize,
        exact: bool,
    ) -> PyResult<Option<()>> {
        let kind = if exact {
            Container::of_exact(value)
        } else {
            Container::of_subclass(value)
        };
        let Some(kind) = kind else {
            return Ok(None);
        };
        match kind {
            Container::List => {
                let list = value.cast::<PyList>()?;
                out.push('[');
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(out, &item, depth + 1)?;
                }
                out.push(']');
            }
            Container::Tuple => {
                let tuple = value.cast::<PyTuple>()?;
                out.push('(');
                for (i, item) in tuple.iter_borrowed().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(out, &item, depth + 1)?;
                }
                if tuple.len() == 1 {
                    out.push(',');
                }
                out.push(')');
            }
            Container::Dict => self.write_dict(out, value.cast::<PyDict>()?, depth)?,
            Container::Set => {
                let mut items = Vec::new();
                for item in value.try_iter()? {
                    let mut s = String::new();
                    self.write(&mut s, &item?, depth + 1)?;
                    items.push(s);
                }
                push_set(out, items);
            }
            Container::Bytes => push_hex(out, value.cast::<PyBytes>()?.as_bytes()),
            Container::ByteArray => push_hex(out, &value.cast::<PyByteArray>()?.to_vec()),
        }
        Ok(Some(()))
    }

    /// Rule 18: the dict's pairs, at the depth of the dict.
    fn write_dict(&self, out: &mut String, dict: &Bound<'_, PyDict>, depth: usize) -> PyResult<()> {
        let mut pairs = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let mut ks = String::new();
            self.write(&mut ks, &k, depth + 1)?;
            let mut vs = String::new();
            self.write(&mut vs, &v, depth + 1)?;
            pairs.push((ks, vs));
        }
        push_dict(out, pairs);
        Ok(())
    }

    fn failed(&self, py: Python<'_>, value: &Bound<'_, PyAny>, what: &str, cause: PyErr) -> PyErr {
        let name = type_name(value).unwrap_or_else(|_| "?".to_owned());
        let exc = cause
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        key_error(
            py,
            format!(
                "argument '{}' ({name}) has no cache key: {what} raised {exc}: {}",
                self.arg,
                cause.value(py)
            ),
            Some(cause),
        )
    }
}

/// The builtin containers of rules 9 and 15-18.
enum Container {
    List,
    Tuple,
    Dict,
    Set,
    Bytes,
    ByteArray,
}

impl Container {
    /// By the exact type: one pointer comparison each, no call into the interpreter.
    fn of_exact(value: &Bound<'_, PyAny>) -> Option<Self> {
        // SAFETY: the type of a live object; the builtin type objects are statics.
        let ty = unsafe { ffi::Py_TYPE(value.as_ptr()) };
        let is = |builtin: *mut ffi::PyTypeObject| ty == builtin;
        use std::ptr::addr_of_mut;
        // Only the addresses of the builtin type objects are taken.
        if is(addr_of_mut!(ffi::PyList_Type)) {
            Some(Self::List)
        } else if is(addr_of_mut!(ffi::PyTuple_Type)) {
            Some(Self::Tuple)
        } else if is(addr_of_mut!(ffi::PyDict_Type)) {
            Some(Self::Dict)
        } else if is(addr_of_mut!(ffi::PySet_Type)) || is(addr_of_mut!(ffi::PyFrozenSet_Type)) {
            Some(Self::Set)
        } else if is(addr_of_mut!(ffi::PyBytes_Type)) {
            Some(Self::Bytes)
        } else if is(addr_of_mut!(ffi::PyByteArray_Type)) {
            Some(Self::ByteArray)
        } else {
            None
        }
    }

    /// By `isinstance`, in the order of the rules, for subclasses.
    fn of_subclass(value: &Bound<'_, PyAny>) -> Option<Self> {
        if value.is_instance_of::<PyList>() {
            Some(Self::List)
        } else if value.is_instance_of::<PyTuple>() {
            Some(Self::Tuple)
        } else if value.is_instance_of::<PyDict>() {
            Some(Self::Dict)
        } else if value.is_instance_of::<PySet>() || value.is_instance_of::<PyFrozenSet>() {
            Some(Self::Set)
        } else if value.is_instance_of::<PyBytes>() {
            Some(Self::Bytes)
        } else if value.is_instance_of::<PyByteArray>() {
            Some(Self::ByteArray)
        } else {
            None
        }
    }
}

fn py_true() -> *mut ffi::PyObject {
    // SAFETY: `Py_True` only takes the address of the interpreter's `True` singleton.
    unsafe { ffi::Py_True() }
}

fn bool_str(value: &Bound<'_, PyAny>) -> &'static str {
    if value.as_ptr() == py_true() {
        "True"
    } else {
        "False"
    }
}

/// Decimal digits of an int (or int subclass, by its int value).
fn write_int(out: &mut String, value: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: `value` is an int (checked by the caller); PyLong_AsLongLong reads its value.
    let n = unsafe { ffi::PyLong_AsLongLong(value.as_ptr()) };
    if n == -1 {
        let py = value.py();
        if PyErr::take(py).is_some() {
            // Beyond 64 bits: let Python write it.
            let repr = py
                .get_type::<PyInt>()
                .call_method1(intern!(py, "__repr__"), (value,))?;
            out.push_str(&repr.cast_into::<PyString>()?.to_string_lossy());
            return Ok(());
        }
    }
    push_i64(out, n);
    Ok(())
}

/// Append `float.__repr__(x)` as CPython writes it (`repr` style "short"): the shortest digits
/// that round-trip, in fixed notation when the decimal point falls within 16 digits of the first
/// digit (`1.0`, `0.0001`, `1234567890123456.0`), else as `d.ddde+XX` (`1e-05`, `1.5e+16`);
/// `nan`, `inf`, `-inf`. Writing them here saves the `repr()` call and its str (about 0.5 us).
pub fn push_float_repr(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x < 0.0 { "-inf" } else { "inf" });
        return;
    }
    // Ryu gives the shortest digits that round-trip, the nearest to the exact value, ties to
    // even: the digits of CPython's repr (dtoa mode 0). Only its layout differs, so the digits
    // and the decimal point's place are read back from it and laid out as CPython does.
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(x);
    let (negative, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mantissa, exp) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits = [0u8; 40];
    let mut n = 0;
    // Digits before the mantissa's '.' (or all of them when it has none).
    let mut int_len: i32 = 0;
    let mut seen_point = false;
    for &b in mantissa.as_bytes() {
        if b == b'.' {
            seen_point = true;
        } else if b.is_ascii_digit() {
            if n == 0 && b == b'0' {
                // A leading zero moves the point left instead of being a digit.
                if !seen_point {
                    continue;
                }
                int_len -= 1;
                continue;
            }
            if n < digits.len() {
                digits[n] = b;
                n += 1;
            }
            if !seen_point {
                int_len += 1;
            }
        }
    }
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    if n == 0 {
        // Zero: one digit, the point after it.
        digits[0] = b'0';
        n = 1;
        int_len = 1;
    }
    let digits = std::str::from_utf8(&digits[..n]).unwrap_or("0");
    let exp = if digits == "0" { 0 } else { exp + int_len - 1 };
    // The decimal point sits `decpt` digits after the first digit.
    let decpt = exp + 1;
    if negative {
        out.push('-');
    }
    if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = decpt - 1;
        out.push_str(if e < 0 { "e-" } else { "e+" });
        if e.unsigned_abs() < 10 {
            out.push('0');
        }
        push_i64(out, i64::from(e.unsigned_abs()));
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..-decpt {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let decpt = decpt as usize;
        if decpt >= digits.len() {
            out.push_str(digits);
            for _ in digits.len()..decpt {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        }
    }
}

/// Append the decimal digits of `n` (`-` first when negative), without `fmt` machinery.
pub fn push_i64(out: &mut String, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

/// The `(name, value)` pair of one `args` item.
fn arg_pair<'a, 'py>(
    item: &'a Bound<'py, PyAny>,
) -> PyResult<(Borrowed<'a, 'py, PyString>, Borrowed<'a, 'py, PyAny>)> {
    match item.cast::<PyTuple>() {
        Ok(t) if t.len() == 2 => {
            // The tuple is immutable and `item` holds it, so its items outlive the borrow.
            let name = t
                .get_borrowed_item(0)?
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("cache_key: an argument name must be a str"))?;
            Ok((name, t.get_borrowed_item(1)?))
        }
        _ => Err(PyTypeError::new_err(
            "cache_key: args must hold (name, value) tuples",
        )),
    }
}

/// Build the canonical cache key of a call: `[prefix:]module.name(arg=value,...)`.
///
/// `args` is a sequence of `(name, value)` pairs in signature order. Values are written in
/// canonical, type-tagged form (strings quoted, sets and dicts sorted), so different
/// arguments never share a key; a value over 256 bytes is replaced by `#` and its XXH3-128.
/// Raises `KeyBuildError` for a value whose `str()` holds a memory address, a value nested
/// over 32 levels, or a `__cache_key__`/`model_dump`/`__str__` that raises.
#[pyfunction]
#[pyo3(signature = (prefix, module, name, args))]
pub fn cache_key<'py>(
    py: Python<'py>,
    prefix: Option<&str>,
    module: &str,
    name: &str,
    args: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyString>> {
    let fresh = || {
        let mut out = String::new();
        build_key(py, prefix, module, name, args, &mut out).map(|()| PyString::new(py, &out))
    };
    // A key built inside `__cache_key__` (re-entry) finds the buffer taken and uses its own.
    BUFFER
        .try_with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut out) => {
                out.clear();
                let key = build_key(py, prefix, module, name, args, &mut out);
                let key = key.map(|()| PyString::new(py, &out));
                if out.capacity() > BUFFER_KEEP {
                    *out = String::new();
                }
                key
            }
            Err(_) => fresh(),
        })
        .unwrap_or_else(|_| fresh())
}

/// A per-thread buffer for `cache_key`: the key is copied into a Python str anyway, so the
/// String need not be allocated and freed on each call.
const BUFFER_KEEP: usize = 4096;

thread_local! {
    static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
}

/// `arg=value`: the argument's canonical value, or `#` and its XXH3-128 when it is long.
fn push_arg(types: &Types, out: &mut String, arg: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    out.push_str(arg);
    out.push('=');
    let start = out.len();
    Canon { types, arg }.write(out, value, 0)?;
    hash_if_long(out, start);
    Ok(())
}

fn build_key(
    py: Python<'_>,
    prefix: Option<&str>,
    module: &str,
    name: &str,
    args: &Bound<'_, PyAny>,
    out: &mut String,
) -> PyResult<()> {
    let types = types(py)?;
    if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
        out.push_str(prefix);
        out.push(':');
    }
    out.push_str(module);
    out.push('.');
    out.push_str(name);
    out.push('(');
    let mut first = true;
    let mut one = |item: &Bound<'_, PyAny>, out: &mut String| -> PyResult<()> {
        let (arg, value) = arg_pair(item)?;
        let arg = arg.to_cow()?;
        if !first {
            out.push(',');
        }
        first = false;
        push_arg(types, out, &arg, &value)
    };
    if let Ok(list) = args.cast_exact::<PyList>() {
        for item in list.iter() {
            one(&item, out)?;
        }
    } else if let Ok(tuple) = args.cast_exact::<PyTuple>() {
        for item in tuple.iter() {
            one(&item, out)?;
        }
    } else {
        for item in args.try_iter()? {
            one(&item?, out)?;
        }
    }
    out.push(')');
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Secret digests: how a secret argument or header stands in a key.

/// The key text a secret's digest is taken over: the key `cache_key(None, "", "", [("",
/// value)])` would build, `.(=` + the value's canonical form (or `#` and its XXH3-128 when
/// long) + `)`.
fn secret_text(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut out = String::from(".(");
    push_arg(types(py)?, &mut out, "", value)?;
    out.push(')');
    Ok(out)
}

/// `#` + the 32 lowercase hex digits of `digest`: a secret's stand-in in a key.
fn secret_str(py: Python<'_>, digest: u128) -> Bound<'_, PyString> {
    let mut tag = etag_bytes(digest);
    tag[0] = b'#';
    // `#` and hex digits: ASCII by construction, so this conversion cannot fail.
    PyString::new(py, std::str::from_utf8(&tag[..33]).unwrap_or_default())
}

/// A secret argument's stand-in in a key: `#` + the 32 lowercase hex digits of the XXH3-128 of
/// the key text `cache_key(None, "", "", [("", value)])` gives. `KeyBuildError` where that
/// would raise it. `None` is not special here (the decorator keeps a `None` secret as `None`).
#[pyfunction]
pub fn secret_digest<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyString>> {
    let text = secret_text(py, value)?;
    Ok(secret_str(py, xxh3_128(text.as_bytes())))
}

/// A secret header value's stand-in in a key: `#` + the 32 lowercase hex digits of the
/// XXH3-128 of its raw bytes.
#[pyfunction]
pub fn secret_digest_bytes<'py>(py: Python<'py>, raw: &[u8]) -> Bound<'py, PyString> {
    secret_str(py, digest(py, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_quoted(&mut out, s);
        out
    }

    #[test]
    fn quoting_escapes_quotes_backslashes_and_controls() {
        assert_eq!(quoted("bob"), "\"bob\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(
            quoted("a\"b\\c\n\u{7f}\u{0}é\u{80}"),
            "\"a\\\"b\\\\c\\u000a\\u007f\\u0000é\u{80}\""
        );
    }

    #[test]
    fn quoting_code_points_escapes_surrogates() {
        let mut out = String::new();
        push_quoted_code_points(&mut out, [0x61, 0xd800, 0x22, 0x1f600, 0x1f].into_iter());
        assert_eq!(out, "\"a\\ud800\\\"\u{1f600}\\u001f\"");
    }

    #[test]
    fn floats_are_laid_out_as_cpython_repr() {
        let repr = |x: f64| {
            let mut out = String::new();
            push_float_repr(&mut out, x);
            out
        };
        for (x, text) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1234567890123456.0, "1234567890123456.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (-1113178120592002.2, "-1113178120592002.2"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(repr(x), text);
        }
    }

    #[test]
    fn ints_are_decimal() {
        for n in [0, 7, -7, 10, i64::MAX, i64::MIN] {
            let mut out = String::new();
            push_i64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn hex_is_lowercase() {
        let mut out = String::new();
        push_hex(&mut out, &[0x00, 0xff, 0xab]);
        assert_eq!(out, "b\"00ffab\"");
    }

    #[test]
    fn memory_address_detection() {
        assert!(has_memory_address("<Session object at 0x7f12ab>"));
        assert!(has_memory_address("<x at 0xABCD>"));
        assert!(!has_memory_address("<x at 0xAB>"));
        assert!(!has_memory_address("meet at 0xford"));
        assert!(!has_memory_address("2019-05-09"));
        assert!(!has_memory_address(" at 0x"));
        assert!(has_memory_address("a at 0x1 b at 0x1234"));
    }

    #[test]
    fn long_values_are_hashed() {
        let mut out = String::from("m.f(a=");
        let start = out.len();
        out.push_str(&"x".repeat(HASH_THRESHOLD));
        hash_if_long(&mut out, start);
        assert_eq!(out.len(), start + HASH_THRESHOLD);
        out.push('y');
        let expected = format!("#{:032x}", xxh3_128(&out.as_bytes()[start..]));
        hash_if_long(&mut out, start);
        assert_eq!(&out[start..], expected);
    }

    #[test]
    fn sets_and_dicts_sort_by_bytes() {
        let mut out = String::new();
        push_set(&mut out, vec!["2".into(), "10".into(), "\"a\"".into()]);
        assert_eq!(out, "{\"a\",10,2}");
        out.clear();
        push_set(&mut out, vec![]);
        assert_eq!(out, "set()");
        out.clear();
        push_dict(
            &mut out,
            vec![
                ("\"b\"".into(), "1".into()),
                ("\"a\"".into(), "2".into()),
                ("\"a\"".into(), "1".into()),
            ],
        );
        assert_eq!(out, "{\"a\":1,\"a\":2,\"b\":1}");
        out.clear();
        push_dict(&mut out, vec![]);
        assert_eq!(out, "{}");
    }

    #[test]
    fn memory_address_message_names_argument_type_and_fix() {
        let m = memory_address_message("db", "Session", "<Session object at 0x7f00>");
        assert!(m.starts_with("argument 'db' (Session) has no stable cache key"));
        assert!(m.contains("Add Session to ignore_arg_types"));
        assert!(m.contains("__cache_key__"));
    }

    fn key(args: &Bound<'_, PyAny>) -> PyResult<String> {
        Ok(cache_key(args.py(), Some("p"), "m", "f", args)?.to_string())
    }

    #[test]
    fn python_values() {
        Python::initialize();
        Python::attach(|py| {
            let code = c"
import enum, uuid, datetime, decimal
class Color(enum.Enum):
    RED = 1
class Keyed:
    def __cache_key__(self):
        return ('x', 1)
class Opaque:
    pass
class Named:
    def __str__(self):
        return 'n\"1'
class MyInt(int):
    pass
cases = [
    ([('id', 1)], 'p:m.f(id=1)'),
    ([], 'p:m.f()'),
    ([('a', None), ('b', True), ('c', 'x\"y'), ('d', -12), ('e', 1.5), ('f', float('nan'))],
     'p:m.f(a=None,b=True,c=\"x\\\\\"y\",d=-12,e=1.5,f=nan)'),
    ([('c', Color.RED), ('k', Keyed()), ('i', MyInt(7)), ('b', b'\\x00\\xff')],
     'p:m.f(c=Color.RED,k=Keyed((\"x\",1)),i=7,b=b\"00ff\")'),
    ([('u', uuid.UUID(int=1)), ('d', datetime.date(2024, 1, 2)), ('x', decimal.Decimal('1.10'))],
     'p:m.f(u=UUID(\"00000000-0000-0000-0000-000000000001\"),d=date(\"2024-01-02\"),x=Decimal(\"1.10\"))'),
    ([('l', [1, 'a']), ('t', (1,)), ('e', ()), ('s', {2, 1}), ('z', set()), ('d', {'b': 1, 'a': 2})],
     'p:m.f(l=[1,\"a\"],t=(1,),e=(),s={1,2},z=set(),d={\"a\":2,\"b\":1})'),
    ([('n', Named()), ('big', 2**70), ('s', '\\ud800')],
     'p:m.f(n=Named(\"n\\\\\"1\"),big=1180591620717411303424,s=\"\\\\ud800\")'),
]
opaque = Opaque()
deep = []
for _ in range(40):
    deep = [deep]
";
            let globals = PyDict::new(py);
            py.run(code, Some(&globals), None).expect("setup runs");
            let cases = globals.get_item("cases").unwrap().expect("cases");
            for case in cases.try_iter().expect("iter") {
                let case = case.expect("case");
                let (args, expected): (Bound<'_, PyAny>, String) = case.extract().expect("pair");
                assert_eq!(key(&args).expect("key"), expected);
            }
            let opaque = globals.get_item("opaque").unwrap().expect("opaque");
            let args = PyList::new(py, [("db", opaque)]).expect("list");
            let err = key(args.as_any()).expect_err("memory address");
            assert!(err.is_instance_of::<KeyBuildError>(py));
            assert!(err.to_string().contains("argument 'db' (Opaque)"));
            let deep = globals.get_item("deep").unwrap().expect("deep");
            let args = PyList::new(py, [("d", deep)]).expect("list");
            assert!(key(args.as_any())
                .expect_err("too deep")
                .is_instance_of::<KeyBuildError>(py));
        });
    }

    #[test]
    fn secret_digests_hash_the_one_argument_key() {
        Python::initialize();
        Python::attach(|py| {
            let code = c"
class Opaque:
    pass
values = ['hunter2', 42, b'\\x00', None, ['a', 'b'], 'x' * 300, {'k': (1,)}]
opaque = Opaque()
";
            let globals = PyDict::new(py);
            py.run(code, Some(&globals), None).expect("setup runs");
            let values = globals.get_item("values").unwrap().expect("values");
            let mut seen = Vec::new();
            for value in values.try_iter().expect("iter") {
                let value = value.expect("value");
                let args = PyList::new(py, [("", value.clone())]).expect("list");
                let key = cache_key(py, None, "", "", args.as_any()).expect("key");
                let expected = format!("#{:032x}", xxh3_128(key.to_str().unwrap().as_bytes()));
                let got = secret_digest(py, &value).expect("digest").to_string();
                assert_eq!(got, expected);
                seen.push(got);
            }
            assert!(seen[0].starts_with("#") && seen[0].len() == 33);
            seen.dedup();
            assert_eq!(seen.len(), 7);
            let opaque = globals.get_item("opaque").unwrap().expect("opaque");
            let err = secret_digest(py, &opaque).expect_err("memory address");
            assert!(err.is_instance_of::<KeyBuildError>(py));
            assert!(err.to_string().contains("argument '' (Opaque)"));
            let raw = b"Bearer abc";
            assert_eq!(
                secret_digest_bytes(py, raw).to_string(),
                format!("#{:032x}", xxh3_128(raw))
            );
            assert_eq!(
                secret_digest_bytes(py, b"").to_string(),
                "#99aa06d3014798d86001c324468d497f"
            );
        });
    }
}
