//! A model directory as the hub ships it: `config.json` (Llama, Mistral, Qwen2, both config
//! layouts), `model.safetensors` or a sharded index (memory-mapped; f32, f16, bf16), and
//! `tokenizer.json` with its `tokenizer_config.json` and `generation_config.json`.
//!
//! Nothing here computes: backends read the [`ModelConfig`] and pull tensors from [`Weights`].

pub mod config;
pub mod dtype;
pub mod error;
pub mod quant;
pub mod rope;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use rope::{RopeConfig, RopeScaling};
pub use tokenizer::Tokenizer;
pub use weights::{StoredDType, TensorView, Weights};

use std::path::{Path, PathBuf};

/// A whole model directory, checked for consistency.
pub struct Model {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
}

impl Model {
    /// Opens and checks a model directory: the config parses, the embedding agrees with the
    /// vocabulary, and the tokenizer fits inside it. Tensor shapes are checked as backends load
    /// them ([`Weights::load_f32`]), or all at once by [`Model::check_tensors`].
    pub fn open(dir: &Path) -> Result<Model> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
            });
        }
        let config = ModelConfig::from_dir(dir)?;
        let weights = Weights::open(dir)?;
        let embed = weights.get("model.embed_tokens.weight")?;
        if embed.shape.len() != 2 || embed.shape[0] != config.vocab_size {
            return Err(ModelError::VocabMismatch {
                path: embed.file.clone(),
                tensor: "model.embed_tokens.weight".into(),
                config: config.vocab_size,
                embedding: embed.shape.first().copied().unwrap_or(0),
            });
        }
        let tokenizer = Tokenizer::from_dir(dir, &config)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::Tokenizer {
                path: dir.join("tokenizer.json"),
                msg: format!(
                    "the tokenizer has {} tokens but the model's vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        Ok(Model {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
        })
    }

    /// Checks that every tensor the architecture needs exists with the right shape and dtype.
    pub fn check_tensors(&self) -> Result<()> {
        for (name, shape) in self.config.expected_tensors() {
            self.weights.check(&name, &shape)?;
        }
        Ok(())
    }

    /// The directory's last component, used as the model's display name.
    pub fn name(&self) -> String {
        self.dir
            .canonicalize()
            .unwrap_or_else(|_| self.dir.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    }
}
