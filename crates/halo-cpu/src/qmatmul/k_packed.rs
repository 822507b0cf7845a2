//! Q4_K and Q6_K weights repacked for AVX-512 VNNI, 16 rows interleaved four codes at a time as
//! in [`super::q8_packed`] (see there for why): a lane is one output, `vpdpbusd` against a
//! broadcast group of four activation codes sums a sub-block for 16 rows at once, and the
//! per-row sub-block scales and mins are vectors of 16 lanes.
//!
//! Per super-block (256 values) of a group, `SB` bytes (`Q4K_SB` = 2368 against 16 × 144 in
//! ggml's rows: the scales and mins are held one byte each; `Q6K_SB` = 3360 = 16 × 210):
//! - Q4_K: `d` ×16 (f16), `dmin` ×16 (f16), scale `[8][16]` (u8, sub-block × row), min
//!   `[8][16]` (u8), then 32 chunks of 64 bytes: chunk `8p + t`, bytes `4r .. 4r + 4` = row `r`'s
//!   ggml `qs[32p + 4t .. 32p + 4t + 4]`, whose low nibbles are values `64p + 4t + u` and high
//!   nibbles values `64p + 32 + 4t + u`.
//! - Q5_K (AVX2 only): Q4_K's layout for `d`, `dmin`, the scales, the mins and the low four bits
//!   of every code (its `qs` are Q4_K's), then 8 vectors of 64 bytes holding the fifth bits:
//!   vector `t`, bytes `4r .. 4r + 4` = row `r`'s ggml `qh[4t .. 4t + 4]`, whose bit `2p` is the
//!   top bit of the low-nibble value of chunk `8p + t` and bit `2p + 1` that of its high-nibble
//!   value (`Q5K_SB` = 2880 = 16 × 180 against 16 × 176 in ggml's rows).
//! - Q6_K: `d` ×16 (f16), scales `[8][16][2]` (i8: sub-blocks `2h`, `2h + 1` of row `r` side by
//!   side, as `vpdpwssd` wants them), then one 192-byte unit per sub-block `s` (values
//!   `16s .. 16s + 16`, four-value chunks `i` = 0..4): vector A holds chunk 0 in its low nibbles
//!   and chunk 1 in its high ones, vector B chunks 2 and 3, vector H the codes' top two bits,
//!   chunk `i` at bits `2i, 2i + 1`; row `r`'s four values of a chunk at bytes `4r .. 4r + 4`.
//!   A sub-block is thus three consecutive vectors, read once, in order.
//!
//! Chain per output: the integer sums of [`super::portable::kquant_block`] (exact, so the lane
//! order does not matter) and then [`super::portable::k_step`]'s unfused float step per
//! super-block in K order, so the bits are the portable path's.
//!
//! AVX2 runs this same layout ([`super::k_packed_avx2`]), a group as two halves of 8 rows: the
//! low 32 bytes of every 64-byte row vector are rows 0..8, the high 32 bytes rows 8..16.

// Kernels index several parallel arrays by the same tile coordinates.
#![allow(clippy::needless_range_loop)]

use super::groups::{self, GROUP};
use super::{kscales, Acts};
use crate::hugepages::Aligned;
use halo_model::dtype::StoredDType;

pub(crate) const Q4K_SB: usize = 32 + 32 + 128 + 128 + 2048;
pub(crate) const Q6K_SB: usize = 32 + 256 + 16 * 192;
pub(crate) const Q5K_SB: usize = Q4K_SB + 512;

/// Where Q5_K's fifth bits start in a group's super-block.
pub(crate) const Q5K_HIGH: usize = Q4K_SB;

/// Activation rows one tile meets with a sub-block's codes in registers (the code unpacking,
/// Q6_K's especially, is shared by all of them).
const TILE_M: usize = 8;

/// Whether `dtype` has a packed form that the AVX-512 kernels run.
pub(crate) fn packs(dtype: StoredDType) -> bool {
    matches!(dtype, StoredDType::Q4_K | StoredDType::Q6_K)
}

