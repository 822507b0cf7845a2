//! Gemma 2 and Gemma 3 (text): GeGLU (tanh GELU), `(1 + w)` RMSNorms around both the attention
//! and the MLP, embeddings scaled by √hidden, `query_pre_attn_scalar`, tied embeddings, and
//! sliding-window layers interleaved with global ones. Gemma 2 soft-caps attention scores and
//! the final logits; Gemma 3 adds q/k norms and its own RoPE for the local (sliding) layers.

use super::{Activation, Architecture, Fields, ModelConfig};
use crate::error::Result;
use serde_json::{json, Map, Value};

/// The multimodal wrapper whose text model halo runs as a Gemma 3 causal LM.
pub(super) const MULTIMODAL: &str = "Gemma3ForConditionalGeneration";

/// Gemma 3's text config with transformers' Gemma3TextConfig defaults for absent fields (hub
/// configs of the multimodal models leave most of them out): `text_config` for the wrapper,
/// else the config itself; ids and dtype from the top level when the text config lacks them.
pub(super) fn with_text_defaults(top: &Fields<'_>, wrapper: bool) -> Result<Map<String, Value>> {
    let text = if wrapper {
        top.present("text_config")
            .and_then(Value::as_object)
            .ok_or_else(|| top.invalid("text_config", "missing (a multimodal config)".into()))?
    } else {
        top.obj
    };
    let mut out = json!({
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6, "bos_token_id": 2,
        "eos_token_id": 1, "tie_word_embeddings": true, "query_pre_attn_scalar": 256,
        "sliding_window": 4096
    });
    let map = out.as_object_mut().expect("an object literal");
    for key in ["bos_token_id", "eos_token_id", "torch_dtype", "dtype"] {
        if let Some(v) = top.present(key) {
            map.insert(key.into(), v.clone());
        }
    }
    for (k, v) in text {
        // An explicit null means none (a window, a cap); only a null id defers to the top.
        let id_or_dtype =
            ["bos_token_id", "eos_token_id", "torch_dtype", "dtype"].contains(&k.as_str());
        if !(v.is_null() && id_or_dtype) {
            map.insert(k.clone(), v.clone());
        }
    }
    Ok(map.clone())
}

