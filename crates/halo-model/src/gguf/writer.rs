//! Writes GGUF v3 (or v2) files: metadata of every type and tensors in any [`StoredDType`]
//! from their raw bytes. `halo make-model --format gguf` writes models with it, and the tests
//! build their bad files from its output.

use super::error::GgufError;
use super::file::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC};
use super::tensor_info::tensor_size;
use super::value::{Array, Value};
use crate::dtype::StoredDType;
use std::path::Path;

struct PendingTensor {
    name: String,
    /// ggml order (innermost first).
    dims: Vec<u64>,
    ggml_type: u32,
    bytes: Vec<u8>,
}

pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment.
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// The header's version number (2 and 3 share a layout; tests write others to see them
    /// refused).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Aligns the data section and tensors to `alignment` and records it as
    /// `general.alignment` (u32, as llama.cpp writes it).
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = alignment.max(1).into();
        self.metadata.retain(|(k, _)| k != ALIGNMENT_KEY);
        self.metadata
            .push((ALIGNMENT_KEY.to_owned(), Value::U32(alignment)));
        self
    }

    /// Adds (or replaces) a metadata value.
    pub fn add(&mut self, key: &str, value: Value) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
        self
    }

    pub fn add_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.add(key, Value::String(value.as_bytes().to_vec()))
    }

    pub fn add_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.add(key, Value::U32(value))
    }

    pub fn add_f32(&mut self, key: &str, value: f32) -> &mut Self {
        self.add(key, Value::F32(value))
    }

    pub fn add_bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.add(key, Value::Bool(value))
    }

    pub fn add_strings<S: AsRef<str>>(&mut self, key: &str, values: &[S]) -> &mut Self {
        let items = values.iter().map(|s| s.as_ref().as_bytes().to_vec());
        self.add(key, Value::Array(Array::String(items.collect())))
    }

    /// Adds a tensor of `shape` (row-major, Hugging Face order) stored as `dtype`; `bytes`
    /// must be exactly the tensor's size.
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: StoredDType,
        bytes: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        if dims.len() > 4 {
            return Err(GgufError::TooManyDims {
                tensor: name.to_owned(),
                n_dims: dims.len() as u32,
            });
        }
        let size = tensor_size(name, &dims, dtype)?;
        if size != bytes.len() {
            return Err(GgufError::BadTensor {
                tensor: name.to_owned(),
                msg: format!(
                    "{} bytes given, {dtype} {shape:?} takes {size}",
                    bytes.len()
                ),
            });
        }
        Ok(self.add_raw_tensor(name, &dims, dtype.ggml_type(), bytes))
    }

    /// Adds a tensor exactly as given, unchecked: dims in ggml order and any type number
    /// (for tests that need files halo must refuse).
    pub fn add_raw_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ggml_type: u32,
        bytes: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            bytes,
        });
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut out, key.as_bytes());
            out.extend_from_slice(&type_code(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let align = self.alignment as usize;
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, t.name.as_bytes());
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            put_u64(&mut out, offset as u64);
            offset = (offset + t.bytes.len()).next_multiple_of(align);
        }
        pad_to(&mut out, align);
        for t in &self.tensors {
            out.extend_from_slice(&t.bytes);
            pad_to(&mut out, align);
        }
        out
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    out.resize(out.len().next_multiple_of(align), 0);
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn type_code(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn array_code(a: &Array) -> u32 {
    match a {
        Array::U8(_) => 0,
        Array::I8(_) => 1,
        Array::U16(_) => 2,
        Array::I16(_) => 3,
        Array::U32(_) => 4,
        Array::I32(_) => 5,
        Array::F32(_) => 6,
        Array::Bool(_) => 7,
        Array::String(_) => 8,
        Array::Array(_) => 9,
        Array::U64(_) => 10,
        Array::I64(_) => 11,
        Array::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&array_code(a).to_le_bytes());
    put_u64(out, a.len() as u64);
    fn each<T>(out: &mut Vec<u8>, v: &[T], f: impl Fn(&mut Vec<u8>, &T)) {
        for x in v {
            f(out, x);
        }
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::U16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each(out, v, |o, x| o.push(u8::from(*x))),
        Array::String(v) => each(out, v, |o, s| put_str(o, s)),
        Array::Array(v) => each(out, v, put_array),
        Array::U64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
    }
}
