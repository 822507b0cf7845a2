//! `config.json` for the Llama family: Llama, Mistral and Qwen2, in both layouts found in the
//! wild (top-level `rope_theta` + `rope_scaling`, and transformers 5's `rope_parameters`).

use crate::error::{ModelError, Result};
use crate::rope::{RawRope, RopeConfig};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// Everything a backend needs to build the network.
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
    /// The attention window, when any layer uses one.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses the sliding window (all false when `sliding_window` is None).
    pub sliding_layers: Vec<bool>,
    pub rope: RopeConfig,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The dtype the weights were saved in, as config.json names it.
    pub torch_dtype: Option<String>,
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
        let f = Fields { obj, path };
        let architecture = f.architecture()?;
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        let num_hidden_layers = f.usize("num_hidden_layers")?;
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.invalid(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(f.invalid(
                    "head_dim",
                    format!("absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.invalid(
                "head_dim",
                format!("{head_dim} must be even for rotary embeddings"),
            ));
        }
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(f.invalid(
                    "hidden_act",
                    format!("'{act}' is not supported (only silu)"),
                ));
            }
        }

        let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let sliding_window = match architecture {
            Architecture::Llama => None,
            Architecture::Mistral => f.opt_usize("sliding_window")?,
            Architecture::Qwen2 => {
                if f.opt_bool("use_sliding_window")?.unwrap_or(false) {
                    f.opt_usize("sliding_window")?
                } else {
                    None
                }
            }
        };
        let sliding_layers = f.sliding_layers(architecture, sliding_window, num_hidden_layers)?;
        let sliding_window = sliding_window.filter(|_| sliding_layers.iter().any(|&s| s));

        Ok(ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: f.usize("vocab_size")?,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
            sliding_window,
            sliding_layers,
            rope: f.rope()?,
            bos_token_id: f.opt_u32("bos_token_id")?,
            eos_token_ids: token_ids(obj.get("eos_token_id")),
            torch_dtype: obj
                .get("torch_dtype")
                .or_else(|| obj.get("dtype"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
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
            add("self_attn.q_proj.weight", vec![q, h]);
            add("self_attn.k_proj.weight", vec![kv, h]);
            add("self_attn.v_proj.weight", vec![kv, h]);
            add("self_attn.o_proj.weight", vec![h, q]);
            if self.qkv_bias {
                add("self_attn.q_proj.bias", vec![q]);
                add("self_attn.k_proj.bias", vec![kv]);
                add("self_attn.v_proj.bias", vec![kv]);
            }
            if self.o_bias {
                add("self_attn.o_proj.bias", vec![h]);
            }
            add("mlp.gate_proj.weight", vec![i, h]);
            add("mlp.up_proj.weight", vec![i, h]);
            add("mlp.down_proj.weight", vec![h, i]);
            if self.mlp_bias {
                add("mlp.gate_proj.bias", vec![i]);
                add("mlp.up_proj.bias", vec![i]);
                add("mlp.down_proj.bias", vec![h]);
            }
        }
        t
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

/// Typed access to config fields with errors that name the file and the field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn invalid(&self, field: &str, msg: String) -> ModelError {
        ModelError::InvalidConfig {
            path: PathBuf::from(self.path),
            field: field.into(),
            msg,
        }
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&x| x > 0)
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.invalid(key, format!("expected a positive integer, got {v}"))),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.invalid(key, "missing".into()))
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected a token id, got {v}"))),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected a number, got {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected true or false, got {v}"))),
        }
    }

    fn architecture(&self) -> Result<Architecture> {
        let named = self
            .present("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        let arch = match named {
            Some("LlamaForCausalLM") => Architecture::Llama,
            Some("MistralForCausalLM") => Architecture::Mistral,
            Some("Qwen2ForCausalLM") => Architecture::Qwen2,
            Some(other) => {
                return Err(ModelError::UnknownArchitecture {
                    path: PathBuf::from(self.path),
                    arch: other.into(),
                })
            }
            None => match self.present("model_type").and_then(Value::as_str) {
                Some("llama") => Architecture::Llama,
                Some("mistral") => Architecture::Mistral,
                Some("qwen2") => Architecture::Qwen2,
                other => {
                    return Err(ModelError::UnknownArchitecture {
                        path: PathBuf::from(self.path),
                        arch: other.unwrap_or("(none given)").into(),
                    })
                }
            },
        };
        Ok(arch)
    }

    fn rope(&self) -> Result<RopeConfig> {
        let parse = |key: &str| -> Result<RawRope> {
            match self.present(key) {
                None => Ok(RawRope::default()),
                Some(v) => {
                    serde_json::from_value(v.clone()).map_err(|e| self.invalid(key, e.to_string()))
                }
            }
        };
        // The newer layout wins when present; otherwise the classic top-level fields.
        let (raw, key) = if self.present("rope_parameters").is_some() {
            (parse("rope_parameters")?, "rope_parameters")
        } else {
            (parse("rope_scaling")?, "rope_scaling")
        };
        let theta = raw
            .rope_theta
            .or(self.opt_f64("rope_theta")?)
            .unwrap_or(10000.0);
        raw.resolve(theta).map_err(|msg| self.invalid(key, msg))
    }

    fn sliding_layers(
        &self,
        arch: Architecture,
        window: Option<usize>,
        layers: usize,
    ) -> Result<Vec<bool>> {
        if window.is_none() {
            return Ok(vec![false; layers]);
        }
        if let Some(types) = self.present("layer_types").and_then(Value::as_array) {
            if types.len() != layers {
                return Err(self.invalid(
                    "layer_types",
                    format!("{} entries for {layers} layers", types.len()),
                ));
            }
            return Ok(types
                .iter()
                .map(|t| t.as_str() == Some("sliding_attention"))
                .collect());
        }
        Ok(match arch {
            // Qwen2 uses full attention below max_window_layers.
            Architecture::Qwen2 => {
                let first = self.opt_usize("max_window_layers")?.unwrap_or(0);
                (0..layers).map(|l| l >= first).collect()
            }
            _ => vec![true; layers],
        })
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
