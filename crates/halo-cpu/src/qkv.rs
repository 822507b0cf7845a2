//! A step's attention inputs from the fused q|k|v projection: each token row split into q, k
//! and v, q and k normalized per head where the family has q/k norms (Qwen3, Gemma 3), then
//! rotated, in one pass per row with the position's cos/sin computed once for all its q and k
//! heads. Rows of a large step spread over the pool; every row is its own computation (the
//! same operations as norming and rotating the whole q and k one after the other), so the bits
//! do not depend on the batch.

use crate::ops::rms_norm_row;
use crate::rope::{Angles, Rotary};
use rayon::prelude::*;

/// Widths of one token's projections.
#[derive(Clone, Copy, Debug)]
pub struct QkvDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Each row's place in the sequence: its position and its RoPE regime.
pub struct RowSites<'a> {
    pub positions: &'a [usize],
    pub long: &'a [bool],
}

/// Values of a step below which one thread beats spreading its rows.
const PARALLEL_VALUES: usize = 1 << 15;

/// `qkv` is `[rows, (heads + 2 * kv_heads) * head_dim]`; returns q `[rows, heads * head_dim]`,
/// k and v `[rows, kv_heads * head_dim]`, q and k normed (with `(q_norm, k_norm)`, each
/// `head_dim` wide) and rotated.
pub fn split_norm_rotate(
    qkv: &[f32],
    d: QkvDims,
    qk_norm: Option<(&[f32], &[f32])>,
    eps: f32,
    rotary: &Rotary,
    sites: &RowSites<'_>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (q_dim, kv_dim) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let width = q_dim + 2 * kv_dim;
    let rows = sites.positions.len();
    assert!(
        qkv.len() == rows * width && sites.long.len() == rows,
        "split_norm_rotate: shape mismatch"
    );
    let mut q = vec![0.0f32; rows * q_dim];
    let mut k = vec![0.0f32; rows * kv_dim];
    let mut v = vec![0.0f32; rows * kv_dim];
    if rows == 0 {
        return (q, k, v);
    }
    let one_row =
        |angles: &mut Angles, r: usize, (q, k, v): (&mut [f32], &mut [f32], &mut [f32])| {
            let src = &qkv[r * width..][..width];
            match qk_norm {
                Some((qn, kn)) => {
                    for (dst, s) in q
                        .chunks_exact_mut(d.head_dim)
                        .zip(src[..q_dim].chunks_exact(d.head_dim))
                    {
                        rms_norm_row(s, dst, qn, eps);
                    }
                    let ks = &src[q_dim..q_dim + kv_dim];
                    for (dst, s) in k
                        .chunks_exact_mut(d.head_dim)
                        .zip(ks.chunks_exact(d.head_dim))
                    {
                        rms_norm_row(s, dst, kn, eps);
                    }
                }
                None => {
                    q.copy_from_slice(&src[..q_dim]);
                    k.copy_from_slice(&src[q_dim..q_dim + kv_dim]);
                }
            }
            v.copy_from_slice(&src[q_dim + kv_dim..]);
            angles.at(rotary, sites.positions[r], sites.long[r]);
            rotary.rotate(q, angles);
            rotary.rotate(k, angles);
        };
    if qkv.len() < PARALLEL_VALUES {
        let mut angles = Angles::new(rotary);
        let outputs = q
            .chunks_exact_mut(q_dim)
            .zip(k.chunks_exact_mut(kv_dim))
            .zip(v.chunks_exact_mut(kv_dim));
        for (r, ((q, k), v)) in outputs.enumerate() {
            one_row(&mut angles, r, (q, k, v));
        }
    } else {
        q.par_chunks_exact_mut(q_dim)
            .zip(k.par_chunks_exact_mut(kv_dim))
            .zip(v.par_chunks_exact_mut(kv_dim))
            .enumerate()
            .for_each_init(
                || Angles::new(rotary),
                |angles, (r, ((q, k), v))| one_row(angles, r, (q, k, v)),
            );
    }
    (q, k, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::rms_norm;
    use halo_model::{LongRope, RopeConfig, RopeScaling};

    /// The unfused sequence the model ran before: split, norm q and k per head, rotate each.
    fn reference(
        qkv: &[f32],
        d: QkvDims,
        qk_norm: Option<(&[f32], &[f32])>,
        rotary: &Rotary,
        sites: &RowSites<'_>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (q_dim, kv_dim) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for row in qkv.chunks_exact(q_dim + 2 * kv_dim) {
            q.extend_from_slice(&row[..q_dim]);
            k.extend_from_slice(&row[q_dim..q_dim + kv_dim]);
            v.extend_from_slice(&row[q_dim + kv_dim..]);
        }
        if let Some((qn, kn)) = qk_norm {
            q = rms_norm(&q, qn, 1e-6);
            k = rms_norm(&k, kn, 1e-6);
        }
        rotary.apply(&mut q, sites.positions, sites.long, d.heads);
        rotary.apply(&mut k, sites.positions, sites.long, d.kv_heads);
        (q, k, v)
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i + seed) * 7919) % 211) as f32 / 37.0 - 2.8)
            .collect()
    }

    /// Bit for bit the unfused sequence, for plain and q/k-normed heads, full and partial
    /// rotary, both LongRoPE regimes, in steps small enough to stay on one thread and large
    /// enough to spread over the pool.
    #[test]
    fn equals_splitting_norming_and_rotating_in_turn() {
        let d = QkvDims {
            heads: 8,
            kv_heads: 2,
            head_dim: 64,
        };
        let long_rope = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::LongRope(LongRope {
                short_factor: vec![1.5; 24],
                long_factor: vec![3.0; 24],
                original_max_position_embeddings: 32,
                attention_factor: 1.2,
            }),
            rotary_dim: Some(48),
        };
        let plain = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
            rotary_dim: None,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (qn, kn) = (values(64, 1), values(64, 2));
        for rope in [&plain, &long_rope] {
            let rotary = Rotary::new(rope, d.head_dim);
            for rows in [1usize, 3, 60] {
                let width = (d.heads + 2 * d.kv_heads) * d.head_dim;
                let qkv = values(rows * width, rows);
                let positions: Vec<usize> = (0..rows).map(|r| 5 * r + 1).collect();
                let long: Vec<bool> = (0..rows).map(|r| r % 2 == 1).collect();
                let sites = RowSites {
                    positions: &positions,
                    long: &long,
                };
                for norm in [None, Some((&qn[..], &kn[..]))] {
                    let want = reference(&qkv, d, norm, &rotary, &sites);
                    let got =
                        pool.install(|| split_norm_rotate(&qkv, d, norm, 1e-6, &rotary, &sites));
                    assert!(got == want, "rows {rows}, norm {}", norm.is_some());
                }
            }
        }
        const { assert!(60 * 768 >= PARALLEL_VALUES) };
    }
}