/// Whether `dtype` has a packed form that the AVX2 kernels ([`super::k_packed_avx2`]) run.
pub(crate) fn packs_avx2(dtype: StoredDType) -> bool {
    packs(dtype) || dtype == StoredDType::Q5_K
}

pub(crate) fn sb_bytes(dtype: StoredDType) -> usize {
    match dtype {
        StoredDType::Q4_K => Q4K_SB,
        StoredDType::Q5_K => Q5K_SB,
        StoredDType::Q6_K => Q6K_SB,
        other => unreachable!("{other} is not packed here"),
    }
}

/// Bytes of `rows × cols` values of `dtype` in this layout.
pub(crate) fn packed_len(dtype: StoredDType, rows: usize, cols: usize) -> usize {
    rows.div_ceil(GROUP) * (cols / 256) * sb_bytes(dtype)
}

/// Q6_K code `e` (0..256) of a ggml super-block.
fn q6_code(b: &[u8], e: usize) -> u8 {
    let (n, t, l) = (e / 128, (e % 128) / 32, e % 32);
    let byte = b[64 * n + l + 32 * (t & 1)];
    let nib = if t < 2 { byte & 0xF } else { byte >> 4 };
    nib | (((b[128 + 32 * n + l] >> (2 * t)) & 3) << 4)
}

/// Where value `e` (0..256) of row `r` of a Q6_K super-block lives in this layout: (byte of its
/// low four bits, their shift, byte of its top two bits, their shift).
fn q6_place(e: usize, r: usize) -> (usize, usize, usize, usize) {
    // Sub-block `s` (16 values) is one 192-byte unit; value `e` is in its chunk `i` (0..4).
    let (s, i, u) = (e / 16, (e % 16) / 4, e % 4);
    let unit = 288 + 192 * s;
    (
        unit + 64 * (i / 2) + 4 * r + u,
        4 * (i % 2),
        unit + 128 + 4 * r + u,
        2 * i,
    )
}

/// Repacks `rows` rows of `cols` values of `dtype` (ggml's layout). Padding rows are all zero
/// (scale 0, so they add nothing; their outputs are never written).
pub(crate) fn pack(dtype: StoredDType, rows: usize, cols: usize, plain: &[u8]) -> Aligned {
    let (nsb, bb, sb) = (cols / 256, dtype.block_bytes(), sb_bytes(dtype));
    debug_assert_eq!(plain.len(), rows * nsb * bb);
    let mut out = Aligned::zeroed(packed_len(dtype, rows, cols));
    for (gb, dst) in out.chunks_exact_mut(sb).enumerate() {
        let (g, s) = (gb / nsb, gb % nsb);
        for r in 0..GROUP.min(rows - g * GROUP) {
            let b = &plain[((g * GROUP + r) * nsb + s) * bb..][..bb];
            if dtype != StoredDType::Q6_K {
                dst[2 * r..2 * r + 2].copy_from_slice(&b[0..2]);
                dst[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&b[2..4]);
                let (sc, mn) = kscales(&b[4..16]);
                for j in 0..8 {
                    dst[64 + 16 * j + r] = sc[j];
                    dst[192 + 16 * j + r] = mn[j];
                }
                // Q5_K: qh (32 bytes) sits between the scales and qs.
                let qs = if dtype == StoredDType::Q5_K { 48 } else { 16 };
                for c in 0..32 {
                    dst[320 + 64 * c + 4 * r..][..4].copy_from_slice(&b[qs + 4 * c..][..4]);
                }
                if dtype == StoredDType::Q5_K {
                    for t in 0..8 {
                        dst[Q5K_HIGH + 64 * t + 4 * r..][..4]
                            .copy_from_slice(&b[16 + 4 * t..][..4]);
                    }
                }
            } else {
                dst[2 * r..2 * r + 2].copy_from_slice(&b[208..210]);
                for h in 0..8 {
                    dst[32 + 32 * h + 2 * r] = b[192 + 2 * h];
                    dst[32 + 32 * h + 2 * r + 1] = b[192 + 2 * h + 1];
                }
                for e in 0..256 {
                    let (lo, lo_shift, hi, hi_shift) = q6_place(e, r);
                    let q = q6_code(b, e);
                    dst[lo] |= (q & 0xF) << lo_shift;
                    dst[hi] |= (q >> 4) << hi_shift;
                }
            }
        }
    }
    out
}

