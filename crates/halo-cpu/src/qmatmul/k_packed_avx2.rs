//! AVX2 kernels for Q4_K, Q5_K and Q6_K weights in [`super::k_packed`]'s 16-row layout, run as two
//! halves of 8 rows (a lane of a 256-bit vector is one output): the low 32 bytes of each of the
//! layout's 64-byte vectors hold rows 0..8 (four codes a row), the high 32 bytes rows 8..16, and
//! the per-row scales, mins and f16 factors are arrays of 16 whose halves are read the same way.
//!
//! The codes are unsigned (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63), so `vpmaddubsw` meets them with the
//! activation codes directly (pair sums at most 63·127·2 = 16002, no saturation), and the
//! `vpmaddwd` that widens the pairs to i32 multiplies by the sub-block's scale at the same time
//! (a row's scale in both i16 halves of its lane): one multiply-add pair per four codes per
//! row, and no `vpmulld` (slow on AVX2 CPUs). Q5_K is Q4_K with a fifth bit per code, ORed into
//! the nibbles from the layout's high-bit vectors as they are unpacked (once per chunk for the
//! tile). Q4_K's and Q5_K's mins and Q6_K's −32 offset meet the
//! activation sums of 16 in one more `vpmaddwd` per sub-block pair, as on AVX-512.
//!
//! Tiles of three or four activation rows run the halves one after the other (the registers
//! hold one half's sums per row); tiles of one or two rows, decode's, run both in one pass so
//! each weight line is read once as it streams in.
//!
//! Chain per output: the exact integer sums of [`super::portable::kquant_block`], then
//! [`super::portable::k_step`]'s unfused float step per super-block in K order, so the bits are
//! the portable path's (and AVX-512's). Bounds: Q4_K sub-block dots are at most
//! 32·15·127·63 < 2²², Q5_K's 32·31·127·63 < 2²³, Q6_K's 16-value dots times scales at most 16·63·127·128 < 2²⁴, and their
//! sums over a super-block and the mins' and offset's products stay well inside i32.

// Kernels index several parallel arrays by the same tile coordinates.
#![allow(clippy::needless_range_loop)]

use super::groups::{self, GROUP};
use super::k_packed::{Q4K_SB, Q5K_HIGH, Q5K_SB, Q6K_SB};
use super::Acts;
use halo_model::dtype::StoredDType;
use std::arch::x86_64::*;

/// Rows per half group (lanes of a 256-bit vector).
const HALF: usize = GROUP / 2;

/// Activation rows one tile meets with a sub-block's codes: a row holds an i32 sum and an f32
/// accumulator, and AVX2 has 16 vector registers for those, the codes and the scales.
const TILE_M: usize = 4;

