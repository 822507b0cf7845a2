//! Opening a GGUF model: map the file (or every shard of a split set), parse and check each,
//! and turn them into halo's config, weights (under Hugging Face names) and tokenizer.

use super::config::{model_config, TensorLookup};
use super::error::GgufError;
use super::file::GgufFile;
use super::metadata::Metadata;
use super::names::{hf_name_for, hf_name_fused};
use super::split::{shard_paths, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS};
use super::tensor_info::TensorInfo;
use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::{Entry, EntryDType, Weights};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One mapped and parsed GGUF file.
pub struct GgufShard {
    pub path: PathBuf,
    pub mmap: Mmap,
    pub file: GgufFile,
}

impl GgufShard {
    pub fn open(path: &Path) -> Result<GgufShard> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::MissingFile {
                path: path.to_path_buf(),
            },
            _ => ModelError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        // SAFETY: opened read-only; a model file is not expected to change while it is served
        // (the assumption every mmap-based loader, llama.cpp's included, makes).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let file = GgufFile::parse(&mmap).map_err(|source| ModelError::Gguf {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(GgufShard {
            path: path.to_path_buf(),
            mmap,
            file,
        })
    }

    fn data(&self, t: &TensorInfo) -> &[u8] {
        // In range: GgufFile::parse checked every tensor against the file's length.
        self.file.data(&self.mmap, t).unwrap_or(&[])
    }
}

/// A GGUF model: one file, or every shard of a split set (the first holds the metadata).
pub struct GgufModel {
    pub shards: Vec<GgufShard>,
    /// Tensor name → (shard, index in that shard's tensor list).
    index: HashMap<String, (usize, usize)>,
}

impl GgufModel {
    /// Opens `path`, a `.gguf` file or the first shard of a split set.
    pub fn open(path: &Path) -> Result<GgufModel> {
        let paths = shard_paths(path).map_err(|source| ModelError::Gguf {
            path: path.to_path_buf(),
            source,
        })?;
        let shards = paths
            .iter()
            .map(|p| GgufShard::open(p))
            .collect::<Result<Vec<_>>>()?;
        let model = GgufModel::from_shards(shards)?;
        Ok(model)
    }

    fn from_shards(shards: Vec<GgufShard>) -> Result<GgufModel> {
        let err = |s: &GgufShard, source| ModelError::Gguf {
            path: s.path.clone(),
            source,
        };
        let split = |msg: String| GgufError::Split { msg };
        let first = &shards[0];
        let count = first
            .file
            .metadata
            .opt_usize(SPLIT_COUNT)
            .map_err(|e| err(first, e))?;
        if shards.len() > 1 || count.is_some_and(|c| c != 1) {
            if count != Some(shards.len()) {
                return Err(err(
                    first,
                    split(format!(
                        "{SPLIT_COUNT} is {count:?} but the set has {} files",
                        shards.len()
                    )),
                ));
            }
            for (i, s) in shards.iter().enumerate() {
                let no = s.file.metadata.opt_usize(SPLIT_NO).map_err(|e| err(s, e))?;
                if no != Some(i) {
                    return Err(err(s, split(format!("{SPLIT_NO} is {no:?}, expected {i}"))));
                }
            }
        }
        let mut index = HashMap::new();
        for (si, s) in shards.iter().enumerate() {
            for (ti, t) in s.file.tensors.iter().enumerate() {
                if index.insert(t.name.clone(), (si, ti)).is_some() {
                    return Err(err(
                        s,
                        GgufError::DuplicateTensor {
                            tensor: t.name.clone(),
                        },
                    ));
                }
            }
        }
        let expected = first
            .file
            .metadata
            .opt_usize(SPLIT_TENSORS)
            .map_err(|e| err(first, e))?;
        if expected.is_some_and(|n| n != index.len()) {
            return Err(err(
                first,
                split(format!(
                    "{SPLIT_TENSORS} is {expected:?} but the files hold {} tensors",
                    index.len()
                )),
            ));
        }
        Ok(GgufModel { shards, index })
    }

    /// The first shard's path (what the user named).
    pub fn path(&self) -> &Path {
        &self.shards[0].path
    }

    pub fn metadata(&self) -> &Metadata {
        &self.shards[0].file.metadata
    }

    pub fn version(&self) -> u32 {
        self.shards[0].file.version
    }

    fn err(&self, source: GgufError) -> ModelError {
        ModelError::Gguf {
            path: self.path().to_path_buf(),
            source,
        }
    }

    fn find(&self, name: &str) -> Option<(&GgufShard, &TensorInfo)> {
        let &(s, t) = self.index.get(name)?;
        let shard = &self.shards[s];
        Some((shard, &shard.file.tensors[t]))
    }