/// Row `row` of a packed matrix back in ggml's layout.
pub(crate) fn unpack_row(dtype: StoredDType, packed: &[u8], cols: usize, row: usize) -> Vec<u8> {
    let (nsb, bb, sb) = (cols / 256, dtype.block_bytes(), sb_bytes(dtype));
    let (g, r) = (row / GROUP, row % GROUP);
    let mut out = vec![0u8; nsb * bb];
    for (s, b) in out.chunks_exact_mut(bb).enumerate() {
        let src = &packed[(g * nsb + s) * sb..][..sb];
        if dtype != StoredDType::Q6_K {
            b[0..2].copy_from_slice(&src[2 * r..2 * r + 2]);
            b[2..4].copy_from_slice(&src[32 + 2 * r..32 + 2 * r + 2]);
            let sc: [u8; 8] = std::array::from_fn(|j| src[64 + 16 * j + r]);
            let mn: [u8; 8] = std::array::from_fn(|j| src[192 + 16 * j + r]);
            // The inverse of `kscales` (every one of the 96 bits is a scale or min bit).
            for j in 0..4 {
                b[4 + j] = sc[j] | (sc[j + 4] >> 4) << 6;
                b[8 + j] = mn[j] | (mn[j + 4] >> 4) << 6;
                b[12 + j] = (sc[j + 4] & 0xF) | (mn[j + 4] & 0xF) << 4;
            }
            let qs = if dtype == StoredDType::Q5_K { 48 } else { 16 };
            for c in 0..32 {
                b[qs + 4 * c..][..4].copy_from_slice(&src[320 + 64 * c + 4 * r..][..4]);
            }
            if dtype == StoredDType::Q5_K {
                for t in 0..8 {
                    b[16 + 4 * t..][..4].copy_from_slice(&src[Q5K_HIGH + 64 * t + 4 * r..][..4]);
                }
            }
        } else {
            b[208..210].copy_from_slice(&src[2 * r..2 * r + 2]);
            for h in 0..8 {
                b[192 + 2 * h] = src[32 + 32 * h + 2 * r];
                b[192 + 2 * h + 1] = src[32 + 32 * h + 2 * r + 1];
            }
            for e in 0..256 {
                let (lo, lo_shift, hi, hi_shift) = q6_place(e, r);
                let lo = (src[lo] >> lo_shift) & 0xF;
                let hi = (src[hi] >> hi_shift) & 3;
                let (n, t, l) = (e / 128, (e % 128) / 32, e % 32);
                b[64 * n + l + 32 * (t & 1)] |= lo << (4 * (t / 2));
                b[128 + 32 * n + l] |= hi << (2 * t);
            }
        }
    }
    out
}

/// Every row of a packed matrix back in ggml's layout.
pub(crate) fn unpack(dtype: StoredDType, packed: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    (0..rows)
        .flat_map(|r| unpack_row(dtype, packed, cols, r))
        .collect()
}

/// Checks that a packed product's operands fit each other (every tile reads within them) and
/// gives the super-blocks per row and the bytes of a group's super-block.
#[cfg(target_arch = "x86_64")]
pub(crate) fn operands(
    dtype: StoredDType,
    acts: &Acts,
    m: usize,
    packed: &[u8],
    n: usize,
    y: &[f32],
) -> (usize, usize) {
    let k = acts.k;
    let (nsb, sb) = (k / 256, sb_bytes(dtype));
    assert!(
        acts.block == 256
            && k.is_multiple_of(256)
            && acts.q.len() >= m * k
            && acts.d.len() >= m * nsb
            && acts.bsums.len() >= m * (k / 16)
            && packed.len() == n.div_ceil(GROUP) * nsb * sb
            && y.len() == m * n
    );
    (nsb, sb)
}