/// `y = x · wᵀ` for a [`super::k_packed`] matrix of `n` rows of `dtype` (Q4_K, Q5_K or Q6_K): `acts`
/// are the `m` quantized activation rows, `y` is `[m, n]` row-major. The caller checked the CPU
/// has AVX2, FMA and F16C.
pub(crate) fn matmul_avx2(
    dtype: StoredDType,
    acts: &Acts,
    m: usize,
    packed: &[u8],
    n: usize,
    y: &mut [f32],
) {
    let (nsb, sb) = super::k_packed::operands(dtype, acts, m, packed, n, y);
    let run_tile = |g: usize, i0: usize, c: usize, col: *mut f32, mask: u16| {
        let w = packed[g * nsb * sb..].as_ptr();
        let valid = mask.count_ones() as usize;
        macro_rules! go {
            ($f:ident, $h:literal, $h0:expr, $lanes:expr) => {
                // SAFETY: the caller checked the CPU has AVX2, FMA and F16C; the assert above
                // bounds every read (group g's super-blocks, activation rows i0 .. i0 + c);
                // `groups::run` hands each tile its own in-bounds columns of `y`, of which
                // halves h0 .. h0 + H write 8 lanes each from column 8·h0 on, the last one
                // `lanes`.
                unsafe {
                    let out = col.add(HALF * $h0);
                    // The group's first tile (the first rows of `groups::run`'s pass) fetches
                    // ahead for the rest (see PREFETCH_AHEAD).
                    let ahead = i0.is_multiple_of(groups::ROWS_PER_PASS) && $h0 == 0;
                    let w = (w, ahead);
                    match c {
                        4 => $f::<4, $h>(acts, i0, w, $h0, nsb, out, n, $lanes),
                        3 => $f::<3, $h>(acts, i0, w, $h0, nsb, out, n, $lanes),
                        2 => $f::<2, $h>(acts, i0, w, $h0, nsb, out, n, $lanes),
                        _ => $f::<1, $h>(acts, i0, w, $h0, nsb, out, n, $lanes),
                    }
                }
            };
        }
        if c <= 2 && valid > HALF {
            // Few rows: both halves in one pass, so each weight line is read once while it
            // streams in (the registers hold two halves' sums for up to two rows).
            match dtype {
                StoredDType::Q4_K => go!(q4k_tile, 2, 0, valid - HALF),
                StoredDType::Q5_K => go!(q5k_tile, 2, 0, valid - HALF),
                _ => go!(q6k_tile, 2, 0, valid - HALF),
            }
        } else {
            for h in 0..2 {
                let lanes = valid.saturating_sub(HALF * h).min(HALF);
                if lanes == 0 {
                    break;
                }
                match dtype {
                    StoredDType::Q4_K => go!(q4k_tile, 1, h, lanes),
                    StoredDType::Q5_K => go!(q5k_tile, 1, h, lanes),
                    _ => go!(q6k_tile, 1, h, lanes),
                }
            }
        }
    };
    groups::run(m, n, acts.k, (GROUP, TILE_M), y, &run_tile);
}

/// How far ahead of the super-block being read the first tile on a group asks for the
/// weights, a super-block's lines per super-block (a prefetch never faults, so the address may
/// lie past the weights). Measured on the 110M step (HALO_CPU_ISA=avx2, two threads, loaded
/// machine, two alternated rounds): Q6_K 1 row 3.8-3.9 ms against 8.6-9.0 with the hardware
/// prefetcher alone, 4 rows 10-11 against 16; Q4_K 4 rows 7.2 against 8.4-10.1.
const PREFETCH_AHEAD: usize = 8192;

/// Broadcast of the four bytes (or two i16) at `p`.
#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m256i {
    _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// Eight u8 per-row values at `p` (a sub-block's scale or min) as the i16 pair `(v, v)` per
/// lane.
#[inline(always)]
unsafe fn dup8(p: *const u8) -> __m256i {
    let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
    _mm256_or_si256(v, _mm256_slli_epi32::<16>(v))
}

/// Writes the first `lanes` lanes of `v` to `out`.
#[inline(always)]
unsafe fn store(out: *mut f32, v: __m256, lanes: usize) {
    if lanes == HALF {
        _mm256_storeu_ps(out, v);
    } else {
        let mut all = [0.0f32; HALF];
        _mm256_storeu_ps(all.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(all.as_ptr(), out, lanes);
    }
}

/// Q4_K: halves `h0 .. h0 + H` of one group (`w`: its start) against activation rows
/// `i0 .. i0 + C`; lane `r` of half `h0 + j`'s result for row `i` goes to `y[i·n + 8j + r]`,
/// for every lane but in the last half, where only for `r < lanes`. With `ahead`, asks for the
/// weights [`PREFETCH_AHEAD`] bytes on as it reads.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn q4k_tile<const C: usize, const H: usize>(
    acts: &Acts,
    i0: usize,
    w: (*const u8, bool),
    h0: usize,
    nsb: usize,
    y: *mut f32,
    n: usize,
    lanes: usize,
) {
    nibble_tile::<C, H, false>(acts, i0, w, h0, nsb, y, n, lanes)
}

