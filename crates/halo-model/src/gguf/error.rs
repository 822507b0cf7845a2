//! What can be wrong inside a GGUF file. [`crate::ModelError::Gguf`] adds the file's path, so
//! every message names the file and, where it applies, the tensor or metadata key.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GgufError {
    #[error("not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    BadMagic { found: String },

    #[error("GGUF version {version} is not supported (supported: 2, 3)")]
    BadVersion { version: u32 },

    #[error("truncated header: {what} at byte {offset} needs {needed} bytes, {remaining} remain")]
    TruncatedHeader {
        what: String,
        offset: usize,
        needed: usize,
        remaining: usize,
    },

    #[error("{what} at byte {offset} claims length {length}, past the end of the file ({remaining} bytes remain)")]
    LengthPastEnd {
        what: String,
        offset: usize,
        length: u64,
        remaining: usize,
    },

    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: usize },

    #[error("metadata '{key}': unknown value type {value_type}")]
    BadValueType { key: String, value_type: u32 },

    #[error("metadata '{key}': arrays nested deeper than {limit}")]
    TooDeep { key: String, limit: usize },

    #[error("metadata '{key}' appears twice")]
    DuplicateKey { key: String },

    #[error("metadata '{key}' is missing")]
    MissingKey { key: String },

    #[error("metadata '{key}': expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("metadata '{key}': {msg}")]
    InvalidValue { key: String, msg: String },

    #[error("general.alignment {alignment} is not a nonzero power of two")]
    BadAlignment { alignment: u64 },

    #[error("tensor '{tensor}' appears twice")]
    DuplicateTensor { tensor: String },

    #[error("tensor '{tensor}' has {n_dims} dimensions (at most 4)")]
    TooManyDims { tensor: String, n_dims: u32 },

    #[error("tensor '{tensor}' has unsupported type {type_name} (supported: {supported})")]
    UnsupportedType {
        tensor: String,
        type_name: String,
        supported: String,
    },

    #[error(
        "tensor '{tensor}' of type {dtype}: rows of {cols} values are not whole blocks of {block}"
    )]
    PartialBlock {
        tensor: String,
        dtype: String,
        cols: u64,
        block: usize,
    },

    #[error("tensor '{tensor}' with dims {dims:?} is too large to address")]
    SizeOverflow { tensor: String, dims: Vec<u64> },

    #[error("tensor '{tensor}': offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{tensor}': offset {offset} lies past the end of the data section ({data_len} bytes)")]
    OffsetPastEnd {
        tensor: String,
        offset: u64,
        data_len: usize,
    },

    #[error("truncated data: tensor '{tensor}' needs bytes up to {needed}, the file has {len}")]
    TruncatedData {
        tensor: String,
        needed: u64,
        len: usize,
    },

    #[error("unsupported architecture '{arch}' (supported: {supported})")]
    UnknownArchitecture {
        arch: String,
        supported: &'static str,
    },

    #[error("tensor '{tensor}': {msg}")]
    BadTensor { tensor: String, msg: String },

    #[error("{count} GGUF files and not one split set ({names}); name the file to use")]
    ManyFiles { count: usize, names: String },

    #[error("split GGUF: {msg}")]
    Split { msg: String },

    #[error("tokenizer: {msg}")]
    Tokenizer { msg: String },
}