/// `y = x · wᵀ` for a packed matrix of `n` rows of `dtype`: `acts` are the `m` quantized
/// activation rows, `y` is `[m, n]` row-major.
#[cfg(target_arch = "x86_64")]
pub(crate) fn matmul_avx512(
    dtype: StoredDType,
    acts: &Acts,
    m: usize,
    packed: &[u8],
    n: usize,
    y: &mut [f32],
) {
    let (nsb, sb) = operands(dtype, acts, m, packed, n, y);
    let q4 = dtype == StoredDType::Q4_K;
    let run_tile = |g: usize, i0: usize, c: usize, col: *mut f32, mask: u16| {
        let w = packed[g * nsb * sb..].as_ptr();
        macro_rules! go {
            ($f:ident) => {
                match c {
                    8 => $f::<8>(acts, i0, w, nsb, col, n, mask),
                    7 => $f::<7>(acts, i0, w, nsb, col, n, mask),
                    6 => $f::<6>(acts, i0, w, nsb, col, n, mask),
                    5 => $f::<5>(acts, i0, w, nsb, col, n, mask),
                    4 => $f::<4>(acts, i0, w, nsb, col, n, mask),
                    3 => $f::<3>(acts, i0, w, nsb, col, n, mask),
                    2 => $f::<2>(acts, i0, w, nsb, col, n, mask),
                    _ => $f::<1>(acts, i0, w, nsb, col, n, mask),
                }
            };
        }
        // SAFETY: the caller checked the CPU has AVX-512 F/BW/VL/VNNI and F16C; the assert
        // above bounds every read (group g's super-blocks, activation rows i0 .. i0 + c);
        // `groups::run` hands each tile its own in-bounds columns of `y`.
        unsafe {
            if q4 {
                go!(q4k_tile)
            } else {
                go!(q6k_tile)
            }
        }
    };
    groups::run(m, n, acts.k, (GROUP, TILE_M), y, &run_tile);
}

/// Broadcast of the four bytes (or two i16) at `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bcast4(p: *const u8) -> std::arch::x86_64::__m512i {
    std::arch::x86_64::_mm512_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// Bytes ahead of the super-block being read that multi-row tiles prefetch, a few lines at each
/// step of the super-block (the address may lie past the weights: a prefetch never faults).
/// Measured on the 110M step, two threads, min of 15: Q6_K at 8 rows 7.8-9.1 ms against
/// 10.7-15.0 without, at 32 rows 29-31 against 35-36; Q4_K at 8 rows 7.8-8.6 against 9.5-9.9.
const PREFETCH_AHEAD: usize = 1024;

/// `(a & c) | b` for `_mm512_ternarylogic_epi32(a, b, c, ·)`.
const A_AND_C_OR_B: i32 = 0xEC;

/// Sixteen u8 per-row values (a sub-block's scale or min) as the i16 pair `(v, v)` per lane.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dup16(p: *const u8) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
    _mm512_or_si512(v, _mm512_slli_epi32::<16>(v))
}