pub(super) fn apply(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    let gemma3 = c.architecture == Architecture::Gemma3;
    if f.opt_bool("use_bidirectional_attention")?.unwrap_or(false) {
        return Err(f.invalid(
            "use_bidirectional_attention",
            "bidirectional (embedding) Gemma is not a causal LM".into(),
        ));
    }
    // Older configs name the activation `hidden_act`.
    let act_key = if f.present("hidden_activation").is_some() {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    c.activation = f.activation(act_key, Activation::GeluTanh)?;
    let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
    (c.qkv_bias, c.o_bias) = (attention_bias, attention_bias);
    c.norm_weight_offset = 1.0;
    c.sandwich_norms = true;
    c.qk_norm = gemma3;
    c.tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(true);
    // transformers builds the normalizer as an f32 tensor from the Python float √hidden.
    c.embed_scale = Some((c.hidden_size as f64).sqrt() as f32);
    let scalar = f.opt_positive("query_pre_attn_scalar")?.unwrap_or(256.0);
    c.attn_scale = scalar.powf(-0.5) as f32;
    // Gemma 2 caps by default (50 and 30) unless the config says null; Gemma 3 does not.
    let (attn_cap, final_cap) = if gemma3 {
        (None, None)
    } else {
        (Some(50.0), Some(30.0))
    };
    c.attn_logit_softcap = softcap(f, "attn_logit_softcapping", attn_cap)?;
    c.final_logit_softcap = softcap(f, "final_logit_softcapping", final_cap)?;

    c.sliding_window = match f.present("sliding_window") {
        Some(_) => f.opt_usize("sliding_window")?,
        None => Some(4096),
    };
    c.sliding_layers = match f.layer_types(c.num_hidden_layers)? {
        Some(types) => types,
        None => {
            // Gemma 2 alternates starting with a local layer; Gemma 3 has one global layer
            // in every `sliding_window_pattern` (6 by default).
            let pattern = if gemma3 {
                f.opt_usize("sliding_window_pattern")?.unwrap_or(6)
            } else {
                2
            };
            (0..c.num_hidden_layers)
                .map(|i| (i + 1) % pattern != 0)
                .collect()
        }
    };
    if gemma3 {
        gemma3_ropes(f, c)?;
    }
    Ok(())
}

/// A soft-cap: `default` when the key is absent, none when it is null.
fn softcap(f: &Fields<'_>, key: &str, default: Option<f64>) -> Result<Option<f32>> {
    let cap = if f.obj.contains_key(key) {
        f.opt_positive(key)?
    } else {
        default
    };
    Ok(cap.map(|x| x as f32))
}

/// Gemma 3's two RoPEs: global layers use `rope_theta` (default 1e6) with `rope_scaling`; local
/// layers `rope_local_base_freq` (default 1e4) unscaled. transformers 5 writes both under
/// `rope_parameters` keyed by layer type.
fn gemma3_ropes(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    match f.present("rope_parameters") {
        Some(p) if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() => {
            let entry = |k: &str| p.get(k).filter(|v| !v.is_null());
            c.rope = f.rope_from(
                "rope_parameters.full_attention",
                entry("full_attention"),
                1_000_000.0,
            )?;
            c.local_rope = Some(f.rope_from(
                "rope_parameters.sliding_attention",
                entry("sliding_attention"),
                10_000.0,
            )?);
        }
        Some(p) => {
            c.rope = f.rope_from("rope_parameters", Some(p), 1_000_000.0)?;
            c.local_rope = Some(local(f)?);
        }
        None => {
            let theta = f.opt_positive("rope_theta")?.unwrap_or(1_000_000.0);
            c.rope = f.rope_from("rope_scaling", f.present("rope_scaling"), theta)?;
            c.local_rope = Some(local(f)?);
        }
    }
    Ok(())
}

fn local(f: &Fields<'_>) -> Result<crate::rope::RopeConfig> {
    let theta = f.opt_positive("rope_local_base_freq")?.unwrap_or(10_000.0);
    f.rope_from("rope_local_base_freq", None::<&Value>, theta)
}

#[cfg(test)]
mod tests {
    use crate::config::{Activation, Architecture, ModelConfig};
    use crate::rope::RopeScaling;
    use serde_json::{json, Value};
    use std::path::Path;

    fn gemma(arch: &str, extra: Value) -> crate::error::Result<ModelConfig> {
        let mut v = json!({
            "architectures": [arch], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32, "vocab_size": 100, "query_pre_attn_scalar": 24
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        ModelConfig::from_json(&v, Path::new("config.json"))
    }

    #[test]
    fn gemma2_defaults_alternate_windows_and_cap_unless_null() {
        let c = gemma("Gemma2ForCausalLM", json!({})).unwrap();
        assert_eq!(c.activation, Activation::GeluTanh);
        assert_eq!(
            (c.norm_weight_offset, c.sandwich_norms, c.qk_norm),
            (1.0, true, false)
        );
        assert_eq!(c.embed_scale, Some(8.0));
        assert_eq!(c.attn_scale, (24f64).powf(-0.5) as f32);
        assert_eq!(
            (c.attn_logit_softcap, c.final_logit_softcap),
            (Some(50.0), Some(30.0))
        );
        assert_eq!(c.sliding_window, Some(4096));
        assert_eq!(c.sliding_layers, [true, false, true, false, true, false]);
        assert!(c.tie_word_embeddings && c.local_rope.is_none());
        let c = gemma(
            "Gemma2ForCausalLM",
            json!({"attn_logit_softcapping": null, "final_logit_softcapping": 5.0}),
        )
        .unwrap();
        assert_eq!(
            (c.attn_logit_softcap, c.final_logit_softcap),
            (None, Some(5.0))
        );
        let e = gemma(
            "Gemma2ForCausalLM",
            json!({"final_logit_softcapping": -1.0}),
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("final_logit_softcapping"));
        let e = gemma("Gemma2ForCausalLM", json!({"hidden_activation": "relu"}));
        assert!(e.unwrap_err().to_string().contains("hidden_activation"));
    }

    #[test]
    fn gemma3_ropes_from_both_layouts_agree() {
        let classic = gemma(
            "Gemma3ForCausalLM",
            json!({"rope_theta": 1e6, "rope_local_base_freq": 1e4, "sliding_window": 8,
                   "rope_scaling": {"rope_type": "linear", "factor": 8.0},
                   "sliding_window_pattern": 3}),
        )
        .unwrap();
        let newer = gemma(
            "Gemma3ForCausalLM",
            json!({"sliding_window": 8,
                   "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
                                   "sliding_attention", "sliding_attention", "full_attention"],
                   "rope_parameters": {
                       "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                       "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}),
        )
        .unwrap();
        assert_eq!(classic, newer);
        let c = classic;
        assert!(c.qk_norm && c.attn_logit_softcap.is_none() && c.final_logit_softcap.is_none());
        assert_eq!(c.sliding_layers, [true, true, false, true, true, false]);
        assert_eq!(c.rope.theta, 1e6);
        assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(c.rope_for_layer(0).theta, 1e4);
        assert_eq!(c.rope_for_layer(0).scaling, RopeScaling::Default);
        assert_eq!(c.rope_for_layer(2), &c.rope);
        // Defaults: one global layer in 6, global base 1e6, local 1e4.
        let d = gemma("Gemma3ForCausalLM", json!({})).unwrap();
        assert_eq!(d.sliding_layers, [true, true, true, true, true, false]);
        assert_eq!((d.rope.theta, d.local_rope.unwrap().theta), (1e6, 1e4));
        assert_eq!(d.architecture, Architecture::Gemma3);
    }

    #[test]
    fn a_hub_style_multimodal_config_takes_gemma3_text_defaults() {
        // gemma-3-4b-it's config.json lists only what differs from Gemma3TextConfig's defaults.
        let v = json!({
            "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "eos_token_id": [1, 106], "torch_dtype": "bfloat16",
            "text_config": {
                "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                "num_hidden_layers": 34, "sliding_window": 1024,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"}
            },
            "vision_config": {"model_type": "siglip_vision_model"}
        });
        let c = ModelConfig::from_json(&v, Path::new("config.json")).unwrap();
        assert!(c.is_multimodal_wrapper);
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.vocab_size),
            (2560, 34, 262_208)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (8, 4, 256)
        );
        assert_eq!(c.attn_scale, (256f64).powf(-0.5) as f32);
        assert_eq!(c.eos_token_ids, vec![1, 106]);
        assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
        assert_eq!(c.sliding_window, Some(1024));
        assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!((c.rope.theta, c.local_rope.unwrap().theta), (1e6, 1e4));
        let mut no_text = v.clone();
        no_text.as_object_mut().unwrap().remove("text_config");
        let e = ModelConfig::from_json(&no_text, Path::new("config.json")).unwrap_err();
        assert!(e.to_string().contains("text_config"), "{e}");
    }

    #[test]
    fn bidirectional_gemma_is_refused() {
        let e = gemma(
            "Gemma3ForCausalLM",
            json!({"use_bidirectional_attention": true}),
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("use_bidirectional_attention"));
    }
}
