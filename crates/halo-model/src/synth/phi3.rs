//! What a Phi-3 preset changes in the synthetic model: Phi3Config's keys (Phi-4-mini's layout:
//! partial rotary, LongRoPE with short and long factor lists, the pretraining length at the top
//! level) and the fused `qkv_proj` / `gate_up_proj` tensors.

use super::preset::Preset;
use serde_json::{json, Value};

/// Phi-4-mini's RoPE features for a preset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phi3Preset {
    /// Rotated fraction of each head (Phi-4-mini: 0.75).
    pub partial_rotary_factor: f64,
    /// The pretraining length LongRoPE switches at (`max_position_embeddings` is the extended one).
    pub original_max_position_embeddings: usize,
}

impl Phi3Preset {
    /// Rotated dimensions of a `head_dim` head, as transformers truncates them.
    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        (head_dim as f64 * self.partial_rotary_factor) as usize
    }

    /// LongRoPE's factor lists, one per rotated frequency: short ones 1 (the pretrained RoPE),
    /// long ones rising geometrically from 1 to the context extension ratio over the
    /// frequencies (low frequencies stretched most, the shape of the published lists).
    pub fn factors(&self, head_dim: usize, max_positions: usize) -> (Vec<f64>, Vec<f64>) {
        let n = self.rotary_dim(head_dim) / 2;
        let ext = (max_positions as f64 / self.original_max_position_embeddings as f64).max(1.0);
        let long = (0..n)
            .map(|i| ext.powf(i as f64 / (n.max(2) - 1) as f64))
            .collect();
        (vec![1.0; n], long)
    }
}

/// Turns `v` (the Llama config.json of `p`) into the Phi3Config transformers 5 writes.
pub(super) fn patch_config(v: &mut Value, p: &Preset, r: &Phi3Preset) {
    let (short, long) = r.factors(p.head_dim, p.max_position_embeddings);
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for k in ["attention_bias", "mlp_bias", "pretraining_tp", "head_dim"] {
        obj.remove(k);
    }
    let theta = obj["rope_parameters"]["rope_theta"].clone();
    obj.insert("architectures".into(), json!(["Phi3ForCausalLM"]));
    obj.insert("model_type".into(), json!("phi3"));
    obj.insert("embd_pdrop".into(), json!(0.0));
    obj.insert("resid_pdrop".into(), json!(0.0));
    obj.insert("sliding_window".into(), Value::Null);
    obj.insert(
        "original_max_position_embeddings".into(),
        json!(r.original_max_position_embeddings),
    );
    obj.insert(
        "partial_rotary_factor".into(),
        json!(r.partial_rotary_factor),
    );
    obj.insert(
        "rope_parameters".into(),
        json!({
            "rope_type": "longrope",
            "rope_theta": theta,
            "partial_rotary_factor": r.partial_rotary_factor,
            "short_factor": short,
            "long_factor": long,
        }),
    );
}

#[cfg(test)]
mod tests {
    use crate::synth::{preset, tensors, SynthDType};
    use crate::{Architecture, ModelConfig, RopeScaling};
    use std::collections::BTreeMap;
    use std::path::Path;

    #[test]
    fn bench_phi3_is_a_phi4_mini_shaped_config_with_fused_tensors() {
        let p = preset("bench-phi3").unwrap();
        let r = p.phi3.unwrap();
        let c = ModelConfig::from_json(&p.config_json(p.default_dtype, 0), Path::new("c")).unwrap();
        assert_eq!(c.architecture, Architecture::Phi3);
        assert!(c.fused_projections && c.tie_word_embeddings);
        assert_eq!(c.rope.rotary_dim(c.head_dim), r.rotary_dim(p.head_dim));
        let RopeScaling::LongRope(lr) = &c.rope.scaling else {
            panic!("{:?}", c.rope.scaling)
        };
        assert_eq!(
            lr.original_max_position_embeddings,
            r.original_max_position_embeddings
        );
        assert_eq!(lr.long_factor.len(), r.rotary_dim(p.head_dim) / 2);
        assert_eq!(lr.long_factor[0], 1.0);
        let ext = p.max_position_embeddings as f32 / r.original_max_position_embeddings as f32;
        assert!((lr.long_factor.last().unwrap() - ext).abs() < 1e-3);
        assert!(lr.attention_factor > 1.0);
        let plan: BTreeMap<String, Vec<usize>> = tensors::plan(p, 0, SynthDType::F32)
            .into_iter()
            .map(|(n, t)| (n, t.shape))
            .collect();
        let expected: BTreeMap<String, Vec<usize>> = c.expected_tensors().into_iter().collect();
        assert_eq!(plan, expected);
        assert_eq!(c.param_count(), p.param_count());
    }
}
