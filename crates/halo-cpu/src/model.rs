//! The decoder network every family shares and its forward pass over one mixed step: weights in
//! their stored type, activations, norms, attention and the KV cache in f32. What differs
//! between families is read from the config's knobs (biases, q/k norms, norms after the
//! attention and the MLP, the activation, embedding scale, attention scale and soft-caps,
//! per-layer windows and RoPE) and from the feed-forward seam ([`FeedForward`]), never from a
//! per-family copy of the forward.

use crate::activation::softcap_in_place;
use crate::attention::{paged_attention, AttentionShape, TokenSite};
use crate::ffn::FeedForward;
use crate::kv_cache::KvCache;
use crate::linear::{embed_rows, Linear, Part};
use crate::moe;
use crate::ops::{add_in_place, rms_norm};
use crate::qkv::{split_norm_rotate, QkvDims, RowSites};
use crate::qmatmul::QMatrix;
use crate::rope::Rotary;
use crate::ubatch::{self, UBATCH_TOKENS};
use halo_hal::{DType, DeviceError, StepBatch};
use halo_model::{quant, Model, ModelConfig, StoredDType, Weights};
use rayon::prelude::*;

struct Layer {
    /// Before the attention (`input_layernorm`).
    attn_norm: Vec<f32>,
    /// On the attention's output before the residual add (Gemma's `post_attention_layernorm`).
    attn_out_norm: Option<Vec<f32>>,
    /// Before the feed-forward (Llama's `post_attention_layernorm`, Gemma's
    /// `pre_feedforward_layernorm`).
    ffn_norm: Vec<f32>,
    /// On the feed-forward's output before the residual add (Gemma's
    /// `post_feedforward_layernorm`).
    ffn_out_norm: Option<Vec<f32>>,
    /// q, k and v fused into one projection: one matmul reads all three.
    qkv: Linear,
    /// Per-head RMSNorm weights of q and k (`head_dim` wide), applied before RoPE.
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    o: Linear,
    ffn: FeedForward,
    window: Option<usize>,
    /// Index into [`CpuModel::rotaries`]: which RoPE this layer rotates with.
    rope: usize,
}

pub struct CpuModel {
    pub config: ModelConfig,
    /// The embedding table; `None` when the head is tied to it (then the head's matrix is it).
    embed: Option<QMatrix>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    lm_head: Linear,
    /// The global RoPE, then the local layers' when it differs.
    rotaries: Vec<Rotary>,
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

/// How load stores each weight, and what the matmuls feed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightPlan {
    pub cast: WeightCast,
    /// BF16 weights meet activations rounded to bf16 (`--activation-dtype bf16`).
    pub bf16_activations: bool,
}

/// Reads a 2-D weight, in its stored type or cast as `plan` says.
fn load_part(
    w: &Weights,
    name: &str,
    shape: [usize; 2],
    plan: WeightPlan,
) -> Result<Part, DeviceError> {
    let cast = plan.cast;
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
        bf16_activations: plan.bf16_activations,
    })
}

impl CpuModel {
    /// Builds the network from `model`, each weight in its stored type or cast as `plan` says.
    pub fn load(model: &Model, plan: WeightPlan) -> Result<CpuModel, DeviceError> {
        let c = &model.config;
        let w = &model.weights;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_dim, kv_dim) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let get = |name: &str, shape: &[usize]| w.load_f32(name, shape).map_err(load_err);
        // Norm weights with the family's offset folded in once: Gemma's `(1 + w)` is computed
        // in f32 as transformers does, so the forward is the same multiply for every family.
        let norm = |name: &str, width: usize| -> Result<Vec<f32>, DeviceError> {
            let mut v = get(name, &[width])?;
            if c.norm_weight_offset != 0.0 {
                v.iter_mut().for_each(|x| *x += c.norm_weight_offset);
            }
            Ok(v)
        };
        let part = |name: &str, rows: usize, cols: usize| load_part(w, name, [rows, cols], plan);

