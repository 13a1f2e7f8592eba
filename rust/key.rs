//! Canonical, injective cache keys: `prefix:module.name(arg=value,...)` (see `docs/formats.md`).

use std::fmt::Write as _;
use std::sync::Mutex;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple, PyType,
};
use xxhash_rust::xxh3::xxh3_128;

use crate::KeyBuildError;

pub const KEY_FORMAT_VERSION: u32 = 1;
/// Canonical values longer than this many bytes are replaced by their XXH3-128.
pub const HASH_THRESHOLD: usize = 256;
const MAX_DEPTH: usize = 32;

/// Python types the rules dispatch on, imported once.
struct Types {
    enum_type: Py<PyType>,
    uuid: Py<PyType>,
    datetime: Py<PyType>,
    date: Py<PyType>,
    time: Py<PyType>,
    decimal: Py<PyType>,
    base_model: Option<Py<PyType>>,
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
            base_model: import_type(py, "pydantic", "BaseModel").ok(),
        })
    })
}

/// Append a quoted string: `"` with `"` and `\` escaped, controls and surrogates as `\uXXXX`.
fn push_quoted_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => out.push(c),
    }
}

pub fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        push_quoted_char(out, c);
    }
    out.push('"');
}

/// Quote a Python str, including one holding lone surrogates (not valid UTF-8).
fn push_quoted_py(out: &mut String, s: &Bound<'_, PyString>) -> PyResult<()> {
    if let Ok(text) = s.to_str() {
        push_quoted(out, text);
        return Ok(());
    }
    let py = s.py();
    let encoded = s.call_method1(intern!(py, "encode"), ("utf-32-le", "surrogatepass"))?;
    let bytes = encoded.cast::<PyBytes>()?.as_bytes();
    out.push('"');
    for unit in bytes.chunks_exact(4) {
        let cp = u32::from_le_bytes([unit[0], unit[1], unit[2], unit[3]]);
        match char::from_u32(cp) {
            Some(c) => push_quoted_char(out, c),
            None => {
                let _ = write!(out, "\\u{cp:04x}");
            }
        }
    }
    out.push('"');
    Ok(())
}

/// Whether `value`'s type defines `__cache_key__`, remembered per type: a failed attribute
/// lookup raises (and discards) an AttributeError, which would dominate the cost of a key.
fn type_has_cache_key(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    static SEEN: Mutex<Vec<(Py<PyType>, bool)>> = Mutex::new(Vec::new());
    let ty = value.get_type();
    if let Ok(seen) = SEEN.lock() {
        if let Some((_, has)) = seen.iter().find(|(t, _)| t.as_ptr() == ty.as_ptr()) {
            return Ok(*has);
        }
    }
    let has = ty.hasattr(intern!(value.py(), "__cache_key__"))?;
    if let Ok(mut seen) = SEEN.lock() {
        // Holding the type keeps its address from being reused by another type.
        if seen.len() < 512 {
            seen.push((ty.unbind(), has));
        }
    }
    Ok(has)
}

fn type_name(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(value.get_type().name()?.to_cow()?.into_owned())
}

