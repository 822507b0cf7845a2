//! Paged attention on the CPU: each query token attends to the keys of its own sequence up to
//! its position (causal), within the sliding window when the layer has one, reading K and V
//! through the sequence's block table. Query heads share KV heads in groups (GQA).
//!
//! Every (token, head) pair writes its own output slice, so the work splits across threads with
//! no reduction shared between sequences: a sequence's result does not depend on its batch.

#[cfg(target_arch = "x86_64")]
mod decode;
pub(crate) mod lanes;

use crate::activation::softcap_in_place;
use crate::kv_cache::{KvCache, KvLayer};
use lanes::{KvValue, Lanes, Portable};
use rayon::prelude::*;
use std::ops::Range;

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

/// `q` is `[tokens, num_heads * head_dim]` (already rotated); returns the same shape. `kv` is
/// one layer of a [`KvCache`], in its head-major block layout and its stored type.
///
/// Each (token, head) output is computed by the same sequence of operations whatever tile it
/// lands in (scores in key order, the same dot, softmax and weighted sum in key order), so tiling
/// changes which rows are cache-hot, never the bits.
pub fn paged_attention(
    q: &[f32],
    sites: &[TokenSite<'_>],
    kv: KvLayer<'_>,
    shape: &AttentionShape,
) -> Vec<f32> {
    match kv {
        KvLayer::F32(k, v) => attend(q, sites, k, v, shape),
        KvLayer::F16(k, v) => attend(q, sites, k, v, shape),
        KvLayer::BF16(k, v) => attend(q, sites, k, v, shape),
    }
}

fn attend<T: KvValue>(
    q: &[f32],
    sites: &[TokenSite<'_>],
    keys: &[T],
    values: &[T],
    shape: &AttentionShape,
) -> Vec<f32> {
    let hd = shape.head_dim;
    let q_row = shape.num_heads * hd;
    let tiles = query_tiles(sites);
    let avx = lanes::has_avx();
    // The AVX path of decode.rs: decode tokens take their heads together, prefill tiles their
    // queries one by one.
    #[cfg(target_arch = "x86_64")]
    let heads_together = avx && decode::supports(hd);
    #[cfg(not(target_arch = "x86_64"))]
    let heads_together = false;
    // Decode tokens (tiles of one) take their heads in groups on the AVX path (see
    // decode::attend_heads), as many per task as still leaves every thread a few tasks;
    // multi-query tiles go head by head.
    let decode_tiles = tiles.iter().filter(|&&(_, len)| len == 1).count();
    let group = if heads_together {
        heads_per_task(shape.num_heads, decode_tiles, rayon::current_num_threads())
    } else {
        1
    };
    let work: Vec<(usize, usize, Range<usize>)> = tiles
        .iter()
        .flat_map(|&(start, len)| {
            let step = if len == 1 { group } else { 1 };
            (0..shape.num_heads)
                .step_by(step)
                .map(move |h| (start, len, h..(h + step).min(shape.num_heads)))
        })
        .collect();
    let parts: Vec<Vec<f32>> = work
        .par_iter()
        .map(|(start, len, heads)| {
            let (start, len) = (*start, *len);
            let kv = (keys, values);
            #[cfg(target_arch = "x86_64")]
            if heads_together && len == 1 {
                return attend_heads_avx(q, &sites[start], start, heads.clone(), kv, shape);
            }
            let tile = Tile {
                sites: &sites[start..start + len],
                first_token: start,
                head: heads.start,
            };
            #[cfg(target_arch = "x86_64")]
            if heads_together {
                return attend_queries_avx(q, &tile, kv, shape);
            }
            #[cfg(target_arch = "x86_64")]
            if avx {
                // SAFETY: AVX2 and F16C were detected at run time.
                return unsafe { attend_tile_avx(q, &tile, kv, shape) };
            }
            let _ = avx;
            // SAFETY: the portable lanes need no CPU feature.
            unsafe { attend_tile::<T, Portable>(q, &tile, kv, shape) }
        })
        .collect();
    let mut out = vec![0.0f32; q.len()];
    for ((start, len, heads), part) in work.iter().zip(&parts) {
        if *len == 1 {
            // one token's heads are contiguous in its row, as in the part
            out[start * q_row + heads.start * hd..][..part.len()].copy_from_slice(part);
            continue;
        }
        for i in 0..*len {
            out[(start + i) * q_row + heads.start * hd..][..hd]
                .copy_from_slice(&part[i * hd..][..hd]);
        }
    }
    out
}

/// Heads per decode task: all of a token's heads when there are enough tokens to give each
/// thread about four tasks, fewer (down to one) when there are not (batch-1 decode still
/// spreads its heads over the pool).
fn heads_per_task(heads: usize, decode_tokens: usize, threads: usize) -> usize {
    let wanted = 4 * threads.max(1);
    (heads * decode_tokens)
        .div_ceil(wanted)
        .clamp(1, heads.max(1))
}

/// One decode token's `heads` through [`decode::attend_heads`].
#[cfg(target_arch = "x86_64")]
fn attend_heads_avx<T: KvValue>(
    q: &[f32],
    site: &TokenSite<'_>,
    token: usize,
    heads: Range<usize>,
    kv: (&[T], &[T]),
    shape: &AttentionShape,
) -> Vec<f32> {
    let hd = shape.head_dim;
    let group = shape.num_heads / shape.num_kv_heads;
    let lo = match shape.window {
        Some(w) => (site.pos + 1).saturating_sub(w),
        None => 0,
    };
    // KV head 0's rows; KV head `g` sits `g * block_size` rows further in every block.
    let mut rows = Vec::with_capacity(site.pos + 1 - lo);
    for_each_row(site.block_table, 0, shape, lo, site.pos, |_, at| {
        rows.push(at)
    });
    let head_stride = shape.block_size * hd;
    let kv_of: Vec<usize> = heads.clone().map(|h| h / group).collect();
    let (keys, values) = kv;
    let last = kv_of.iter().max().map_or(0, |&g| g * head_stride);
    assert!(rows
        .iter()
        .all(|&r| r + last + hd <= keys.len() && r + last + hd <= values.len()));
    let qs = &q[token * shape.num_heads * hd + heads.start * hd..][..heads.len() * hd];
    // SAFETY: the caller detected AVX2 and F16C and checked `supports(hd)`; every row of every
    // KV head used was just checked to lie inside both slices.
    unsafe {
        decode::attend_heads(qs, (&kv_of, head_stride), &rows, kv, shape.scale, |s| {
            softmax(s, shape.softcap)
        })
    }
}

/// [`attend_tile`] compiled with AVX2 and F16C, so the [`lanes::Avx`] loops inline into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn attend_tile_avx<T: KvValue>(
    q: &[f32],
    t: &Tile<'_, '_>,
    kv: (&[T], &[T]),
    shape: &AttentionShape,
) -> Vec<f32> {
    attend_tile::<T, lanes::Avx>(q, t, kv, shape)
}

/// The tile's queries one after another through [`decode::attend_one`]: the same bits as
/// [`attend_tile`], with the keys' independent work overlapped and each query's output row
/// held in registers. The tile's queries read overlapping key ranges, so after the first the
/// rows come from cache.
#[cfg(target_arch = "x86_64")]
fn attend_queries_avx<T: KvValue>(
    q: &[f32],
    t: &Tile<'_, '_>,
    kv: (&[T], &[T]),
    shape: &AttentionShape,
) -> Vec<f32> {
    let hd = shape.head_dim;
    let kv_head = t.head / (shape.num_heads / shape.num_kv_heads);
    let first = |pos: usize| match shape.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    let (pos0, len) = (t.sites[0].pos, t.sites.len());
    let (lo, hi) = (first(pos0), pos0 + len - 1);
    // Row offsets of keys lo..=hi, shared by the tile (one sequence, consecutive positions).
    let mut rows = Vec::with_capacity(hi + 1 - lo);
    for_each_row(t.sites[0].block_table, kv_head, shape, lo, hi, |_, at| {
        rows.push(at)
    });
    let (keys, values) = kv;
    assert!(rows
        .iter()
        .all(|&r| r + hd <= keys.len() && r + hd <= values.len()));
    let mut out = Vec::with_capacity(len * hd);
    for i in 0..len {
        let pos = pos0 + i;
        let q = &q[(t.first_token + i) * shape.num_heads * hd + t.head * hd..][..hd];
        let mine = &rows[first(pos) - lo..=pos - lo];
        // SAFETY: the caller detected AVX2 and F16C and checked `supports(hd)`; every row was
        // just checked to lie inside both slices.
        let row =
            unsafe { decode::attend_one(q, mine, kv, shape.scale, |s| softmax(s, shape.softcap)) };
        out.extend_from_slice(&row);
    }
    out
}

/// Scores to unnormalized weights in place (softcap, then `exp(s - max)`); returns the
/// reciprocal of their sum, which each weight is multiplied by as it is used.
#[inline(always)]
fn softmax(s: &mut [f32], softcap: Option<f32>) -> f32 {
    if let Some(cap) = softcap {
        softcap_in_place(s, cap);
    }
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    1.0 / crate::exp::exp_shifted_sum(s, max)
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

/// Calls `f(p, at)` for positions `lo..=hi` of one KV head in order, `at` being the start of
/// position `p`'s row: block by block, so the table lookup and the division happen once per
/// block rather than once per key.
#[inline(always)]
fn for_each_row(
    table: &[u32],
    kv_head: usize,
    shape: &AttentionShape,
    lo: usize,
    hi: usize,
    mut f: impl FnMut(usize, usize),
) {
    let (bs, hd) = (shape.block_size, shape.head_dim);
    let mut p = lo;
    while p <= hi {
        let b = p / bs;
        let end = ((b + 1) * bs).min(hi + 1);
        let base = KvCache::head_row(table[b] as usize, kv_head, 0, shape.num_kv_heads, bs);
        for p in p..end {
            f(p, (base + p - b * bs) * hd);
        }
        p = end;
    }
}

/// Attends one tile; returns `[tile, head_dim]`.
///
/// # Safety
/// The CPU must have the features `L` needs.
#[inline(always)]
unsafe fn attend_tile<T: KvValue, L: Lanes>(
    q: &[f32],
    t: &Tile<'_, '_>,
    (keys, values): (&[T], &[T]),
    shape: &AttentionShape,
) -> Vec<f32> {
    let (tile, first_token, head) = (t.sites, t.first_token, t.head);
    let hd = shape.head_dim;
    let q_row = shape.num_heads * hd;
    let kv_head = head / (shape.num_heads / shape.num_kv_heads);
    // Every query of a tile reads the same block table.
    let table = tile[0].block_table;
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
    for_each_row(table, kv_head, shape, lo, hi, |p, at| {
        let k = &keys[at..][..hd];
        for i in readers(p) {
            // SAFETY: `k` is `hd` long like each query; the caller vouches for `L`'s features.
            let s = unsafe { L::dot(&queries[i * hd..][..hd], k) };
            scores[i].push(s * shape.scale);
        }
    });
    let weights_inv: Vec<f32> = scores
        .iter_mut()
        .map(|s| softmax(s, shape.softcap))
        .collect();
    let mut out = vec![0.0f32; len * hd];
    for_each_row(table, kv_head, shape, lo, hi, |p, at| {
        let v = &values[at..][..hd];
        for i in readers(p) {
            let w = scores[i][p - first(pos0 + i)] * weights_inv[i];
            // SAFETY: as above.
            unsafe { L::add_scaled(&mut out[i * hd..][..hd], w, v) };
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

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

    fn shape(heads: usize, kv_heads: usize, hd: usize, bs: usize) -> AttentionShape {
        AttentionShape {
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: hd,
            block_size: bs,
            window: None,
            scale: 0.3,
            softcap: None,
        }
    }

    /// One token per position, every one reading `table`.
    fn sites_at(table: &[u32], positions: impl IntoIterator<Item = usize>) -> Vec<TokenSite<'_>> {
        positions
            .into_iter()
            .map(|pos| TokenSite {
                block_table: table,
                pos,
            })
            .collect()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    fn narrow<T>(x: &[f32], f: fn(f32) -> T) -> Vec<T> {
        x.iter().map(|&v| f(v)).collect()
    }

    /// The portable tile path's output (`[len, head_dim]`) for one head of the `len` tokens
    /// from `start`, which must be one sequence at consecutive positions.
    fn portable<T: KvValue>(
        q: &[f32],
        sites: &[TokenSite<'_>],
        (start, len, head): (usize, usize, usize),
        kv: (&[T], &[T]),
        shape: &AttentionShape,
    ) -> Vec<f32> {
        let tile = Tile {
            sites: &sites[start..start + len],
            first_token: start,
            head,
        };
        // SAFETY: the portable lanes need no CPU feature.
        unsafe { attend_tile::<T, Portable>(q, &tile, kv, shape) }
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
        let sites = sites_at(&table, 0..n);
        for (window, softcap, scale) in cases {
            let shape = AttentionShape {
                window,
                scale,
                softcap,
                ..shape(1, 1, hd, bs)
            };
            let got = paged_attention(&q, &sites, KvLayer::F32(&keys, &values), &shape);
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
        let size = blocks * bs * kv_heads * hd;
        let keys: Vec<f32> = (0..size).map(|i| val(i + 3)).collect();
        let values: Vec<f32> = (0..size).map(|i| val(i + 5)).collect();
        let sites = sites_at(&table, 0..n);
        for window in [None, Some(5)] {
            let shape = AttentionShape {
                window,
                ..shape(heads, kv_heads, hd, bs)
            };
            let together = paged_attention(&q, &sites, KvLayer::F32(&keys, &values), &shape);
            let row = heads * hd;
            for pos in 0..n {
                let alone = paged_attention(
                    &q[pos * row..][..row],
                    &sites[pos..pos + 1],
                    KvLayer::F32(&keys, &values),
                    &shape,
                );
                assert_eq!(
                    bits(&together[pos * row..][..row]),
                    bits(&alone),
                    "position {pos}, window {window:?}"
                );
            }
        }
    }

    /// A half-width pool gives the bits an f32 pool holding the same (rounded) values gives,
    /// on the AVX path and the portable one alike: storage changes what is read, not the chain.
    #[test]
    fn half_pools_run_the_f32_chain_on_every_path() {
        let (n, heads, kv_heads, hd, bs) = (QUERY_TILE + 5, 4, 2, 24, 4);
        let blocks = n.div_ceil(bs);
        let table: Vec<u32> = (0..blocks as u32).rev().collect();
        let val = |i: usize| ((i * 7919) % 31) as f32 / 13.0 - 1.0;
        let q: Vec<f32> = (0..n * heads * hd).map(val).collect();
        let size = blocks * bs * kv_heads * hd;
        let raw_k: Vec<f32> = (0..size).map(|i| val(i + 3)).collect();
        let raw_v: Vec<f32> = (0..size).map(|i| val(i + 5)).collect();
        let shape = shape(heads, kv_heads, hd, bs);
        let sites = sites_at(&table, 0..n);
        let (k16, v16) = (narrow(&raw_k, f16::from_f32), narrow(&raw_v, f16::from_f32));
        let (kb, vb) = (
            narrow(&raw_k, bf16::from_f32),
            narrow(&raw_v, bf16::from_f32),
        );
        let widen16 = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
        let widenb = |x: &[bf16]| x.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
        // Both storage types, through the path this CPU dispatches to.
        let cases = [
            (
                paged_attention(&q, &sites, KvLayer::F16(&k16, &v16), &shape),
                (widen16(&k16), widen16(&v16)),
            ),
            (
                paged_attention(&q, &sites, KvLayer::BF16(&kb, &vb), &shape),
                (widenb(&kb), widenb(&vb)),
            ),
        ];
        for (got, (k, v)) in cases {
            let want = paged_attention(&q, &sites, KvLayer::F32(&k, &v), &shape);
            assert_eq!(bits(&got), bits(&want));
        }
        // And the portable lanes on a half pool, token by token.
        let (k, v) = (widen16(&k16), widen16(&v16));
        for pos in 0..n {
            for head in 0..heads {
                let at = (pos, 1, head);
                let half = portable(&q, &sites, at, (&k16, &v16), &shape);
                assert_eq!(
                    bits(&half),
                    bits(&portable(&q, &sites, at, (&k, &v), &shape))
                );
            }
        }
    }

    /// A decode step (one query per sequence, the AVX path where it applies) gives, for every
    /// head, the portable tile's bits: each head size the decode path takes and one it does
    /// not, contexts that end mid-group and mid-block, a window, a softcap, f32 and f16 pools.
    #[test]
    fn decode_steps_give_the_portable_bits() {
        // One thread takes a token's heads in groups (heads_per_task > 1), eight take them
        // one by one: both must give every head the portable bits.
        for threads in [1, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(decode_steps_match_portable);
        }
    }

    #[test]
    fn heads_per_task_keeps_every_thread_busy() {
        assert_eq!(heads_per_task(12, 32, 2), 12);
        assert_eq!(heads_per_task(12, 1, 2), 2);
        assert_eq!(heads_per_task(4, 3, 1), 3);
        assert_eq!(heads_per_task(4, 3, 8), 1);
        assert_eq!(heads_per_task(32, 8, 2), 32);
    }

    fn decode_steps_match_portable() {
        let val = |i: usize| ((i * 7919) % 97) as f32 / 41.0 - 1.1;
        let (heads, kv_heads, bs) = (4, 2, 16);
        let table: Vec<u32> = vec![3, 0, 4, 1, 2];
        // Three sequences sharing the table at contexts of 1, 8 and 70 keys.
        let sites = sites_at(&table, [0, 7, 69]);
        for hd in [32, 64, 72, 80, 96, 128, 256] {
            for (window, softcap) in [(None, None), (Some(11), Some(0.9))] {
                let q: Vec<f32> = (0..sites.len() * heads * hd).map(val).collect();
                let size = table.len() * bs * kv_heads * hd;
                let keys: Vec<f32> = (0..size).map(|i| val(i + 3)).collect();
                let values: Vec<f32> = (0..size).map(|i| val(i + 7)).collect();
                let (k16, v16) = (narrow(&keys, f16::from_f32), narrow(&values, f16::from_f32));
                let shape = AttentionShape {
                    window,
                    scale: 0.125,
                    softcap,
                    ..shape(heads, kv_heads, hd, bs)
                };
                let got32 = paged_attention(&q, &sites, KvLayer::F32(&keys, &values), &shape);
                let got16 = paged_attention(&q, &sites, KvLayer::F16(&k16, &v16), &shape);
                for (t, site) in sites.iter().enumerate() {
                    for head in 0..heads {
                        let at = t * heads * hd + head * hd;
                        let want32 = portable(&q, &sites, (t, 1, head), (&keys, &values), &shape);
                        let want16 = portable(&q, &sites, (t, 1, head), (&k16, &v16), &shape);
                        let ctx = format!("hd {hd} window {window:?} pos {} head {head}", site.pos);
                        assert_eq!(bits(&got32[at..at + hd]), bits(&want32), "f32 {ctx}");
                        assert_eq!(bits(&got16[at..at + hd]), bits(&want16), "f16 {ctx}");
                    }
                }
            }
        }
    }

    /// A prefill (tiles of consecutive queries) on the dispatched path gives the portable
    /// tiles' bits, for head sizes the per-query AVX path takes, with and without a window.
    #[test]
    fn prefill_tiles_give_the_portable_bits() {
        let val = |i: usize| ((i * 7919) % 89) as f32 / 37.0 - 1.2;
        let (n, heads, kv_heads, bs) = (2 * QUERY_TILE + 5, 2, 1, 8);
        let blocks = n.div_ceil(bs);
        let table: Vec<u32> = (0..blocks as u32).rev().collect();
        let sites = sites_at(&table, 0..n);
        for hd in [64, 128] {
            for window in [None, Some(13)] {
                let q: Vec<f32> = (0..n * heads * hd).map(val).collect();
                let size = blocks * bs * kv_heads * hd;
                let keys: Vec<f16> = (0..size).map(|i| f16::from_f32(val(i + 1))).collect();
                let values: Vec<f16> = (0..size).map(|i| f16::from_f32(val(i + 2))).collect();
                let shape = AttentionShape {
                    window,
                    scale: 0.1,
                    ..shape(heads, kv_heads, hd, bs)
                };
                let got = paged_attention(&q, &sites, KvLayer::F16(&keys, &values), &shape);
                for (start, len) in query_tiles(&sites) {
                    for head in 0..heads {
                        let want =
                            portable(&q, &sites, (start, len, head), (&keys, &values), &shape);
                        for i in 0..len {
                            let at = (start + i) * heads * hd + head * hd;
                            assert_eq!(
                                bits(&got[at..at + hd]),
                                bits(&want[i * hd..][..hd]),
                                "hd {hd} window {window:?} token {}",
                                start + i
                            );
                        }
                    }
                }
            }
        }
    }
}
