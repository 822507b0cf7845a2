//! [`ModelConfig`] from GGUF metadata (`{arch}.*` keys) and the tensors present: biases and the
//! tied head are detected by which tensors exist, the vocabulary size by the embedding's rows,
//! and llama3 RoPE scaling by the converter's `rope_freqs.weight` tensor.

use super::error::GgufError;
use super::metadata::Metadata;
use crate::config::{default_attn_scale, Activation, Architecture, ModelConfig};
use crate::rope::{RopeConfig, RopeScaling};

/// The `general.architecture` values halo runs, for error messages.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3";

/// What the config needs to know about tensors: whether one exists, its ggml dims, and (for
/// `rope_freqs.weight`) its values as f32.
pub trait TensorLookup {
    fn dims(&self, name: &str) -> Option<Vec<u64>>;
    fn f32_values(&self, name: &str) -> Result<Option<Vec<f32>>, GgufError>;
}

pub fn architecture(meta: &Metadata) -> Result<(Architecture, String), GgufError> {
    let arch = meta.str("general.architecture")?;
    let a = match arch {
        // llama.cpp writes Mixtral as `llama` with experts.
        "llama" if meta.opt_usize("llama.expert_count")?.unwrap_or(0) > 0 => Architecture::Mixtral,
        "llama" => Architecture::Llama,
        "qwen3moe" => Architecture::Qwen3Moe,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        "gemma2" => Architecture::Gemma2,
        "gemma3" => Architecture::Gemma3,
        "phi3" => Architecture::Phi3,
        other => {
            return Err(GgufError::UnknownArchitecture {
                arch: other.to_owned(),
                supported: SUPPORTED_ARCHITECTURES,
            })
        }
    };
    Ok((a, arch.to_owned()))
}

pub fn model_config(meta: &Metadata, tensors: &dyn TensorLookup) -> Result<ModelConfig, GgufError> {
    let (architecture, arch) = architecture(meta)?;
    let key = |k: &str| format!("{arch}.{k}");
    let positive = |k: &str| -> Result<usize, GgufError> {
        let v = meta.usize(&key(k))?;
        if v == 0 {
            return Err(invalid(&key(k), "must be positive".into()));
        }
        Ok(v)
    };

    let hidden_size = positive("embedding_length")?;
    let num_hidden_layers = positive("block_count")?;
    if num_hidden_layers > crate::config::MAX_LAYERS {
        return Err(invalid(
            &key("block_count"),
            format!(
                "{num_hidden_layers} layers (at most {})",
                crate::config::MAX_LAYERS
            ),
        ));
    }
    let intermediate_size = positive("feed_forward_length")?;
    let num_attention_heads = positive("attention.head_count")?;
    let num_key_value_heads = meta
        .opt_usize(&key("attention.head_count_kv"))?
        .unwrap_or(num_attention_heads);
    if num_key_value_heads == 0 || !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(invalid(
            &key("attention.head_count_kv"),
            format!("{num_key_value_heads} does not divide the head count {num_attention_heads}"),
        ));
    }
    let head_dim = match meta.opt_usize(&key("attention.key_length"))? {
        Some(d) => d,
        None if hidden_size.is_multiple_of(num_attention_heads) => {
            hidden_size / num_attention_heads
        }
        None => {
            return Err(invalid(
                &key("embedding_length"),
                format!("{hidden_size} is not a multiple of the head count {num_attention_heads}"),
            ))
        }
    };
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(invalid(
            &key("attention.key_length"),
            format!("head dimension {head_dim} must be even and positive for rotary embeddings"),
        ));
    }
    if let Some(v) = meta.opt_usize(&key("attention.value_length"))? {
        if v != head_dim {
            return Err(invalid(
                &key("attention.value_length"),
                format!("{v} differs from the key length {head_dim} (not supported)"),
            ));
        }
    }
    if let Some(r) = meta.opt_usize(&key("rope.dimension_count"))? {
        // Phi-3's partial rotary is read by gguf/phi3.rs.
        if r != head_dim && architecture != Architecture::Phi3 {
            return Err(invalid(
                &key("rope.dimension_count"),
                format!(
                    "{r}: partial rotary embeddings are not supported (head dimension {head_dim})"
                ),
            ));
        }
    }

    let embd = tensors
        .dims("token_embd.weight")
        .ok_or_else(|| GgufError::BadTensor {
            tensor: "token_embd.weight".into(),
            msg: "missing (every model needs its token embedding)".into(),
        })?;
    let vocab_size = match embd.as_slice() {
        [cols, rows] if *cols as usize == hidden_size => *rows as usize,
        _ => {
            return Err(GgufError::BadTensor {
                tensor: "token_embd.weight".into(),
                msg: format!("dims {embd:?} (ggml order), expected [{hidden_size}, vocab]"),
            })
        }
    };

    let layer0 = |t: &str| tensors.dims(&format!("blk.0.{t}")).is_some();
    let qkv_bias = layer0("attn_q.bias");
    let sliding_window = meta
        .opt_usize(&key("attention.sliding_window"))?
        .filter(|&w| w > 0);

    let mut c = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size,
        max_position_embeddings: meta.opt_usize(&key("context_length"))?.unwrap_or(2048),
        rms_norm_eps: meta
            .opt_f64(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6),
        tie_word_embeddings: tensors.dims("output.weight").is_none(),
        qkv_bias,
        o_bias: layer0("attn_output.bias"),
        mlp_bias: layer0("ffn_gate.bias"),
        fused_projections: false,
        sliding_window,
        // GGUF has no per-layer pattern for these architectures: a window, when given, applies
        // to every layer (as Mistral's does).
        sliding_layers: vec![sliding_window.is_some(); num_hidden_layers],
        rope: rope(meta, &arch, head_dim, tensors)?,
        local_rope: None,
        qk_norm: layer0("attn_q_norm.weight"),
        norm_weight_offset: 0.0,
        sandwich_norms: false,
        activation: Activation::Silu,
        embed_scale: None,
        attn_scale: default_attn_scale(head_dim),
        attn_logit_softcap: None,
        final_logit_softcap: None,
        moe: crate::config::moe::MoeConfig::from_gguf(
            meta,
            &arch,
            num_hidden_layers,
            intermediate_size,
        )?,
        bos_token_id: meta.opt_u32("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: eos_ids(meta)?,
        torch_dtype: None,
        is_multimodal_wrapper: false,
    };
    if matches!(architecture, Architecture::Gemma2 | Architecture::Gemma3) {
        super::gemma::apply(meta, &arch, &mut c)?;
    }
    if architecture == Architecture::Phi3 {
        super::phi3::apply(meta, &arch, tensors, &mut c)?;
    }
    Ok(c)
}