/// Q4_K: one group against activation rows `i0 .. i0 + C`.
///
/// Each sub-block's dot is scaled with `vpmulld`: a variant that split it into two 16-value
/// halves (|·| < 2¹⁵) scaled by one `vpdpwssd`, with the min term per row after the codes,
/// measured 5-6% slower here (Zen 4, both interleaved in one process, M = 1, 8 and 64).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4k_tile<const C: usize>(
    acts: &Acts,
    i0: usize,
    w: *const u8,
    nsb: usize,
    y: *mut f32,
    n: usize,
    mask: u16,
) {
    use std::arch::x86_64::*;
    let k = acts.k;
    let (aq, ad, bs) = (
        acts.q.as_ptr().cast::<u8>(),
        acts.d.as_ptr(),
        acts.bsums.as_ptr().cast::<u8>(),
    );
    let low4 = _mm512_set1_epi8(0x0F);
    // The float accumulators live in `y` between super-blocks (a masked load and store per row
    // and super-block), and the mins' sums run after the code loop: kept in registers beside
    // the code loop's, they made the compiler spill its vectors to the stack. With both moved
    // out it spills less (not nothing) and the qmatmul bench's 32-row q4_k step is ~6% faster.
    for c in 0..C {
        _mm512_mask_storeu_ps(y.add((i0 + c) * n), mask, _mm512_setzero_ps());
    }
    for s in 0..nsb {
        let blk = w.add(s * Q4K_SB);
        let mut isum = [_mm512_setzero_si512(); C];
        for p in 0..4 {
            if C >= 2 {
                // As in `q6k_tile`: ten lines per quarter super-block, 1 KiB ahead.
                for l in 0..10 {
                    _mm_prefetch::<_MM_HINT_T0>(
                        blk.wrapping_add(PREFETCH_AHEAD + 640 * p + 64 * l).cast(),
                    );
                }
            }
            for half in 0..2 {
                let sub = 2 * p + half;
                let mut q = [_mm512_setzero_si512(); 8];
                for (t, q) in q.iter_mut().enumerate() {
                    let raw = _mm512_loadu_si512(blk.add(320 + 64 * (8 * p + t)).cast());
                    *q = if half == 0 {
                        _mm512_and_si512(raw, low4)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low4)
                    };
                }
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.add(64 + 16 * sub).cast()));
                for c in 0..C {
                    let a = aq.add((i0 + c) * k + 256 * s + 64 * p + 32 * half);
                    let mut d0 = _mm512_setzero_si512();
                    let mut d1 = _mm512_setzero_si512();
                    for t in (0..8).step_by(2) {
                        d0 = _mm512_dpbusd_epi32(d0, q[t], bcast4(a.add(4 * t)));
                        d1 = _mm512_dpbusd_epi32(d1, q[t + 1], bcast4(a.add(4 * t + 4)));
                    }
                    let dot = _mm512_add_epi32(d0, d1);
                    isum[c] = _mm512_add_epi32(isum[c], _mm512_mullo_epi32(dot, sc));
                }
            }
        }
        // The mins' sums (integers, exact in any order), after the codes' (see above).
        let mpair: [__m512i; 8] = std::array::from_fn(|sub| dup16(blk.add(192 + 16 * sub)));
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk.cast()));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32).cast()));
        for c in 0..C {
            let row = i0 + c;
            let mut msum = _mm512_setzero_si512();
            for (sub, mp) in mpair.iter().enumerate() {
                let b2 = bs.add(2 * (row * (k / 16) + 16 * s + 2 * sub));
                msum = _mm512_dpwssd_epi32(msum, *mp, bcast4(b2));
            }
            let dx = _mm512_set1_ps(*ad.add(row * nsb + s));
            let out = y.add(row * n);
            let a1 = _mm512_add_ps(
                _mm512_maskz_loadu_ps(mask, out),
                _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[c])),
            );
            let acc = _mm512_sub_ps(
                a1,
                _mm512_mul_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(msum)),
            );
            _mm512_mask_storeu_ps(out, mask, acc);
        }
    }
}

/// The four code vectors (chunks 0..4, codes 0..63) of the Q6_K unit at `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn q6_unit(p: *const u8) -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::*;
    let low4 = _mm512_set1_epi8(0x0F);
    let top2 = _mm512_set1_epi8(0x30);
    let a = _mm512_loadu_si512(p.cast());
    let b = _mm512_loadu_si512(p.add(64).cast());
    let h = _mm512_loadu_si512(p.add(128).cast());
    // Chunk i's top bits (bits 2i, 2i + 1 of H) moved to bits 4, 5; 16-bit shifts are exact
    // here since whatever crosses a byte boundary is masked off.
    let h0 = _mm512_and_si512(_mm512_slli_epi16::<4>(h), top2);
    let h1 = _mm512_and_si512(_mm512_slli_epi16::<2>(h), top2);
    let h2 = _mm512_and_si512(h, top2);
    let h3 = _mm512_and_si512(_mm512_srli_epi16::<2>(h), top2);
    [
        _mm512_ternarylogic_epi32::<A_AND_C_OR_B>(a, h0, low4),
        _mm512_ternarylogic_epi32::<A_AND_C_OR_B>(_mm512_srli_epi16::<4>(a), h1, low4),
        _mm512_ternarylogic_epi32::<A_AND_C_OR_B>(b, h2, low4),
        _mm512_ternarylogic_epi32::<A_AND_C_OR_B>(_mm512_srli_epi16::<4>(b), h3, low4),
    ]
}

