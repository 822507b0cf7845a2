//! `config.json` parsing into one [`ModelConfig`] for every family halo runs.
//!
//! How a family plugs in: the fields every decoder shares (sizes, heads, vocabulary, ids, the
//! main RoPE) are read here by [`Fields`]; then the family's own module (`llama.rs` for Llama,
//! Mistral and Qwen2, `qwen3.rs`, `gemma.rs`, ...) reads its extra fields and sets the knobs
//! below (biases, norms, activation, attention scale and soft-capping, windows, the local
//! RoPE, the feed-forward). Backends never match on the family: they read the knobs, so a new
//! family is a new parsing module plus, only for a genuinely new operation, a new knob.

mod gemma;
mod llama;
pub mod moe;
mod phi3;
mod qwen3;

use crate::error::{ModelError, Result};
use crate::rope::{RawRope, RopeConfig, RopeContext};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
    Mixtral,
    Qwen3Moe,
}

impl Architecture {
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Gemma2 => "Gemma2ForCausalLM",
            Architecture::Gemma3 => "Gemma3ForCausalLM",
            Architecture::Phi3 => "Phi3ForCausalLM",
            Architecture::Mixtral => "MixtralForCausalLM",
            Architecture::Qwen3Moe => "Qwen3MoeForCausalLM",
        }
    }

    /// The architecture an HF `architectures` entry names.
    fn from_hf_name(name: &str) -> Option<Architecture> {
        Some(match name {
            "LlamaForCausalLM" => Architecture::Llama,
            "MistralForCausalLM" => Architecture::Mistral,
            "Qwen2ForCausalLM" => Architecture::Qwen2,
            "Qwen3ForCausalLM" => Architecture::Qwen3,
            "Gemma2ForCausalLM" => Architecture::Gemma2,
            "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration" => Architecture::Gemma3,
            "Phi3ForCausalLM" => Architecture::Phi3,
            "MixtralForCausalLM" => Architecture::Mixtral,
            "Qwen3MoeForCausalLM" => Architecture::Qwen3Moe,
            _ => return None,
        })
    }

    /// The architecture a config's `model_type` names (configs without `architectures`).
    fn from_model_type(name: &str) -> Option<Architecture> {
        Some(match name {
            "llama" => Architecture::Llama,
            "mistral" => Architecture::Mistral,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            "gemma2" => Architecture::Gemma2,
            "gemma3_text" | "gemma3" => Architecture::Gemma3,
            "phi3" => Architecture::Phi3,
            "mixtral" => Architecture::Mixtral,
            "qwen3_moe" => Architecture::Qwen3Moe,
            _ => return None,
        })
    }
}

/// The feed-forward's activation: `act(gate) * up`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (Llama, Mistral, Qwen, Phi-3, the MoE experts).
    #[default]
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    fn from_hf(name: &str) -> Option<Activation> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }
}

/// Everything a backend needs to build the network.
/// Most layers a config may declare. Per-layer tables are sized by the count before any tensor
/// is looked at, so a file's claim is bounded first (the deepest released models have ~130).
pub const MAX_LAYERS: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// Bias on q, k and v projections (Qwen2 always; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias` covers o_proj too).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// q/k/v stored as one `self_attn.qkv_proj` and gate/up as one `mlp.gate_up_proj` (Phi-3):
    /// loaded as the fused matrices they are.
    pub fused_projections: bool,
    /// The attention window, when any layer uses one.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses the sliding window (all false when `sliding_window` is None).
    pub sliding_layers: Vec<bool>,
    /// RoPE of every layer, or of the global (full-attention) layers when `local_rope` is set.
    pub rope: RopeConfig,
    /// RoPE of the sliding-window layers when it differs from `rope` (Gemma 3's local base).
    pub local_rope: Option<RopeConfig>,
    /// Per-head RMSNorm of q and k before RoPE (`self_attn.q_norm` / `k_norm`: Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Added to every RMSNorm weight before it scales (Gemma's `(1 + w)`: 1.0 in HF files; 0.0
    /// in GGUF files, whose converter already folded it into the weights).
    pub norm_weight_offset: f32,
    /// Norms on the attention's and the MLP's outputs too, before each residual add (Gemma):
    /// `post_attention_layernorm` is then the attention's output norm and
    /// `pre_feedforward_layernorm` / `post_feedforward_layernorm` wrap the MLP.
    pub sandwich_norms: bool,
    pub activation: Activation,
    /// Multiplies the looked-up embeddings (Gemma: √hidden, as an f32 like transformers' f32 run).
    pub embed_scale: Option<f32>,
    /// Multiplies q·k before the softmax: `head_dim^-0.5`, or Gemma's `query_pre_attn_scalar^-0.5`.
    pub attn_scale: f32,
    /// Attention scores become `cap * tanh(score / cap)` (Gemma 2).
    pub attn_logit_softcap: Option<f32>,
    /// Output logits become `cap * tanh(logit / cap)` (Gemma 2).
    pub final_logit_softcap: Option<f32>,
    /// The sparse mixture-of-experts feed-forward (Mixtral, Qwen3-MoE): the layers it marks
    /// sparse route each token to a few experts instead of running the dense MLP.
    pub moe: Option<moe::MoeConfig>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The dtype the weights were saved in, as config.json names it.
    pub torch_dtype: Option<String>,
    /// The config is a multimodal wrapper's (`Gemma3ForConditionalGeneration`) and this is its
    /// text model: the checkpoint's text tensors are read under the plain `model.` names
    /// ([`text_model_weights`]); the vision tower is not read.
    pub is_multimodal_wrapper: bool,
}

