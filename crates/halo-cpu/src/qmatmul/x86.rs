//! The x86-64 integer kernels.
//!
//! AVX2: Q4_0/Q8_0 blocks by the sign trick (`vpmaddubsw(|w|, sign(a, w))`, then `vpmaddwd`
//! by ones), 8 lanes of partial sums per block fused into an f32 accumulator vector with the
//! block scale; K-quants unpacked 32 values at a time into unsigned codes, `vpmaddubsw` against
//! the activation codes and `vpmaddwd` by the per-16 scales, the integer sum reduced per
//! super-block and handed to the shared scalar float step.
//!
//! Value ranges (no saturation anywhere): activation codes are in [-127, 127]; Q8_0 |w| ≤ 128
//! gives pair sums ≤ 32512; K-quant codes ≤ 63 give pair sums ≤ 16002, times scales ≤ 128 in
//! `vpmaddwd`, at most ~33M per super-block.

// Kernels index several parallel arrays by the same tile coordinates.
#![allow(clippy::needless_range_loop)]

use super::portable::k_step;
use super::{Acts, Sums, MR};
use halo_model::dtype::StoredDType;
use std::arch::x86_64::*;

/// `mn!(mt, nt, f, [extra const args], (args))` calls `f::<mt, nt, extra..>(args)`.
macro_rules! mn {
    ($mt:expr, $nt:expr, $f:ident, [$($c:expr),*], $args:tt) => {
        match ($mt, $nt) {
            (1, 1) => mn!(@call $f, 1, 1, [$($c),*], $args),
            (2, 1) => mn!(@call $f, 2, 1, [$($c),*], $args),
            (3, 1) => mn!(@call $f, 3, 1, [$($c),*], $args),
            (4, 1) => mn!(@call $f, 4, 1, [$($c),*], $args),
            (1, 2) => mn!(@call $f, 1, 2, [$($c),*], $args),
            (2, 2) => mn!(@call $f, 2, 2, [$($c),*], $args),
            (3, 2) => mn!(@call $f, 3, 2, [$($c),*], $args),
            (4, 2) => mn!(@call $f, 4, 2, [$($c),*], $args),
            (1, 3) => mn!(@call $f, 1, 3, [$($c),*], $args),
            (2, 3) => mn!(@call $f, 2, 3, [$($c),*], $args),
            (3, 3) => mn!(@call $f, 3, 3, [$($c),*], $args),
            (4, 3) => mn!(@call $f, 4, 3, [$($c),*], $args),
            (1, 4) => mn!(@call $f, 1, 4, [$($c),*], $args),
            (2, 4) => mn!(@call $f, 2, 4, [$($c),*], $args),
            (3, 4) => mn!(@call $f, 3, 4, [$($c),*], $args),
            (4, 4) => mn!(@call $f, 4, 4, [$($c),*], $args),
            _ => unreachable!("tile dimensions are capped at 4"),
        }
    };
    (@call $f:ident, $m:literal, $n:literal, [$($c:expr),*], ($($a:expr),*)) => {
        $f::<$m, $n $(, { $c })*>($($a),*)
    };
}

const Q4K: u8 = 0;
const Q5K: u8 = 1;
const Q6K: u8 = 2;

pub(crate) fn tile_avx2(
    dtype: StoredDType,
    acts: &Acts,
    m0: usize,
    mt: usize,
    w: &[u8],
    nt: usize,
    sums: &mut Sums,
) {
    check(acts, m0, mt, w, nt, dtype);
    // SAFETY: the caller (`qmatmul_t_with`) checked the CPU has AVX2, FMA and F16C; `check`
    // verified every pointer the kernels form stays inside `acts` and `w`.
    unsafe {
        match dtype {
            StoredDType::Q8_0 => mn!(mt, nt, q8_avx2, [false], (acts, m0, w, sums)),
            StoredDType::Q4_0 => mn!(mt, nt, q8_avx2, [true], (acts, m0, w, sums)),
            StoredDType::Q4_K => mn!(mt, nt, k_avx2, [Q4K], (acts, m0, w, sums)),
            StoredDType::Q5_K => mn!(mt, nt, k_avx2, [Q5K], (acts, m0, w, sums)),
            StoredDType::Q6_K => mn!(mt, nt, k_avx2, [Q6K], (acts, m0, w, sums)),
            other => unreachable!("no integer kernel for {other}"),
        }
    }
}

pub(crate) fn tile_avx512(
    dtype: StoredDType,
    acts: &Acts,
    m0: usize,
    mt: usize,
    w: &[u8],
    nt: usize,
    sums: &mut Sums,
) {
    check(acts, m0, mt, w, nt, dtype);
    // SAFETY: the caller checked the CPU has AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C;
    // `check` verified the bounds.
    unsafe {
        match dtype {
            StoredDType::Q8_0 => mn!(mt, nt, q8_avx512, [false], (acts, m0, w, sums)),
            StoredDType::Q4_0 => mn!(mt, nt, q8_avx512, [true], (acts, m0, w, sums)),
            StoredDType::Q4_K => mn!(
                mt,
                nt,
                k_avx512,
                [Q4K, false],
                (acts, m0, w, std::ptr::null(), sums)
            ),
            StoredDType::Q5_K => mn!(
                mt,
                nt,
                k_avx512,
                [Q5K, false],
                (acts, m0, w, std::ptr::null(), sums)
            ),
            StoredDType::Q6_K => mn!(
                mt,
                nt,
                k_avx512,
                [Q6K, false],
                (acts, m0, w, std::ptr::null(), sums)
            ),
            other => unreachable!("no integer kernel for {other}"),
        }
    }
}

