//! The model's weights on the device in the compute dtype, with the projections that share an
//! input fused (q|k|v, gate|up) so each costs one GEMM; checkpoints that already store them
//! fused (Phi-3's `qkv_proj`, `gate_up_proj`) are uploaded as they are.

use crate::error::CudaError;
use crate::family::Features;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use halo_hal::{DType, DeviceError};
use halo_model::Model;
use std::sync::Arc;

/// A device buffer and its raw address (kernel arguments and cuBLAS take addresses).
pub(crate) struct DevBuf {
    _buf: CudaSlice<u8>,
    pub ptr: u64,
}

impl DevBuf {
    pub(crate) fn zeros(stream: &Arc<CudaStream>, bytes: usize) -> Result<DevBuf, CudaError> {
        let buf = stream.alloc_zeros::<u8>(bytes.max(1))?;
        let ptr = buf.device_ptr(stream).0;
        Ok(DevBuf { _buf: buf, ptr })
    }

    pub(crate) fn from_bytes(stream: &Arc<CudaStream>, bytes: &[u8]) -> Result<DevBuf, CudaError> {
        let buf = stream.clone_htod(bytes)?;
        let ptr = buf.device_ptr(stream).0;
        Ok(DevBuf { _buf: buf, ptr })
    }
}

/// Host f32 values as little-endian bytes of `dtype` (round to nearest even).
pub(crate) fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

pub(crate) struct LayerWeights {
    pub input_norm: DevBuf,
    /// The feed-forward's input norm: `post_attention_layernorm`, or with sandwich norms
    /// (Gemma) `pre_feedforward_layernorm`.
    pub post_norm: DevBuf,
    /// With sandwich norms: the attention's output norm (`post_attention_layernorm`) and the
    /// feed-forward's (`post_feedforward_layernorm`).
    pub sandwich: Option<(DevBuf, DevBuf)>,
    /// Per-head q and k norm weights (`head_dim` each).
    pub qk_norm: Option<(DevBuf, DevBuf)>,
    pub qkv: DevBuf,
    pub qkv_bias: Option<DevBuf>,
    pub o: DevBuf,
    pub o_bias: Option<DevBuf>,
    pub gate_up: DevBuf,
    pub gate_up_bias: Option<DevBuf>,
    pub down: DevBuf,
    pub down_bias: Option<DevBuf>,
    /// The attention window of this layer (0 = full causal).
    pub window: i32,
    /// Index into [`ModelWeights::ropes`].
    pub rope: usize,
}

/// One RoPE's inverse frequencies (f32): the only set, and LongRoPE's long set (the short one
/// again when there is none, so the kernel always has a valid address).
pub(crate) struct RopeWeights {
    pub short: DevBuf,
    pub long: DevBuf,
}

pub(crate) struct ModelWeights {
    pub embed: DevBuf,
    pub final_norm: DevBuf,
    /// `None` when tied to the embedding.
    pub lm_head: Option<DevBuf>,
    pub layers: Vec<LayerWeights>,
    /// Per RoPE of [`Features::ropes`], its frequency tables.
    pub ropes: Vec<RopeWeights>,
    /// Bytes of weights a forward pass reads.
    pub bytes_read: u64,
}

impl ModelWeights {
    pub(crate) fn lm_head_ptr(&self) -> u64 {
        self.lm_head.as_ref().unwrap_or(&self.embed).ptr
    }
}

