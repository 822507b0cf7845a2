//! Memory-mapped weights under their Hugging Face names: safetensors, single-file or sharded
//! through `model.safetensors.index.json`, or a GGUF file (set) mapped by [`crate::gguf`].
//! Tensors are read lazily in their stored dtype (or converted to f32 on request); every failure
//! names the file and the tensor.

use crate::config::read_json;
pub use crate::dtype::StoredDType;
use crate::error::{ModelError, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A tensor inside a mapped file: its dtype, shape (row-major, `[out, in]` for matrices) and
/// raw little-endian bytes. The bytes borrow the mapping, except for tensors that are reordered
/// at load (a GGUF `llama` model's Q and K rows), which are owned.
pub struct TensorView<'a> {
    pub file: PathBuf,
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl TensorView<'_> {
    /// The elements as f32 (f16 and bf16 widen exactly; block types dequantize as ggml does).
    pub fn to_f32(&self) -> Vec<f32> {
        let elems = self.bytes.len() / self.dtype.block_bytes() * self.dtype.block_elems();
        let mut out = vec![0.0f32; elems];
        crate::quant::dequantize(self.dtype, &self.bytes, &mut out);
        out
    }
}

/// Bytes a tensor of `shape` takes in `dtype` (quantized blocks run along the last dimension);
/// `None` when the rows are not whole blocks or the size overflows.
pub fn tensor_bytes(dtype: StoredDType, shape: &[usize]) -> Option<usize> {
    let (&cols, rows) = shape.split_last().unwrap_or((&1, &[]));
    rows.iter()
        .try_fold(dtype.row_bytes(cols)?, |acc, &r| acc.checked_mul(r))
}

/// Where a tensor's dtype came from: safetensors names its own (some halo cannot use, refused
/// only when such a tensor is read), GGUF types are checked when the file is parsed.
pub(crate) enum EntryDType {
    Safetensors(Dtype),
    Stored(StoredDType),
}

impl EntryDType {
    fn stored(&self) -> Option<StoredDType> {
        match *self {
            EntryDType::Stored(d) => Some(d),
            EntryDType::Safetensors(Dtype::F32) => Some(StoredDType::F32),
            EntryDType::Safetensors(Dtype::F16) => Some(StoredDType::F16),
            EntryDType::Safetensors(Dtype::BF16) => Some(StoredDType::BF16),
            EntryDType::Safetensors(_) => None,
        }
    }

    fn name(&self) -> String {
        match self {
            EntryDType::Stored(d) => d.to_string(),
            EntryDType::Safetensors(d) => format!("{d:?}"),
        }
    }
}

pub(crate) struct Entry {
    pub(crate) file: usize,
    pub(crate) dtype: EntryDType,
    pub(crate) shape: Vec<usize>,
    /// Absolute byte range in the mapped file.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Rows per head when the rows must be put back in Hugging Face order on read
    /// ([`crate::gguf::permute`]).
    pub(crate) unpermute_head_rows: Option<usize>,
    /// The name in the file, when it differs from the Hugging Face name (for messages).
    pub(crate) file_name: Option<String>,
}

