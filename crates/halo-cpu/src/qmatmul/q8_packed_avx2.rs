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

use super::interleave8::{self, Interleave8, Tile8, PREFETCH_AHEAD, SCALES};
use super::Acts;

/// One block's codes of one group.
const CODES: usize = interleave8::Q8_0.codes();

/// The Q8_0 kernel over [`interleave8`]'s layout (driven by [`interleave8::matmul_avx2`]).
pub(crate) struct Q8_0Avx2;

#[cfg(target_arch = "x86_64")]
impl Tile8 for Q8_0Avx2 {
    const LAYOUT: Interleave8 = interleave8::Q8_0;

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
            // The block 8 KiB ahead: codes, then this group's scales and the next groups.
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
}