/// The bounds every kernel relies on.
fn check(acts: &Acts, m0: usize, mt: usize, w: &[u8], nt: usize, dtype: StoredDType) {
    let row_bytes = dtype.row_bytes(acts.k).expect("whole blocks");
    assert!(
        (1..=4).contains(&mt)
            && (1..=4).contains(&nt)
            && w.len() == nt * row_bytes
            && (m0 + mt) * acts.k <= acts.q.len()
            && acts.block == if dtype.block_elems() == 256 { 256 } else { 32 }
            && acts.k.is_multiple_of(acts.block)
    );
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn half(p: *const u8) -> f32 {
    let h = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

#[inline]
#[target_feature(enable = "avx")]
fn hsum256(v: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps::<0b01>(p, p)))
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Q8_0 (or Q4_0 with `Q4`) weights: per block, 8 lanes of exact partial sums, scaled by
/// `dw·dx` into one f32 vector per output, then [`hsum256`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_avx2<const M: usize, const N: usize, const Q4: bool>(
    acts: &Acts,
    m0: usize,
    w: &[u8],
    sums: &mut Sums,
) {
    let k = acts.k;
    let nb = k / 32;
    let bb = if Q4 { 18 } else { 34 };
    let rb = nb * bb;
    let (wp, ap, dp) = (w.as_ptr(), acts.q.as_ptr(), acts.d.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let low4 = _mm256_set1_epi8(0x0F);
    let eight = _mm256_set1_epi8(8);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); N];
        let mut aw = [_mm256_setzero_si256(); N];
        let mut dw = [0.0f32; N];
        for j in 0..N {
            let p = wp.add(j * rb + b * bb);
            dw[j] = half(p);
            wv[j] = if Q4 {
                let q = _mm_loadu_si128(p.add(2).cast());
                let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
                _mm256_sub_epi8(_mm256_and_si256(both, low4), eight)
            } else {
                _mm256_loadu_si256(p.add(2).cast())
            };
            aw[j] = _mm256_abs_epi8(wv[j]);
        }
        for i in 0..M {
            let a = _mm256_loadu_si256(ap.add((m0 + i) * k + b * 32).cast());
            let dx = *dp.add((m0 + i) * nb + b);
            for j in 0..N {
                let p16 = _mm256_maddubs_epi16(aw[j], _mm256_sign_epi8(a, wv[j]));
                let p32 = _mm256_madd_epi16(p16, ones);
                acc[i][j] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw[j] * dx),
                    _mm256_cvtepi32_ps(p32),
                    acc[i][j],
                );
            }
        }
    }
    for i in 0..M {
        for j in 0..N {
            sums[i][j] = hsum256(acc[i][j]);
        }
    }
}

/// Per-16 scales and the weights of the activation sums (mins for Q4_K/Q5_K, scales for Q6_K)
/// of one super-block, as 16 i16 each, with `d` and `dmin`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn k_header<const T: u8>(p: *const u8) -> ([i16; 16], [i16; 16], f32, f32) {
    let mut sc = [0i16; 16];
    let mut mn = [0i16; 16];
    if T == Q6K {
        for t in 0..16 {
            sc[t] = *p.add(192 + t) as i8 as i16;
        }
        (sc, sc, half(p.add(208)), 0.0)
    } else {
        let (s8, m8) = super::kscales(std::slice::from_raw_parts(p.add(4), 12));
        for t in 0..16 {
            sc[t] = s8[t / 2] as i16;
            mn[t] = m8[t / 2] as i16;
        }
        (sc, mn, half(p), half(p.add(2)))
    }
}

/// The 32 unsigned codes of chunk `c` (values `32c..32c + 32`) of a K-quant super-block.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k_chunk<const T: u8>(p: *const u8, c: usize) -> __m256i {
    let low4 = _mm256_set1_epi8(0x0F);
    match T {
        Q4K | Q5K => {
            let qs = if T == Q4K { p.add(16) } else { p.add(48) };
            let raw = _mm256_loadu_si256(qs.add(32 * (c / 2)).cast());
            let shifted = _mm256_srl_epi16(raw, _mm_cvtsi32_si128(4 * (c as i32 & 1)));
            let q = _mm256_and_si256(shifted, low4);
            if T == Q4K {
                q
            } else {
                let qh = _mm256_loadu_si256(p.add(16).cast());
                let h = _mm256_and_si256(
                    _mm256_srl_epi16(qh, _mm_cvtsi32_si128(c as i32)),
                    _mm256_set1_epi8(1),
                );
                _mm256_or_si256(q, _mm256_slli_epi16::<4>(h))
            }
        }
        _ => {
            let (n, t) = (c / 4, c % 4);
            let raw = _mm256_loadu_si256(p.add(64 * n + 32 * (t & 1)).cast());
            let shifted = _mm256_srl_epi16(raw, _mm_cvtsi32_si128(4 * (t as i32 / 2)));
            let q = _mm256_and_si256(shifted, low4);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * n).cast());
            let h = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * t as i32)),
                _mm256_set1_epi8(3),
            );
            _mm256_or_si256(q, _mm256_slli_epi16::<4>(h))
        }
    }
}

