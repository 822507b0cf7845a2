//! Q8_0 weights repacked for AVX2 so that one vector lane is one output (the AVX2 counterpart of
//! [`super::q8_packed`]).
//!
//! In ggml's row layout every (weight row, activation row, block) pays an int→float
//! conversion, a scalar scale product broadcast to a vector, an FMA and, per output, a
//! horizontal reduction; at batch 1 each output is also one short FMA chain, so the kernel waits
//! on latency. Here 8 weight rows are interleaved four codes at a time: for each four-code chunk
//! one `vpmaddubsw` + `vpmaddwd` against a broadcast group of four activation codes adds that
//! chunk's dot for all 8 rows into 8 i32 lanes, and the float step runs once per block for 8
//! outputs. There is no reduction at all.
//!
//! `vpmaddubsw` multiplies unsigned by signed bytes and saturates its pair sums at i16, so the
//! AVX-512 layout's unsigned `code ^ 0x80` would overflow (255·127·2 > 2¹⁵): the codes are kept
//! signed and each chunk runs as `vpmaddubsw(|w|, sign(a, w))`, pair sums at most 128·127·2 =
//! 32512 (activation codes are in [-127, 127]). `|w|` is computed once per chunk and shared by
//! every activation row of a tile.
//!
//! Layout: [`super::interleave8`], 32 code bytes a block, so block `b`'s codes are 8 vectors
//! of 32 bytes, vector `t` holding values `32b + 4t .. 32b + 4t + 4` of each of the 8 rows.
//!
//! Chain per output, the portable path's exactly (so both give the same bits, and the same as
//! AVX-512's [`super::q8_packed`]): `acc = 0`, then per block in K order
//! `acc = acc + (dw·dx)·(isum as f32)`, unfused. The integer sum is exact (|isum| ≤ 32·128·127
//! < 2²⁴, so its conversion is exact too), whatever order the lanes add in.

use super::interleave8::{self, GROUP, SCALES};
use super::{groups, Acts};

/// One block's codes of one group.
const CODES: usize = interleave8::Q8_0.codes();

/// Activation rows one tile meets with a group's codes. AVX2 has 16 vector registers: a row
/// holds an i32 sum and an f32 accumulator, and the chunk (`w`, `|w|`), the ones and two
/// temporaries take the rest.
const TILE_M: usize = 4;

/// How far ahead of the block being read each tile asks for the weights (see [`tile`]).
const PREFETCH_AHEAD: usize = 8192;

/// `y = x · wᵀ` for a packed matrix of `n` rows: `acts` are the `m` quantized activation rows,
/// `y` is `[m, n]` row-major. Splits the groups over the current rayon pool. The caller checked
/// the CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
pub(crate) fn matmul_avx2(acts: &Acts, m: usize, packed: &[u8], n: usize, y: &mut [f32]) {
    let k = acts.k;
    let nb = k / 32;
    assert!(
        acts.block == 32
            && k.is_multiple_of(32)
            && acts.q.len() >= m * k
            && acts.d.len() >= m * nb
            && packed.len() == interleave8::Q8_0.packed_len(n, k)
            && y.len() == m * n
    );
    let run_tile = |g: usize, i0: usize, c: usize, col: *mut f32, mask: u16| {
        let w = packed[g * interleave8::Q8_0.group_bytes(nb)..].as_ptr();
        // SAFETY: the caller checked the CPU has AVX2, FMA and F16C; the assert above bounds
        // every read (group g's nb blocks and scales, rows i0 .. i0 + c of the activations);
        // `groups::run` hands each tile its own in-bounds columns of `y`.
        unsafe {
            // The group's first tile (the first rows of `groups::run`'s pass) fetches ahead
            // for the rest (see PREFETCH_AHEAD).
            let w = (w, i0.is_multiple_of(groups::ROWS_PER_PASS));
            match c {
                4 => tile::<4>(acts, i0, w, nb, col, n, mask),
                3 => tile::<3>(acts, i0, w, nb, col, n, mask),
                2 => tile::<2>(acts, i0, w, nb, col, n, mask),
                _ => tile::<1>(acts, i0, w, nb, col, n, mask),
            }
        }
    };
    groups::run(m, n, k, (GROUP, TILE_M), y, &run_tile);
}

/// One group (`w`: its start) against activation rows `i0 .. i0 + C`; lane `r` of row `i`'s
/// result goes to `y[i·n + r]` for the lanes in `mask`. With `ahead`, asks for the weights
/// [`PREFETCH_AHEAD`] bytes on as it reads.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // several arrays indexed by the same row
unsafe fn tile<const C: usize>(
    acts: &Acts,
    i0: usize,
    (w, ahead): (*const u8, bool),
    nb: usize,
    y: *mut f32,
    n: usize,
    mask: u16,
) {
    use std::arch::x86_64::*;
    let k = acts.k;
    let (aq, ad) = (acts.q.as_ptr(), acts.d.as_ptr());
    let scales = w.add(nb * CODES);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        let blk = w.add(b * CODES);
        // The block 8 KiB ahead (codes, then this group's scales and the next groups): the
        // hardware prefetcher alone left a one-thread decode step at ~11 GB/s; with this,
        // 6-8 ms against 11 for the 117 MB step, and 4-row tiles 10 ms against 20 (the 110M
        // bench, min of 10, loaded machine). A prefetch never faults, so the address may lie
        // past the weights.
        if ahead {
            for l in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD + 64 * l).cast());
            }
        }
        let mut isum = [_mm256_setzero_si256(); C];
        // Chunk outer, rows inner: the chunk and its absolute value are loaded and computed
        // once for the tile's rows.
        for t in 0..8 {
            let wv = _mm256_loadu_si256(blk.add(32 * t).cast());
            let aw = _mm256_abs_epi8(wv);
            for c in 0..C {
                let a = aq.add((i0 + c) * k + 32 * b + 4 * t).cast::<i32>();
                let x = _mm256_set1_epi32(a.read_unaligned());
                let pairs = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, wv));
                isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(pairs, ones));
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(scales.add(b * SCALES).cast()));
        for c in 0..C {
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*ad.add((i0 + c) * nb + b)));
            acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum[c])));
        }
    }
    for (c, acc) in acc.iter().enumerate() {
        interleave8::store_lanes(y.add((i0 + c) * n), *acc, mask);
    }
}
