//! One query against its sequence's keys (every decode step), on AVX: the arithmetic of
//! [`super::attend_tile`] with the same chain per output, arranged so independent work overlaps.
//!
//! - Scores: eight keys at a time, each with its own eight-lane accumulator. An 8×8 transpose
//!   turns the eight accumulators into eight vectors of "lane j of each key", which summed in
//!   order 0..8 give each key's left-to-right lane sum, exactly [`super::lanes::Lanes::dot`]'s.
//!   One key at a time, that sum and the accumulator's add chain left the core waiting.
//! - Weighted sum: the output row stays in registers across all keys instead of going through
//!   memory once per key; each element still sees `out += w * v` in key order.

use super::lanes::{Avx, KvValue, Lanes};
use std::arch::x86_64::*;

/// Eight-float chunks of a head this path takes (head_dim / 8); others use the tile path.
pub(super) fn supports(head_dim: usize) -> bool {
    head_dim.is_multiple_of(8) && matches!(head_dim / 8, 4 | 8 | 10 | 12 | 16 | 32)
}

/// Attends `q` (one head, `head_dim` long) to the rows starting at `rows` (key order) of
/// `keys`/`values`; `softmax` turns the scaled scores into weights in place and returns the
/// reciprocal of their sum. Returns the head's output.
///
/// # Safety
/// AVX2 and F16C must be available; `supports(q.len())`; every `rows[i] + q.len()` within both
/// slices.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn attend_one<T: KvValue>(
    q: &[f32],
    rows: &[usize],
    (keys, values): (&[T], &[T]),
    scale: f32,
    softmax: impl FnOnce(&mut [f32]) -> f32,
) -> Vec<f32> {
    macro_rules! by_chunks {
        ($($ch:literal)*) => {
            match q.len() / 8 {
                $($ch => attend_chunks::<T, $ch>(q, rows, keys, values, scale, softmax),)*
                other => unreachable!("{other} chunks: supports() is checked first"),
            }
        };
    }
    by_chunks!(4 8 10 12 16 32)
}

#[inline(always)]
unsafe fn attend_chunks<T: KvValue, const CH: usize>(
    q: &[f32],
    rows: &[usize],
    keys: &[T],
    values: &[T],
    scale: f32,
    softmax: impl FnOnce(&mut [f32]) -> f32,
) -> Vec<f32> {
    let hd = CH * 8;
    debug_assert_eq!(q.len(), hd);
    debug_assert!(rows
        .iter()
        .all(|&r| r + hd <= keys.len() && r + hd <= values.len()));
    let mut scores = vec![0.0f32; rows.len()];
    let full = rows.len() / 8 * 8;
    for (g, (group, out)) in rows[..full]
        .chunks_exact(8)
        .zip(scores.chunks_exact_mut(8))
        .enumerate()
    {
        for &ahead in rows.iter().skip(8 * g + AHEAD).take(8) {
            prefetch_row(keys, ahead, hd);
        }
        score8::<T, CH>(q, keys, |i| group[i], scale, out);
    }
    for (s, &r) in scores[full..].iter_mut().zip(&rows[full..]) {
        *s = Avx::dot(q, &keys[r..r + hd]) * scale;
    }
    let inv = softmax(&mut scores);
    let mut out = [_mm256_setzero_ps(); CH];
    for (j, (&s, &r)) in scores.iter().zip(rows).enumerate() {
        if let Some(&ahead) = rows.get(j + AHEAD) {
            prefetch_row(values, ahead, hd);
        }
        let w = _mm256_set1_ps(s * inv);
        for (c, o) in out.iter_mut().enumerate() {
            let v = T::load8(values.as_ptr().add(r + 8 * c));
            *o = _mm256_add_ps(*o, _mm256_mul_ps(w, v));
        }
    }
    let mut row = vec![0.0f32; hd];
    for (c, o) in out.iter().enumerate() {
        _mm256_storeu_ps(row.as_mut_ptr().add(8 * c), *o);
    }
    row
}