/// End-of-generation ids: EOS, then EOT and EOM (llama.cpp stops on all three).
pub fn eos_ids(meta: &Metadata) -> Result<Vec<u32>, GgufError> {
    let mut ids = Vec::new();
    for k in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = meta.opt_u32(k)? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

fn rope(
    meta: &Metadata,
    arch: &str,
    head_dim: usize,
    tensors: &dyn TensorLookup,
) -> Result<RopeConfig, GgufError> {
    let key = |k: &str| format!("{arch}.{k}");
    let theta = meta.opt_f64(&key("rope.freq_base"))?.unwrap_or(10000.0);
    if !(theta.is_finite() && theta > 0.0) {
        return Err(invalid(
            &key("rope.freq_base"),
            format!("{theta} is not positive"),
        ));
    }
    let factor_key = key("rope.scaling.factor");
    let kind = meta.opt_str(&key("rope.scaling.type"))?;
    let mut scaling = match kind {
        None | Some("none") => match meta.opt_f64(&key("rope.scale_linear"))? {
            // Older files give linear scaling only as `rope.scale_linear`.
            Some(f) if f != 1.0 => linear(f, &key("rope.scale_linear"))?,
            _ => RopeScaling::Default,
        },
        Some("linear") => {
            let f = meta
                .opt_f64(&factor_key)?
                .ok_or_else(|| GgufError::MissingKey {
                    key: factor_key.clone(),
                })?;
            linear(f, &factor_key)?
        }
        Some(other) => {
            return Err(invalid(
                &key("rope.scaling.type"),
                format!("'{other}' is not supported (supported: none, linear)"),
            ))
        }
    };
    // llama3 scaling is not in the metadata: the converter writes the per-frequency divisors.
    if let Some(factors) = tensors.f32_values("rope_freqs.weight")? {
        if scaling != RopeScaling::Default {
            return Err(GgufError::BadTensor {
                tensor: "rope_freqs.weight".into(),
                msg: "present together with rope.scaling.type (not supported)".into(),
            });
        }
        if factors.len() != head_dim / 2 || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err(GgufError::BadTensor {
                tensor: "rope_freqs.weight".into(),
                msg: format!(
                    "expected {} positive factors (head dimension / 2), found {}",
                    head_dim / 2,
                    factors.len()
                ),
            });
        }
        scaling = RopeScaling::Factors(factors);
    }
    Ok(RopeConfig {
        theta: theta as f32,
        scaling,
        rotary_dim: None,
    })
}

fn linear(factor: f64, key: &str) -> Result<RopeScaling, GgufError> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(invalid(key, format!("{factor} is not a positive factor")));
    }
    Ok(RopeScaling::Linear {
        factor: factor as f32,
    })
}

fn invalid(key: &str, msg: String) -> GgufError {
    GgufError::InvalidValue {
        key: key.to_owned(),
        msg,
    }
}
