//! Gemma 2 / Gemma 3 facts of a GGUF file, read as llama.cpp reads them (src/models/gemma2.cpp,
//! gemma3.cpp): the file's meaning is llama.cpp's, so what its converter does not write takes
//! llama.cpp's values, not transformers' — the attention scale is `head_dim^-0.5` (the
//! converter drops `query_pre_attn_scalar`; the 27B models use `hidden / heads`), Gemma 3's local
//! layers use `rope.freq_base_swa` (default 10000) unscaled, and the window pattern defaults to
//! one global layer in 2 (Gemma 2) or 6 (Gemma 3). The `(1 + w)` of the norms is already folded
//! into the stored weights by the converter.

use super::error::GgufError;
use super::metadata::Metadata;
use super::value::Array;
use crate::config::{default_attn_scale, Activation, Architecture, ModelConfig};
use crate::rope::{RopeConfig, RopeScaling};

pub(super) fn apply(meta: &Metadata, arch: &str, c: &mut ModelConfig) -> Result<(), GgufError> {
    let key = |k: &str| format!("{arch}.{k}");
    let gemma3 = c.architecture == Architecture::Gemma3;
    c.activation = Activation::GeluTanh;
    c.sandwich_norms = true;
    c.norm_weight_offset = 0.0;
    c.embed_scale = Some((c.hidden_size as f64).sqrt() as f32);
    let largest = if gemma3 { 62 } else { 46 };
    c.attn_scale = if c.num_hidden_layers == largest {
        default_attn_scale(c.hidden_size / c.num_attention_heads)
    } else {
        default_attn_scale(c.head_dim)
    };
    let cap = |k: &str, default: Option<f64>| -> Result<Option<f32>, GgufError> {
        let v = meta.opt_f64(&key(k))?.or(default);
        match v {
            Some(x) if !(x.is_finite() && x >= 0.0) => {
                Err(invalid(&key(k), format!("{x} is not a cap")))
            }
            // llama.cpp treats a zero cap as none.
            Some(0.0) => Ok(None),
            other => Ok(other.map(|x| x as f32)),
        }
    };
    c.attn_logit_softcap = if gemma3 {
        None
    } else {
        cap("attn_logit_softcapping", Some(50.0))?
    };
    c.final_logit_softcap = cap("final_logit_softcapping", (!gemma3).then_some(30.0))?;

    let window = meta.opt_usize(&key("attention.sliding_window"))?;
    c.sliding_window = if gemma3 {
        window.filter(|&w| w > 0)
    } else {
        Some(window.filter(|&w| w > 0).unwrap_or(4096))
    };
    c.sliding_layers = match c.sliding_window {
        None => vec![false; c.num_hidden_layers],
        Some(_) => pattern(meta, &key("attention.sliding_window_pattern"), c, gemma3)?,
    };
    if !c.sliding_layers.iter().any(|&s| s) {
        c.sliding_window = None;
    }

    let swa_base = meta.opt_f64(&key("rope.freq_base_swa"))?;
    c.local_rope = if gemma3 {
        Some(RopeConfig {
            theta: swa_base.unwrap_or(10_000.0) as f32,
            scaling: RopeScaling::Default,
            ..c.rope.clone()
        })
    } else {
        // Gemma 2's local layers rotate as the global ones unless the file says otherwise.
        swa_base.map(|theta| RopeConfig {
            theta: theta as f32,
            ..c.rope.clone()
        })
    };
    if let Some(r) = &c.local_rope {
        if !(r.theta.is_finite() && r.theta > 0.0) {
            return Err(invalid(
                &key("rope.freq_base_swa"),
                format!("{} is not positive", r.theta),
            ));
        }
    }
    Ok(())
}

/// Which layers are local, as llama.cpp's `set_swa_pattern` decides: a per-layer bool array, or
/// a period `n` where layer `l` is local when `l % n < n - 1` (the last of every `n` is global;
/// `n = 1` makes every layer global, `n = 0` every layer local).
fn pattern(
    meta: &Metadata,
    key: &str,
    c: &ModelConfig,
    gemma3: bool,
) -> Result<Vec<bool>, GgufError> {
    let layers = c.num_hidden_layers;
    if let Some(Array::Bool(flags)) = meta.opt_array(key).ok().flatten() {
        if flags.len() != layers {
            return Err(invalid(
                key,
                format!("{} entries for {layers} layers", flags.len()),
            ));
        }
        return Ok(flags.clone());
    }
    let n = meta.opt_usize(key)?.unwrap_or(if gemma3 { 6 } else { 2 });
    Ok((0..layers).map(|l| n == 0 || l % n < n - 1).collect())
}

fn invalid(key: &str, msg: String) -> GgufError {
    GgufError::InvalidValue {
        key: key.to_owned(),
        msg,
    }
}
