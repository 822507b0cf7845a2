//! What a Qwen3 or Gemma preset changes in the synthetic model: the family's config.json keys
//! and its extra per-layer tensors (Qwen3's q/k norms; Gemma's norms around the MLP, and Gemma
//! 3's q/k norms).

use super::preset::Preset;
use super::tensors::Init;
use serde_json::{json, Value};

/// A dense family other than Llama's, for a preset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FamilyPreset {
    /// Qwen3: per-head q/k RMSNorm, an explicit head_dim.
    Qwen3,
    /// Gemma 2: GeGLU, sandwich norms with `(1 + w)`, soft-caps, every other layer local.
    Gemma2 { sliding_window: usize },
    /// Gemma 3 text: Gemma 2's block without soft-caps, with q/k norms, one global layer in
    /// `pattern`, a local RoPE base and linear RoPE scaling on the global layers.
    Gemma3 {
        sliding_window: usize,
        pattern: usize,
        rope_local_base_freq: f64,
        global_linear_factor: f64,
    },
}

impl FamilyPreset {
    fn is_gemma(self) -> bool {
        !matches!(self, FamilyPreset::Qwen3)
    }

    /// How the RMSNorm weights are drawn: Gemma stores `w` of `(1 + w)`, so near 0.
    pub fn norm_init(self) -> Init {
        if self.is_gemma() {
            Init::Uniform { std: 0.05 }
        } else {
            Init::NearOne { spread: 0.1 }
        }
    }

    /// Per-layer tensors beyond Llama's, as (suffix after `model.layers.N.`, shape).
    pub fn layer_tensors(self, p: &Preset) -> Vec<(&'static str, Vec<usize>)> {
        let qk = vec![
            ("self_attn.q_norm.weight", vec![p.head_dim]),
            ("self_attn.k_norm.weight", vec![p.head_dim]),
        ];
        let sandwich = vec![
            ("pre_feedforward_layernorm.weight", vec![p.hidden_size]),
            ("post_feedforward_layernorm.weight", vec![p.hidden_size]),
        ];
        match self {
            FamilyPreset::Qwen3 => qk,
            FamilyPreset::Gemma2 { .. } => sandwich,
            FamilyPreset::Gemma3 { .. } => qk.into_iter().chain(sandwich).collect(),
        }
    }

    /// Parameters per layer beyond Llama's.
    pub fn extra_params_per_layer(self, p: &Preset) -> u64 {
        self.layer_tensors(p)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Which layers are local (sliding-window) ones, as `layer_types` lists them.
    fn layer_types(self, layers: usize) -> Option<Vec<&'static str>> {
        let period = match self {
            FamilyPreset::Qwen3 => return None,
            FamilyPreset::Gemma2 { .. } => 2,
            FamilyPreset::Gemma3 { pattern, .. } => pattern,
        };
        Some(
            (0..layers)
                .map(|l| {
                    if (l + 1) % period == 0 {
                        "full_attention"
                    } else {
                        "sliding_attention"
                    }
                })
                .collect(),
        )
    }
}

/// Turns `v` (the Llama config.json of `p`) into the family's config as transformers 5 writes it.
pub(super) fn patch_config(v: &mut Value, p: &Preset, f: FamilyPreset) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for k in ["mlp_bias", "pretraining_tp"] {
        obj.remove(k);
    }
    let theta = obj["rope_parameters"]["rope_theta"].clone();
    match f {
        FamilyPreset::Qwen3 => {
            obj.insert("architectures".into(), json!(["Qwen3ForCausalLM"]));
            obj.insert("model_type".into(), json!("qwen3"));
            obj.insert("use_sliding_window".into(), json!(false));
            obj.insert("sliding_window".into(), Value::Null);
            obj.insert("max_window_layers".into(), json!(p.num_hidden_layers));
            obj.insert(
                "layer_types".into(),
                json!(vec!["full_attention"; p.num_hidden_layers]),
            );
        }
        FamilyPreset::Gemma2 { sliding_window } | FamilyPreset::Gemma3 { sliding_window, .. } => {
            obj.remove("hidden_act");
            obj.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            obj.insert("query_pre_attn_scalar".into(), json!(p.head_dim));
            obj.insert("sliding_window".into(), json!(sliding_window));
            obj.insert(
                "layer_types".into(),
                json!(f.layer_types(p.num_hidden_layers)),
            );
            obj.insert("pad_token_id".into(), json!(super::preset::EOS_ID + 1));
        }
    }
    match f {
        FamilyPreset::Qwen3 => {}
        FamilyPreset::Gemma2 { .. } => {
            obj.insert("architectures".into(), json!(["Gemma2ForCausalLM"]));
            obj.insert("model_type".into(), json!("gemma2"));
            obj.insert("attn_logit_softcapping".into(), json!(50.0));
            obj.insert("final_logit_softcapping".into(), json!(30.0));
        }
        FamilyPreset::Gemma3 {
            rope_local_base_freq,
            global_linear_factor,
            ..
        } => {
            obj.insert("architectures".into(), json!(["Gemma3ForCausalLM"]));
            obj.insert("model_type".into(), json!("gemma3_text"));
            obj.insert("attn_logit_softcapping".into(), Value::Null);
            obj.insert("final_logit_softcapping".into(), Value::Null);
            obj.insert("use_bidirectional_attention".into(), json!(false));
            obj.insert(
                "rope_parameters".into(),
                json!({
                    "full_attention": {
                        "rope_type": "linear",
                        "factor": global_linear_factor,
                        "rope_theta": theta,
                    },
                    "sliding_attention": {
                        "rope_type": "default",
                        "rope_theta": rope_local_base_freq,
                    },
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::synth::{preset, tensors, SynthDType};
    use crate::{Activation, Architecture, ModelConfig, RopeScaling};
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Each family preset's config parses as its family, and the tensors written are exactly
    /// the ones the parsed config expects.
    #[test]
    fn family_presets_parse_as_their_family_and_plan_the_expected_tensors() {
        for (name, arch) in [
            ("bench-qwen3", Architecture::Qwen3),
            ("bench-gemma2", Architecture::Gemma2),
            ("bench-gemma3", Architecture::Gemma3),
        ] {
            let p = preset(name).unwrap();
            let v = p.config_json(SynthDType::F32, 1);
            let c = ModelConfig::from_json(&v, Path::new("config.json")).unwrap();
            assert_eq!(c.architecture, arch, "{name}");
            let planned: BTreeMap<String, Vec<usize>> = tensors::plan(p, 1, SynthDType::F32)
                .into_iter()
                .map(|(n, t)| (n, t.shape))
                .collect();
            let expected: BTreeMap<String, Vec<usize>> = c.expected_tensors().into_iter().collect();
            assert_eq!(planned, expected, "{name}");
            assert_eq!(p.param_count(), c.param_count(), "{name}");
            match arch {
                Architecture::Qwen3 => assert!(c.qk_norm && !c.sandwich_norms),
                Architecture::Gemma2 => {
                    assert_eq!(c.activation, Activation::GeluTanh);
                    assert_eq!(c.attn_logit_softcap, Some(50.0));
                    assert_eq!(c.sliding_layers[..2], [true, false]);
                }
                _ => {
                    assert!(c.qk_norm && c.sandwich_norms);
                    assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 8.0 });
                    assert_eq!(c.local_rope.as_ref().unwrap().theta, 10_000.0);
                    assert_eq!(c.sliding_layers[..6], [true, true, true, true, true, false]);
                }
            }
        }
    }
}
