//! One error type for everything that can be wrong with a model directory or file. Every variant names
//! the file, and where it applies the tensor and both shapes, so a user can fix the directory.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{}: file not found", path.display())]
    MissingFile { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid JSON: {msg}", path.display())]
    Json { path: PathBuf, msg: String },

    #[error("{}: unsupported architecture '{arch}' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM)", path.display())]
    UnknownArchitecture { path: PathBuf, arch: String },

    #[error("{}: field '{field}': {msg}", path.display())]
    InvalidConfig {
        path: PathBuf,
        field: String,
        msg: String,
    },

    #[error("{}: invalid safetensors file: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },

    #[error("{}: tensor '{name}' is cut short: needs bytes up to {needed}, the file has {len}", path.display())]
    Truncated {
        path: PathBuf,
        name: String,
        needed: usize,
        len: usize,
    },

    #[error("tensor '{name}' not found in {}", path.display())]
    MissingTensor { path: PathBuf, name: String },

    #[error("{}: tensor '{name}' has shape {found:?}, expected {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{}: tensor '{name}' has unsupported dtype {dtype} (supported: F32, F16, BF16)", path.display())]
    TensorDType {
        path: PathBuf,
        name: String,
        dtype: String,
    },

    #[error("{}: vocab_size is {config} but '{tensor}' has {embedding} rows", path.display())]
    VocabMismatch {
        path: PathBuf,
        tensor: String,
        config: usize,
        embedding: usize,
    },

    #[error("{}: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },

    /// A tensor's byte range disagrees with its shape and dtype.
    #[error("{}: tensor '{name}' of shape {shape:?} in {dtype} spans {bytes} bytes, expected {}", path.display(), expected.map_or_else(|| "a whole number of blocks".to_string(), |e| e.to_string()))]
    TensorSize {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
        dtype: &'static str,
        bytes: usize,
        expected: Option<usize>,
    },

    /// Anything wrong inside a GGUF file; the source names the tensor or key where it applies.
    #[error("{}: {source}", path.display())]
    Gguf {
        path: PathBuf,
        #[source]
        source: crate::gguf::GgufError,
    },
}

pub type Result<T> = std::result::Result<T, ModelError>;
