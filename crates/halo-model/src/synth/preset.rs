//! The named model shapes `halo make-model` can write, and the hub-format JSON files that describe
//! them (config.json in transformers 5's `rope_parameters` layout, generation_config.json,
//! tokenizer_config.json).

use super::families::FamilyPreset;
use super::phi3::Phi3Preset;
use super::SynthDType;
use crate::config::moe::ExpertNames;
use crate::Architecture;
use serde_json::{json, Value};

/// Llama 3.1-style rope scaling, as `rope_parameters` records it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The experts of a mixture-of-experts preset: every layer sparse, each expert an MLP of
/// `intermediate_size`, the kept router weights renormalised. Mixtral's layout, or Qwen3-MoE's
/// when the preset has the Qwen3 block ([`Preset::moe_architecture`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoePreset {
    pub num_experts: usize,
    pub experts_per_token: usize,
}

/// A Llama-architecture model shape (Mixtral's when `moe` is set).
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    /// One line for `--help`-style listings.
    pub about: &'static str,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    pub tie_word_embeddings: bool,
    pub default_dtype: SynthDType,
    pub moe: Option<MoePreset>,
    /// Phi-3's layout (fused projections, partial rotary, LongRoPE) when set.
    pub phi3: Option<Phi3Preset>,
    /// Qwen3's or Gemma's block (q/k norms, sandwich norms, GeGLU, soft-caps, windows) when set.
    pub family: Option<FamilyPreset>,
}

/// Token ids of the two special tokens every synthetic tokenizer starts with.
pub const BOS_ID: u32 = 0;
pub const EOS_ID: u32 = 1;

/// stories110M's shapes; the family presets are this width with 4 KV heads, changing only what
/// their family changes.
const BENCH_110M: Preset = Preset {
    name: "bench-110m",
    about: "stories110M shapes (hidden 768, 12 layers, 12 heads, vocab 32000, tied)",
    hidden_size: 768,
    intermediate_size: 2048,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    num_key_value_heads: 12,
    head_dim: 64,
    vocab_size: 32000,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    rope_scaling: None,
    // llama2.c shares the classifier with the embedding; that is what makes it 110M
    tie_word_embeddings: true,
    default_dtype: SynthDType::F32,
    moe: None,
    phi3: None,
    family: None,
};

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tiny",
        about: "the shape of the shared tiny-mha test model (hidden 128, 2 layers, MHA, vocab 512)",
        hidden_size: 128,
        intermediate_size: 344,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        head_dim: 32,
        vocab_size: 512,
        max_position_embeddings: 4096,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: None,
        tie_word_embeddings: false,
        default_dtype: SynthDType::F32,
        moe: None,
        phi3: None,
        family: None,
    },
    BENCH_110M,
    Preset {
        name: "llama-1b",
        about:
            "Llama-3.2-1B shapes (hidden 2048, 16 layers, 32/8 heads, vocab 128256, llama3 rope)",
        hidden_size: 2048,
        intermediate_size: 8192,
        num_hidden_layers: 16,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        head_dim: 64,
        vocab_size: 128256,
        max_position_embeddings: 131072,
        rms_norm_eps: 1e-5,
        rope_theta: 500000.0,
        rope_scaling: Some(Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }),
        tie_word_embeddings: true,
        default_dtype: SynthDType::Bf16,
        moe: None,
        phi3: None,
        family: None,
    },
    Preset {
        name: "bench-moe",
        about: "a Mixtral-style MoE at bench-110m's width (hidden 768, 12 layers, 12/4 heads, \
                16 experts of 512, top-2, vocab 32000, tied)",
        intermediate_size: 512,
        num_key_value_heads: 4,
        moe: Some(MoePreset {
            num_experts: 16,
            experts_per_token: 2,
        }),
        ..BENCH_110M
    },
    Preset {
        name: "bench-qwen3moe",
        about: "a Qwen3-MoE at bench-110m's width (hidden 768, 12 layers, 12/4 heads, q/k norms, \
                16 experts of 512, top-2 renormalised, vocab 32000, tied)",
        intermediate_size: 512,
        num_key_value_heads: 4,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        moe: Some(MoePreset {
            num_experts: 16,
            experts_per_token: 2,
        }),
        family: Some(FamilyPreset::Qwen3),
        ..BENCH_110M
    },
    Preset {
        name: "bench-phi3",
        about: "Phi-4-mini's layout at bench-110m's width (hidden 768, 12 layers, 12/4 heads, \
                fused qkv/gate_up, 3/4 partial rotary, LongRoPE 4096 -> 131072, vocab 32000, tied)",
        num_key_value_heads: 4,
        max_position_embeddings: 131072,
        phi3: Some(Phi3Preset {
            partial_rotary_factor: 0.75,
            original_max_position_embeddings: 4096,
        }),
        ..BENCH_110M
    },
    Preset {
        name: "bench-qwen3",
        about: "Qwen3's block at bench-110m's width (hidden 768, 12 layers, 12/4 heads, \
                head_dim 64, q/k norms, vocab 32000, tied)",
        num_key_value_heads: 4,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        family: Some(FamilyPreset::Qwen3),
        ..BENCH_110M
    },
    Preset {
        name: "bench-gemma2",
        about: "Gemma 2's block at bench-110m's width (hidden 768, 12 layers, 12/4 heads, GeGLU, \
                soft-caps 50/30, window 256 on every other layer, vocab 32000, tied)",
        num_key_value_heads: 4,
        rms_norm_eps: 1e-6,
        family: Some(FamilyPreset::Gemma2 {
            sliding_window: 256,
        }),
        ..BENCH_110M
    },
    Preset {
        name: "bench-gemma3",
        about: "Gemma 3's text block at bench-110m's width (hidden 768, 12 layers, 12/4 heads, \
                q/k norms, 5 local (window 256, base 1e4) : 1 global (base 1e6, linear x8), \
                vocab 32000, tied)",
        num_key_value_heads: 4,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        family: Some(FamilyPreset::Gemma3 {
            sliding_window: 256,
            pattern: 6,
            rope_local_base_freq: 10000.0,
            global_linear_factor: 8.0,
        }),
        ..BENCH_110M
    },
];

