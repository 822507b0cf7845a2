//! Phi-3 facts of a GGUF file as llama.cpp's converter writes them (conversion/phi.py): q|k|v
//! and gate|up stay fused (`attn_qkv`, `ffn_up`, mapped in names.rs), `rope.dimension_count` is
//! the rotated part of each head (Phi-4-mini's partial rotary), and LongRoPE's factors are the
//! `rope_factors_short` / `rope_factors_long` tensors with `rope.scaling.original_context_length`
//! and `rope.scaling.attn_factor` (a sliding window of 0 means none, handled with the others).

use super::config::TensorLookup;
use super::error::GgufError;
use super::metadata::Metadata;
use crate::config::ModelConfig;
use crate::rope::{LongRope, RopeScaling};

const SHORT: &str = "rope_factors_short.weight";
const LONG: &str = "rope_factors_long.weight";

pub(super) fn apply(
    meta: &Metadata,
    arch: &str,
    tensors: &dyn TensorLookup,
    c: &mut ModelConfig,
) -> Result<(), GgufError> {
    let key = |k: &str| format!("{arch}.{k}");
    c.fused_projections = true;
    let rotary = meta
        .opt_usize(&key("rope.dimension_count"))?
        .unwrap_or(c.head_dim);
    if rotary == 0 || !rotary.is_multiple_of(2) || rotary > c.head_dim {
        return Err(invalid(
            &key("rope.dimension_count"),
            format!(
                "{rotary} rotated dimensions in a head of {} (must be even, positive, at most the head)",
                c.head_dim
            ),
        ));
    }
    c.rope.rotary_dim = (rotary < c.head_dim).then_some(rotary);
    let factors = |name: &str| -> Result<Option<Vec<f32>>, GgufError> {
        let Some(v) = tensors.f32_values(name)? else {
            return Ok(None);
        };
        if v.len() != rotary / 2 || v.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err(GgufError::BadTensor {
                tensor: name.into(),
                msg: format!(
                    "expected {} positive factors (rotated dimensions / 2), found {}",
                    rotary / 2,
                    v.len()
                ),
            });
        }
        Ok(Some(v))
    };
    match (factors(SHORT)?, factors(LONG)?) {
        (None, None) => Ok(()),
        (Some(short_factor), Some(long_factor)) => {
            if c.rope.scaling != RopeScaling::Default {
                return Err(GgufError::BadTensor {
                    tensor: LONG.into(),
                    msg: "present together with another RoPE scaling (not supported)".into(),
                });
            }
            let orig_key = key("rope.scaling.original_context_length");
            let original = meta
                .opt_usize(&orig_key)?
                .filter(|&o| o > 0)
                .ok_or(GgufError::MissingKey { key: orig_key })?;
            let attention_factor = match meta.opt_f64(&key("rope.scaling.attn_factor"))? {
                Some(a) if a.is_finite() && a > 0.0 => a as f32,
                Some(a) => {
                    return Err(invalid(
                        &key("rope.scaling.attn_factor"),
                        format!("{a} is not positive"),
                    ))
                }
                // The converter's own default: from the context extension ratio.
                None => {
                    let scale = c.max_position_embeddings as f64 / original as f64;
                    if scale > 1.0 {
                        (1.0 + scale.ln() / (original as f64).ln()).sqrt() as f32
                    } else {
                        1.0
                    }
                }
            };
            c.rope.scaling = RopeScaling::LongRope(LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings: original,
                attention_factor,
            });
            Ok(())
        }
        (short, _) => Err(GgufError::BadTensor {
            tensor: if short.is_some() { LONG } else { SHORT }.into(),
            msg: "missing (LongRoPE needs both factor sets)".into(),
        }),
    }
}

fn invalid(key: &str, msg: String) -> GgufError {
    GgufError::InvalidValue {
        key: key.to_owned(),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Architecture, ModelConfig};
    use crate::rope::RopeScaling;
    use crate::Model;
    use std::path::Path;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families")
    }

    /// The converter's file carries everything the HF config says about the rope and the
    /// projections: both configs rotate with the same tables.
    #[test]
    fn converted_phi3_has_the_hf_rope_and_fused_projections() {
        let hf = ModelConfig::from_dir(&fixtures().join("tiny-phi3")).unwrap();
        for file in ["tiny-phi3-f32.gguf", "tiny-phi3-f16.gguf"] {
            let m = Model::open(&fixtures().join("gguf").join(file)).unwrap();
            let c = &m.config;
            assert_eq!(c.architecture, Architecture::Phi3);
            assert!(c.fused_projections);
            assert_eq!(c.rope.rotary_dim, hf.rope.rotary_dim);
            let (RopeScaling::LongRope(g), RopeScaling::LongRope(h)) =
                (&c.rope.scaling, &hf.rope.scaling)
            else {
                panic!("{:?}", c.rope.scaling)
            };
            assert_eq!(g, h, "{file}");
            assert_eq!(c.rope.tables(c.head_dim), hf.rope.tables(hf.head_dim));
            assert_eq!(c.sliding_window, None);
            let qkv = "model.layers.0.self_attn.qkv_proj.weight";
            let rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim;
            m.weights.check(qkv, &[rows, c.hidden_size]).unwrap();
            let gate_up = "model.layers.1.mlp.gate_up_proj.weight";
            m.weights
                .check(gate_up, &[2 * c.intermediate_size, c.hidden_size])
                .unwrap();
        }
    }

    /// halo's own export writes what llama.cpp's converter does for Phi-3: read back, the file
    /// has the original's config and bit-identical f32 weights.
    #[test]
    fn export_round_trips_partial_rotary_long_rope_and_fused_tensors() {
        use crate::gguf::export::{export, Quantization};
        let hf = Model::open(&fixtures().join("tiny-phi3")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("phi3.gguf");
        export(&hf, Quantization::F32, &out).unwrap();
        let back = Model::open(&out).unwrap();
        let (a, b) = (&hf.config, &back.config);
        assert_eq!(b.architecture, Architecture::Phi3);
        assert!(b.fused_projections);
        assert_eq!(a.rope.rotary_dim, b.rope.rotary_dim);
        assert_eq!(a.rope.tables(a.head_dim), b.rope.tables(b.head_dim));
        for (name, shape) in a.expected_tensors() {
            let x = hf.weights.check(&name, &shape).unwrap().to_f32();
            let y = back.weights.check(&name, &shape).unwrap().to_f32();
            assert_eq!(x, y, "{name}");
        }
    }
}
