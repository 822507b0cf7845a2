//! Qwen3: Llama's block with a per-head RMSNorm on q and k before RoPE, an explicit
//! `head_dim` (not hidden / heads), Llama-style `attention_bias` and Qwen's optional window.

use super::llama::{qwen_window, qwen_window_layers};
use super::{Activation, Fields, ModelConfig};
use crate::error::Result;

pub(super) fn apply(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    c.activation = f.activation("hidden_act", Activation::Silu)?;
    if c.activation != Activation::Silu {
        return Err(f.invalid("hidden_act", "only silu is supported for Qwen3".into()));
    }
    c.qk_norm = true;
    let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
    (c.qkv_bias, c.o_bias) = (attention_bias, attention_bias);
    c.sliding_window = qwen_window(f)?;
    if c.sliding_window.is_some() {
        c.sliding_layers = match f.layer_types(c.num_hidden_layers)? {
            Some(types) => types,
            None => qwen_window_layers(f, c.num_hidden_layers)?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::ModelConfig;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn qwen3_has_qk_norm_an_explicit_head_dim_and_optional_bias() {
        let mut v = json!({
            "architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32, "vocab_size": 100, "sliding_window": 8, "use_sliding_window": false
        });
        let c = ModelConfig::from_json(&v, Path::new("config.json")).unwrap();
        assert!(c.qk_norm && !c.qkv_bias && !c.o_bias && !c.sandwich_norms);
        assert_eq!((c.head_dim, c.num_attention_heads * c.head_dim), (32, 128));
        assert_eq!(c.sliding_window, None);
        assert_eq!(c.attn_scale, (32f64).powf(-0.5) as f32);
        v["attention_bias"] = json!(true);
        v["use_sliding_window"] = json!(true);
        v["max_window_layers"] = json!(1);
        let c = ModelConfig::from_json(&v, Path::new("config.json")).unwrap();
        assert!(c.qkv_bias && c.o_bias);
        assert_eq!(c.sliding_layers, [false, true]);
    }
}