/// K-quant weights: exact integer sums per super-block, then [`k_step`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_avx2<const M: usize, const N: usize, const T: u8>(
    acts: &Acts,
    m0: usize,
    w: &[u8],
    sums: &mut Sums,
) {
    let k = acts.k;
    let nsb = k / 256;
    let bb = [144usize, 176, 210][T as usize];
    let rb = nsb * bb;
    let (wp, ap, dp, bp) = (
        w.as_ptr(),
        acts.q.as_ptr(),
        acts.d.as_ptr(),
        acts.bsums.as_ptr(),
    );
    // Broadcast i16 lane 2c to the low half and 2c+1 to the high half.
    let pick = _mm256_setr_epi8(
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3,
    );
    let mut acc = [[0.0f32; N]; M];
    for sb in 0..nsb {
        let mut sc = [_mm256_setzero_si256(); N];
        let mut mn = [_mm256_setzero_si256(); N];
        let mut d = [0.0f32; N];
        let mut dmin = [0.0f32; N];
        let mut wb = [wp; N];
        for j in 0..N {
            wb[j] = wp.add(j * rb + sb * bb);
            let (s, m, dd, dm) = k_header::<T>(wb[j]);
            sc[j] = _mm256_loadu_si256(s.as_ptr().cast());
            mn[j] = _mm256_loadu_si256(m.as_ptr().cast());
            d[j] = dd;
            dmin[j] = dm;
        }
        let mut isum = [[_mm256_setzero_si256(); N]; M];
        for c in 0..8 {
            let mut q = [_mm256_setzero_si256(); N];
            let mut s = [_mm256_setzero_si256(); N];
            for j in 0..N {
                q[j] = k_chunk::<T>(wb[j], c);
                let pair = _mm256_permutevar8x32_epi32(sc[j], _mm256_set1_epi32(c as i32));
                s[j] = _mm256_shuffle_epi8(pair, pick);
            }
            for i in 0..M {
                let a = _mm256_loadu_si256(ap.add((m0 + i) * k + sb * 256 + 32 * c).cast());
                for j in 0..N {
                    let p16 = _mm256_maddubs_epi16(q[j], a);
                    isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_madd_epi16(p16, s[j]));
                }
            }
        }
        for i in 0..M {
            let row = m0 + i;
            let bs = _mm256_loadu_si256(bp.add(row * (k / 16) + sb * 16).cast());
            let dx = *dp.add(row * nsb + sb);
            for j in 0..N {
                let is = hsum_i32(isum[i][j]);
                let corr = hsum_i32(_mm256_madd_epi16(mn[j], bs));
                let (is, ms) = if T == Q6K {
                    (is - 32 * corr, 0)
                } else {
                    (is, corr)
                };
                acc[i][j] = k_step(acc[i][j], d[j], dmin[j], dx, is, ms);
            }
        }
    }
    for i in 0..M {
        sums[i][..N].copy_from_slice(&acc[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI.

/// Q4_K/Q5_K's 12 packed scale bytes at `p` as (8 scales, 8 mins), one byte each, via 32-bit
/// masks (the same unpacking as [`super::kscales`]).
#[inline(always)]
unsafe fn kscales_packed(p: *const u8) -> (u64, u64) {
    let u0 = u32::from_le_bytes(*p.cast::<[u8; 4]>());
    let u1 = u32::from_le_bytes(*p.add(4).cast::<[u8; 4]>());
    let u2 = u32::from_le_bytes(*p.add(8).cast::<[u8; 4]>());
    let sc_lo = u0 & 0x3f3f_3f3f;
    let mn_lo = u1 & 0x3f3f_3f3f;
    let sc_hi = (u2 & 0x0f0f_0f0f) | (((u0 >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((u2 >> 4) & 0x0f0f_0f0f) | (((u1 >> 6) & 0x0303_0303) << 4);
    (
        sc_lo as u64 | (sc_hi as u64) << 32,
        mn_lo as u64 | (mn_hi as u64) << 32,
    )
}

/// Q8_0 (or Q4_0 with `Q4`) weights, two blocks per 512-bit vector: the weight codes made
/// unsigned (Q8_0: `w ^ 0x80` = w + 128; Q4_0: the raw nibble = w + 8), `vpdpbusd` against the
/// activation codes started from `−C·Σa` so each lane ends at an exact partial sum, then
/// `acc += (dw·dx) · lanes` (16 lanes: 8 per block). An odd last block rides alone in the low
/// half with zeros above.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_avx512<const M: usize, const N: usize, const Q4: bool>(
    acts: &Acts,
    m0: usize,
    w: &[u8],
    sums: &mut Sums,
) {
    let k = acts.k;
    let nb = k / 32;
    let bb = if Q4 { 18 } else { 34 };
    let rb = nb * bb;
    let wp = w.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    let mut b = 0;
    while b < nb {
        let two = b + 1 < nb;
        let mut wu = [_mm512_setzero_si512(); N];
        let mut dw = [_mm512_setzero_ps(); N];
        for j in 0..N {
            (wu[j], dw[j]) = q8_pair::<Q4>(wp.add(j * rb + b * bb), two);
        }
        for i in 0..M {
            let (a, dx, neg) = q8_act::<Q4>(acts, m0 + i, b, two);
            for j in 0..N {
                let p = _mm512_dpbusd_epi32(neg, wu[j], a);
                acc[i][j] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dw[j], dx), _mm512_cvtepi32_ps(p), acc[i][j]);
            }
        }
        b += 2;
    }
    q8_reduce(&acc, sums);
}

/// Blocks `b` and `b + 1` (just `b` unless `two`) of a Q8_0/Q4_0 row at `p0` (block `b`'s
/// bytes): the unsigned codes and the block scales, 8 lanes each.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_pair<const Q4: bool>(p0: *const u8, two: bool) -> (__m512i, __m512) {
    let bb = if Q4 { 18 } else { 34 };
    let pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let h0 = u16::from_le_bytes([*p0, *p0.add(1)]) as i32;
    let h1 = if two {
        u16::from_le_bytes([*p0.add(bb), *p0.add(bb + 1)]) as i32
    } else {
        0
    };
    let halves = _mm_cvtph_ps(_mm_cvtsi32_si128(h0 | h1 << 16));
    let dw = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(halves));
    let wu = if Q4 {
        let q0 = _mm_loadu_si128(p0.add(2).cast());
        let q1 = if two {
            _mm_loadu_si128(p0.add(bb + 2).cast())
        } else {
            _mm_setzero_si128()
        };
        let y = _mm256_set_m128i(q1, q0);
        let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y), _mm256_srli_epi16::<4>(y));
        // 128-bit lanes [q0, q1, q0>>4, q1>>4] → [q0 lo, q0 hi, q1 lo, q1 hi].
        _mm512_and_si512(
            _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z),
            _mm512_set1_epi8(0x0F),
        )
    } else {
        let lo = _mm256_loadu_si256(p0.add(2).cast());
        let hi = if two {
            _mm256_loadu_si256(p0.add(bb + 2).cast())
        } else {
            _mm256_set1_epi8(-128)
        };
        let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        _mm512_xor_si512(z, _mm512_set1_epi8(-128))
    };
    (wu, dw)
}