/// Q5_K: as [`q4k_tile`], each code's fifth bit added from the layout's high-bit vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn q5k_tile<const C: usize, const H: usize>(
    acts: &Acts,
    i0: usize,
    w: (*const u8, bool),
    h0: usize,
    nsb: usize,
    y: *mut f32,
    n: usize,
    lanes: usize,
) {
    nibble_tile::<C, H, true>(acts, i0, w, h0, nsb, y, n, lanes)
}

/// Bit `sub` of each byte of the high-bit vector `hv` as 16 (the fifth bit of a Q5_K code of
/// sub-block `sub`, whose low four bits are in the nibbles).
#[inline(always)]
unsafe fn fifth_bit(hv: __m256i, sub: usize) -> __m256i {
    let bit = _mm256_set1_epi8((1u8 << sub) as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(hv, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// Q4_K and (`HIGH`) Q5_K, which share the layout but for Q5_K's high-bit vectors: see
/// [`q4k_tile`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn nibble_tile<const C: usize, const H: usize, const HIGH: bool>(
    acts: &Acts,
    i0: usize,
    (w, ahead): (*const u8, bool),
    h0: usize,
    nsb: usize,
    y: *mut f32,
    n: usize,
    lanes: usize,
) {
    let sb = if HIGH { Q5K_SB } else { Q4K_SB };
    let k = acts.k;
    let (aq, ad, bs) = (
        acts.q.as_ptr().cast::<u8>(),
        acts.d.as_ptr(),
        acts.bsums.as_ptr().cast::<u8>(),
    );
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); H]; C];
    for s in 0..nsb {
        let blk = w.add(s * sb);
        let mut isum = [[_mm256_setzero_si256(); H]; C];
        if H == 1 {
            q4k_codes_by_sub::<C, H, HIGH>(blk, aq.add(256 * s), k, i0, h0, &mut isum);
        }
        // Two halves: quarter p, sub-blocks 2p (the low nibbles) and 2p + 1 (the high ones) of
        // the same bytes, so each chunk is loaded once (with one half, the registers this
        // takes for the second scale made three- and four-row tiles ~15% slower).
        if ahead {
            for l in (0..sb).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD + l).cast());
            }
        }
        for p in (0..4).filter(|_| H == 2) {
            let sc: [[__m256i; 2]; H] = std::array::from_fn(|j| {
                let at = |sub: usize| blk.add(64 + 16 * sub + HALF * (h0 + j));
                [dup8(at(2 * p)), dup8(at(2 * p + 1))]
            });
            // Chunk outer, rows inner: each chunk's codes are unpacked once for the tile.
            for t in 0..8 {
                for j in 0..H {
                    let at = blk.add(320 + 64 * (8 * p + t) + 32 * (h0 + j));
                    let raw = _mm256_loadu_si256(at.cast());
                    let mut lo = _mm256_and_si256(raw, low4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low4);
                    if HIGH {
                        let hv = blk.add(Q5K_HIGH + 64 * t + 32 * (h0 + j));
                        let hv = _mm256_loadu_si256(hv.cast());
                        lo = _mm256_or_si256(lo, fifth_bit(hv, 2 * p));
                        hi = _mm256_or_si256(hi, fifth_bit(hv, 2 * p + 1));
                    }
                    for c in 0..C {
                        let a = aq.add((i0 + c) * k + 256 * s + 64 * p + 4 * t);
                        let plo = _mm256_maddubs_epi16(lo, bcast4(a));
                        let phi = _mm256_maddubs_epi16(hi, bcast4(a.add(32)));
                        let both = _mm256_add_epi32(
                            _mm256_madd_epi16(plo, sc[j][0]),
                            _mm256_madd_epi16(phi, sc[j][1]),
                        );
                        isum[c][j] = _mm256_add_epi32(isum[c][j], both);
                    }
                }
            }
        }
        for j in 0..H {
            let h = h0 + j;
            // The mins against the activation sums of 16 (two per sub-block).
            let mut msum = [_mm256_setzero_si256(); C];
            for sub in 0..8 {
                let mn = dup8(blk.add(192 + 16 * sub + HALF * h));
                for c in 0..C {
                    let b2 = bs.add(2 * ((i0 + c) * (k / 16) + 16 * s + 2 * sub));
                    msum[c] = _mm256_add_epi32(msum[c], _mm256_madd_epi16(mn, bcast4(b2)));
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * h).cast()));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(32 + 16 * h).cast()));
            for c in 0..C {
                let dx = _mm256_set1_ps(*ad.add((i0 + c) * nsb + s));
                let a1 = _mm256_add_ps(
                    acc[c][j],
                    _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum[c][j])),
                );
                acc[c][j] = _mm256_sub_ps(
                    a1,
                    _mm256_mul_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(msum[c])),
                );
            }
        }
    }
    store_tile(&acc, y, n, i0, lanes);
}

