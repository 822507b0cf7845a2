//! Metadata values: the thirteen GGUF value types, arrays kept typed (a token list is a
//! `Vec<String>`, scores a `Vec<f32>`) so a large array costs what its elements cost.

use super::error::GgufError;
use super::reader::ByteReader;

/// Arrays inside arrays deeper than this are refused (no real file nests more than once).
pub const MAX_ARRAY_DEPTH: usize = 4;

/// The `gguf_type` numbers of metadata values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_u32(t: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match t {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes in the file (a string is at least its
    /// length field, an array its type and count), used to bound counts before allocating.
    fn min_bytes(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    /// Strings are kept as written; [`Value::as_str`] and friends check UTF-8.
    String(Vec<u8>),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A homogeneous array, stored by element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<Vec<u8>>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Value {
    /// The type's name as gguf-py spells it, for error messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::U8(_) => "UINT8".into(),
            Value::I8(_) => "INT8".into(),
            Value::U16(_) => "UINT16".into(),
            Value::I16(_) => "INT16".into(),
            Value::U32(_) => "UINT32".into(),
            Value::I32(_) => "INT32".into(),
            Value::F32(_) => "FLOAT32".into(),
            Value::Bool(_) => "BOOL".into(),
            Value::String(_) => "STRING".into(),
            Value::Array(a) => format!("ARRAY of {}", a.elem_name()),
            Value::U64(_) => "UINT64".into(),
            Value::I64(_) => "INT64".into(),
            Value::F64(_) => "FLOAT64".into(),
        }
    }

    /// Any integer type, when the value fits in a u64 (writers differ in which width they use
    /// for counts and ids).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn elem_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "UINT8",
            Array::I8(_) => "INT8",
            Array::U16(_) => "UINT16",
            Array::I16(_) => "INT16",
            Array::U32(_) => "UINT32",
            Array::I32(_) => "INT32",
            Array::F32(_) => "FLOAT32",
            Array::Bool(_) => "BOOL",
            Array::String(_) => "STRING",
            Array::Array(_) => "ARRAY",
            Array::U64(_) => "UINT64",
            Array::I64(_) => "INT64",
            Array::F64(_) => "FLOAT64",
        }
    }
}

fn value_type(r: &mut ByteReader<'_>, key: &str) -> Result<ValueType, GgufError> {
    let t = r.u32(&format!("type of '{key}'"))?;
    ValueType::from_u32(t).ok_or_else(|| GgufError::BadValueType {
        key: key.to_owned(),
        value_type: t,
    })
}

/// Reads one value of the type that precedes it.
pub(crate) fn read_value(r: &mut ByteReader<'_>, key: &str) -> Result<Value, GgufError> {
    let t = value_type(r, key)?;
    read_typed(r, t, key, 0)
}

fn read_typed(
    r: &mut ByteReader<'_>,
    t: ValueType,
    key: &str,
    depth: usize,
) -> Result<Value, GgufError> {
    Ok(match t {
        ValueType::U8 => Value::U8(r.u8(key)?),
        ValueType::I8 => Value::I8(r.i8(key)?),
        ValueType::U16 => Value::U16(r.u16(key)?),
        ValueType::I16 => Value::I16(r.i16(key)?),
        ValueType::U32 => Value::U32(r.u32(key)?),
        ValueType::I32 => Value::I32(r.i32(key)?),
        ValueType::F32 => Value::F32(r.f32(key)?),
        // ggml writes 0 or 1; anything else is read as true, as gguf-py does.
        ValueType::Bool => Value::Bool(r.u8(key)? != 0),
        ValueType::String => Value::String(r.string_bytes(key)?.to_vec()),
        ValueType::Array => Value::Array(read_array(r, key, depth + 1)?),
        ValueType::U64 => Value::U64(r.u64(key)?),
        ValueType::I64 => Value::I64(r.i64(key)?),
        ValueType::F64 => Value::F64(r.f64(key)?),
    })
}

fn read_array(r: &mut ByteReader<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::TooDeep {
            key: key.to_owned(),
            limit: MAX_ARRAY_DEPTH,
        });
    }
    let t = value_type(r, key)?;
    let what = format!("array '{key}'");
    // The count is bounded by the bytes left before any Vec is sized by it.
    let n = r.count(t.min_bytes(), &what)?;
    fn many<T>(n: usize, mut f: impl FnMut() -> Result<T, GgufError>) -> Result<Vec<T>, GgufError> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(f()?);
        }
        Ok(v)
    }
    Ok(match t {
        ValueType::U8 => Array::U8(r.take(n, &what)?.to_vec()),
        ValueType::I8 => Array::I8(many(n, || r.i8(&what))?),
        ValueType::U16 => Array::U16(many(n, || r.u16(&what))?),
        ValueType::I16 => Array::I16(many(n, || r.i16(&what))?),
        ValueType::U32 => Array::U32(many(n, || r.u32(&what))?),
        ValueType::I32 => Array::I32(many(n, || r.i32(&what))?),
        ValueType::F32 => Array::F32(many(n, || r.f32(&what))?),
        ValueType::Bool => Array::Bool(many(n, || r.u8(&what).map(|b| b != 0))?),
        ValueType::String => Array::String(many(n, || r.string_bytes(&what).map(<[u8]>::to_vec))?),
        ValueType::Array => Array::Array(many(n, || read_array(r, key, depth + 1))?),
        ValueType::U64 => Array::U64(many(n, || r.u64(&what))?),
        ValueType::I64 => Array::I64(many(n, || r.i64(&what))?),
        ValueType::F64 => Array::F64(many(n, || r.f64(&what))?),
    })
}