/// Activation row `row`'s blocks `b` and `b + 1` (just `b` unless `two`, zeros above): the
/// codes, the scales 8 lanes each, and `−C·Σa` per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_act<const Q4: bool>(
    acts: &Acts,
    row: usize,
    b: usize,
    two: bool,
) -> (__m512i, __m512, __m512i) {
    let k = acts.k;
    let nb = k / 32;
    let pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let offset = _mm512_set1_epi8(if Q4 { 8 } else { -128 });
    let aq = acts.q.as_ptr().add(row * k + b * 32);
    let ad = acts.d.as_ptr().add(row * nb + b);
    let (a, dx) = if two {
        (
            _mm512_loadu_si512(aq.cast()),
            _mm_castpd_ps(_mm_load_sd(ad.cast())),
        )
    } else {
        (
            _mm512_zextsi256_si512(_mm256_loadu_si256(aq.cast())),
            _mm_load_ss(ad),
        )
    };
    let dx = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(dx));
    let neg = _mm512_sub_epi32(
        _mm512_setzero_si512(),
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, a),
    );
    (a, dx, neg)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_reduce<const M: usize, const N: usize>(acc: &[[__m512; N]; M], sums: &mut Sums) {
    for i in 0..M {
        for j in 0..N {
            let v = acc[i][j];
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            sums[i][j] = hsum256(_mm256_add_ps(lo, hi));
        }
    }
}

