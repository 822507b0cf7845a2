//! The Llama-family network (Llama, Mistral, Qwen2 differ only in config: biases, windows,
//! rope) and its forward pass over one mixed step: weights in their stored type, activations,
//! norms, attention and the KV cache in f32.

use crate::attention::{paged_attention, AttentionShape, TokenSite};
use crate::kv_cache::KvCache;
use crate::linear::{embed_rows, Linear, Part};
use crate::ops::{add_in_place, rms_norm, rope, silu_mul};
use crate::qmatmul::QMatrix;
use halo_hal::{DeviceError, StepBatch};
use halo_model::{quant, Model, ModelConfig, StoredDType, Weights};
use rayon::prelude::*;

struct Layer {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    /// q, k and v fused into one projection: one matmul reads all three.
    qkv: Linear,
    o: Linear,
    /// gate and up fused the same way.
    gate_up: Linear,
    down: Linear,
    window: Option<usize>,
}

pub struct CpuModel {
    pub config: ModelConfig,
    /// The embedding table; `None` when the head is tied to it (then the head's matrix is it).
    embed: Option<QMatrix>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    lm_head: Linear,
    inv_freq: Vec<f32>,
}

fn load_err(e: halo_model::ModelError) -> DeviceError {
    DeviceError::Load(e.to_string())
}

/// What load does to each weight's stored type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightCast {
    /// Keep every weight as stored.
    Keep,
    /// Every weight (float or quantized) widened or narrowed to this float type (`--dtype`).
    Float(StoredDType),
    /// Float weights quantized to this block type where rows are whole blocks (`--quantize`).
    Quantize(StoredDType),
}

impl WeightCast {
    /// The type a tensor stored as `from` with rows of `cols` values ends up in.
    fn target(self, from: StoredDType, cols: usize) -> StoredDType {
        match self {
            WeightCast::Keep => from,
            WeightCast::Float(t) => t,
            WeightCast::Quantize(t) if !from.is_quantized() && t.row_bytes(cols).is_some() => t,
            WeightCast::Quantize(_) => from,
        }
    }

    /// What the embedding and the head get: llama.cpp's `_M` mixes keep these two sensitive
    /// tensors at 6 bits when the body goes to 4 or 5.
    fn for_edges(self) -> WeightCast {
        match self {
            WeightCast::Quantize(StoredDType::Q4_0 | StoredDType::Q4_K | StoredDType::Q5_K) => {
                WeightCast::Quantize(StoredDType::Q6_K)
            }
            other => other,
        }
    }
}

/// Reads a 2-D weight, in its stored type or cast as `cast` says.
fn load_part(
    w: &Weights,
    name: &str,
    shape: [usize; 2],
    cast: WeightCast,
) -> Result<Part, DeviceError> {
    let view = w.check(name, &shape).map_err(load_err)?;
    let [rows, cols] = shape;
    let dtype = cast.target(view.dtype, cols);
    let data = if dtype == view.dtype {
        view.bytes.to_vec()
    } else {
        let row_bytes = dtype.row_bytes(cols).ok_or_else(|| {
            DeviceError::Load(format!(
                "'{name}' ({rows}x{cols}) cannot be stored as {dtype}: rows are not whole blocks"
            ))
        })?;
        let values = view.to_f32();
        // Rows quantize independently: spread them over the pool (K-quant fits are slow).
        let mut out = vec![0u8; row_bytes * rows];
        out.par_chunks_mut(row_bytes * 64)
            .zip(values.par_chunks(cols * 64))
            .for_each(|(dst, src)| quant::quantize(dtype, src, dst));
        out
    };
    Ok(Part {
        dtype,
        rows,
        cols,
        data,
    })
}