/// Q6_K: one group against activation rows `i0 .. i0 + C`. Codes are unsigned (0..63); the
/// −32 offset comes off as `−32·scale·bsum`, one `vpdpwssd` per two sub-blocks against the
/// scale pair times −32 (|·| ≤ 4096 fits i16), the same integers as
/// [`super::portable::kquant_block`]'s `scale·(dot − 32·bsum)`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6k_tile<const C: usize>(
    acts: &Acts,
    i0: usize,
    w: *const u8,
    nsb: usize,
    y: *mut f32,
    n: usize,
    mask: u16,
) {
    use std::arch::x86_64::*;
    let k = acts.k;
    let (aq, ad, bs) = (
        acts.q.as_ptr().cast::<u8>(),
        acts.d.as_ptr(),
        acts.bsums.as_ptr().cast::<u8>(),
    );
    let mut acc = [_mm512_setzero_ps(); C];
    for s in 0..nsb {
        let blk = w.add(s * Q6K_SB);
        let mut isum = [_mm512_setzero_si512(); C];
        // Sub-blocks 2h and 2h + 1 (32 values).
        for h in 0..8 {
            let pair = _mm512_cvtepi8_epi16(_mm256_loadu_si256(blk.add(32 + 32 * h).cast()));
            let sc0 = _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(pair));
            let sc1 = _mm512_srai_epi32::<16>(pair);
            let off = _mm512_sub_epi16(_mm512_setzero_si512(), _mm512_slli_epi16::<5>(pair));
            if C >= 2 {
                // Several rows make this tile compute-bound enough that the hardware
                // prefetcher falls behind; one row streams best without help (measured).
                for l in 0..7 {
                    _mm_prefetch::<_MM_HINT_T0>(
                        blk.wrapping_add(PREFETCH_AHEAD + 448 * h + 64 * l).cast(),
                    );
                }
            }
            let q0 = q6_unit(blk.add(288 + 192 * (2 * h)));
            let q1 = q6_unit(blk.add(288 + 192 * (2 * h + 1)));
            for c in 0..C {
                let row = i0 + c;
                let a = aq.add(row * k + 256 * s + 32 * h);
                let mut d0 = _mm512_setzero_si512();
                let mut d1 = _mm512_setzero_si512();
                for t in 0..4 {
                    d0 = _mm512_dpbusd_epi32(d0, q0[t], bcast4(a.add(4 * t)));
                    d1 = _mm512_dpbusd_epi32(d1, q1[t], bcast4(a.add(16 + 4 * t)));
                }
                let b2 = bs.add(2 * (row * (k / 16) + 16 * s + 2 * h));
                let scaled =
                    _mm512_add_epi32(_mm512_mullo_epi32(d0, sc0), _mm512_mullo_epi32(d1, sc1));
                isum[c] = _mm512_dpwssd_epi32(_mm512_add_epi32(isum[c], scaled), off, bcast4(b2));
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk.cast()));
        for c in 0..C {
            let dx = _mm512_set1_ps(*ad.add((i0 + c) * nsb + s));
            acc[c] = _mm512_add_ps(
                acc[c],
                _mm512_mul_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(isum[c])),
            );
        }
    }
    for (c, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(y.add((i0 + c) * n), mask, *acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_rows(dtype: StoredDType, rows: usize, cols: usize) -> Vec<u8> {
        (0..rows * dtype.row_bytes(cols).unwrap())
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
            .collect()
    }

    #[test]
    fn pack_then_unpack_gives_the_rows_back() {
        for dtype in [StoredDType::Q4_K, StoredDType::Q5_K, StoredDType::Q6_K] {
            for (rows, cols) in [(1, 256), (16, 512), (17, 256), (37, 768)] {
                let plain = plain_rows(dtype, rows, cols);
                let packed = pack(dtype, rows, cols, &plain);
                assert_eq!(packed.len(), packed_len(dtype, rows, cols));
                assert_eq!(
                    unpack(dtype, &packed, rows, cols),
                    plain,
                    "{dtype} {rows}x{cols}"
                );
            }
        }
    }
}