/// Q8_0/Q4_0 weights met by many activation rows: `out` (`rows × m`, yᵀ) = the `rows` weight
/// rows `w` times every activation row. Each cache block of weight rows is unpacked once (the
/// vectors [`q8_avx512`] builds per tile) and then met by every activation tile, running the
/// very chain [`q8_avx512`] runs, so the bits do not depend on which of the two ran.
pub(crate) fn q8_block_avx512(
    dtype: StoredDType,
    acts: &Acts,
    m: usize,
    w: &[u8],
    rows: usize,
    out: &mut [f32],
    rows_per_block: usize,
) {
    let k = acts.k;
    let q4 = dtype == StoredDType::Q4_0;
    let row_bytes = dtype.row_bytes(k).expect("whole blocks");
    assert!(
        matches!(dtype, StoredDType::Q8_0 | StoredDType::Q4_0)
            && acts.block == 32
            && k.is_multiple_of(32)
            && m * k <= acts.q.len()
            && w.len() == rows * row_bytes
            && out.len() == rows * m
    );
    let nb = k / 32;
    let np = nb.div_ceil(2);
    let cap = rows_per_block.min(rows);
    // SAFETY: all-zero bits are a valid vector.
    let (zi, zf) = unsafe { (std::mem::zeroed::<__m512i>(), std::mem::zeroed::<__m512>()) };
    let mut codes = vec![zi; cap * np];
    let mut scales = vec![zf; cap * np];
    let mut sums = [[0.0f32; 4]; MR];
    for b0 in (0..rows).step_by(rows_per_block) {
        let b1 = (b0 + rows_per_block).min(rows);
        // SAFETY: the caller checked the CPU has AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C;
        // the assert above bounds every pointer formed here and in the kernels.
        unsafe {
            for r in b0..b1 {
                let wr = w.as_ptr().add(r * row_bytes);
                let bb = if q4 { 18 } else { 34 };
                for p in 0..np {
                    let two = 2 * p + 1 < nb;
                    let v = if q4 {
                        q8_pair::<true>(wr.add(2 * p * bb), two)
                    } else {
                        q8_pair::<false>(wr.add(2 * p * bb), two)
                    };
                    (codes[(r - b0) * np + p], scales[(r - b0) * np + p]) = v;
                }
            }
            for m0 in (0..m).step_by(MR) {
                let mt = MR.min(m - m0);
                for n0 in (b0..b1).step_by(4) {
                    let nt = 4.min(b1 - n0);
                    let c = codes.as_ptr().add((n0 - b0) * np);
                    let s = scales.as_ptr().add((n0 - b0) * np);
                    if q4 {
                        mn!(mt, nt, q8p_avx512, [true], (acts, m0, c, s, &mut sums));
                    } else {
                        mn!(mt, nt, q8p_avx512, [false], (acts, m0, c, s, &mut sums));
                    }
                    for (j, dst) in out[n0 * m..(n0 + nt) * m].chunks_exact_mut(m).enumerate() {
                        for (i, s) in sums[..mt].iter().enumerate() {
                            dst[m0 + i] = s[j];
                        }
                    }
                }
            }
        }
    }
}

/// [`q8_avx512`] on weights [`q8_pair`] already unpacked: `N` rows of `k / 64` (rounded up)
/// vectors each at `codes` and `scales`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8p_avx512<const M: usize, const N: usize, const Q4: bool>(
    acts: &Acts,
    m0: usize,
    codes: *const __m512i,
    scales: *const __m512,
    sums: &mut Sums,
) {
    let nb = acts.k / 32;
    let np = nb.div_ceil(2);
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    for p in 0..np {
        let b = 2 * p;
        let two = b + 1 < nb;
        let mut wu = [_mm512_setzero_si512(); N];
        let mut dw = [_mm512_setzero_ps(); N];
        for j in 0..N {
            wu[j] = *codes.add(j * np + p);
            dw[j] = *scales.add(j * np + p);
        }
        for i in 0..M {
            let (a, dx, neg) = q8_act::<Q4>(acts, m0 + i, b, two);
            for j in 0..N {
                let p = _mm512_dpbusd_epi32(neg, wu[j], a);
                acc[i][j] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dw[j], dx), _mm512_cvtepi32_ps(p), acc[i][j]);
            }
        }
    }
    q8_reduce(&acc, sums);
}

/// The 64 unsigned codes of chunk `c` (values `64c..64c + 64`) of a K-quant super-block at `p`;
/// `qh` is the super-block's high-bit bytes broadcast to both halves (Q5_K: all 32; Q6_K: the
/// 32 of this chunk's 128-value half).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_chunk512<const T: u8>(p: *const u8, c: usize, qh: __m512i) -> __m512i {
    let low4 = _mm512_set1_epi8(0x0F);
    match T {
        Q4K | Q5K => {
            let qs = if T == Q4K { p.add(16) } else { p.add(48) };
            let y = _mm256_loadu_si256(qs.add(32 * c).cast());
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y), _mm256_srli_epi16::<4>(y));
            let q = _mm512_and_si512(z, low4);
            if T == Q4K {
                q
            } else {
                // Bit 2c of qh for the low 32 values, bit 2c + 1 for the high 32.
                let sel = _mm512_sll_epi16(
                    _mm512_inserti64x4::<1>(_mm512_set1_epi8(1), _mm256_set1_epi8(2)),
                    _mm_cvtsi32_si128(2 * c as i32),
                );
                let mask = _mm512_test_epi8_mask(qh, sel);
                _mm512_mask_add_epi8(q, mask, q, _mm512_set1_epi8(16))
            }
        }
        _ => {
            let (n, odd) = (c / 2, c & 1);
            let raw = _mm512_loadu_si512(p.add(64 * n).cast());
            let raw = _mm512_srl_epi16(raw, _mm_cvtsi32_si128(4 * odd as i32));
            let q = _mm512_and_si512(raw, low4);
            let sh = _mm512_inserti64x4::<1>(
                _mm512_set1_epi16(4 * odd as i16),
                _mm256_set1_epi16(4 * odd as i16 + 2),
            );
            let h = _mm512_and_si512(_mm512_srlv_epi16(qh, sh), _mm512_set1_epi8(3));
            _mm512_or_si512(q, _mm512_slli_epi16::<4>(h))
        }
    }
}