/// Q4_K's code sums for one half `h` of a super-block at `blk` against rows `i0 .. i0 + C`
/// (`a`: the super-block's first activation code in row 0), one sub-block at a time, into
/// `isum[c][0]`.
#[inline(always)]
unsafe fn q4k_codes_by_sub<const C: usize, const H: usize, const HIGH: bool>(
    blk: *const u8,
    a: *const u8,
    k: usize,
    i0: usize,
    h: usize,
    isum: &mut [[__m256i; H]; C],
) {
    let low4 = _mm256_set1_epi8(0x0F);
    for sub in 0..8 {
        let (p, hi) = (sub / 2, sub % 2);
        let sc = dup8(blk.add(64 + 16 * sub + HALF * h));
        // Chunk outer, rows inner: each chunk's codes are unpacked once for the tile.
        for t in 0..8 {
            let raw = _mm256_loadu_si256(blk.add(320 + 64 * (8 * p + t) + 32 * h).cast());
            let mut q = if hi == 0 {
                _mm256_and_si256(raw, low4)
            } else {
                _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low4)
            };
            if HIGH {
                let hv = _mm256_loadu_si256(blk.add(Q5K_HIGH + 64 * t + 32 * h).cast());
                q = _mm256_or_si256(q, fifth_bit(hv, sub));
            }
            for c in 0..C {
                let pairs = _mm256_maddubs_epi16(q, bcast4(a.add((i0 + c) * k + 32 * sub + 4 * t)));
                isum[c][0] = _mm256_add_epi32(isum[c][0], _mm256_madd_epi16(pairs, sc));
            }
        }
    }
}

/// Writes a tile's accumulators (row `c`, half `j`) to `y` from row `i0` on: every lane but
/// in the last half, where the first `lanes`.
#[inline(always)]
unsafe fn store_tile<const C: usize, const H: usize>(
    acc: &[[__m256; H]; C],
    y: *mut f32,
    n: usize,
    i0: usize,
    lanes: usize,
) {
    for (c, halves) in acc.iter().enumerate() {
        for (j, v) in halves.iter().enumerate() {
            let valid = if j + 1 == H { lanes } else { HALF };
            store(y.add((i0 + c) * n + HALF * j), *v, valid);
        }
    }
}

/// The four code vectors (chunks 0..4, codes 0..63) of half `h` of the Q6_K unit at `p`.
#[inline(always)]
unsafe fn q6_unit(p: *const u8, h: usize) -> [__m256i; 4] {
    let low4 = _mm256_set1_epi8(0x0F);
    let top2 = _mm256_set1_epi8(0x30);
    let a = _mm256_loadu_si256(p.add(32 * h).cast());
    let b = _mm256_loadu_si256(p.add(64 + 32 * h).cast());
    let hb = _mm256_loadu_si256(p.add(128 + 32 * h).cast());
    // Chunk i's top bits (bits 2i, 2i + 1 of H) moved to bits 4, 5; 16-bit shifts are exact
    // here since whatever crosses a byte boundary is masked off.
    let h0 = _mm256_and_si256(_mm256_slli_epi16::<4>(hb), top2);
    let h1 = _mm256_and_si256(_mm256_slli_epi16::<2>(hb), top2);
    let h2 = _mm256_and_si256(hb, top2);
    let h3 = _mm256_and_si256(_mm256_srli_epi16::<2>(hb), top2);
    [
        _mm256_or_si256(_mm256_and_si256(a, low4), h0),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(a), low4), h1),
        _mm256_or_si256(_mm256_and_si256(b, low4), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b), low4), h3),
    ]
}

