//! GGUF model files (versions 2 and 3, little-endian), as llama.cpp writes them: parsed over the
//! memory-mapped bytes with every length, count and offset checked against the file before
//! anything is allocated or read, then presented to the rest of halo as a [`crate::ModelConfig`],
//! [`crate::Weights`] under Hugging Face names, and a [`crate::Tokenizer`].
//!
//! One module per job: [`reader`] (bounded byte cursor), [`value`] and [`metadata`] (key-value
//! section), [`tensor_info`] and [`file`] (layout), [`config`], [`names`], [`permute`],
//! [`tokenizer`] (with [`spm`] for SentencePiece vocabularies), [`split`], [`open`] (loading),
//! [`writer`].

pub mod config;
pub mod error;
pub mod experts;
pub mod export;
pub mod file;
mod gemma;
pub mod metadata;
pub mod names;
pub mod open;
pub mod permute;
mod phi3;
pub(crate) mod reader;
pub mod split;
pub mod spm;
pub mod tensor_info;
pub mod tokenizer;
pub mod value;
pub mod writer;

pub use error::GgufError;
pub use file::GgufFile;
pub use metadata::Metadata;
pub use open::GgufModel;
pub use tensor_info::TensorInfo;
pub use value::{Array, Value};
pub use writer::GgufWriter;