/// K-quant weights, 64 values per step: `vpmaddubsw` codes × activations, `vpdpwssd` by the
/// per-16 scales into one integer accumulator per output, reduced per super-block and handed
/// to [`k_step`] (so the bits equal the portable path's).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_avx512<const M: usize, const N: usize, const T: u8, const PREP: bool>(
    acts: &Acts,
    m0: usize,
    w: &[u8],
    prep: *const __m512i,
    sums: &mut Sums,
) {
    let k = acts.k;
    let nsb = k / 256;
    let bb = [144usize, 176, 210][T as usize];
    let rb = nsb * bb;
    let (wp, ap, dp, bp) = (
        w.as_ptr(),
        acts.q.as_ptr(),
        acts.d.as_ptr(),
        acts.bsums.as_ptr(),
    );
    let lane_sub = k_lane_sub();
    let mut acc = [[0.0f32; N]; M];
    let mut acc16 = _mm512_setzero_ps();
    for sb in 0..nsb {
        let mut scales = [_mm512_setzero_si512(); N];
        let mut mins = [_mm_setzero_si128(); N];
        let mut d = [0.0f32; N];
        let mut dmin = [0.0f32; N];
        let mut wb = [wp; N];
        for j in 0..N {
            wb[j] = wp.add(j * rb + sb * bb);
            (scales[j], mins[j]) = k_scales512::<T>(wb[j]);
            if T == Q6K {
                d[j] = half(wb[j].add(208));
            } else {
                d[j] = half(wb[j]);
                dmin[j] = half(wb[j].add(2));
            }
        }
        // Q6_K's −32·Σ sc·bsum starts each accumulator; Q4_K/Q5_K's mins go to msum.
        let mut isum = [[_mm512_setzero_si512(); N]; M];
        let mut bs32 = [_mm_setzero_si128(); M];
        for i in 0..M {
            let bs = _mm256_loadu_si256(bp.add((m0 + i) * (k / 16) + sb * 16).cast());
            if T == Q6K {
                let nbs = _mm256_sub_epi16(_mm256_setzero_si256(), bs);
                for j in 0..N {
                    let sc32 = _mm256_slli_epi16::<5>(_mm512_castsi512_si256(scales[j]));
                    isum[i][j] = _mm512_zextsi256_si512(_mm256_madd_epi16(sc32, nbs));
                }
            } else {
                bs32[i] = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bs),
                    _mm256_extracti128_si256::<1>(bs),
                );
            }
        }
        let mut qh = [_mm512_setzero_si512(); N];
        if T == Q5K && !PREP {
            for j in 0..N {
                qh[j] = _mm512_broadcast_i64x4(_mm256_loadu_si256(wb[j].add(16).cast()));
            }
        }
        for c in 0..4 {
            if T == Q6K && c % 2 == 0 && !PREP {
                for j in 0..N {
                    let h = _mm256_loadu_si256(wb[j].add(128 + 32 * (c / 2)).cast());
                    qh[j] = _mm512_broadcast_i64x4(h);
                }
            }
            let sub = k_sub::<T>(lane_sub, c);
            let mut q = [_mm512_setzero_si512(); N];
            let mut s = [_mm512_setzero_si512(); N];
            for j in 0..N {
                if PREP {
                    // Row j's super-block sb: chunk c's codes, then its scales.
                    let v = prep.add(((j * nsb + sb) * 4 + c) * 2);
                    q[j] = *v;
                    s[j] = *v.add(1);
                } else {
                    q[j] = k_chunk512::<T>(wb[j], c, qh[j]);
                    s[j] = _mm512_permutexvar_epi16(sub, scales[j]);
                }
            }
            for i in 0..M {
                let a = _mm512_loadu_si512(ap.add((m0 + i) * k + sb * 256 + 64 * c).cast());
                for j in 0..N {
                    let p16 = _mm512_maddubs_epi16(q[j], a);
                    isum[i][j] = _mm512_dpwssd_epi32(isum[i][j], p16, s[j]);
                }
            }
        }
        if M * N >= 4 {
            // All the tile's sums at once: lane 4i + j of one vector per kind of sum, then
            // k_step lane-wise (the same unfused operations, so the same bits).
            let mut v = [_mm512_setzero_si512(); 16];
            for i in 0..M {
                for j in 0..N {
                    v[4 * i + j] = isum[i][j];
                }
            }
            let is16 = _mm512_cvtepi32_ps(reduce16(&v));
            let mut dxs = [0.0f32; 4];
            for i in 0..M {
                dxs[i] = *dp.add((m0 + i) * nsb + sb);
            }
            let mut dd = [0.0f32; 4];
            let mut dm = [0.0f32; 4];
            dd[..N].copy_from_slice(&d);
            dm[..N].copy_from_slice(&dmin);
            let dx16 = _mm512_permutexvar_ps(
                _mm512_srli_epi32::<2>(_mm512_setr_epi32(
                    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                )),
                _mm512_castps128_ps512(_mm_loadu_ps(dxs.as_ptr())),
            );
            let d16 = _mm512_broadcast_f32x4(_mm_loadu_ps(dd.as_ptr()));
            let ms16 = if T == Q6K {
                _mm512_setzero_ps()
            } else {
                let mut b4 = [_mm_setzero_si128(); 4];
                b4[..M].copy_from_slice(&bs32);
                let bsv = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_set_m128i(b4[1], b4[0])),
                    _mm256_set_m128i(b4[3], b4[2]),
                );
                let mut vj = [_mm512_setzero_si512(); 4];
                for j in 0..N {
                    vj[j] = _mm512_madd_epi16(_mm512_broadcast_i32x4(mins[j]), bsv);
                }
                _mm512_cvtepi32_ps(reduce4x4(&vj))
            };
            let dm16 = _mm512_broadcast_f32x4(_mm_loadu_ps(dm.as_ptr()));
            acc16 = _mm512_sub_ps(
                _mm512_add_ps(acc16, _mm512_mul_ps(_mm512_mul_ps(d16, dx16), is16)),
                _mm512_mul_ps(_mm512_mul_ps(dm16, dx16), ms16),
            );
            continue;
        }
        for i in 0..M {
            let dx = *dp.add((m0 + i) * nsb + sb);
            for j in 0..N {
                let is = _mm512_reduce_add_epi32(isum[i][j]);
                let ms = if T == Q6K {
                    0
                } else {
                    let v = _mm_madd_epi16(mins[j], bs32[i]);
                    let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
                    let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
                    _mm_cvtsi128_si32(v)
                };
                acc[i][j] = k_step(acc[i][j], d[j], dmin[j], dx, is, ms);
            }
        }
    }
    if M * N >= 4 {
        let mut all = [0.0f32; 16];
        _mm512_storeu_ps(all.as_mut_ptr(), acc16);
        for i in 0..M {
            sums[i][..N].copy_from_slice(&all[4 * i..4 * i + N]);
        }
    } else {
        for i in 0..M {
            sums[i][..N].copy_from_slice(&acc[i]);
        }
    }
}

