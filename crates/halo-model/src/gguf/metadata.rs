//! The key–value section of a GGUF file, with typed getters whose errors name the key.

use super::error::GgufError;
use super::value::{Array, Value};
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Keys in file order (kept so a writer round-trips and listings are stable).
    order: Vec<String>,
    values: HashMap<String, Value>,
}

impl Metadata {
    pub(crate) fn insert(&mut self, key: String, value: Value) -> Result<(), GgufError> {
        if self.values.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.order.push(key.clone());
        self.values.insert(key, value);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.order
            .iter()
            .filter_map(|k| Some((k.as_str(), self.values.get(k)?)))
    }

    fn wrong(key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: v.type_name(),
        }
    }

    /// An unsigned integer of any width, when present.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
            })
            .transpose()
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        self.opt_u64(key)?
            .map(|v| {
                usize::try_from(v).map_err(|_| GgufError::InvalidValue {
                    key: key.to_owned(),
                    msg: format!("{v} is too large"),
                })
            })
            .transpose()
    }

    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        self.opt_usize(key)?.ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.opt_u64(key)?
            .map(|v| {
                u32::try_from(v).map_err(|_| GgufError::InvalidValue {
                    key: key.to_owned(),
                    msg: format!("{v} does not fit in 32 bits"),
                })
            })
            .transpose()
    }

    /// A float, keeping f32 values' shortest decimal form: `1e-5f32` reads back as the f64
    /// `1e-5` config.json would give, not `9.99999974737875e-6`.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| match *v {
                Value::F32(x) => Ok(f32_as_decimal_f64(x)),
                _ => v.as_f64().ok_or_else(|| Self::wrong(key, "a number", v)),
            })
            .transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| Self::wrong(key, "a bool", v)))
            .transpose()
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Self::wrong(key, "a UTF-8 string", v))
            })
            .transpose()
    }

    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        self.opt_str(key)?.ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.get(key)
            .map(|v| v.as_array().ok_or_else(|| Self::wrong(key, "an array", v)))
            .transpose()
    }

    /// An array of strings (token lists, merges), each checked to be UTF-8.
    pub fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>, GgufError> {
        let Some(a) = self.opt_array(key)? else {
            return Ok(None);
        };
        let Array::String(items) = a else {
            return Err(GgufError::WrongType {
                key: key.to_owned(),
                expected: "an array of strings",
                found: format!("ARRAY of {}", a.elem_name()),
            });
        };
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                String::from_utf8(s.clone()).map_err(|_| GgufError::InvalidValue {
                    key: key.to_owned(),
                    msg: format!("entry {i} is not valid UTF-8"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// The f64 with the same shortest decimal representation as `x`.
pub(crate) fn f32_as_decimal_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}
