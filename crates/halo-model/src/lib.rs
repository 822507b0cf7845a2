//! A model as the hub ships it, in either form:
//! - a directory with `config.json` (Llama, Mistral, Qwen2, both config layouts),
//!   `model.safetensors` or a sharded index (memory-mapped; f32, f16, bf16), and
//!   `tokenizer.json` with its `tokenizer_config.json` and `generation_config.json`;
//! - a GGUF file as llama.cpp writes it (or a directory holding one, or a split set), with its
//!   config, tokenizer and quantized tensors all inside ([`gguf`]).
//!
//! Nothing here computes: backends read the [`ModelConfig`] and pull tensors from [`Weights`]
//! by their Hugging Face names, whatever the format.

pub mod chat_template;
pub mod config;
pub mod dtype;
pub mod error;
pub mod gguf;
pub mod quant;
pub mod rope;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use config::{Activation, Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use rope::{LongRope, RopeConfig, RopeScaling, RotaryTables};
pub use tokenizer::Tokenizer;
pub use weights::{StoredDType, TensorView, Weights};

use std::fmt;
use std::path::{Path, PathBuf};

/// Which kind of files a model was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// `config.json` + safetensors + `tokenizer.json`.
    Safetensors,
    /// A GGUF file (`files` > 1 for a split set).
    Gguf { version: u32, files: usize },
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelFormat::Safetensors => f.write_str("safetensors"),
            ModelFormat::Gguf { version, files: 1 } => write!(f, "GGUF v{version}"),
            ModelFormat::Gguf { version, files } => write!(f, "GGUF v{version}, {files} files"),
        }
    }
}

/// What a model path names, once resolved.
enum Source {
    /// A directory with `config.json`.
    HfDir(PathBuf),
    /// A `.gguf` file (the first shard of a split set).
    Gguf(PathBuf),
}

/// A model path: a directory with `config.json`, a `.gguf` file, or a directory holding one
/// GGUF file (or one split set).
fn resolve(path: &Path) -> Result<Source> {
    if path.is_file() {
        // Whatever its extension: a file that is not GGUF gets "not a GGUF file".
        return Ok(Source::Gguf(path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    if path.join("config.json").is_file() {
        return Ok(Source::HfDir(path.to_path_buf()));
    }
    let found = gguf::split::find_in_dir(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match found {
        Some(Ok(file)) => Ok(Source::Gguf(file)),
        Some(Err(source)) => Err(ModelError::Gguf {
            path: path.to_path_buf(),
            source,
        }),
        // Neither kind: name the file a hub directory needs first.
        None => Err(ModelError::MissingFile {
            path: path.join("config.json"),
        }),
    }
}

/// The config and tokenizer of a model path of either kind, without mapping the weights of a
/// safetensors directory (what the engine needs before the device loads the model).
pub fn open_config_and_tokenizer(path: &Path) -> Result<(ModelConfig, Tokenizer)> {
    match resolve(path)? {
        Source::HfDir(dir) => {
            let config = ModelConfig::from_dir(&dir)?;
            let tokenizer = Tokenizer::from_dir(&dir, &config)?;
            Ok((config, tokenizer))
        }
        Source::Gguf(file) => {
            let g = gguf::GgufModel::open(&file)?;
            let config = g.config()?;
            let tokenizer = g.tokenizer(&config)?;
            Ok((config, tokenizer))
        }
    }
}

/// A whole model, checked for consistency.
pub struct Model {
    /// The path the model was opened from (a directory or a `.gguf` file).
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    pub format: ModelFormat,
    /// The Jinja chat template (`tokenizer.chat_template` of a GGUF, `chat_template` of
    /// `tokenizer_config.json`), when the model has one.
    pub chat_template: Option<String>,
}

impl Model {
    /// Opens and checks a model (a directory with `config.json`, a `.gguf` file, or a directory
    /// holding one GGUF file or split set): the config parses, the embedding agrees with the
    /// vocabulary, and the tokenizer fits inside it. Tensor shapes are checked as backends load
    /// them ([`Weights::load_f32`]), or all at once by [`Model::check_tensors`].
    pub fn open(path: &Path) -> Result<Model> {
        let (config, weights, tokenizer, format, chat_template) = match resolve(path)? {
            Source::HfDir(dir) => {
                let config = ModelConfig::from_dir(&dir)?;
                let mut weights = Weights::open(&dir)?;
                if config.is_multimodal_wrapper {
                    config::text_model_weights(&mut weights);
                }
                let tokenizer = Tokenizer::from_dir(&dir, &config)?;
                let template = hf_chat_template(&dir);
                (
                    config,
                    weights,
                    tokenizer,
                    ModelFormat::Safetensors,
                    template,
                )
            }
            Source::Gguf(file) => {
                let g = gguf::GgufModel::open(&file)?;
                let config = g.config()?;
                let tokenizer = g.tokenizer(&config)?;
                let template = g.chat_template()?;
                let format = ModelFormat::Gguf {
                    version: g.version(),
                    files: g.shards.len(),
                };
                let weights = g.into_weights(&config)?;
                (config, weights, tokenizer, format, template)
            }
        };
        let embed = weights.get("model.embed_tokens.weight")?;
        if embed.shape.len() != 2 || embed.shape[0] != config.vocab_size {
            return Err(ModelError::VocabMismatch {
                path: embed.file.clone(),
                tensor: "model.embed_tokens.weight".into(),
                config: config.vocab_size,
                embedding: embed.shape.first().copied().unwrap_or(0),
            });
        }
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::Tokenizer {
                path: tokenizer.path().to_path_buf(),
                msg: format!(
                    "the tokenizer has {} tokens but the model's vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        Ok(Model {
            dir: path.to_path_buf(),
            config,
            weights,
            tokenizer,
            format,
            chat_template,
        })
    }

    /// Checks that every tensor the architecture needs exists with the right shape and dtype.
    pub fn check_tensors(&self) -> Result<()> {
        for (name, shape) in self.config.expected_tensors() {
            self.weights.check(&name, &shape)?;
        }
        Ok(())
    }

    /// The model's display name: the directory's last component, or a GGUF file's name
    /// without `.gguf` (and without a split set's `-00001-of-0000N`).
    pub fn name(&self) -> String {
        let path = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        if let Some((prefix, _, _)) = gguf::split::parse_split_name(&name) {
            return prefix.to_owned();
        }
        name.strip_suffix(".gguf")
            .map(str::to_owned)
            .unwrap_or(name)
    }
}

/// The directory's chat template ([`chat_template::from_dir`]).
fn hf_chat_template(dir: &Path) -> Option<String> {
    chat_template::from_dir(dir)
}
