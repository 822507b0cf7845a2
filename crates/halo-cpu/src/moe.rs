//! The sparse mixture-of-experts feed-forward (Mixtral, Qwen3-MoE): a router scores every expert
//! for each token, the `top_k` best are kept, and the token's output is the weighted sum of those
//! experts' SwiGLU MLPs.
//!
//! Arithmetic follows transformers (`MixtralTopKRouter`, `Qwen3MoeTopKRouter`, `*Experts`):
//! softmax over all router logits in f32, top-k of the probabilities, optionally renormalised by
//! their sum (Mixtral always; Qwen3-MoE when `norm_topk_prob`), then per token
//! `out = 0 + w_a·y_a + w_b·y_b + …` with the experts taken in ascending id order (transformers'
//! loop over the experts that were hit, each `index_add_`-ing its weighted rows).
//!
//! Cost: the step's tokens are grouped by expert, so each expert that any token chose runs one
//! matmul over all of its tokens and its weights stream once per step; experts nobody chose are
//! not read at all. The chosen experts run side by side on the caller's rayon pool. Every expert
//! row is computed by the batch-invariant kernels ([`crate::qmatmul`]) and the combination is a
//! fixed per-token order, so a token's output does not depend on what else is in the step.

use crate::activation::glu;
use crate::linear::{Linear, Part};
use halo_hal::DeviceError;
use halo_model::config::moe::ExpertNames;
use halo_model::{Activation, ModelConfig, StoredDType, Weights};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// How router scores become expert weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routing {
    pub num_experts: usize,
    pub top_k: usize,
    /// Divide the kept probabilities by their sum (Mixtral; Qwen3-MoE's `norm_topk_prob`).
    pub renormalize: bool,
}

impl Routing {
    /// The experts one token uses, ascending by id, with their weights, from its router logits.
    pub fn route(&self, logits: &[f32]) -> Vec<(usize, f32)> {
        // Softmax as torch computes it on the CPU: shift by the max, exponentiate, scale by the
        // reciprocal of the sum.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
        let inv = 1.0 / exps.iter().sum::<f32>();
        let probs: Vec<f32> = exps.iter().map(|&e| e * inv).collect();

        // Top-k by probability, best first; equal probabilities go to the lower id.
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        order.truncate(self.top_k);
        let mut chosen: Vec<(usize, f32)> = order.iter().map(|&e| (e, probs[e])).collect();
        if self.renormalize {
            // Summed best first, as torch's sum over the top-k values runs.
            let sum: f32 = chosen.iter().map(|&(_, p)| p).sum();
            chosen.iter_mut().for_each(|(_, p)| *p /= sum);
        }
        chosen.sort_by_key(|&(e, _)| e);
        chosen
    }
}

/// One expert: a gated MLP (SwiGLU for both families) with gate and up fused into one projection.
pub struct Expert {
    gate_up: Linear,
    down: Linear,
    inter: usize,
    hidden: usize,
}

impl Expert {
    /// `gate` and `up` are `[inter, hidden]`, `down` is `[hidden, inter]`.
    pub fn new(gate: Part, up: Part, down: Part) -> Result<Expert, DeviceError> {
        let (inter, hidden) = (gate.rows, gate.cols);
        if up.rows != inter || up.cols != hidden || down.rows != hidden || down.cols != inter {
            return Err(DeviceError::Load(format!(
                "expert shapes disagree: gate [{inter}, {hidden}], up [{}, {}], down [{}, {}]",
                up.rows, up.cols, down.rows, down.cols
            )));
        }
        Ok(Expert {
            gate_up: Linear::fused(vec![gate, up], None)?,
            down: Linear::single(down, None)?,
            inter,
            hidden,
        })
    }

    /// Bytes of weights one use of this expert streams.
    pub fn weight_bytes(&self) -> u64 {
        self.gate_up.weight_bytes() + self.down.weight_bytes()
    }

    /// `x` is `[rows, hidden]`; returns `[rows, hidden]`.
    fn forward(&self, x: &[f32], rows: usize, act: Activation) -> Result<Vec<f32>, DeviceError> {
        let a = glu(&self.gate_up.forward(x, rows)?, self.inter, act);
        self.down.forward(&a, rows)
    }
}

