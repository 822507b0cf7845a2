//! Gemma 2 / Gemma 3 facts of a GGUF file, read as llama.cpp reads them (src/models/gemma2.cpp,
//! gemma3.cpp): the file's meaning is llama.cpp's, so what its converter does not write takes
//! llama.cpp's values, not transformers' — the attention scale is `head_dim^-0.5` (the
//! converter drops `query_pre_attn_scalar`; the 27B models use `hidden / heads`), Gemma 3's local
//! layers use `rope.freq_base_swa` (default 10000) unscaled, and the window pattern defaults to
//! one global layer in 2 (Gemma 2) or 6 (Gemma 3). The `(1 + w)` of the norms is already folded
//! into the stored weights by the converter.

use super::error::GgufError;
use super::metadata::Metadata;
use super::value::{Array, Value};
use super::writer::GgufWriter;
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

/// Writes Gemma's keys into an exported file as llama.cpp's converter does, plus the layer
/// pattern as a per-layer array (llama.cpp reads it; its converter leaves the default). `Err`
/// says what a GGUF cannot carry: an attention scale other than the one llama.cpp derives.
pub(super) fn export_metadata(
    w: &mut GgufWriter,
    arch: &str,
    c: &ModelConfig,
) -> Result<(), String> {
    let key = |k: &str| format!("{arch}.{k}");
    let largest = if c.architecture == Architecture::Gemma3 {
        62
    } else {
        46
    };
    let derived = if c.num_hidden_layers == largest {
        default_attn_scale(c.hidden_size / c.num_attention_heads)
    } else {
        default_attn_scale(c.head_dim)
    };
    if c.attn_scale != derived {
        return Err(format!(
            "attention scale {} (query_pre_attn_scalar) differs from the {derived} llama.cpp \
             derives from the shapes; a GGUF cannot record it",
            c.attn_scale
        ));
    }
    if let Some(cap) = c.attn_logit_softcap {
        w.add_f32(&key("attn_logit_softcapping"), cap);
    }
    if let Some(cap) = c.final_logit_softcap {
        w.add_f32(&key("final_logit_softcapping"), cap);
    }
    if c.sliding_window.is_some() {
        w.add(
            &key("attention.sliding_window_pattern"),
            Value::Array(Array::Bool(c.sliding_layers.clone())),
        );
    }
    if let Some(local) = &c.local_rope {
        if local.scaling != RopeScaling::Default {
            return Err("a scaled RoPE on the local layers cannot be recorded in GGUF".into());
        }
        w.add_f32(&key("rope.freq_base_swa"), local.theta);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, Value)]) -> Metadata {
        let mut m = Metadata::default();
        for (k, v) in pairs {
            m.insert((*k).to_owned(), v.clone()).unwrap();
        }
        m
    }

    fn layers(n: usize) -> ModelConfig {
        let v = serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": n, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 100
        });
        ModelConfig::from_json(&v, std::path::Path::new("config.json")).unwrap()
    }

    #[test]
    fn pattern_is_a_period_or_a_per_layer_array_as_llama_cpp_reads_it() {
        let c = layers(7);
        let key = "gemma3.attention.sliding_window_pattern";
        let period = |n: Option<u32>| {
            let m = match n {
                Some(n) => meta(&[(key, Value::U32(n))]),
                None => meta(&[]),
            };
            pattern(&m, key, &c, true).unwrap()
        };
        assert_eq!(
            period(None),
            vec![true, true, true, true, true, false, true]
        );
        assert_eq!(
            period(Some(2)),
            vec![true, false, true, false, true, false, true]
        );
        assert_eq!(period(Some(1)), vec![false; 7]);
        assert_eq!(period(Some(0)), vec![true; 7]);
        let flags = vec![false, true, true, false, true, true, false];
        let m = meta(&[(key, Value::Array(Array::Bool(flags.clone())))]);
        assert_eq!(pattern(&m, key, &c, true).unwrap(), flags);
        let m = meta(&[(key, Value::Array(Array::Bool(vec![true; 3])))]);
        assert!(pattern(&m, key, &c, true).is_err());
    }

    #[test]
    fn gemma2_defaults_are_llama_cpps() {
        let mut c = layers(4);
        c.architecture = Architecture::Gemma2;
        apply(&meta(&[]), "gemma2", &mut c).unwrap();
        assert_eq!(c.attn_logit_softcap, Some(50.0));
        assert_eq!(c.final_logit_softcap, Some(30.0));
        assert_eq!(c.sliding_window, Some(4096));
        assert_eq!(c.sliding_layers, vec![true, false, true, false]);
        assert_eq!(c.local_rope, None);
        assert_eq!(c.attn_scale, default_attn_scale(16));
        let m = meta(&[
            ("gemma2.attn_logit_softcapping", Value::F32(0.0)),
            ("gemma2.rope.freq_base_swa", Value::F32(-1.0)),
        ]);
        assert!(apply(&m, "gemma2", &mut c).is_err());
    }
}