/// Scores eight keys (rows `row(0..8)` of `keys`) against `q` into `out[..8]`, scaled.
#[inline(always)]
unsafe fn score8<T: KvValue, const CH: usize>(
    q: &[f32],
    keys: &[T],
    row: impl Fn(usize) -> usize,
    scale: f32,
    out: &mut [f32],
) {
    let mut acc = [_mm256_setzero_ps(); 8];
    for c in 0..CH {
        let x = _mm256_loadu_ps(q.as_ptr().add(8 * c));
        for (i, a) in acc.iter_mut().enumerate() {
            let y = T::load8(keys.as_ptr().add(row(i) + 8 * c));
            *a = _mm256_add_ps(*a, _mm256_mul_ps(x, y));
        }
    }
    let lanes = transpose8(acc);
    // 0.0 + lane 0 + lane 1 + ... : the fold `Iterator::sum` makes of one accumulator.
    let mut s = _mm256_setzero_ps();
    for l in lanes {
        s = _mm256_add_ps(s, l);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(s, _mm256_set1_ps(scale)));
}

/// Several heads of one query against the same keys (one decode token's heads), on AVX: each
/// head's arithmetic is exactly [`attend_one`]'s, but the keys are visited block by block with
/// every head inside, so each block's rows of all KV heads (one contiguous run of the
/// head-major pool) are read front to back instead of one head's short run at a time — this
/// pass is bound by how fast one core pulls rows from memory, and long sequential runs are what
/// the hardware prefetcher serves best.
///
/// `q` holds the heads one after another; head `h` reads KV head `kv_of[h]`, whose row for key
/// `j` is `rows[j] + kv_of[h] * head_stride`; `rows` are KV head 0's rows in key order.
/// `softmax` is applied to each head's scores as in [`attend_one`]. Returns the heads' outputs,
/// one after another.
///
/// Prefill tiles keep [`attend_one`]: their queries read rows the tile's first query already
/// brought into cache, and running each of them through this function (runs, per-run
/// accumulator loads and stores) measured 30% slower on the attention bench's prefill shape.
///
/// # Safety
/// AVX2 and F16C must be available; `supports(head_dim)`; every `rows[j] + kv_of[h] *
/// head_stride + head_dim` within both slices.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn attend_heads<T: KvValue>(
    q: &[f32],
    (kv_of, head_stride): (&[usize], usize),
    rows: &[usize],
    (keys, values): (&[T], &[T]),
    scale: f32,
    softmax: impl Fn(&mut [f32]) -> f32,
) -> Vec<f32> {
    macro_rules! by_chunks {
        ($($ch:literal)*) => {
            match q.len() / kv_of.len() / 8 {
                $($ch => heads_chunks::<T, $ch>(
                    q, (kv_of, head_stride), rows, (keys, values), scale, softmax,
                ),)*
                other => unreachable!("{other} chunks: supports() is checked first"),
            }
        };
    }
    by_chunks!(4 8 10 12 16 32)
}

/// Runs of keys whose rows are consecutive (one block of the pool each): `(first, end)`.
fn block_runs(rows: &[usize], hd: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (j, &r) in rows.iter().enumerate() {
        match runs.last_mut() {
            Some((_, end)) if *end == j && rows[j - 1] + hd == r => *end += 1,
            _ => runs.push((j, j + 1)),
        }
    }
    runs
}

