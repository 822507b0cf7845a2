//! Paged attention on the CPU: each query token attends to the keys of its own sequence up to
//! its position (causal), within the sliding window when the layer has one, reading K and V
//! through the sequence's block table. Query heads share KV heads in groups (GQA).
//!
//! Every (token, head) pair writes its own output slice, so the work splits across threads with
//! no reduction shared between sequences: a sequence's result does not depend on its batch.

mod lanes;

use crate::activation::softcap_in_place;
use crate::kv_cache::KvCache;
use lanes::Lanes;
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

/// Queries of one sequence at consecutive positions are processed together, up to this many, so
/// each key and value row is read once per tile instead of once per query (prefill was bound by
/// re-reading K and V from cache for every query).
const QUERY_TILE: usize = 16;

/// `q` is `[tokens, num_heads * head_dim]` (already rotated); returns the same shape. `keys` and
/// `values` are one layer of a [`KvCache`], in its head-major block layout.
///
/// Each (token, head) output is computed by the same sequence of operations whatever tile it
/// lands in (scores in key order, the same dot, softmax and weighted sum in key order), so tiling
/// changes which rows are cache-hot, never the bits.
pub fn paged_attention(
    q: &[f32],
    sites: &[TokenSite<'_>],
    keys: &[f32],
    values: &[f32],
    shape: &AttentionShape,
) -> Vec<f32> {
    let hd = shape.head_dim;
    let q_row = shape.num_heads * hd;
    let tiles = query_tiles(sites);
    let work: Vec<(usize, usize, usize)> = tiles
        .iter()
        .flat_map(|&(start, len)| (0..shape.num_heads).map(move |h| (start, len, h)))
        .collect();
    let lanes = Lanes::detect();
    let parts: Vec<Vec<f32>> = work
        .par_iter()
        .map(|&(start, len, head)| {
            let tile = Tile {
                sites: &sites[start..start + len],
                first_token: start,
                head,
            };
            attend_tile(q, &tile, keys, values, shape, lanes)
        })
        .collect();
    let mut out = vec![0.0f32; q.len()];
    for (&(start, len, head), part) in work.iter().zip(&parts) {
        for i in 0..len {
            out[(start + i) * q_row + head * hd..][..hd].copy_from_slice(&part[i * hd..][..hd]);
        }
    }
    out
}

/// Splits the step's tokens into runs of one sequence at consecutive positions, at most
/// `QUERY_TILE` long: `(first token, length)`.
fn query_tiles(sites: &[TokenSite<'_>]) -> Vec<(usize, usize)> {
    let mut tiles: Vec<(usize, usize)> = Vec::new();
    for (t, site) in sites.iter().enumerate() {
        let extends = tiles.last().is_some_and(|&(start, len)| {
            let prev = &sites[start + len - 1];
            len < QUERY_TILE
                && std::ptr::eq(prev.block_table, site.block_table)
                && prev.pos + 1 == site.pos
        });
        match tiles.last_mut() {
            Some((_, len)) if extends => *len += 1,
            _ => tiles.push((t, 1)),
        }
    }
    tiles
}

/// One head of a run of queries of one sequence at consecutive positions.
struct Tile<'a, 'b> {
    sites: &'a [TokenSite<'b>],
    /// The step-wide index of the run's first token (its row in `q`).
    first_token: usize,
    head: usize,
}

/// Attends one tile; returns `[tile, head_dim]`.
fn attend_tile(
    q: &[f32],
    t: &Tile<'_, '_>,
    keys: &[f32],
    values: &[f32],
    shape: &AttentionShape,
    lanes: Lanes,
) -> Vec<f32> {
    let (tile, first_token, head) = (t.sites, t.first_token, t.head);
    let hd = shape.head_dim;
    let q_row = shape.num_heads * hd;
    let kv_head = head / (shape.num_heads / shape.num_kv_heads);
    // Every query of a tile reads the same block table.
    let table = tile[0].block_table;
    let row_at = |p: usize| {
        let block = table[p / shape.block_size] as usize;
        let offset = p % shape.block_size;
        KvCache::head_row(block, kv_head, offset, shape.num_kv_heads, shape.block_size) * hd
    };
    let first = |pos: usize| match shape.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    let len = tile.len();
    // The tile's queries for this head, contiguous, so one call scores a key against all of them.
    let mut queries = Vec::with_capacity(len * hd);
    for i in 0..len {
        queries.extend_from_slice(&q[(first_token + i) * q_row + head * hd..][..hd]);
    }
    let pos0 = tile[0].pos;
    // Query i sits at pos0 + i and reads keys first(pos0 + i)..=pos0 + i, so the queries that
    // read key p are a contiguous run.
    let readers = |p: usize| {
        let a = p.saturating_sub(pos0);
        let b = match shape.window {
            Some(w) => (p + w).saturating_sub(pos0).min(len),
            None => len,
        };
        a..b
    };
    let lo = first(pos0);
    let hi = pos0 + len - 1;
    // scores[i] covers keys first(pos_i)..=pos_i.
    let mut scores: Vec<Vec<f32>> = (0..len)
        .map(|i| Vec::with_capacity(pos0 + i + 1 - first(pos0 + i)))
        .collect();
    let mut row_scores = vec![0.0f32; len];
    for p in lo..=hi {
        let k = &keys[row_at(p)..][..hd];
        let r = readers(p);
        lanes.dots(
            &queries[r.start * hd..r.end * hd],
            k,
            &mut row_scores[r.clone()],
        );
        for i in r {
            scores[i].push(row_scores[i] * shape.scale);
        }
    }
    let mut weights_inv = Vec::with_capacity(len);
    for s in scores.iter_mut() {
        if let Some(cap) = shape.softcap {
            softcap_in_place(s, cap);
        }
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        weights_inv.push(1.0 / sum);
    }
    let mut out = vec![0.0f32; len * hd];
    let mut row_weights = vec![0.0f32; len];
    for p in lo..=hi {
        let v = &values[row_at(p)..][..hd];
        let r = readers(p);
        for i in r.clone() {
            row_weights[i] = scores[i][p - first(pos0 + i)] * weights_inv[i];
        }
        lanes.add_scaled_rows(
            &mut out[r.start * hd..r.end * hd],
            &row_weights[r.clone()],
            v,
        );
    }
    out
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

    /// A query's output has the same bits whether it runs in a tile with its neighbours or alone
    /// (a decode step, or another batch), across tile boundaries, GQA and a window.
    #[test]
    fn tiling_does_not_change_bits() {
        let (n, heads, kv_heads, hd, bs) = (2 * QUERY_TILE + 7, 4, 2, 8, 4);
        let blocks = n.div_ceil(bs);
        let table: Vec<u32> = (0..blocks as u32).rev().collect();
        let val = |i: usize| ((i * 7919) % 31) as f32 / 13.0 - 1.0;
        let q: Vec<f32> = (0..n * heads * hd).map(val).collect();
        let keys: Vec<f32> = (0..blocks * bs * kv_heads * hd)
            .map(|i| val(i + 3))
            .collect();
        let values: Vec<f32> = (0..blocks * bs * kv_heads * hd)
            .map(|i| val(i + 5))
            .collect();
        for window in [None, Some(5)] {
            let shape = AttentionShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: hd,
                block_size: bs,
                window,
                scale: 0.3,
                softcap: None,
            };
            let sites: Vec<TokenSite> = (0..n)
                .map(|pos| TokenSite {
                    block_table: &table,
                    pos,
                })
                .collect();
            let together = paged_attention(&q, &sites, &keys, &values, &shape);
            let row = heads * hd;
            for pos in 0..n {
                let alone = paged_attention(
                    &q[pos * row..][..row],
                    &sites[pos..pos + 1],
                    &keys,
                    &values,
                    &shape,
                );
                let got: Vec<u32> = together[pos * row..][..row]
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                let want: Vec<u32> = alone.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "position {pos}, window {window:?}");
            }
        }
    }
}