/// i16 lane e of chunk c's scale vector takes scale (4c + e/8) / 2 (Q4_K/Q5_K: one per 32
/// values) or 4c + e/8 (Q6_K: one per 16); this is 4c + e/8 for c = 0.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k_lane_sub() -> __m512i {
    _mm512_srli_epi16::<3>(_mm512_setr_epi32(
        0x0001_0000,
        0x0003_0002,
        0x0005_0004,
        0x0007_0006,
        0x0009_0008,
        0x000b_000a,
        0x000d_000c,
        0x000f_000e,
        0x0011_0010,
        0x0013_0012,
        0x0015_0014,
        0x0017_0016,
        0x0019_0018,
        0x001b_001a,
        0x001d_001c,
        0x001f_001e,
    ))
}

/// Chunk `c`'s scale indices (see [`k_lane_sub`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k_sub<const T: u8>(lane_sub: __m512i, c: usize) -> __m512i {
    if T == Q6K {
        _mm512_add_epi16(lane_sub, _mm512_set1_epi16(4 * c as i16))
    } else {
        _mm512_srli_epi16::<1>(_mm512_add_epi16(lane_sub, _mm512_set1_epi16(4 * c as i16)))
    }
}

/// A K-quant super-block's scales as i16 lanes (8 or 16 of them) and, for Q4_K/Q5_K, its
/// 8 mins.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_scales512<const T: u8>(p: *const u8) -> (__m512i, __m128i) {
    if T == Q6K {
        let s8 = _mm_loadu_si128(p.add(192).cast());
        (
            _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(s8)),
            _mm_setzero_si128(),
        )
    } else {
        let (sc, mn) = kscales_packed(p.add(4));
        (
            _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64))),
            _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64)),
        )
    }
}

/// Unpacks `rows` K-quant rows at `w` into `out`: per row, super-block and 64-value chunk, the
/// codes and the per-lane scales [`k_avx512`] builds for that chunk.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k_prep<const T: u8>(w: *const u8, rows: usize, nsb: usize, out: *mut __m512i) {
    let bb = [144usize, 176, 210][T as usize];
    let lane_sub = k_lane_sub();
    for r in 0..rows {
        for sb in 0..nsb {
            let p = w.add((r * nsb + sb) * bb);
            let (scales, _) = k_scales512::<T>(p);
            let mut qh = _mm512_setzero_si512();
            if T == Q5K {
                qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(16).cast()));
            }
            for c in 0..4 {
                if T == Q6K && c % 2 == 0 {
                    qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        p.add(128 + 32 * (c / 2)).cast(),
                    ));
                }
                let v = out.add(((r * nsb + sb) * 4 + c) * 2);
                *v = k_chunk512::<T>(p, c, qh);
                *v.add(1) = _mm512_permutexvar_epi16(k_sub::<T>(lane_sub, c), scales);
            }
        }
    }
}