        let mut rotaries = vec![Rotary::new(&c.rope, hd)];
        if let Some(local) = &c.local_rope {
            rotaries.push(Rotary::new(local, hd));
        }
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            // A checkpoint that stores q|k|v as one matrix (Phi-3) is loaded as that matrix.
            let qkv_w = if c.fused_projections {
                vec![part(
                    &format!("{p}.self_attn.qkv_proj.weight"),
                    q_dim + 2 * kv_dim,
                    h,
                )?]
            } else {
                vec![
                    part(&format!("{p}.self_attn.q_proj.weight"), q_dim, h)?,
                    part(&format!("{p}.self_attn.k_proj.weight"), kv_dim, h)?,
                    part(&format!("{p}.self_attn.v_proj.weight"), kv_dim, h)?,
                ]
            };
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
            let qk_norm = if c.qk_norm {
                Some((
                    norm(&format!("{p}.self_attn.q_norm.weight"), hd)?,
                    norm(&format!("{p}.self_attn.k_norm.weight"), hd)?,
                ))
            } else {
                None
            };
            // Llama's `post_attention_layernorm` is the MLP's input norm; with sandwich norms
            // (Gemma) it is the attention's output norm and the MLP has its own pair.
            let (attn_out_norm, ffn_norm, ffn_out_norm) = if c.sandwich_norms {
                (
                    Some(norm(&format!("{p}.post_attention_layernorm.weight"), h)?),
                    norm(&format!("{p}.pre_feedforward_layernorm.weight"), h)?,
                    Some(norm(&format!("{p}.post_feedforward_layernorm.weight"), h)?),
                )
            } else {
                (
                    None,
                    norm(&format!("{p}.post_attention_layernorm.weight"), h)?,
                    None,
                )
            };
            let window = c.window_for_layer(l);
            layers.push(Layer {
                attn_norm: norm(&format!("{p}.input_layernorm.weight"), h)?,
                attn_out_norm,
                ffn_norm,
                ffn_out_norm,
                qkv: Linear::fused(qkv_w, qkv_b)?,
                qk_norm,
                o: Linear::single(
                    part(&format!("{p}.self_attn.o_proj.weight"), h, q_dim)?,
                    o_b,
                )?,
                ffn: match c.sparse_layer_names(l) {
                    Some(names) => FeedForward::Moe(moe::load_sparse(w, &p, c, names, part)?),
                    None => load_dense_ffn(w, c, &p, plan)?,
                },
                window,
                rope: usize::from(c.local_rope.is_some() && window.is_some()),
            });
        }
        let edges = WeightPlan {
            cast: plan.cast.for_edges(),
            ..plan
        };
        let edge = |name: &str| load_part(w, name, [c.vocab_size, h], edges);
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
            final_norm: norm("model.norm.weight", h)?,
            lm_head,
            rotaries,
        })
    }

    fn embedding(&self) -> &QMatrix {
        match &self.embed {
            Some(e) => e,
            None => self.lm_head.matrix().expect("a tied head is one matrix"),
        }
    }

    /// Bytes of weights the last forward read: what [`CpuModel::weight_bytes_per_step`] counts,
    /// with each sparse layer's share the experts that step's tokens chose.
    pub fn last_step_weight_bytes(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| l.qkv.weight_bytes() + l.o.weight_bytes() + l.ffn.last_step_weight_bytes())
            .sum();
        layers + self.lm_head.weight_bytes()
    }

    /// The KV pool's type when the user names none: float models keep f32 rows, so their
    /// outputs stay those of transformers' f32 reference; quantized models get f16 rows, as
    /// llama.cpp (their reference) keeps them: half the bytes attention streams, which at many
    /// sequences is more than the weights.
    pub fn default_kv_dtype(&self) -> DType {
        let quantized = self
            .layers
            .iter()
            .flat_map(|l| l.qkv.dtypes())
            .any(|t| t.is_quantized());
        if quantized {
            DType::F16
        } else {
            DType::F32
        }
    }

    /// Bytes of weights a step streams (the embedding only gives the rows it looks up).
    pub fn weight_bytes_per_step(&self) -> u64 {
        let attention: u64 = self
            .layers
            .iter()
            .map(|l| l.qkv.weight_bytes() + l.o.weight_bytes() + l.ffn.weight_bytes_per_step())
            .sum();
        attention + self.lm_head.weight_bytes()
    }

    pub fn kv_row(&self) -> usize {
        self.config.num_key_value_heads * self.config.head_dim
    }

    /// Runs every token of `batch`, writes their K/V into `cache`, and returns the logits
    /// (`[n, vocab]`) of the last token of each sequence that asked for a sample, in batch order.
    /// A step longer than [`UBATCH_TOKENS`] runs as several passes in token order (see
    /// [`crate::ubatch`]); the logits are the same.
    pub fn forward(&self, batch: &StepBatch, cache: &mut KvCache) -> Result<Vec<f32>, DeviceError> {
        if batch.num_tokens() <= UBATCH_TOKENS {
            return self.forward_pass(batch, cache);
        }
        let mut logits = Vec::new();
        for part in ubatch::split(batch, UBATCH_TOKENS) {
            logits.extend(self.forward_pass(&part, cache)?);
        }
        Ok(logits)
    }

    /// One pass of `batch` through the layers.
    fn forward_pass(
        &self,
        batch: &StepBatch,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, DeviceError> {
        let c = &self.config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let kv_dim = nkv * hd;
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
        let long_rope = Rotary::step_long_regimes(batch);
        let row_sites = RowSites {
            positions: &positions,
            long: &long_rope,
        };
        let dims = QkvDims {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        };
        if let Some(scale) = c.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }

        for (l, layer) in self.layers.iter().enumerate() {
            let normed = rms_norm(&x, &layer.attn_norm, eps);
            let qkv = layer.qkv.forward(&normed, n)?;
            let (q, k, v) = split_norm_rotate(
                &qkv,
                dims,
                layer.qk_norm.as_ref().map(|(q, k)| (&q[..], &k[..])),
                eps,
                &self.rotaries[layer.rope],
                &row_sites,
            );
            for (i, &slot) in slots.iter().enumerate() {
                cache.write(
                    l,
                    slot,
                    &k[i * kv_dim..][..kv_dim],
                    &v[i * kv_dim..][..kv_dim],
                );
            }
            let shape = AttentionShape {
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
                block_size: cache.block_size,
                window: layer.window,
                scale: c.attn_scale,
                softcap: c.attn_logit_softcap,
            };
            let attn = paged_attention(&q, &sites, cache.layer(l), &shape);
            let mut out = layer.o.forward(&attn, n)?;
            if let Some(w) = &layer.attn_out_norm {
                out = rms_norm(&out, w, eps);
            }
            add_in_place(&mut x, &out);

            let normed = rms_norm(&x, &layer.ffn_norm, eps);
            let mut out = layer.ffn.forward(&normed, n, c.activation)?;
            if let Some(w) = &layer.ffn_out_norm {
                out = rms_norm(&out, w, eps);
            }
            add_in_place(&mut x, &out);
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
        let mut logits = self.lm_head.forward(&normed, rows)?;
        if let Some(cap) = c.final_logit_softcap {
            softcap_in_place(&mut logits, cap);
        }
        Ok(logits)
    }
}

/// The dense gated MLP of layer prefix `p` (gate and up fused into one projection).
fn load_dense_ffn(
    w: &Weights,
    c: &ModelConfig,
    p: &str,
    plan: WeightPlan,
) -> Result<FeedForward, DeviceError> {
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let get = |name: &str, shape: &[usize]| w.load_f32(name, shape).map_err(load_err);
    let part = |name: &str, rows: usize, cols: usize| load_part(w, name, [rows, cols], plan);
    let gate_up_w = if c.fused_projections {
        vec![part(&format!("{p}.mlp.gate_up_proj.weight"), 2 * inter, h)?]
    } else {
        vec![
            part(&format!("{p}.mlp.gate_proj.weight"), inter, h)?,
            part(&format!("{p}.mlp.up_proj.weight"), inter, h)?,
        ]
    };
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
    Ok(FeedForward::Dense {
        gate_up: Linear::fused(gate_up_w, gate_up_b)?,
        down: Linear::single(
            part(&format!("{p}.mlp.down_proj.weight"), h, inter)?,
            down_b,
        )?,
        inter,
    })
}