/// All weight files of a model, mapped.
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
                    dtype: EntryDType::Safetensors(info.dtype),
                    shape: info.shape.clone(),
                    start,
                    end,
                    unpermute_head_rows: None,
                    file_name: None,
                },
            );
        }
        self.files.push((path, mmap));
        Ok(())
    }

    /// Serves the tensors under `from` as `to` (the file's name kept for messages); returns
    /// how many were renamed. A multimodal checkpoint's text model is read this way.
    pub(crate) fn rename_prefix(&mut self, from: &str, to: &str) -> usize {
        let names: Vec<String> = self
            .entries
            .keys()
            .filter(|n| n.starts_with(from))
            .cloned()
            .collect();
        for name in &names {
            if let Some(mut e) = self.entries.remove(name) {
                e.file_name.get_or_insert_with(|| name.clone());
                self.entries
                    .insert(format!("{to}{}", &name[from.len()..]), e);
            }
        }
        names.len()
    }

    /// Weights whose files are already mapped and indexed (the GGUF loader builds these).
    pub(crate) fn from_entries(
        files: Vec<(PathBuf, Mmap)>,
        entries: HashMap<String, Entry>,
    ) -> Weights {
        Weights { files, entries }
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
                name: self.display_name(name),
            })?;
        let (path, mmap) = &self.files[e.file];
        let dtype = e.dtype.stored().ok_or_else(|| ModelError::TensorDType {
            path: path.clone(),
            name: name.into(),
            dtype: e.dtype.name(),
        })?;
        let expected = tensor_bytes(dtype, &e.shape);
        if expected != Some(e.end - e.start) {
            return Err(ModelError::TensorSize {
                path: path.clone(),
                name: self.display_name(name),
                shape: e.shape.clone(),
                dtype: dtype.name(),
                bytes: e.end - e.start,
                expected,
            });
        }
        let stored = &mmap[e.start..e.end];
        let bytes = match e.unpermute_head_rows {
            None => Cow::Borrowed(stored),
            Some(head_rows) => {
                let (rows, cols) = match e.shape.as_slice() {
                    [rows, cols] => (*rows, *cols),
                    [rows] => (*rows, 1),
                    _ => (0, 0),
                };
                let unpermuted = dtype.row_bytes(cols).and_then(|row_bytes| {
                    crate::gguf::permute::unpermute_rows(stored, rows, row_bytes, head_rows)
                });
                Cow::Owned(unpermuted.ok_or_else(|| ModelError::Gguf {
                    path: path.clone(),
                    source: crate::gguf::GgufError::BadTensor {
                        tensor: self.display_name(name),
                        msg: format!("shape {:?} is not whole heads of {head_rows} rows", e.shape),
                    },
                })?)
            }
        };
        Ok(TensorView {
            file: path.clone(),
            dtype,
            shape: e.shape.clone(),
            bytes,
        })
    }

    /// `name`, with the file's own name for it when that differs (a GGUF's `blk.0.attn_q.weight`).
    fn display_name(&self, name: &str) -> String {
        let in_file = match self.entries.get(name) {
            Some(e) => e.file_name.clone(),
            None => crate::gguf::names::gguf_name(name).filter(|_| self.is_gguf()),
        };
        match in_file {
            // Inside the message's quotes: "tensor 'blk.0.attn_q.weight' / 'model.…' …".
            Some(f) => format!("{f}' / '{name}"),
            None => name.to_owned(),
        }
    }

    fn is_gguf(&self) -> bool {
        self.entries
            .values()
            .any(|e| matches!(e.dtype, EntryDType::Stored(_)))
    }

    /// Checks that a tensor exists with the expected shape and a supported dtype.
    pub fn check(&self, name: &str, expected: &[usize]) -> Result<TensorView<'_>> {
        let t = self.get(name)?;
        if t.shape != expected {
            return Err(ModelError::TensorShape {
                path: t.file.clone(),
                name: self.display_name(name),
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

    /// The dtype most tensors are stored in (what the model "is"), by bytes.
    pub fn dominant_dtype(&self) -> Option<StoredDType> {
        self.bytes_by_dtype().first().map(|&(d, _)| d)
    }

    /// Bytes of the tensors of each stored dtype halo can read, largest first (ties in the
    /// order of [`crate::dtype::SUPPORTED_DTYPES`]).
    pub fn bytes_by_dtype(&self) -> Vec<(StoredDType, usize)> {
        let mut out: Vec<(StoredDType, usize)> = Vec::new();
        for e in self.entries.values() {
            let Some(d) = e.dtype.stored() else { continue };
            match out.iter_mut().find(|(k, _)| *k == d) {
                Some((_, n)) => *n += e.end - e.start,
                None => out.push((d, e.end - e.start)),
            }
        }
        out.retain(|&(_, n)| n > 0);
        let order = |d: StoredDType| crate::dtype::SUPPORTED_DTYPES.iter().position(|&x| x == d);
        out.sort_by(|a, b| b.1.cmp(&a.1).then(order(a.0).cmp(&order(b.0))));
        out
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
