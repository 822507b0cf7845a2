//! Phi-3 and Phi-4-mini (`Phi3ForCausalLM`): Llama's block with q/k/v stored as one
//! `qkv_proj` and gate/up as one `gate_up_proj`, an optional window on every layer, and RoPE
//! that may rotate only part of each head (`partial_rotary_factor`, Phi-4-mini) with LongRoPE
//! scaling. The RoPE itself is read by the shared code, which folds in the top-level
//! `original_max_position_embeddings` and `partial_rotary_factor` the way transformers does.

use super::{Activation, Fields, ModelConfig};
use crate::error::Result;

pub(super) fn apply(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    c.activation = f.activation("hidden_act", Activation::Silu)?;
    if c.activation != Activation::Silu {
        return Err(f.invalid("hidden_act", "only silu is supported for Phi-3".into()));
    }
    c.fused_projections = true;
    // Phi3Model masks every layer with the window when the config has one.
    c.sliding_window = f.opt_usize("sliding_window")?;
    if c.sliding_window.is_some() {
        c.sliding_layers = vec![true; c.num_hidden_layers];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Architecture, ModelConfig};
    use crate::rope::RopeScaling;
    use serde_json::{json, Value};
    use std::path::Path;

    /// Phi-4-mini-instruct's config.json, shrunk (same fields and layout).
    fn phi4_mini() -> Value {
        let half = 6; // 16 * 0.75 / 2
        let short = vec![1.0; half];
        let long: Vec<f64> = (0..half).map(|i| 1.0 + i as f64).collect();
        json!({
            "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
            "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
            "hidden_act": "silu", "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
            "sliding_window": 262144, "bos_token_id": 1, "eos_token_id": [2, 3],
            "rope_scaling": {
                "type": "longrope",
                "short_factor": short,
                "long_factor": long
            }
        })
    }

    fn parse(v: Value) -> crate::error::Result<ModelConfig> {
        ModelConfig::from_json(&v, Path::new("config.json"))
    }

    #[test]
    fn phi4_mini_config_reads_partial_rotary_longrope_and_tied_head() {
        let c = parse(phi4_mini()).unwrap();
        assert_eq!(c.architecture, Architecture::Phi3);
        assert!(c.fused_projections && c.tie_word_embeddings);
        assert_eq!(c.rope.rotary_dim(16), 12);
        let RopeScaling::LongRope(lr) = &c.rope.scaling else {
            panic!("{:?}", c.rope.scaling)
        };
        assert_eq!(lr.original_max_position_embeddings, 4096);
        // sqrt(1 + ln(131072 / 4096) / ln(4096)), the default for a 32x extension
        let expected = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt() as f32;
        assert_eq!(lr.attention_factor, expected);
        assert_eq!(lr.long_factor, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(c.sliding_layers, vec![true, true]);
        let names: Vec<String> = c.expected_tensors().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"model.layers.0.self_attn.qkv_proj.weight".to_string()));
        assert!(names.contains(&"model.layers.1.mlp.gate_up_proj.weight".to_string()));
        for split in [
            ".q_proj.",
            ".k_proj.",
            ".v_proj.",
            ".gate_proj.",
            ".up_proj.",
        ] {
            assert!(!names.iter().any(|n| n.contains(split)), "{split}");
        }
        let qkv = c
            .expected_tensors()
            .into_iter()
            .find(|(n, _)| n == "model.layers.0.self_attn.qkv_proj.weight")
            .unwrap();
        assert_eq!(qkv.1, vec![64 + 2 * 32, 64]);
    }

    #[test]
    fn the_su_name_is_longrope_and_factor_lengths_are_checked() {
        let mut v = phi4_mini();
        v["rope_scaling"]["type"] = json!("su");
        assert!(matches!(
            parse(v).unwrap().rope.scaling,
            RopeScaling::LongRope(_)
        ));
        let mut v = phi4_mini();
        v["rope_scaling"]["short_factor"] = json!(vec![1.0; 8]);
        let e = parse(v).unwrap_err().to_string();
        assert!(
            e.contains("short_factor") && e.contains("rope_scaling"),
            "{e}"
        );
    }

    #[test]
    fn phi3_without_window_or_scaling_is_plain_rope() {
        let mut v = phi4_mini();
        let o = v.as_object_mut().unwrap();
        o.remove("rope_scaling");
        o.remove("sliding_window");
        o.remove("partial_rotary_factor");
        let c = parse(v).unwrap();
        assert_eq!(c.rope.scaling, RopeScaling::Default);
        assert_eq!(c.rope.rotary_dim(16), 16);
        assert_eq!(c.sliding_window, None);
    }

    #[test]
    fn gelu_phi3_is_refused() {
        let mut v = phi4_mini();
        v["hidden_act"] = json!("gelu_pytorch_tanh");
        assert!(parse(v).unwrap_err().to_string().contains("hidden_act"));
    }
}