pub(crate) fn upload(
    model: &Model,
    features: &Features,
    dtype: DType,
    stream: &Arc<CudaStream>,
) -> Result<ModelWeights, DeviceError> {
    let c = &model.config;
    let (h, hd, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let mut bytes_read = 0u64;
    let mut put = |names: &[(&str, Vec<usize>)]| -> Result<DevBuf, DeviceError> {
        let mut all = Vec::new();
        for (name, shape) in names {
            all.extend(
                model
                    .weights
                    .load_f32(name, shape)
                    .map_err(|e| DeviceError::Load(e.to_string()))?,
            );
        }
        let bytes = encode(&all, dtype);
        bytes_read += bytes.len() as u64;
        DevBuf::from_bytes(stream, &bytes).map_err(DeviceError::from)
    };
    let embed = put(&[("model.embed_tokens.weight", vec![c.vocab_size, h])])?;
    let final_norm = put(&[("model.norm.weight", vec![h])])?;
    let lm_head = if c.tie_word_embeddings {
        None
    } else {
        Some(put(&[("lm_head.weight", vec![c.vocab_size, h])])?)
    };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for l in 0..c.num_hidden_layers {
        let n = |s: &str| format!("model.layers.{l}.{s}");
        let (qw, kw, vw) = (
            n("self_attn.q_proj.weight"),
            n("self_attn.k_proj.weight"),
            n("self_attn.v_proj.weight"),
        );
        let (qb, kb, vb) = (
            n("self_attn.q_proj.bias"),
            n("self_attn.k_proj.bias"),
            n("self_attn.v_proj.bias"),
        );
        let (gw, uw, dw) = (
            n("mlp.gate_proj.weight"),
            n("mlp.up_proj.weight"),
            n("mlp.down_proj.weight"),
        );
        let (gb, ub, db) = (
            n("mlp.gate_proj.bias"),
            n("mlp.up_proj.bias"),
            n("mlp.down_proj.bias"),
        );
        let (ow, ob) = (n("self_attn.o_proj.weight"), n("self_attn.o_proj.bias"));
        let (post_norm, sandwich) = if features.sandwich_norms {
            (
                put(&[(&n("pre_feedforward_layernorm.weight"), vec![h])])?,
                Some((
                    put(&[(&n("post_attention_layernorm.weight"), vec![h])])?,
                    put(&[(&n("post_feedforward_layernorm.weight"), vec![h])])?,
                )),
            )
        } else {
            (
                put(&[(&n("post_attention_layernorm.weight"), vec![h])])?,
                None,
            )
        };
        let qk_norm = if features.qk_norm {
            Some((
                put(&[(&n("self_attn.q_norm.weight"), vec![hd])])?,
                put(&[(&n("self_attn.k_norm.weight"), vec![hd])])?,
            ))
        } else {
            None
        };
        let qkv = if features.fused_projections {
            put(&[(&n("self_attn.qkv_proj.weight"), vec![q + 2 * kv, h])])?
        } else {
            put(&[(&qw, vec![q, h]), (&kw, vec![kv, h]), (&vw, vec![kv, h])])?
        };
        let gate_up = if features.fused_projections {
            put(&[(&n("mlp.gate_up_proj.weight"), vec![2 * i, h])])?
        } else {
            put(&[(&gw, vec![i, h]), (&uw, vec![i, h])])?
        };
        let plan = features.layers[l];
        layers.push(LayerWeights {
            input_norm: put(&[(&n("input_layernorm.weight"), vec![h])])?,
            post_norm,
            sandwich,
            qk_norm,
            qkv,
            qkv_bias: if c.qkv_bias {
                Some(put(&[(&qb, vec![q]), (&kb, vec![kv]), (&vb, vec![kv])])?)
            } else {
                None
            },
            o: put(&[(&ow, vec![h, q])])?,
            o_bias: if c.o_bias {
                Some(put(&[(&ob, vec![h])])?)
            } else {
                None
            },
            gate_up,
            gate_up_bias: if c.mlp_bias {
                Some(put(&[(&gb, vec![i]), (&ub, vec![i])])?)
            } else {
                None
            },
            down: put(&[(&dw, vec![h, i])])?,
            down_bias: if c.mlp_bias {
                Some(put(&[(&db, vec![h])])?)
            } else {
                None
            },
            window: plan.window,
            rope: plan.rope,
        });
    }
    if c.tie_word_embeddings {
        bytes_read += (c.vocab_size * h * dtype.size_in_bytes()) as u64;
    }
    let ropes = features
        .ropes
        .iter()
        .map(|r| {
            let long = r.tables.long.as_ref().map_or(&r.tables.short, |(l, _)| l);
            Ok(RopeWeights {
                short: DevBuf::from_bytes(stream, &encode(&r.tables.short, DType::F32))?,
                long: DevBuf::from_bytes(stream, &encode(long, DType::F32))?,
            })
        })
        .collect::<Result<Vec<_>, CudaError>>()?;
    Ok(ModelWeights {
        embed,
        final_norm,
        lm_head,
        layers,
        ropes,
        bytes_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_each_dtype_little_endian() {
        assert_eq!(encode(&[1.0], DType::F32), 1.0f32.to_le_bytes().to_vec());
        assert_eq!(encode(&[1.0], DType::BF16), vec![0x80, 0x3f]);
        assert_eq!(encode(&[1.0], DType::F16), vec![0x00, 0x3c]);
        // Round to nearest even: 1 + 2^-8 is halfway between two bf16 values and goes down.
        assert_eq!(encode(&[1.0 + 1.0 / 256.0], DType::BF16), vec![0x80, 0x3f]);
    }
}
