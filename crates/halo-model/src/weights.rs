//! Memory-mapped safetensors weights, single-file or sharded through
//! `model.safetensors.index.json`. Tensors are read lazily and converted to f32 on request;
//! every failure names the file and the tensor.

use crate::config::read_json;
pub use crate::dtype::StoredDType;
use crate::error::{ModelError, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A tensor inside a mapped file: its dtype, shape and raw little-endian bytes.
pub struct TensorView<'a> {
    pub file: PathBuf,
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    /// The elements as f32 (f16 and bf16 widen exactly; block types dequantize as ggml does).
    pub fn to_f32(&self) -> Vec<f32> {
        let elems = self.bytes.len() / self.dtype.block_bytes() * self.dtype.block_elems();
        let mut out = vec![0.0f32; elems];
        crate::quant::dequantize(self.dtype, self.bytes, &mut out);
        out
    }
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the mapped file.
    start: usize,
    end: usize,
}

/// All weight files of a model directory, mapped.
pub struct Weights {
    files: Vec<(PathBuf, Mmap)>,
    entries: HashMap<String, Entry>,
}

impl Weights {
    pub fn open(dir: &Path) -> Result<Weights> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_paths(dir, &index)?
        } else {
            return Err(ModelError::MissingFile { path: single });
        };
        let mut w = Weights {
            files: Vec::new(),
            entries: HashMap::new(),
        };
        for path in paths {
            w.map_file(path)?;
        }
        Ok(w)
    }

    fn map_file(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::MissingFile { path: path.clone() },
            _ => ModelError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        // SAFETY: the file is opened read-only; a model directory is not expected to change
        // while it is served (the same assumption every mmap-based loader makes).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::Io {
            path: path.clone(),
            source: e,
        })?;
        let (header_len, metadata) = match SafeTensors::read_metadata(&mmap[..]) {
            Ok(parsed) => parsed,
            Err(e) => {
                return Err(
                    find_truncation(&path, &mmap).unwrap_or(ModelError::Safetensors {
                        path: path.clone(),
                        msg: e.to_string(),
                    }),
                )
            }
        };
        let data_start = 8 + header_len;
        let file_idx = self.files.len();
        for (name, info) in metadata.tensors() {
            let (start, end) = (
                data_start + info.data_offsets.0,
                data_start + info.data_offsets.1,
            );
            if end > mmap.len() {
                return Err(ModelError::Truncated {
                    path,
                    name,
                    needed: end,
                    len: mmap.len(),
                });
            }
            self.entries.insert(
                name,
                Entry {
                    file: file_idx,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start,
                    end,
                },
            );
        }
        self.files.push((path, mmap));
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Where a missing tensor would have been looked for (for error messages).
    fn primary_path(&self) -> PathBuf {
        self.files
            .first()
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.primary_path(),
                name: name.into(),
            })?;
        let (path, mmap) = &self.files[e.file];
        let dtype = match e.dtype {
            Dtype::F32 => StoredDType::F32,
            Dtype::F16 => StoredDType::F16,
            Dtype::BF16 => StoredDType::BF16,
            other => {
                return Err(ModelError::TensorDType {
                    path: path.clone(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let elems: usize = e.shape.iter().product();
        if elems * dtype.size_in_bytes() != e.end - e.start {
            return Err(ModelError::Safetensors {
                path: path.clone(),
                msg: format!(
                    "tensor '{name}' of shape {:?} spans {} bytes, expected {}",
                    e.shape,
                    e.end - e.start,
                    elems * dtype.size_in_bytes()
                ),
            });
        }
        Ok(TensorView {
            file: path.clone(),
            dtype,
            shape: e.shape.clone(),
            bytes: &mmap[e.start..e.end],
        })
    }

    /// Checks that a tensor exists with the expected shape and a supported dtype.
    pub fn check(&self, name: &str, expected: &[usize]) -> Result<TensorView<'_>> {
        let t = self.get(name)?;
        if t.shape != expected {
            return Err(ModelError::TensorShape {
                path: t.file.clone(),
                name: name.into(),
                expected: expected.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(t)
    }

    /// Reads a tensor as f32 after checking its shape.
    pub fn load_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        Ok(self.check(name, expected)?.to_f32())
    }

    /// The dtype most tensors are stored in (what the model "is").
    pub fn dominant_dtype(&self) -> Option<StoredDType> {
        let mut bytes = [0usize; 3];
        for e in self.entries.values() {
            let slot = match e.dtype {
                Dtype::F32 => 0,
                Dtype::F16 => 1,
                Dtype::BF16 => 2,
                _ => continue,
            };
            bytes[slot] += e.end - e.start;
        }
        let (slot, &n) = bytes.iter().enumerate().max_by_key(|(_, b)| **b)?;
        (n > 0).then_some([StoredDType::F32, StoredDType::F16, StoredDType::BF16][slot])
    }
}

/// When a file's header is intact but its data is cut short, names the first tensor that lies
/// past the end (a download that stopped early is the usual cause).
fn find_truncation(path: &Path, bytes: &[u8]) -> Option<ModelError> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let (name, end) = header
        .as_object()?
        .iter()
        .filter_map(|(name, t)| Some((name, t.get("data_offsets")?.get(1)?.as_u64()? as usize)))
        .filter(|(_, end)| 8 + n + end > bytes.len())
        .min_by_key(|(_, end)| *end)?;
    Some(ModelError::Truncated {
        path: path.to_path_buf(),
        name: name.clone(),
        needed: 8 + n + end,
        len: bytes.len(),
    })
}

fn shard_paths(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let value = read_json(index)?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Json {
            path: index.to_path_buf(),
            msg: "no 'weight_map' object".into(),
        })?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(ModelError::Json {
            path: index.to_path_buf(),
            msg: "'weight_map' names no files".into(),
        });
    }
    files
        .into_iter()
        .map(|f| {
            // Shard names come from a file: never let them escape the model directory.
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                Err(ModelError::Json {
                    path: index.to_path_buf(),
                    msg: format!("shard name '{f}' is not a plain file name"),
                })
            } else {
                Ok(dir.join(f))
            }
        })
        .collect()
}
