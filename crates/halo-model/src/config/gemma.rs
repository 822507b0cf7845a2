//! Gemma 2 and Gemma 3 (text): GeGLU (tanh GELU), `(1 + w)` RMSNorms around both the attention
//! and the MLP, embeddings scaled by √hidden, `query_pre_attn_scalar`, tied embeddings, and
//! sliding-window layers interleaved with global ones. Gemma 2 soft-caps attention scores and
//! the final logits; Gemma 3 adds q/k norms and its own RoPE for the local (sliding) layers.

use super::{Activation, Architecture, Fields, ModelConfig};
use crate::error::Result;
use serde_json::Value;

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