    /// Every tensor with its GGUF name and stored type, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.shards.iter().flat_map(|s| s.file.tensors.iter())
    }

    pub fn config(&self) -> Result<ModelConfig> {
        model_config(self.metadata(), self).map_err(|e| self.err(e))
    }

    pub fn tokenizer(&self, config: &ModelConfig) -> Result<Tokenizer> {
        let t = super::tokenizer::build(self.metadata()).map_err(|e| self.err(e))?;
        Ok(Tokenizer::from_parts(
            t.inner,
            self.path().to_path_buf(),
            t.bos_token_id,
            config.eos_token_ids.clone(),
            t.add_bos_token,
            t.append_eos,
        ))
    }

    /// `tokenizer.chat_template`, when the file has one.
    pub fn chat_template(&self) -> Result<Option<String>> {
        Ok(self
            .metadata()
            .opt_str("tokenizer.chat_template")
            .map_err(|e| self.err(e))?
            .map(str::to_owned))
    }

    /// The weights under Hugging Face names, dims reversed into `[out, in]` order. For
    /// `llama` files the Q and K rows (and biases) are put back in HF order when read.
    pub fn into_weights(self, config: &ModelConfig) -> Result<Weights> {
        // llama.cpp's converter permutes Q/K rows only for its `llama` arch (Llama, Mistral,
        // Mixtral); every other arch keeps HF's rotate-half order.
        let unpermute = matches!(
            config.architecture,
            Architecture::Llama | Architecture::Mistral | Architecture::Mixtral
        );
        let mut entries = HashMap::new();
        let mut files = Vec::with_capacity(self.shards.len());
        for (si, shard) in self.shards.into_iter().enumerate() {
            for t in &shard.file.tensors {
                // A mixture of experts' stacked tensors become one entry per expert.
                let data_start = shard.file.data_start;
                if let Some(moe) = super::experts::entries(t, si, data_start, config.architecture) {
                    entries.extend(moe.map_err(|source| ModelError::Gguf {
                        path: shard.path.clone(),
                        source,
                    })?);
                    continue;
                }
                // Tensors halo has no HF name for keep their GGUF name (rope_freqs.weight is
                // already in the config).
                let fused = config
                    .fused_projections
                    .then(|| hf_name_fused(&t.name))
                    .flatten();
                let name = fused
                    .or_else(|| hf_name_for(&t.name, config.sandwich_norms))
                    .unwrap_or_else(|| t.name.clone());
                let heads = if !unpermute {
                    None
                } else if name.contains(".self_attn.q_proj.") {
                    Some(config.num_attention_heads)
                } else if name.contains(".self_attn.k_proj.") {
                    Some(config.num_key_value_heads)
                } else {
                    None
                };
                let shape = t.shape();
                let rows = shape.first().copied().unwrap_or(1);
                let unpermute_head_rows = match heads {
                    Some(h) if rows.is_multiple_of(h) && (rows / h).is_multiple_of(2) => {
                        Some(rows / h)
                    }
                    Some(h) => {
                        return Err(ModelError::Gguf {
                            path: shard.path.clone(),
                            source: GgufError::BadTensor {
                                tensor: t.name.clone(),
                                msg: format!("{rows} rows are not {h} heads of an even size"),
                            },
                        })
                    }
                    None => None,
                };
                let start = shard.file.data_start + t.offset as usize;
                let entry = Entry {
                    file: si,
                    dtype: EntryDType::Stored(t.dtype),
                    shape,
                    start,
                    end: start + t.size,
                    unpermute_head_rows,
                    file_name: Some(t.name.clone()).filter(|n| *n != name),
                };
                entries.insert(name, entry);
            }
            files.push((shard.path, shard.mmap));
        }
        Ok(Weights::from_entries(files, entries))
    }
}

impl TensorLookup for GgufModel {
    fn dims(&self, name: &str) -> Option<Vec<u64>> {
        self.find(name).map(|(_, t)| t.dims.clone())
    }

    fn f32_values(&self, name: &str) -> std::result::Result<Option<Vec<f32>>, GgufError> {
        let Some((shard, t)) = self.find(name) else {
            return Ok(None);
        };
        if t.dtype.is_quantized() {
            return Err(GgufError::BadTensor {
                tensor: name.to_owned(),
                msg: format!("stored as {}, expected a float type", t.dtype),
            });
        }
        // The element count is bounded by the tensor's checked size in the file.
        let mut out = vec![0.0f32; t.elements()];
        crate::quant::dequantize(t.dtype, shard.data(t), &mut out);
        Ok(Some(out))
    }
}
