//! Paged attention on the CPU: each query token attends to the keys of its own sequence up to
//! its position (causal), within the sliding window when the layer has one, reading K and V
//! through the sequence's block table. Query heads share KV heads in groups (GQA).
//!
//! Every (token, head) pair writes its own output slice, so the work splits across threads with
//! no reduction shared between sequences: a sequence's result does not depend on its batch.

use crate::activation::softcap_in_place;
use rayon::prelude::*;

/// Where one token of the step sits: which sequence's block table to read and its position.
pub struct TokenSite<'a> {
    pub block_table: &'a [u32],
    pub pos: usize,
}

pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Keys strictly older than `pos - window + 1` are masked.
    pub window: Option<usize>,
    /// Multiplies q·k (`head_dim^-0.5` unless the family sets its own).
    pub scale: f32,
    /// Scores become `cap * tanh(score / cap)` before the softmax (Gemma 2).
    pub softcap: Option<f32>,
}

/// `q` is `[tokens, num_heads * head_dim]` (already rotated); returns the same shape.
pub fn paged_attention(
    q: &[f32],
    sites: &[TokenSite<'_>],
    keys: &[f32],
    values: &[f32],
    shape: &AttentionShape,
) -> Vec<f32> {
    let hd = shape.head_dim;
    let group = shape.num_heads / shape.num_kv_heads;
    let kv_row = shape.num_kv_heads * hd;
    let scale = shape.scale;
    let mut out = vec![0.0f32; q.len()];
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, dst)| {
        let (token, head) = (idx / shape.num_heads, idx % shape.num_heads);
        let site = &sites[token];
        let qv = &q[idx * hd..(idx + 1) * hd];
        let kv_off = (head / group) * hd;
        let first = match shape.window {
            Some(w) => (site.pos + 1).saturating_sub(w),
            None => 0,
        };
        let slot = |p: usize| {
            site.block_table[p / shape.block_size] as usize * shape.block_size
                + p % shape.block_size
        };
        let mut scores: Vec<f32> = (first..=site.pos)
            .map(|p| {
                let k = &keys[slot(p) * kv_row + kv_off..][..hd];
                dot(qv, k) * scale
            })
            .collect();
        if let Some(cap) = shape.softcap {
            softcap_in_place(&mut scores, cap);
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        for (p, w) in (first..=site.pos).zip(&scores) {
            let v = &values[slot(p) * kv_row + kv_off..][..hd];
            let w = w * inv;
            dst.iter_mut().zip(v).for_each(|(d, v)| *d += w * v);
        }
    });
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums let the compiler vectorize while keeping a fixed order.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense causal attention for one sequence stored contiguously, as a reference.
    fn dense(q: &[f32], k: &[f32], v: &[f32], n: usize, shape: &AttentionShape) -> Vec<f32> {
        let (hd, window) = (shape.head_dim, shape.window);
        let scale = shape.scale as f64;
        let softcap = shape.softcap.map(f64::from);
        let mut out = vec![0.0; n * hd];
        for i in 0..n {
            let first = window.map(|w| (i + 1).saturating_sub(w)).unwrap_or(0);
            let s: Vec<f64> = (first..=i)
                .map(|j| {
                    (0..hd)
                        .map(|d| (q[i * hd + d] * k[j * hd + d]) as f64)
                        .sum::<f64>()
                        * scale
                })
                .map(|x| softcap.map_or(x, |c| (x / c).tanh() * c))
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for (jj, j) in (first..=i).enumerate() {
                for d in 0..hd {
                    out[i * hd + d] += (e[jj] / z * v[j * hd + d] as f64) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn paged_matches_dense_with_scattered_blocks_and_window() {
        let (n, hd, bs) = (11, 4, 4);
        let table = [5u32, 2, 7];
        let val = |i: usize| ((i * 7919) % 23) as f32 / 11.0 - 1.0;
        let q: Vec<f32> = (0..n * hd).map(val).collect();
        let k: Vec<f32> = (0..n * hd).map(|i| val(i + 3)).collect();
        let v: Vec<f32> = (0..n * hd).map(|i| val(i + 5)).collect();
        let mut keys = vec![0.0; 8 * bs * hd];
        let mut values = vec![0.0; 8 * bs * hd];
        for p in 0..n {
            let slot = table[p / bs] as usize * bs + p % bs;
            keys[slot * hd..][..hd].copy_from_slice(&k[p * hd..][..hd]);
            values[slot * hd..][..hd].copy_from_slice(&v[p * hd..][..hd]);
        }
        let cases = [
            (None, None, 0.5),
            (Some(3), None, 0.5),
            (None, Some(0.8), 1.7),
            (Some(4), Some(0.8), 1.7),
        ];
        for (window, softcap, scale) in cases {
            let sites: Vec<TokenSite> = (0..n)
                .map(|pos| TokenSite {
                    block_table: &table,
                    pos,
                })
                .collect();
            let shape = AttentionShape {
                num_heads: 1,
                num_kv_heads: 1,
                head_dim: hd,
                block_size: bs,
                window,
                scale,
                softcap,
            };
            let got = paged_attention(&q, &sites, &keys, &values, &shape);
            let want = dense(&q, &k, &v, n, &shape);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}