/// Serves a multimodal checkpoint's text-model tensors under the names a causal LM's have, in
/// both layouts found in the wild (`model.language_model.*` as transformers 5 saves it,
/// `language_model.model.*` / `language_model.lm_head.*` in older hub files).
pub fn text_model_weights(w: &mut crate::weights::Weights) {
    w.rename_prefix("model.language_model.", "model.");
    w.rename_prefix("language_model.model.", "model.");
    w.rename_prefix("language_model.lm_head.", "lm_head.");
}

/// `head_dim^-0.5` as transformers computes it (a Python float, rounded once to f32).
pub fn default_attn_scale(head_dim: usize) -> f32 {
    (head_dim as f64).powf(-0.5) as f32
}

impl ModelConfig {
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let value = read_json(&path)?;
        Self::from_json(&value, &path)
    }

    pub fn from_json(value: &Value, path: &Path) -> Result<ModelConfig> {
        let obj = value.as_object().ok_or_else(|| ModelError::Json {
            path: path.to_path_buf(),
            msg: "expected a JSON object".into(),
        })?;
        let top = Fields { obj, path };
        let architecture = top.architecture()?;
        // Gemma 3's multimodal wrapper keeps its text model's config under `text_config`, and
        // both it and a standalone Gemma 3 text config may leave fields at transformers'
        // Gemma3TextConfig defaults; ids and dtype may sit at the top level.
        let wrapper = top.names_architecture(gemma::MULTIMODAL);
        let merged = match architecture {
            Architecture::Gemma3 => Some(gemma::with_text_defaults(&top, wrapper)?),
            _ => None,
        };
        let f = Fields {
            obj: merged.as_ref().unwrap_or(obj),
            path,
        };
        let mut c = f.common(architecture)?;
        c.is_multimodal_wrapper = wrapper;
        match architecture {
            Architecture::Llama | Architecture::Mistral | Architecture::Qwen2 => {
                llama::apply(&f, &mut c)?
            }
            Architecture::Qwen3 => qwen3::apply(&f, &mut c)?,
            Architecture::Gemma2 | Architecture::Gemma3 => gemma::apply(&f, &mut c)?,
            Architecture::Phi3 => phi3::apply(&f, &mut c)?,
            Architecture::Mixtral => moe::apply_mixtral(&f, &mut c)?,
            Architecture::Qwen3Moe => moe::apply_qwen3_moe(&f, &mut c)?,
        }
        let sliding = c.sliding_window.is_some();
        if sliding && c.sliding_layers.len() != c.num_hidden_layers {
            return Err(f.invalid("layer_types", "one entry per layer expected".into()));
        }
        if !sliding {
            c.sliding_layers = vec![false; c.num_hidden_layers];
        }
        c.sliding_window = c
            .sliding_window
            .filter(|_| c.sliding_layers.iter().any(|&s| s));
        Ok(c)
    }

    /// Every tensor the architecture reads, with its shape `[out, in]` as stored by HF.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let i = self.intermediate_size;
        let mut t = vec![
            (
                "model.embed_tokens.weight".to_string(),
                vec![self.vocab_size, h],
            ),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !self.tie_word_embeddings {
            t.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut add = |name: &str, shape: Vec<usize>| t.push((format!("{p}.{name}"), shape));
            add("input_layernorm.weight", vec![h]);
            add("post_attention_layernorm.weight", vec![h]);
            if self.sandwich_norms {
                add("pre_feedforward_layernorm.weight", vec![h]);
                add("post_feedforward_layernorm.weight", vec![h]);
            }
            if self.fused_projections {
                add("self_attn.qkv_proj.weight", vec![q + 2 * kv, h]);
            } else {
                add("self_attn.q_proj.weight", vec![q, h]);
                add("self_attn.k_proj.weight", vec![kv, h]);
                add("self_attn.v_proj.weight", vec![kv, h]);
            }
            add("self_attn.o_proj.weight", vec![h, q]);
            if self.qk_norm {
                add("self_attn.q_norm.weight", vec![self.head_dim]);
                add("self_attn.k_norm.weight", vec![self.head_dim]);
            }
            if self.qkv_bias {
                add("self_attn.q_proj.bias", vec![q]);
                add("self_attn.k_proj.bias", vec![kv]);
                add("self_attn.v_proj.bias", vec![kv]);
            }
            if self.o_bias {
                add("self_attn.o_proj.bias", vec![h]);
            }
            if let Some(names) = self.sparse_layer_names(l) {
                let m = self.moe.as_ref().expect("a sparse layer has a MoE config");
                t.extend(m.layer_tensors(names, &p, h));
                continue;
            }
            if self.fused_projections {
                add("mlp.gate_up_proj.weight", vec![2 * i, h]);
            } else {
                add("mlp.gate_proj.weight", vec![i, h]);
                add("mlp.up_proj.weight", vec![i, h]);
            }
            add("mlp.down_proj.weight", vec![h, i]);
            if self.mlp_bias {
                add("mlp.gate_proj.bias", vec![i]);
                add("mlp.up_proj.bias", vec![i]);
                add("mlp.down_proj.bias", vec![h]);
            }
        }
        t
    }

    /// The checkpoint names of layer `layer`'s experts when its feed-forward is sparse.
    pub fn sparse_layer_names(&self, layer: usize) -> Option<moe::ExpertNames> {
        self.moe.as_ref().filter(|m| m.is_sparse(layer))?;
        moe::ExpertNames::for_architecture(self.architecture)
    }

    /// Parameters stored (a tied head shares the embedding's and is counted once).
    pub fn param_count(&self) -> u64 {
        self.expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Whether layer `layer` attends through the sliding window.
    pub fn window_for_layer(&self, layer: usize) -> Option<usize> {
        match self.sliding_layers.get(layer) {
            Some(true) => self.sliding_window,
            _ => None,
        }
    }

    /// The RoPE layer `layer` rotates with (the local one on sliding layers when set).
    pub fn rope_for_layer(&self, layer: usize) -> &RopeConfig {
        match (&self.local_rope, self.window_for_layer(layer)) {
            (Some(local), Some(_)) => local,
            _ => &self.rope,
        }
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Token ids given as a number or a list of numbers.
pub(crate) fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn dtype_name(obj: &Map<String, Value>) -> Option<String> {
    obj.get("torch_dtype")
        .or_else(|| obj.get("dtype"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Typed access to config fields with errors that name the file and the field.
pub(super) struct Fields<'a> {
    pub(super) obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    pub(super) fn invalid(&self, field: &str, msg: String) -> ModelError {
        ModelError::InvalidConfig {
            path: PathBuf::from(self.path),
            field: field.into(),
            msg,
        }
    }

    pub(super) fn present(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&x| x > 0)
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.invalid(key, format!("expected a positive integer, got {v}"))),
        }
    }

    pub(super) fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.invalid(key, "missing".into()))
    }

    pub(super) fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected a token id, got {v}"))),
        }
    }

    pub(super) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected a number, got {v}"))),
        }
    }

    /// A strictly positive number (scales, caps).
    pub(super) fn opt_positive(&self, key: &str) -> Result<Option<f64>> {
        match self.opt_f64(key)? {
            Some(x) if x <= 0.0 => Err(self.invalid(key, format!("must be positive, got {x}"))),
            other => Ok(other),
        }
    }

    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected true or false, got {v}"))),
        }
    }

    /// The feed-forward activation under `key`, or `default` when absent.
    pub(super) fn activation(&self, key: &str, default: Activation) -> Result<Activation> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v.as_str().and_then(Activation::from_hf).ok_or_else(|| {
                self.invalid(
                    key,
                    format!("{v} is not supported (silu, gelu_pytorch_tanh)"),
                )
            }),
        }
    }

    /// Whether `architectures` names `name` first.
    fn names_architecture(&self, name: &str) -> bool {
        self.present("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            == Some(name)
    }

    fn architecture(&self) -> Result<Architecture> {
        let unknown = |arch: &str| ModelError::UnknownArchitecture {
            path: PathBuf::from(self.path),
            arch: arch.into(),
        };
        let named = self
            .present("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        match named {
            Some(name) => Architecture::from_hf_name(name).ok_or_else(|| unknown(name)),
            None => {
                let t = self.present("model_type").and_then(Value::as_str);
                t.and_then(Architecture::from_model_type)
                    .ok_or_else(|| unknown(t.unwrap_or("(none given)")))
            }
        }
    }

    /// The fields every family shares, with the knobs at their Llama values.
    fn common(&self, architecture: Architecture) -> Result<ModelConfig> {
        let hidden_size = self.usize("hidden_size")?;
        let num_attention_heads = self.usize("num_attention_heads")?;
        let num_key_value_heads = self
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        let num_hidden_layers = self.usize("num_hidden_layers")?;
        if num_hidden_layers > MAX_LAYERS {
            return Err(self.invalid(
                "num_hidden_layers",
                format!("{num_hidden_layers} layers (at most {MAX_LAYERS})"),
            ));
        }
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(self.invalid(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match self.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(self.invalid(
                    "head_dim",
                    format!("absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(self.invalid(
                "head_dim",
                format!("{head_dim} must be even for rotary embeddings"),
            ));
        }
        Ok(ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: self.usize("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: self.usize("vocab_size")?,
            max_position_embeddings: self.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: self.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            tie_word_embeddings: self.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: false,
            o_bias: false,
            mlp_bias: self.opt_bool("mlp_bias")?.unwrap_or(false),
            fused_projections: false,
            sliding_window: None,
            sliding_layers: vec![false; num_hidden_layers],
            rope: self.rope()?,
            local_rope: None,
            qk_norm: false,
            norm_weight_offset: 0.0,
            sandwich_norms: false,
            activation: Activation::Silu,
            embed_scale: None,
            attn_scale: default_attn_scale(head_dim),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            moe: None,
            bos_token_id: self.opt_u32("bos_token_id")?,
            eos_token_ids: token_ids(self.obj.get("eos_token_id")),
            torch_dtype: dtype_name(self.obj),
            is_multimodal_wrapper: false,
        })
    }

    /// A RoPE from one raw object (`rope_parameters`, a classic `rope_scaling`, or one entry of
    /// a per-layer-type `rope_parameters`), with `theta` when the object does not give one.
    pub(super) fn rope_from(
        &self,
        key: &str,
        value: Option<&Value>,
        theta: f64,
    ) -> Result<RopeConfig> {
        let raw: RawRope = match value {
            None => RawRope::default(),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| self.invalid(key, e.to_string()))?
            }
        };
        let theta = raw.rope_theta.unwrap_or(theta);
        raw.resolve_with(theta, &self.rope_context()?)
            .map_err(|msg| self.invalid(key, msg))
    }

    /// The top-level fields transformers folds into every rope object (partial rotary, and
    /// LongRoPE's original length and extension ratio).
    fn rope_context(&self) -> Result<RopeContext> {
        let head_dim = match self.opt_usize("head_dim")? {
            Some(d) => Some(d),
            None => match (
                self.opt_usize("hidden_size")?,
                self.opt_usize("num_attention_heads")?,
            ) {
                (Some(h), Some(n)) if h % n == 0 => Some(h / n),
                _ => None,
            },
        };
        Ok(RopeContext {
            head_dim,
            max_position_embeddings: self.opt_usize("max_position_embeddings")?,
            original_max_position_embeddings: self.opt_usize("original_max_position_embeddings")?,
            partial_rotary_factor: self.opt_positive("partial_rotary_factor")?,
        })
    }

    /// The model's RoPE from either layout (a per-layer-type `rope_parameters` is the family
    /// module's to read: here its global entry is taken, when it has one).
    fn rope(&self) -> Result<RopeConfig> {
        let theta = self.opt_f64("rope_theta")?.unwrap_or(10000.0);
        // The newer layout wins when present; otherwise the classic top-level fields.
        match self.present("rope_parameters") {
            Some(p) if p.get("full_attention").is_some() => self.rope_from(
                "rope_parameters.full_attention",
                p.get("full_attention"),
                theta,
            ),
            Some(p) => self.rope_from("rope_parameters", Some(p), theta),
            None => self.rope_from("rope_scaling", self.present("rope_scaling"), theta),
        }
    }

    /// Per layer, whether it is a sliding-window layer by `layer_types`; `None` when absent.
    pub(super) fn layer_types(&self, layers: usize) -> Result<Option<Vec<bool>>> {
        let Some(types) = self.present("layer_types") else {
            return Ok(None);
        };
        let types = types
            .as_array()
            .ok_or_else(|| self.invalid("layer_types", "expected a list".into()))?;
        if types.len() != layers {
            return Err(self.invalid(
                "layer_types",
                format!("{} entries for {layers} layers", types.len()),
            ));
        }
        types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(self.invalid(
                    "layer_types",
                    format!("{t} is not sliding_attention or full_attention"),
                )),
            })
            .collect::<Result<Vec<bool>>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rope::RopeScaling;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
            "rms_norm_eps": 1e-5, "eos_token_id": 1, "bos_token_id": 0
        })
    }

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(&v, Path::new("config.json"))
    }

    #[test]
    fn an_absurd_layer_count_is_refused_before_anything_is_sized() {
        let mut v = base();
        v["num_hidden_layers"] = json!(1u64 << 40);
        let e = parse(v).unwrap_err().to_string();
        assert!(
            e.contains("num_hidden_layers") && e.contains("at most"),
            "{e}"
        );
    }

    #[test]
    fn derives_head_dim_and_kv_heads() {
        let c = parse(base()).unwrap();
        assert_eq!((c.head_dim, c.num_key_value_heads), (16, 4));
        assert_eq!(c.eos_token_ids, vec![1]);
        assert_eq!(c.rope.scaling, RopeScaling::Default);
    }

    #[test]
    fn both_rope_layouts_agree() {
        let mut classic = base();
        classic["rope_theta"] = json!(500000.0);
        classic["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
        let mut newer = base();
        newer["rope_parameters"] =
            json!({"rope_theta": 500000.0, "rope_type": "linear", "factor": 2.0});
        assert_eq!(parse(classic).unwrap().rope, parse(newer).unwrap().rope);
        let mut legacy = base();
        legacy["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        assert_eq!(
            parse(legacy).unwrap().rope.scaling,
            RopeScaling::Linear { factor: 2.0 }
        );
    }

    #[test]
    fn qwen2_has_bias_and_window_only_when_enabled() {
        let mut q = base();
        q["architectures"] = json!(["Qwen2ForCausalLM"]);
        q["sliding_window"] = json!(32);
        q["use_sliding_window"] = json!(false);
        let c = parse(q.clone()).unwrap();
        assert!(c.qkv_bias && !c.o_bias);
        assert_eq!(c.sliding_window, None);
        q["use_sliding_window"] = json!(true);
        q["max_window_layers"] = json!(1);
        let c = parse(q).unwrap();
        assert_eq!(c.sliding_layers, vec![false, true]);
        assert_eq!(c.window_for_layer(1), Some(32));
    }

    #[test]
    fn mistral_window_applies_to_every_layer() {
        let mut m = base();
        m["architectures"] = json!(["MistralForCausalLM"]);
        m["sliding_window"] = json!(8);
        let c = parse(m).unwrap();
        assert_eq!(c.sliding_layers, vec![true, true]);
    }

    #[test]
    fn eos_list_and_unknown_architecture() {
        let mut v = base();
        v["eos_token_id"] = json!([1, 2]);
        assert_eq!(parse(v).unwrap().eos_token_ids, vec![1, 2]);
        let mut v = base();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        assert!(matches!(
            parse(v),
            Err(ModelError::UnknownArchitecture { .. })
        ));
    }

    #[test]
    fn bad_fields_name_themselves() {
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let mut v = base();
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(parse(v).unwrap_err().to_string().contains("hidden_size"));
    }
}