/// Q6_K: halves `h0 .. h0 + H` of one group against activation rows `i0 .. i0 + C` (as
/// [`q4k_tile`]). Codes are unsigned (0..63); the −32 offset comes off as `−32·scale·bsum`,
/// one `vpmaddwd` per two sub-blocks, the same integers as
/// [`super::portable::kquant_block`]'s `scale·(dot − 32·bsum)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn q6k_tile<const C: usize, const H: usize>(
    acts: &Acts,
    i0: usize,
    (w, ahead): (*const u8, bool),
    h0: usize,
    nsb: usize,
    y: *mut f32,
    n: usize,
    lanes: usize,
) {
    let k = acts.k;
    let (aq, ad, bs) = (
        acts.q.as_ptr().cast::<u8>(),
        acts.d.as_ptr(),
        acts.bsums.as_ptr().cast::<u8>(),
    );
    // From the i16 pairs (scale of sub-block 2j, scale of 2j + 1) per row: the first, or the
    // second, in both halves of the row's lane.
    let first = _mm256_setr_epi8(
        0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12,
        13, 12, 13,
    );
    let second = _mm256_add_epi8(first, _mm256_set1_epi8(2));
    let mut acc = [[_mm256_setzero_ps(); H]; C];
    for s in 0..nsb {
        let blk = w.add(s * Q6K_SB);
        let mut isum = [[_mm256_setzero_si256(); H]; C];
        // Sub-blocks 2u and 2u + 1 (32 values).
        for u in 0..8 {
            if ahead {
                // An eighth of the super-block's lines per step.
                for l in (0..Q6K_SB.div_ceil(8)).step_by(64) {
                    let at = PREFETCH_AHEAD + Q6K_SB.div_ceil(8) * u + l;
                    _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(at).cast());
                }
            }
            for j in 0..H {
                let h = h0 + j;
                let pair =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(32 + 32 * u + 16 * h).cast()));
                let off = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(pair));
                for (e, pick) in [first, second].into_iter().enumerate() {
                    let sc = _mm256_shuffle_epi8(pair, pick);
                    let q = q6_unit(blk.add(288 + 192 * (2 * u + e)), h);
                    for c in 0..C {
                        let a = aq.add((i0 + c) * k + 256 * s + 32 * u + 16 * e);
                        for (i, q) in q.iter().enumerate() {
                            let pairs = _mm256_maddubs_epi16(*q, bcast4(a.add(4 * i)));
                            isum[c][j] = _mm256_add_epi32(isum[c][j], _mm256_madd_epi16(pairs, sc));
                        }
                    }
                }
                for c in 0..C {
                    let b2 = bs.add(2 * ((i0 + c) * (k / 16) + 16 * s + 2 * u));
                    isum[c][j] = _mm256_add_epi32(isum[c][j], _mm256_madd_epi16(off, bcast4(b2)));
                }
            }
        }
        for j in 0..H {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * (h0 + j)).cast()));
            for c in 0..C {
                let dx = _mm256_set1_ps(*ad.add((i0 + c) * nsb + s));
                acc[c][j] = _mm256_add_ps(
                    acc[c][j],
                    _mm256_mul_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(isum[c][j])),
                );
            }
        }
    }
    store_tile(&acc, y, n, i0, lanes);
}