/// True when `s` holds ` at 0x` followed by at least four hex digits (a default repr).
pub fn has_memory_address(s: &str) -> bool {
    s.match_indices(" at 0x").any(|(i, _)| {
        s[i + 6..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .take(4)
            .count()
            == 4
    })
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
                    "argument '{}' is nested more than {MAX_DEPTH} levels deep (or contains itself)",
                    self.arg
                ),
                None,
            ));
        }
        // Rules 1-5: exact builtin types by pointer comparison, before any attribute lookup.
        if value.is_none() {
            out.push_str("None");
            return Ok(());
        }
        if value.is_exact_instance_of::<PyBool>() {
            out.push_str(if value.is_truthy()? { "True" } else { "False" });
            return Ok(());
        }
        if value.is_exact_instance_of::<PyString>() {
            return push_quoted_py(out, value.cast::<PyString>()?);
        }
        if value.is_exact_instance_of::<PyInt>() {
            return self.write_int(out, value);
        }
        if value.is_exact_instance_of::<PyFloat>() {
            out.push_str(&value.repr()?.to_cow()?);
            return Ok(());
        }
        // Exact builtin containers cannot carry `__cache_key__`: skip its (costly) lookup.
        let builtin_container = value.is_exact_instance_of::<PyList>()
            || value.is_exact_instance_of::<PyTuple>()
            || value.is_exact_instance_of::<PyDict>()
            || value.is_exact_instance_of::<PyBytes>();
        // Rule 6: an explicit key.
        if !builtin_container && type_has_cache_key(value)? {
            let key = value
                .call_method0(intern!(py, "__cache_key__"))
                .map_err(|e| self.failed(py, value, "__cache_key__()", e))?;
            out.push_str(&type_name(value)?);
            out.push('(');
            self.write(out, &key, depth + 1)?;
            out.push(')');
            return Ok(());
        }
        let t = self.types;
        // Rule 7: enum members, before their int/str bases.
        if value.is_instance(t.enum_type.bind(py))? {
            let name = value.getattr(intern!(py, "name"))?;
            out.push_str(&type_name(value)?);
            out.push('.');
            out.push_str(&name.str()?.to_cow()?);
            return Ok(());
        }
        // Rule 8: subclasses of the scalar builtins, as their base value.
        if value.is_instance_of::<PyBool>() {
            out.push_str(if value.is_truthy()? { "True" } else { "False" });
            return Ok(());
        }
        if let Ok(s) = value.cast::<PyString>() {
            return push_quoted_py(out, s);
        }
        if value.is_instance_of::<PyInt>() {
            return self.write_int(out, value);
        }
        if value.is_instance_of::<PyFloat>() {
            let repr = py
                .get_type::<PyFloat>()
                .call_method1(intern!(py, "__repr__"), (value,))?;
            out.push_str(&repr.cast::<PyString>()?.to_cow()?);
            return Ok(());
        }
        // Rule 9: bytes.
        if let Ok(b) = value.cast::<PyBytes>() {
            push_hex(out, b.as_bytes());
            return Ok(());
        }
        if let Ok(b) = value.cast::<PyByteArray>() {
            push_hex(out, &b.to_vec());
            return Ok(());
        }
        // Rules 10-14: tagged strings.
        for (ty, tag, method) in [
            (&t.uuid, "UUID", "__str__"),
            (&t.datetime, "datetime", "isoformat"),
            (&t.date, "date", "isoformat"),
            (&t.time, "time", "isoformat"),
            (&t.decimal, "Decimal", "__str__"),
        ] {
            if value.is_instance(ty.bind(py))? {
                let text = value.call_method0(method)?;
                out.push_str(tag);
                out.push('(');
                push_quoted_py(out, text.cast::<PyString>()?)?;
                out.push(')');
                return Ok(());
            }
        }
        // Rules 15-18: containers.
        if let Ok(list) = value.cast::<PyList>() {
            out.push('[');
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                self.write(out, &item, depth + 1)?;
            }
            out.push(']');
            return Ok(());
        }
        if let Ok(tuple) = value.cast::<PyTuple>() {
            out.push('(');
            for (i, item) in tuple.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                self.write(out, &item, depth + 1)?;
            }
            if tuple.len() == 1 {
                out.push(',');
            }
            out.push(')');
            return Ok(());
        }
        if value.is_instance_of::<PySet>() || value.is_instance_of::<PyFrozenSet>() {
            let mut items = Vec::new();
            for item in value.try_iter()? {
                let mut s = String::new();
                self.write(&mut s, &item?, depth + 1)?;
                items.push(s);
            }
            if items.is_empty() {
                out.push_str("set()");
                return Ok(());
            }
            items.sort_unstable();
            out.push('{');
            out.push_str(&items.join(","));
            out.push('}');
            return Ok(());
        }
        if let Ok(dict) = value.cast::<PyDict>() {
            return self.write_dict(out, dict, depth);
        }
        // Rule 19: pydantic models, by their field values.
        if let Some(model) = &t.base_model {
            if value.is_instance(model.bind(py))? {
                let kwargs = PyDict::new(py);
                kwargs.set_item("mode", "python")?;
                let dumped = value
                    .call_method(intern!(py, "model_dump"), (), Some(&kwargs))
                    .map_err(|e| self.failed(py, value, "model_dump()", e))?;
                out.push_str(&type_name(value)?);
                let dict = dumped.cast::<PyDict>()?;
                return self.write_dict(out, dict, depth);
            }
        }
        // Rule 20: str(), unless it is a default repr holding a memory address.
        let text = value
            .str()
            .map_err(|e| self.failed(py, value, "str()", e))?;
        let text_cow = text.to_cow().unwrap_or_default();
        let name = type_name(value)?;
        if has_memory_address(&text_cow) {
            let shown: String = text_cow.chars().take(80).collect();
            return Err(key_error(
                py,
                format!(
                    "argument '{}' ({name}) has no stable cache key: str() gives '{shown}', which \
                     holds a memory address. Add {name} to ignore_arg_types if it does not affect \
                     the response, or give {name} a __str__ or __cache_key__ method that says what \
                     it stands for.",
                    self.arg
                ),
                None,
            ));
        }
        out.push_str(&name);
        out.push('(');
        push_quoted_py(out, &text)?;
        out.push(')');
        Ok(())
    }

    fn write_int(&self, out: &mut String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(n) = value.extract::<i64>() {
            let _ = write!(out, "{n}");
        } else {
            let py = value.py();
            let repr = py
                .get_type::<PyInt>()
                .call_method1(intern!(py, "__repr__"), (value,))?;
            out.push_str(&repr.cast::<PyString>()?.to_cow()?);
        }
        Ok(())
    }

    fn write_dict(&self, out: &mut String, dict: &Bound<'_, PyDict>, depth: usize) -> PyResult<()> {
        let mut pairs = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let mut ks = String::new();
            self.write(&mut ks, &k, depth + 1)?;
            let mut vs = String::new();
            self.write(&mut vs, &v, depth + 1)?;
            pairs.push((ks, vs));
        }
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
        Ok(())
    }

    fn failed(&self, py: Python<'_>, value: &Bound<'_, PyAny>, what: &str, cause: PyErr) -> PyErr {
        let name = type_name(value).unwrap_or_else(|_| "?".to_owned());
        key_error(
            py,
            format!(
                "argument '{}' ({name}) has no cache key: {what} raised {}",
                self.arg,
                cause
                    .get_type(py)
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ),
            Some(cause),
        )
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    out.push_str("b\"");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out.push('"');
}