/// K-quant weights met by many activation rows: `out` (`rows × m`, yᵀ) = the `rows` weight
/// rows `w` times every activation row. Each cache block of weight rows is unpacked once by
/// [`k_prep`] and then met by every activation tile through [`k_avx512`], whose integer sums
/// are exact and whose float steps are unchanged, so the bits equal the per-tile path's.
pub(crate) fn k_block_avx512(
    dtype: StoredDType,
    acts: &Acts,
    m: usize,
    w: &[u8],
    rows: usize,
    out: &mut [f32],
    rows_per_block: usize,
) {
    let k = acts.k;
    let row_bytes = dtype.row_bytes(k).expect("whole blocks");
    assert!(
        matches!(
            dtype,
            StoredDType::Q4_K | StoredDType::Q5_K | StoredDType::Q6_K
        ) && acts.block == 256
            && k.is_multiple_of(256)
            && m * k <= acts.q.len()
            && w.len() == rows * row_bytes
            && out.len() == rows * m
            && rows_per_block.is_multiple_of(4)
    );
    let nsb = k / 256;
    let per_row = nsb * 8;
    let cap = rows_per_block.min(rows);
    // SAFETY: all-zero bits are a valid vector.
    let zi = unsafe { std::mem::zeroed::<__m512i>() };
    let mut prep = vec![zi; cap * per_row];
    let mut sums = [[0.0f32; 4]; MR];
    for b0 in (0..rows).step_by(rows_per_block) {
        let b1 = (b0 + rows_per_block).min(rows);
        // SAFETY: the caller checked the CPU has AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C;
        // the assert above bounds every pointer formed here and in the kernels.
        unsafe {
            let wr = w.as_ptr().add(b0 * row_bytes);
            let pp = prep.as_mut_ptr();
            match dtype {
                StoredDType::Q4_K => k_prep::<Q4K>(wr, b1 - b0, nsb, pp),
                StoredDType::Q5_K => k_prep::<Q5K>(wr, b1 - b0, nsb, pp),
                _ => k_prep::<Q6K>(wr, b1 - b0, nsb, pp),
            }
            for m0 in (0..m).step_by(MR) {
                let mt = MR.min(m - m0);
                for n0 in (b0..b1).step_by(4) {
                    let nt = 4.min(b1 - n0);
                    let wt = &w[n0 * row_bytes..(n0 + nt) * row_bytes];
                    let pt = prep.as_ptr().add((n0 - b0) * per_row);
                    let sm = &mut sums;
                    match dtype {
                        StoredDType::Q4_K => {
                            mn!(mt, nt, k_avx512, [Q4K, true], (acts, m0, wt, pt, sm))
                        }
                        StoredDType::Q5_K => {
                            mn!(mt, nt, k_avx512, [Q5K, true], (acts, m0, wt, pt, sm))
                        }
                        _ => mn!(mt, nt, k_avx512, [Q6K, true], (acts, m0, wt, pt, sm)),
                    }
                    for (j, dst) in out[n0 * m..(n0 + nt) * m].chunks_exact_mut(m).enumerate() {
                        for (i, s) in sums[..mt].iter().enumerate() {
                            dst[m0 + i] = s[j];
                        }
                    }
                }
            }
        }
    }
}

/// Lane `p` of the result is the sum of the 16 lanes of `v[p]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn reduce16(v: &[__m512i; 16]) -> __m512i {
    let mut u = [_mm512_setzero_si512(); 4];
    for (q, uq) in u.iter_mut().enumerate() {
        let four: &[__m512i; 4] = v[4 * q..4 * q + 4].try_into().unwrap();
        *uq = reduce4x4(four);
    }
    // u[q]'s 128-bit lane L holds lane-L partial sums of v[4q..4q + 4]; add the four lanes.
    let x0 = _mm512_shuffle_i64x2::<0b01_00_01_00>(u[0], u[1]);
    let x1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(u[0], u[1]);
    let s01 = _mm512_add_epi32(x0, x1);
    let x2 = _mm512_shuffle_i64x2::<0b01_00_01_00>(u[2], u[3]);
    let x3 = _mm512_shuffle_i64x2::<0b11_10_11_10>(u[2], u[3]);
    let s23 = _mm512_add_epi32(x2, x3);
    let y0 = _mm512_shuffle_i64x2::<0b10_00_10_00>(s01, s23);
    let y1 = _mm512_shuffle_i64x2::<0b11_01_11_01>(s01, s23);
    _mm512_add_epi32(y0, y1)
}

/// Within every 128-bit lane L: element r of the result is the sum of lane L of `v[r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn reduce4x4(v: &[__m512i; 4]) -> __m512i {
    let t0 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[0], v[1]),
        _mm512_unpackhi_epi32(v[0], v[1]),
    );
    let t1 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[2], v[3]),
        _mm512_unpackhi_epi32(v[2], v[3]),
    );
    _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1))
}