/// Loads the sparse block of the layer whose tensors start with `layer_prefix`: the router kept
/// in f32 (a tiny matrix whose output picks experts, a discontinuous choice, so llama.cpp's
/// quantizer leaves `ffn_gate_inp` unquantized too), each expert's projections through `part`
/// (`(name, rows, cols)`: the stored type, or the load's cast).
pub fn load_sparse(
    w: &Weights,
    layer_prefix: &str,
    c: &ModelConfig,
    names: ExpertNames,
    part: impl Fn(&str, usize, usize) -> Result<Part, DeviceError>,
) -> Result<SparseMoe, DeviceError> {
    let m = c
        .moe
        .as_ref()
        .ok_or_else(|| DeviceError::Load(format!("{layer_prefix}: sparse, but no MoE config")))?;
    let (e_count, inter, hidden) = (m.num_experts, m.expert_intermediate_size, c.hidden_size);
    let router_name = names.router(layer_prefix);
    let router = w
        .load_f32(&router_name, &[e_count, hidden])
        .map_err(|e| DeviceError::Load(e.to_string()))?;
    let router = Part {
        dtype: StoredDType::F32,
        rows: e_count,
        cols: hidden,
        data: router.iter().flat_map(|v| v.to_le_bytes()).collect(),
        bf16_activations: false,
    };
    let experts = (0..e_count)
        .map(|e| {
            let name = |which| names.expert(layer_prefix, e, which);
            Expert::new(
                part(&name(names.gate), inter, hidden)?,
                part(&name(names.up), inter, hidden)?,
                part(&name(names.down), hidden, inter)?,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    SparseMoe::new(router, experts, m.experts_per_token, m.norm_topk_prob)
}

/// A sparse MoE feed-forward layer.
pub struct SparseMoe {
    /// `[num_experts, hidden]`: one logit per expert.
    router: Linear,
    experts: Vec<Expert>,
    routing: Routing,
    hidden: usize,
    /// Weight bytes the last forward read (router and the experts it used).
    last_step_bytes: AtomicU64,
}

impl SparseMoe {
    pub fn new(
        router: Part,
        experts: Vec<Expert>,
        top_k: usize,
        renormalize: bool,
    ) -> Result<SparseMoe, DeviceError> {
        let (num_experts, hidden) = (router.rows, router.cols);
        if experts.len() != num_experts {
            return Err(DeviceError::Load(format!(
                "the router scores {num_experts} experts but the layer has {}",
                experts.len()
            )));
        }
        if top_k == 0 || top_k > num_experts {
            return Err(DeviceError::Load(format!(
                "{top_k} experts per token is not between 1 and the {num_experts} experts"
            )));
        }
        if let Some(e) = experts.iter().position(|e| e.hidden != hidden) {
            return Err(DeviceError::Load(format!(
                "expert {e} reads {} features, the router reads {hidden}",
                experts[e].hidden
            )));
        }
        Ok(SparseMoe {
            router: Linear::single(router, None)?,
            experts,
            routing: Routing {
                num_experts,
                top_k,
                renormalize,
            },
            hidden,
            last_step_bytes: AtomicU64::new(0),
        })
    }

    /// Bytes of every weight the layer holds (what a dense model of the same size reads).
    #[cfg(test)]
    fn total_weight_bytes(&self) -> u64 {
        self.router.weight_bytes() + self.experts.iter().map(Expert::weight_bytes).sum::<u64>()
    }

    /// Bytes one token reads: the router and (at most) its `top_k` largest experts. This is a
    /// batch-1 decode step's share of the layer.
    pub fn token_weight_bytes(&self) -> u64 {
        let mut sizes: Vec<u64> = self.experts.iter().map(Expert::weight_bytes).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        self.router.weight_bytes() + sizes.iter().take(self.routing.top_k).sum::<u64>()
    }

    /// Bytes the last [`SparseMoe::forward`] read: the router and each expert it used, once.
    pub fn last_step_weight_bytes(&self) -> u64 {
        self.last_step_bytes.load(Ordering::Relaxed)
    }

    /// `x` is `[rows, hidden]` (normed); returns the layer's output `[rows, hidden]`.
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        act: Activation,
    ) -> Result<Vec<f32>, DeviceError> {
        let (h, e_count) = (self.hidden, self.routing.num_experts);
        let logits = self.router.forward(x, rows)?;
        let routes: Vec<Vec<(usize, f32)>> = logits
            .chunks_exact(e_count)
            .map(|l| self.routing.route(l))
            .collect();

        // Each expert's tokens, in batch order.
        let mut tokens: Vec<Vec<usize>> = vec![Vec::new(); e_count];
        for (t, route) in routes.iter().enumerate() {
            for &(e, _) in route {
                tokens[e].push(t);
            }
        }
        let used: Vec<usize> = (0..e_count).filter(|&e| !tokens[e].is_empty()).collect();
        let outputs: Vec<Vec<f32>> = used
            .par_iter()
            .map(|&e| {
                let mut gathered = Vec::with_capacity(tokens[e].len() * h);
                for &t in &tokens[e] {
                    gathered.extend_from_slice(&x[t * h..][..h]);
                }
                self.experts[e].forward(&gathered, tokens[e].len(), act)
            })
            .collect::<Result<_, _>>()?;
        let bytes = self.router.weight_bytes()
            + used
                .iter()
                .map(|&e| self.experts[e].weight_bytes())
                .sum::<u64>();
        self.last_step_bytes.store(bytes, Ordering::Relaxed);

        // Where each used expert's output sits, and how far each has been consumed: tokens
        // are visited in batch order, the order each expert's rows were gathered in.
        let mut slot = vec![usize::MAX; e_count];
        for (i, &e) in used.iter().enumerate() {
            slot[e] = i;
        }
        let mut next_row = vec![0usize; used.len()];
        let mut out = vec![0.0f32; rows * h];
        for (t, route) in routes.iter().enumerate() {
            let dst = &mut out[t * h..][..h];
            for &(e, w) in route {
                let i = slot[e];
                let src = &outputs[i][next_row[i] * h..][..h];
                next_row[i] += 1;
                // transformers scales the expert's rows, then adds them: two roundings.
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s * w);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_model::{quant, StoredDType};

    /// Deterministic values in [-1, 1).
    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn part(dtype: StoredDType, rows: usize, cols: usize, v: &[f32]) -> Part {
        Part {
            dtype,
            rows,
            cols,
            data: quant::quantize_to_vec(dtype, v).unwrap(),
            bf16_activations: false,
        }
    }

    struct Dense {
        router: Vec<f32>,
        gate: Vec<Vec<f32>>,
        up: Vec<Vec<f32>>,
        down: Vec<Vec<f32>>,
    }

    const H: usize = 64;
    const I: usize = 32;

    fn dense(experts: usize, seed: u64) -> Dense {
        let m = |s: u64, n: usize| values(seed * 1000 + s, n);
        Dense {
            // Large router weights so tokens disagree on their experts.
            router: m(0, experts * H).iter().map(|v| v * 4.0).collect(),
            gate: (0..experts).map(|e| m(1 + e as u64, I * H)).collect(),
            up: (0..experts).map(|e| m(100 + e as u64, I * H)).collect(),
            down: (0..experts).map(|e| m(200 + e as u64, H * I)).collect(),
        }
    }

    fn build(d: &Dense, dtype: StoredDType, top_k: usize, renormalize: bool) -> SparseMoe {
        let experts = (0..d.gate.len())
            .map(|e| {
                Expert::new(
                    part(dtype, I, H, &d.gate[e]),
                    part(dtype, I, H, &d.up[e]),
                    part(dtype, H, I, &d.down[e]),
                )
                .unwrap()
            })
            .collect();
        let router = part(StoredDType::F32, d.gate.len(), H, &d.router);
        SparseMoe::new(router, experts, top_k, renormalize).unwrap()
    }

    /// The block written out per token in f64, every expert scored, from the definition.
    fn reference(d: &Dense, x: &[f32], top_k: usize, renormalize: bool) -> Vec<f64> {
        let dot =
            |w: &[f32], v: &[f64]| -> f64 { w.iter().zip(v).map(|(&a, b)| a as f64 * b).sum() };
        let mut out = Vec::new();
        for row in x.chunks_exact(H) {
            let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            let logits: Vec<f64> = d.router.chunks_exact(H).map(|w| dot(w, &row)).collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let mut probs: Vec<(usize, f64)> = logits
                .iter()
                .map(|l| (l - max).exp() / z)
                .enumerate()
                .collect();
            probs.sort_by(|a, b| b.1.total_cmp(&a.1));
            probs.truncate(top_k);
            let sum: f64 = probs.iter().map(|p| p.1).sum();
            let mut acc = vec![0.0f64; H];
            for &(e, p) in &probs {
                let w = if renormalize { p / sum } else { p };
                let act: Vec<f64> = (0..I)
                    .map(|j| {
                        let g = dot(&d.gate[e][j * H..][..H], &row);
                        let u = dot(&d.up[e][j * H..][..H], &row);
                        g / (1.0 + (-g).exp()) * u
                    })
                    .collect();
                for (o, a) in acc.iter_mut().enumerate() {
                    *a += w * dot(&d.down[e][o * I..][..I], &act);
                }
            }
            out.extend(acc);
        }
        out
    }

    #[test]
    fn routing_is_softmax_then_top_k_then_renormalised() {
        let r = Routing {
            num_experts: 4,
            top_k: 2,
            renormalize: false,
        };
        let logits = [0.5f32, 2.0, -1.0, 1.0];
        let z: f32 = logits.iter().map(|l| (l - 2.0).exp()).sum();
        let got = r.route(&logits);
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((got[0].1 - 1.0 / z).abs() < 1e-7);
        assert!((got[1].1 - (-1.0f32).exp() / z).abs() < 1e-7);
        // Renormalised, the weights are a softmax over the two kept logits (Mixtral's form).
        let renorm = Routing {
            renormalize: true,
            ..r
        }
        .route(&logits);
        let e = (1.0f32).exp();
        assert!((renorm[0].1 - e / (e + 1.0)).abs() < 1e-6);
        assert!((renorm[1].1 - 1.0 / (e + 1.0)).abs() < 1e-6);
        assert!((renorm[0].1 + renorm[1].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_lower_expert() {
        let r = Routing {
            num_experts: 4,
            top_k: 2,
            renormalize: true,
        };
        let got = r.route(&[1.0, 3.0, 3.0, 3.0]);
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(got[0].1, 0.5);
    }

    #[test]
    fn forward_matches_the_definition_and_spreads_tokens() {
        for (top_k, renormalize) in [(2, true), (3, false), (1, true)] {
            let d = dense(6, 7);
            let moe = build(&d, StoredDType::F32, top_k, renormalize);
            let n = 9;
            let x = values(99, n * H);
            let got = moe.forward(&x, n, Activation::Silu).unwrap();
            let want = reference(&d, &x, top_k, renormalize);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-4,
                    "row {} col {}: {g} vs {w}",
                    i / H,
                    i % H
                );
            }
            // The step's tokens went to different experts (the routing is exercised).
            let logits = moe.router.forward(&x, n).unwrap();
            let firsts: std::collections::BTreeSet<usize> = logits
                .chunks_exact(6)
                .map(|l| moe.routing.route(l)[0].0)
                .collect();
            assert!(firsts.len() > 1, "every token chose the same expert");
        }
    }

    #[test]
    fn a_token_gives_the_same_bits_alone_and_in_any_batch() {
        for dtype in [StoredDType::F32, StoredDType::Q8_0, StoredDType::BF16] {
            let d = dense(8, 3);
            let moe = build(&d, dtype, 2, true);
            let n = 11;
            let x = values(5, n * H);
            let batch = moe.forward(&x, n, Activation::Silu).unwrap();
            for t in 0..n {
                let alone = moe.forward(&x[t * H..][..H], 1, Activation::Silu).unwrap();
                assert_eq!(alone, batch[t * H..][..H], "{dtype}: token {t}");
            }
            // Reversed batch order: the same rows, reversed.
            let rev: Vec<f32> = x.chunks_exact(H).rev().flatten().copied().collect();
            let out = moe.forward(&rev, n, Activation::Silu).unwrap();
            for t in 0..n {
                assert_eq!(out[t * H..][..H], batch[(n - 1 - t) * H..][..H], "{dtype}");
            }
        }
    }

    #[test]
    fn only_the_chosen_experts_are_read() {
        let d = dense(8, 11);
        let moe = build(&d, StoredDType::Q8_0, 2, true);
        let expert = moe.experts[0].weight_bytes();
        let router = moe.router.weight_bytes();
        assert_eq!(moe.total_weight_bytes(), router + 8 * expert);
        assert_eq!(moe.token_weight_bytes(), router + 2 * expert);
        let x = values(2, H);
        moe.forward(&x, 1, Activation::Silu).unwrap();
        assert_eq!(moe.last_step_weight_bytes(), router + 2 * expert);
        let n = 16;
        let x = values(4, n * H);
        moe.forward(&x, n, Activation::Silu).unwrap();
        let logits = moe.router.forward(&x, n).unwrap();
        let used: std::collections::BTreeSet<usize> = logits
            .chunks_exact(8)
            .flat_map(|l| moe.routing.route(l).into_iter().map(|p| p.0))
            .collect();
        assert!(used.len() > 2);
        assert_eq!(
            moe.last_step_weight_bytes(),
            router + used.len() as u64 * expert
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        let d = dense(4, 1);
        let p = |r, c| part(StoredDType::F32, r, c, &vec![0.0; r * c]);
        assert!(Expert::new(p(I, H), p(I + 1, H), p(H, I)).is_err());
        assert!(Expert::new(p(I, H), p(I, H), p(H, I + 1)).is_err());
        let experts = || {
            (0..4)
                .map(|_| Expert::new(p(I, H), p(I, H), p(H, I)).unwrap())
                .collect::<Vec<_>>()
        };
        let router = || part(StoredDType::F32, 4, H, &d.router);
        assert!(SparseMoe::new(router(), experts(), 0, true).is_err());
        assert!(SparseMoe::new(router(), experts(), 5, true).is_err());
        assert!(SparseMoe::new(p(3, H), experts(), 2, true).is_err());
        assert!(SparseMoe::new(p(4, H + 32), experts(), 2, true).is_err());
        let moe = SparseMoe::new(router(), experts(), 2, true).unwrap();
        assert!(matches!(
            moe.forward(&[0.0; H - 1], 1, Activation::Silu),
            Err(DeviceError::Backend(_))
        ));
    }
}