#[inline(always)]
unsafe fn heads_chunks<T: KvValue, const CH: usize>(
    q: &[f32],
    (kv_of, head_stride): (&[usize], usize),
    rows: &[usize],
    (keys, values): (&[T], &[T]),
    scale: f32,
    softmax: impl Fn(&mut [f32]) -> f32,
) -> Vec<f32> {
    let hd = CH * 8;
    let (heads, n) = (kv_of.len(), rows.len());
    debug_assert_eq!(q.len(), heads * hd);
    let runs = block_runs(rows, hd);
    // Rows `k0..k1` (those it has) of KV head `kv` in the run after run `ri`: each pass asks
    // for them a few at a time as it reads the same rows of its own run, so the requests are
    // spread over the pass instead of filling the core's miss queue at the start of a head
    // (one 2 KiB burst per head, two runs ahead, measured 5-12% slower on the attention bench;
    // spread two runs ahead, 6-8% slower than one run ahead with f16 rows).
    let ahead_rows = |data: &[T], ri: usize, kv: usize, k0: usize, k1: usize| {
        if let Some(&(a, b)) = runs.get(ri + 1) {
            for k in k0..k1.min(b - a) {
                prefetch_span(data, rows[a + k] + kv * head_stride, hd);
            }
        }
    };
    let mut scores = vec![0.0f32; heads * n];
    for (ri, &(a, b)) in runs.iter().enumerate() {
        for (h, &kv) in kv_of.iter().enumerate() {
            let off = kv * head_stride;
            let qh = &q[h * hd..][..hd];
            let out = &mut scores[h * n..][..n];
            let mut j = a;
            while j + 8 <= b {
                ahead_rows(keys, ri, kv, j - a, j - a + 8);
                score8::<T, CH>(qh, keys, |i| rows[j + i] + off, scale, &mut out[j..j + 8]);
                j += 8;
            }
            for j in j..b {
                ahead_rows(keys, ri, kv, j - a, j - a + 1);
                out[j] = Avx::dot(qh, &keys[rows[j] + off..][..hd]) * scale;
            }
            ahead_rows(keys, ri, kv, b - a, usize::MAX);
        }
    }
    let inv: Vec<f32> = scores.chunks_exact_mut(n.max(1)).map(&softmax).collect();
    let mut acc = vec![0.0f32; heads * hd];
    for (ri, &(a, b)) in runs.iter().enumerate() {
        for (h, &kv) in kv_of.iter().enumerate() {
            let off = kv * head_stride;
            let dst = acc.as_mut_ptr().add(h * hd);
            let mut out: [__m256; CH] = std::array::from_fn(|c| _mm256_loadu_ps(dst.add(8 * c)));
            for j in a..b {
                ahead_rows(values, ri, kv, j - a, j - a + 1);
                let w = _mm256_set1_ps(scores[h * n + j] * inv[h]);
                let r = rows[j] + off;
                for (c, o) in out.iter_mut().enumerate() {
                    let v = T::load8(values.as_ptr().add(r + 8 * c));
                    *o = _mm256_add_ps(*o, _mm256_mul_ps(w, v));
                }
            }
            ahead_rows(values, ri, kv, b - a, usize::MAX);
            for (c, o) in out.iter().enumerate() {
                _mm256_storeu_ps(dst.add(8 * c), *o);
            }
        }
    }
    acc
}

/// Asks for the cache lines of `len` values from `at` into L2 (a hint; callers name only rows
/// inside `data`). L2: measured on the attention bench's shape, prefetching a whole run ahead
/// into L1 was slower than no prefetch at all (a block of every head is 24 KiB in f16, most of
/// L1, so it evicted the rows in use), while into L2 it took 35-38% off the pass.
#[inline(always)]
unsafe fn prefetch_span<T>(data: &[T], at: usize, len: usize) {
    let bytes = len * std::mem::size_of::<T>();
    let base = data.as_ptr().add(at).cast::<i8>();
    for line in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(base.add(line));
    }
}

/// Rows a pass asks the cache for ahead of the one it reads: a sequence's rows come in runs of
/// one block (a few KiB), too short for the hardware prefetcher to lock on before they end.
const AHEAD: usize = 16;

/// Asks for the cache lines of the `hd` values at `at` (a hint; the caller's rows are all
/// inside `data`, so no stray address is named).
#[inline(always)]
unsafe fn prefetch_row<T>(data: &[T], at: usize, hd: usize) {
    let bytes = hd * std::mem::size_of::<T>();
    let base = data.as_ptr().add(at).cast::<i8>();
    for line in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(base.add(line));
    }
}

/// Row `i` of the result is lane `i` of each input, in input order.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose8_moves_lane_i_of_each_row_to_row_i() {
        if !super::super::lanes::has_avx() {
            return;
        }
        #[target_feature(enable = "avx2")]
        unsafe fn run() -> [[f32; 8]; 8] {
            let rows: [__m256; 8] = std::array::from_fn(|r| {
                let v: [f32; 8] = std::array::from_fn(|l| (10 * r + l) as f32);
                _mm256_loadu_ps(v.as_ptr())
            });
            let t = transpose8(rows);
            std::array::from_fn(|i| {
                let mut o = [0.0f32; 8];
                _mm256_storeu_ps(o.as_mut_ptr(), t[i]);
                o
            })
        }
        // SAFETY: AVX2 was detected.
        let t = unsafe { run() };
        for (i, row) in t.iter().enumerate() {
            for (r, &v) in row.iter().enumerate() {
                assert_eq!(v, (10 * r + i) as f32);
            }
        }
    }
}
