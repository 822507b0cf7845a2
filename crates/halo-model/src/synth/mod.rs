//! Random-weight models in the hub's directory format, for benchmarks and tests that need a real
//! model's shapes but not its knowledge: `config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json` and `generation_config.json`, all of which [`crate::Model::open`] (and
//! transformers) load like a downloaded checkpoint.
//!
//! Weights are seeded and deterministic (same preset, seed and dtype give the same bytes) and are
//! generated one tensor at a time while the file is written, so a 1B-parameter model never sits in
//! memory whole.

pub mod families;
pub mod phi3;
pub mod preset;
pub mod rng;
pub mod tensors;
pub mod tokenizer;

pub use preset::{preset, preset_names, Llama3Scaling, Preset, PRESETS};

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Standard deviation of every weight matrix and the embedding (transformers' default
/// `initializer_range`).
pub const WEIGHT_STD: f32 = 0.02;

/// The dtype the weights are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthDType {
    F32,
    F16,
    Bf16,
}

impl SynthDType {
    /// The name config.json uses.
    pub fn hf_name(self) -> &'static str {
        match self {
            SynthDType::F32 => "float32",
            SynthDType::F16 => "float16",
            SynthDType::Bf16 => "bfloat16",
        }
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            SynthDType::F32 => 4,
            SynthDType::F16 | SynthDType::Bf16 => 2,
        }
    }
}

impl FromStr for SynthDType {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<SynthDType, SynthError> {
        match s {
            "f32" | "float32" => Ok(SynthDType::F32),
            "f16" | "float16" => Ok(SynthDType::F16),
            "bf16" | "bfloat16" => Ok(SynthDType::Bf16),
            other => Err(SynthError::UnknownDType(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown preset '{name}' (known: {known})")]
    UnknownPreset { name: String, known: String },
    #[error("unknown dtype '{0}' (known: f32, f16, bf16)")]
    UnknownDType(String),
    #[error("a byte-level tokenizer needs at least {min} tokens, the vocabulary has {vocab_size}")]
    VocabTooSmall { vocab_size: usize, min: usize },
    /// The output directory cannot be created or written (the caller's mistake, not a fault).
    #[error("cannot write to {path}: {source}")]
    DirNotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("serializing {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The preset called `name`, or an error listing the known ones.
pub fn preset_by_name(name: &str) -> Result<&'static Preset, SynthError> {
    preset(name).ok_or_else(|| SynthError::UnknownPreset {
        name: name.to_string(),
        known: preset_names(),
    })
}

/// What [`write_model`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    pub params: u64,
    /// Size of model.safetensors.
    pub weight_bytes: u64,
    pub dtype: SynthDType,
}

/// Writes `preset` with seeded random weights into `dir` (created if missing; the five files are
/// replaced if present).
pub fn write_model(
    preset: &Preset,
    dir: &Path,
    seed: u64,
    dtype: SynthDType,
) -> Result<SynthSummary, SynthError> {
    let not_writable = |source| SynthError::DirNotWritable {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(not_writable)?;
    // find out now, not after minutes of generating weights, that the directory refuses files
    let probe = dir.join(".halo-make-model-probe");
    fs::write(&probe, b"").map_err(not_writable)?;
    let _ = fs::remove_file(&probe);

    write_json(&dir.join("config.json"), &preset.config_json(dtype, seed))?;
    write_json(
        &dir.join("generation_config.json"),
        &preset.generation_config_json(),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &preset.tokenizer_config_json(),
    )?;
    // compact: pretty-printing 128k merges would triple the file for no reader's benefit
    let tok_path = dir.join("tokenizer.json");
    let tok =
        serde_json::to_vec(&tokenizer::tokenizer_json(preset.vocab_size)?).map_err(|source| {
            SynthError::Json {
                path: tok_path.clone(),
                source,
            }
        })?;
    fs::write(&tok_path, tok).map_err(|source| SynthError::Io {
        path: tok_path.clone(),
        source,
    })?;

    let path = dir.join("model.safetensors");
    let plan = tensors::plan(preset, seed, dtype);
    let params = plan.iter().map(|(_, t)| t.numel() as u64).sum();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(plan, Some(metadata), &path).map_err(|source| {
        SynthError::Safetensors {
            path: path.clone(),
            source,
        }
    })?;
    // the safetensors writer goes through a private (0600) temp file; give the weights the same
    // permissions as the JSON files next to them so whoever can read the config can read the model
    let io = |source| SynthError::Io {
        path: path.clone(),
        source,
    };
    let perms = fs::metadata(dir.join("config.json"))
        .map_err(io)?
        .permissions();
    fs::set_permissions(&path, perms).map_err(io)?;
    let weight_bytes = fs::metadata(&path).map_err(io)?.len();
    Ok(SynthSummary {
        params,
        weight_bytes,
        dtype,
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), SynthError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| SynthError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    fs::write(path, text).map_err(|source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
