//! Q4_0 weights repacked for AVX2 so that one vector lane is one output, as
//! [`super::q8_packed_avx2`] does for Q8_0 (see there for why a lane per output).
//!
//! The codes are unsigned nibbles (0..15, the value being `code − 8`), so `vpmaddubsw` meets them
//! with the signed activation codes directly: no sign trick, pair sums at most 15·127·2 = 3810,
//! and even a whole block's eight such products summed in i16 stay below 2¹⁵ (8·3810 = 30480). A
//! block therefore costs, per activation row, eight `vpmaddubsw` and one `vpmaddwd` for 8
//! outputs, half the integer work of Q8_0's. The `−8` comes off once per block and row through
//! the activations' precomputed `−128·Σa` (`Acts::offset32`), divided by 16: exact, because
//! that sum is a multiple of 128.
//!
//! Layout: [`super::interleave8`], 16 code bytes a block, so block `b`'s codes are 4 vectors of
//! 32 bytes, vector `v` holding row `r`'s ggml bytes `qs[4v .. 4v + 4]` at bytes `4r .. 4r + 4`
//! (their low nibbles are values `4v .. 4v + 4`, their high nibbles values `16 + 4v ..
//! 16 + 4v + 4`).
//!
//! Chain per output, the portable path's exactly (so both give the same bits): `acc = 0`, then
//! per block in K order `acc = acc + (dw·dx)·(isum as f32)`, unfused, `isum` = Σ (code − 8)·a
//! exact (|isum| ≤ 32·8·127 < 2²⁴, so its conversion is exact too).

use super::interleave8::{self, Interleave8, Tile8, PREFETCH_AHEAD, SCALES};
use super::Acts;

/// One block's codes of one group.
const CODES: usize = interleave8::Q4_0.codes();

/// The Q4_0 kernel over [`interleave8`]'s layout (driven by [`interleave8::matmul_avx2`]).
pub(crate) struct Q4_0Avx2;

#[cfg(target_arch = "x86_64")]
impl Tile8 for Q4_0Avx2 {
    const LAYOUT: Interleave8 = interleave8::Q4_0;

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
        let (aq, ad, off) = (acts.q.as_ptr(), acts.d.as_ptr(), acts.offset32.as_ptr());
        let scales = w.add(nb * CODES);
        let ones = _mm256_set1_epi16(1);
        let low = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); C];
        for b in 0..nb {
            let blk = w.add(b * CODES);
            if ahead {
                for l in 0..2 {
                    _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD + 64 * l).cast());
                }
            }
            // Pair sums of the block's four vectors, both nibble halves, added in i16 (at most
            // 8·3810 = 30480 in magnitude per lane: no overflow).
            let mut pairs = [_mm256_setzero_si256(); C];
            for v in 0..4 {
                let wv = _mm256_loadu_si256(blk.add(32 * v).cast());
                let lo = _mm256_and_si256(wv, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low);
                for c in 0..C {
                    let a = aq.add((i0 + c) * k + 32 * b + 4 * v);
                    let xl = _mm256_set1_epi32(a.cast::<i32>().read_unaligned());
                    let xh = _mm256_set1_epi32(a.add(16).cast::<i32>().read_unaligned());
                    let both = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, xl),
                        _mm256_maddubs_epi16(hi, xh),
                    );
                    pairs[c] = _mm256_add_epi16(pairs[c], both);
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(scales.add(b * SCALES).cast()));
            for c in 0..C {
                // Σ code·a − 8·Σa, exactly (offset32 is −128·Σa).
                let start = _mm256_set1_epi32(*off.add((i0 + c) * nb + b) >> 4);
                let isum = _mm256_add_epi32(_mm256_madd_epi16(pairs[c], ones), start);
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*ad.add((i0 + c) * nb + b)));
                acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)));
            }
        }
        for (c, acc) in acc.iter().enumerate() {
            interleave8::store_lanes(y.add((i0 + c) * n), *acc, mask);
        }
    }
}