impl CpuModel {
    /// Builds the network from `model`, each weight in its stored type or cast as `cast` says.
    pub fn load(model: &Model, cast: WeightCast) -> Result<CpuModel, DeviceError> {
        let c = &model.config;
        let w = &model.weights;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_dim, kv_dim, inter) = (
            c.num_attention_heads * hd,
            c.num_key_value_heads * hd,
            c.intermediate_size,
        );
        let get = |name: &str, shape: &[usize]| w.load_f32(name, shape).map_err(load_err);
        let part = |name: &str, rows: usize, cols: usize| load_part(w, name, [rows, cols], cast);

        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let qkv_w = vec![
                part(&format!("{p}.self_attn.q_proj.weight"), q_dim, h)?,
                part(&format!("{p}.self_attn.k_proj.weight"), kv_dim, h)?,
                part(&format!("{p}.self_attn.v_proj.weight"), kv_dim, h)?,
            ];
            let qkv_b = if c.qkv_bias {
                let mut b = get(&format!("{p}.self_attn.q_proj.bias"), &[q_dim])?;
                b.extend(get(&format!("{p}.self_attn.k_proj.bias"), &[kv_dim])?);
                b.extend(get(&format!("{p}.self_attn.v_proj.bias"), &[kv_dim])?);
                Some(b)
            } else {
                None
            };
            let o_b = if c.o_bias {
                Some(get(&format!("{p}.self_attn.o_proj.bias"), &[h])?)
            } else {
                None
            };
            let gate_up_w = vec![
                part(&format!("{p}.mlp.gate_proj.weight"), inter, h)?,
                part(&format!("{p}.mlp.up_proj.weight"), inter, h)?,
            ];
            let (gate_up_b, down_b) = if c.mlp_bias {
                let mut b = get(&format!("{p}.mlp.gate_proj.bias"), &[inter])?;
                b.extend(get(&format!("{p}.mlp.up_proj.bias"), &[inter])?);
                (
                    Some(b),
                    Some(get(&format!("{p}.mlp.down_proj.bias"), &[h])?),
                )
            } else {
                (None, None)
            };
            layers.push(Layer {
                input_norm: get(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                qkv: Linear::fused(qkv_w, qkv_b)?,
                o: Linear::single(
                    part(&format!("{p}.self_attn.o_proj.weight"), h, q_dim)?,
                    o_b,
                )?,
                gate_up: Linear::fused(gate_up_w, gate_up_b)?,
                down: Linear::single(
                    part(&format!("{p}.mlp.down_proj.weight"), h, inter)?,
                    down_b,
                )?,
                window: c.window_for_layer(l),
            });
        }
        let edge = |name: &str| load_part(w, name, [c.vocab_size, h], cast.for_edges());
        let (embed, lm_head) = if c.tie_word_embeddings {
            (
                None,
                Linear::single(edge("model.embed_tokens.weight")?, None)?,
            )
        } else {
            (
                Some(edge("model.embed_tokens.weight")?.into_matrix()?),
                Linear::single(edge("lm_head.weight")?, None)?,
            )
        };
        Ok(CpuModel {
            config: c.clone(),
            embed,
            layers,
            final_norm: get("model.norm.weight", &[h])?,
            lm_head,
            inv_freq: c.rope.inv_freq(hd),
        })
    }

    fn embedding(&self) -> &QMatrix {
        match &self.embed {
            Some(e) => e,
            None => self.lm_head.matrix().expect("a tied head is one matrix"),
        }
    }

    /// Bytes of weights a step streams (the embedding only gives the rows it looks up).
    pub fn weight_bytes_per_step(&self) -> u64 {
        self.projections().map(Linear::weight_bytes).sum()
    }

    fn projections(&self) -> impl Iterator<Item = &Linear> {
        self.layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .chain(std::iter::once(&self.lm_head))
    }

    pub fn kv_row(&self) -> usize {
        self.config.num_key_value_heads * self.config.head_dim
    }

    /// Runs every token of `batch`, writes their K/V into `cache`, and returns the logits
    /// (`[n, vocab]`) of the last token of each sequence that asked for a sample, in batch order.
    pub fn forward(&self, batch: &StepBatch, cache: &mut KvCache) -> Result<Vec<f32>, DeviceError> {
        let c = &self.config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let (q_dim, kv_dim) = (nh * hd, nkv * hd);
        let eps = c.rms_norm_eps as f32;

        let mut positions = Vec::with_capacity(batch.num_tokens());
        let mut slots = Vec::with_capacity(batch.num_tokens());
        let mut sites = Vec::with_capacity(batch.num_tokens());
        let mut x = Vec::with_capacity(batch.num_tokens() * h);
        let tokens = batch.seqs.iter().flat_map(|s| s.tokens.iter().copied());
        embed_rows(self.embedding(), tokens, &mut x);
        for s in &batch.seqs {
            for (i, _) in s.tokens.iter().enumerate() {
                let pos = s.start_pos + i;
                positions.push(pos);
                slots.push(s.slot(pos, cache.block_size));
                sites.push(TokenSite {
                    block_table: &s.block_table,
                    pos,
                });
            }
        }
        let n = positions.len();

        for (l, layer) in self.layers.iter().enumerate() {
            let normed = rms_norm(&x, &layer.input_norm, eps);
            let qkv = layer.qkv.forward(&normed, n)?;
            let mut q = Vec::with_capacity(n * q_dim);
            let mut k = Vec::with_capacity(n * kv_dim);
            let mut v = Vec::with_capacity(n * kv_dim);
            for row in qkv.chunks_exact(q_dim + 2 * kv_dim) {
                q.extend_from_slice(&row[..q_dim]);
                k.extend_from_slice(&row[q_dim..q_dim + kv_dim]);
                v.extend_from_slice(&row[q_dim + kv_dim..]);
            }
            rope(&mut q, &positions, nh, hd, &self.inv_freq);
            rope(&mut k, &positions, nkv, hd, &self.inv_freq);
            for (i, &slot) in slots.iter().enumerate() {
                cache.write(
                    l,
                    slot,
                    &k[i * kv_dim..][..kv_dim],
                    &v[i * kv_dim..][..kv_dim],
                );
            }
            let (keys, values) = cache.layer(l);
            let shape = AttentionShape {
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
                block_size: cache.block_size,
                window: layer.window,
            };
            let attn = paged_attention(&q, &sites, keys, values, &shape);
            add_in_place(&mut x, &layer.o.forward(&attn, n)?);

            let normed = rms_norm(&x, &layer.post_norm, eps);
            let act = silu_mul(&layer.gate_up.forward(&normed, n)?, c.intermediate_size);
            add_in_place(&mut x, &layer.down.forward(&act, n)?);
        }

        // Only rows that are sampled go through the final norm and the (large) head.
        let mut last_rows = Vec::new();
        let mut offset = 0;
        for s in &batch.seqs {
            offset += s.tokens.len();
            if s.sample.is_some() {
                last_rows.extend_from_slice(&x[(offset - 1) * h..offset * h]);
            }
        }
        if last_rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows = last_rows.len() / h;
        let normed = rms_norm(&last_rows, &self.final_norm, eps);
        self.lm_head.forward(&normed, rows)
    }
}