/// Build the canonical cache key of a call: `[prefix:]module.name(arg=value,...)`.
///
/// `args` is a sequence of `(name, value)` pairs in signature order. Values are written in
/// canonical, type-tagged form (strings quoted, sets and dicts sorted), so different
/// arguments never share a key; a value over 256 bytes is replaced by `#` and its XXH3-128.
/// Raises `KeyBuildError` for a value whose `str()` holds a memory address, a value nested
/// over 32 levels, or a `__cache_key__`/`__str__` that raises.
#[pyfunction]
#[pyo3(signature = (prefix, module, name, args))]
pub fn cache_key(
    py: Python<'_>,
    prefix: Option<&str>,
    module: &str,
    name: &str,
    args: &Bound<'_, PyAny>,
) -> PyResult<String> {
    let types = types(py)?;
    let mut out = String::with_capacity(64);
    if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
        out.push_str(prefix);
        out.push(':');
    }
    out.push_str(module);
    out.push('.');
    out.push_str(name);
    out.push('(');
    for (i, item) in args.try_iter()?.enumerate() {
        let item = item?;
        let (arg, value): (Bound<'_, PyString>, Bound<'_, PyAny>) = item.extract()?;
        let arg = arg.to_cow()?;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&arg);
        out.push('=');
        let start = out.len();
        Canon { types, arg: &arg }.write(&mut out, &value, 0)?;
        if out.len() - start > HASH_THRESHOLD {
            let digest = xxh3_128(&out.as_bytes()[start..]);
            out.truncate(start);
            let _ = write!(out, "#{digest:032x}");
        }
    }
    out.push(')');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_backslashes_and_controls() {
        let mut out = String::new();
        push_quoted(&mut out, "a\"b\\c\n\u{7f}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\u000a\\u007fé\"");
    }

    #[test]
    fn memory_address_detection() {
        assert!(has_memory_address("<Session object at 0x7f12ab>"));
        assert!(has_memory_address("<x at 0xABCD>"));
        assert!(!has_memory_address("<x at 0xAB>"));
        assert!(!has_memory_address("meet at 0xford"));
        assert!(!has_memory_address("2019-05-09"));
    }
}