/// The preset called `name`, if there is one.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset names, comma-separated, for error messages.
pub fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Preset {
    /// Mixtral or Qwen3-MoE for an MoE preset (Qwen3's block makes it Qwen3-MoE).
    pub fn moe_architecture(&self) -> Option<Architecture> {
        self.moe?;
        Some(match self.family {
            Some(FamilyPreset::Qwen3) => Architecture::Qwen3Moe,
            _ => Architecture::Mixtral,
        })
    }

    /// The checkpoint names of an MoE preset's expert tensors.
    pub fn expert_names(&self) -> Option<ExpertNames> {
        ExpertNames::for_architecture(self.moe_architecture()?)
    }

    /// Stored parameters (a tied head counted once).
    pub fn param_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let i = self.intermediate_size as u64;
        let v = self.vocab_size as u64;
        // A sparse layer has a router and `num_experts` MLPs where a dense one has one MLP.
        let ffn = match self.moe {
            Some(m) => m.num_experts as u64 * (h + 3 * i * h),
            None => 3 * i * h,
        };
        let family = self.family.map_or(0, |f| f.extra_params_per_layer(self));
        let per_layer = 2 * h + 2 * q * h + 2 * kv * h + ffn + family;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + h + head + per_layer * self.num_hidden_layers as u64
    }

    /// config.json as transformers 5 writes a LlamaConfig (keys sorted, `rope_parameters` layout),
    /// plus a `halo_synth` record of how it was made (transformers ignores unknown keys).
    /// For an MoE preset, MixtralConfig's keys instead of LlamaConfig's.
    pub fn config_json(&self, dtype: SynthDType, seed: u64) -> Value {
        let mut v = self.llama_config_json(dtype, seed);
        if let Some(r) = &self.phi3 {
            super::phi3::patch_config(&mut v, self, r);
        }
        if let Some(f) = self.family {
            super::families::patch_config(&mut v, self, f);
        }
        if let (Some(m), Some(obj)) = (self.moe, v.as_object_mut()) {
            for k in ["mlp_bias", "pretraining_tp"] {
                obj.remove(k);
            }
            if self.moe_architecture() == Some(Architecture::Qwen3Moe) {
                // Qwen3MoeConfig as transformers 5 writes it (tests/fixtures/families/tiny-qwen3moe)
                for k in ["layer_types", "max_window_layers"] {
                    obj.remove(k);
                }
                obj.insert("architectures".into(), json!(["Qwen3MoeForCausalLM"]));
                obj.insert("model_type".into(), json!("qwen3_moe"));
                obj.insert("decoder_sparse_step".into(), json!(1));
                obj.insert("mlp_only_layers".into(), json!([]));
                obj.insert(
                    "moe_intermediate_size".into(),
                    json!(self.intermediate_size),
                );
                obj.insert("norm_topk_prob".into(), json!(true));
            } else {
                obj.remove("attention_bias");
                obj.insert("architectures".into(), json!(["MixtralForCausalLM"]));
                obj.insert("model_type".into(), json!("mixtral"));
                obj.insert("router_jitter_noise".into(), json!(0.0));
            }
            obj.insert("num_local_experts".into(), json!(m.num_experts));
            obj.insert("num_experts_per_tok".into(), json!(m.experts_per_token));
            obj.insert("output_router_logits".into(), json!(false));
            obj.insert("router_aux_loss_coef".into(), json!(0.001));
            obj.insert("sliding_window".into(), Value::Null);
        }
        v
    }

    fn llama_config_json(&self, dtype: SynthDType, seed: u64) -> Value {
        let mut rope = json!({ "rope_theta": self.rope_theta, "rope_type": "default" });
        if let Some(s) = self.rope_scaling {
            rope = json!({
                "rope_theta": self.rope_theta,
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        json!({
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": BOS_ID,
            "dtype": dtype.hf_name(),
            "eos_token_id": EOS_ID,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": super::WEIGHT_STD,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_bias": false,
            "model_type": "llama",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pad_token_id": null,
            "pretraining_tp": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": true,
            "vocab_size": self.vocab_size,
            "halo_synth": { "preset": self.name, "seed": seed, "random_weights": true },
        })
    }

    pub fn generation_config_json(&self) -> Value {
        json!({ "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "use_cache": true })
    }

    pub fn tokenizer_config_json(&self) -> Value {
        json!({
            "bos_token": "<s>",
            "eos_token": "</s>",
            "add_bos_token": true,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": self.max_position_embeddings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_consistent() {
        for p in PRESETS {
            assert_eq!(
                p.num_attention_heads % p.num_key_value_heads,
                0,
                "{}",
                p.name
            );
            assert!(p.vocab_size >= 258, "{}", p.name);
            assert_eq!(preset(p.name), Some(p));
        }
        assert!(preset("nope").is_none());
        assert_eq!(
            preset_names(),
            "tiny, bench-110m, llama-1b, bench-moe, bench-qwen3moe, bench-phi3, bench-qwen3, \
             bench-gemma2, bench-gemma3"
        );
    }

    #[test]
    fn param_counts_match_the_published_models() {
        // stories110M (shared classifier): 109.5M; Llama-3.2-1B (tied): 1.236B.
        assert_eq!(preset("bench-110m").unwrap().param_count(), 109_529_856);
        assert_eq!(preset("llama-1b").unwrap().param_count(), 1_235_814_400);
        // 24.6M embedding + 12 x (1.57M attention + 16 x 1.18M experts + router).
        assert_eq!(preset("bench-moe").unwrap().param_count(), 270_109_440);
    }
}
