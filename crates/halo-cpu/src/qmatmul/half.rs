//! F16 and BF16 weights through the f32 kernel's chain: each chunk of a weight row is widened
//! in registers (F16C `vcvtph2ps`; bf16 by a 16-bit shift), then meets the activations with the
//! same lanes, FMA order, zero-padded tail and horizontal reduction as [`crate::matmul`], so the
//! result is bitwise the f32 kernel's on the widened weights.

use super::{drive, f16_to_f32, QMatrix, Sums};
use crate::matmul::Isa;
use halo_model::dtype::StoredDType;

pub(crate) fn matmul_t(isa: Isa, x: &[f32], m: usize, w: &QMatrix, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    assert!(
        x.len() == m * k && y.len() == m * n,
        "qmatmul_t: shape mismatch"
    );
    assert!(isa.supported(), "qmatmul_t: {isa:?} is not supported");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable && !is_x86_feature_detected!("f16c") {
        // No x86-64 CPU with AVX2 lacks F16C; kept correct for one that would.
        let mut wf = vec![0.0f32; n * k];
        halo_model::quant::dequantize(w.dtype, &w.data, &mut wf);
        crate::matmul::matmul_t_with(isa, x, m, k, &wf, n, y);
        return;
    }
    let bf = w.dtype == StoredDType::BF16;
    #[cfg(target_arch = "x86_64")]
    if m >= crate::matmul::GEMM_MIN_M && crate::matmul::gemm::usable(isa) {
        // Widened once per packed block instead of once per tile (gemm.rs), same chain.
        use crate::matmul::gemm::{gemm, WSrc};
        let src = if bf {
            WSrc::Bf16(&w.data)
        } else {
            WSrc::F16(&w.data)
        };
        gemm(isa, x, m, k, src, n, y);
        return;
    }
    // Up to 4 activation rows the step streams the weights. On AVX2 two W rows per tile, each
    // read with software prefetch ([`PREFETCH_AHEAD`]), keep two FMA chains in flight where one
    // row's single chain left the stream waiting on its latency. AVX-512 keeps the one-row
    // stream the f32 kernel was measured with (Zen 4: two rows without prefetch cost 40%); the
    // two-row prefetched tile has not met an AVX-512 machine. Each output's chain is the same
    // whatever the tile holds.
    let nr = match (isa, m) {
        (Isa::Avx512, 1..=4) => 1,
        (Isa::Avx512, _) => 4,
        _ => 2,
    };
    drive(m, n, k, nr, y, &|m0, mt, n0, nt, sums| {
        let xt = &x[m0 * k..(m0 + mt) * k];
        let wb = &w.data[n0 * 2 * k..(n0 + nt) * 2 * k];
        tile(isa, bf, xt, mt, wb, nt, k, sums);
    });
}

#[allow(clippy::too_many_arguments)]
fn tile(isa: Isa, bf: bool, x: &[f32], mt: usize, w: &[u8], nt: usize, k: usize, s: &mut Sums) {
    macro_rules! dispatch {
        ($($f:ident)::+) => {
            match (mt, nt, bf) {
                (1, 1, false) => $($f)::+::<1, 1, false>(x, w, k, s),
                (2, 1, false) => $($f)::+::<2, 1, false>(x, w, k, s),
                (3, 1, false) => $($f)::+::<3, 1, false>(x, w, k, s),
                (4, 1, false) => $($f)::+::<4, 1, false>(x, w, k, s),
                (1, 2, false) => $($f)::+::<1, 2, false>(x, w, k, s),
                (2, 2, false) => $($f)::+::<2, 2, false>(x, w, k, s),
                (3, 2, false) => $($f)::+::<3, 2, false>(x, w, k, s),
                (4, 2, false) => $($f)::+::<4, 2, false>(x, w, k, s),
                (1, 3, false) => $($f)::+::<1, 3, false>(x, w, k, s),
                (2, 3, false) => $($f)::+::<2, 3, false>(x, w, k, s),
                (3, 3, false) => $($f)::+::<3, 3, false>(x, w, k, s),
                (4, 3, false) => $($f)::+::<4, 3, false>(x, w, k, s),
                (1, 4, false) => $($f)::+::<1, 4, false>(x, w, k, s),
                (2, 4, false) => $($f)::+::<2, 4, false>(x, w, k, s),
                (3, 4, false) => $($f)::+::<3, 4, false>(x, w, k, s),
                (4, 4, false) => $($f)::+::<4, 4, false>(x, w, k, s),
                (1, 1, true) => $($f)::+::<1, 1, true>(x, w, k, s),
                (2, 1, true) => $($f)::+::<2, 1, true>(x, w, k, s),
                (3, 1, true) => $($f)::+::<3, 1, true>(x, w, k, s),
                (4, 1, true) => $($f)::+::<4, 1, true>(x, w, k, s),
                (1, 2, true) => $($f)::+::<1, 2, true>(x, w, k, s),
                (2, 2, true) => $($f)::+::<2, 2, true>(x, w, k, s),
                (3, 2, true) => $($f)::+::<3, 2, true>(x, w, k, s),
                (4, 2, true) => $($f)::+::<4, 2, true>(x, w, k, s),
                (1, 3, true) => $($f)::+::<1, 3, true>(x, w, k, s),
                (2, 3, true) => $($f)::+::<2, 3, true>(x, w, k, s),
                (3, 3, true) => $($f)::+::<3, 3, true>(x, w, k, s),
                (4, 3, true) => $($f)::+::<4, 3, true>(x, w, k, s),
                (1, 4, true) => $($f)::+::<1, 4, true>(x, w, k, s),
                (2, 4, true) => $($f)::+::<2, 4, true>(x, w, k, s),
                (3, 4, true) => $($f)::+::<3, 4, true>(x, w, k, s),
                (4, 4, true) => $($f)::+::<4, 4, true>(x, w, k, s),
                _ => unreachable!("tile dimensions are capped at 4"),
            }
        };
    }
    match isa {
        // SAFETY: the ISA was checked supported (with F16C) by the caller.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { dispatch!(x86::tile_avx512) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { dispatch!(x86::tile_avx2) },
        _ => dispatch!(tile_portable),
    }
}

/// Element `e` of a half row.
#[inline(always)]
fn widen<const BF: bool>(w: &[u8], e: usize) -> f32 {
    let h = u16::from_le_bytes([w[2 * e], w[2 * e + 1]]);
    if BF {
        f32::from_bits((h as u32) << 16)
    } else {
        f16_to_f32(h)
    }
}

const LANES: usize = 8;

/// How far ahead of the chunk being read the AVX2 tiles ask for each W row's next lines (a
/// prefetch never faults, so the address may lie past the weights). Measured with
/// `cargo bench -p halo-cpu --bench qmatmul -- 'bf16/(1|4)$'` on the 2-vCPU Zen 3, one / two
/// threads, GiB/s of weights, at 1 activation row: one row per tile and no prefetch 9.7 / 18.7-18.9;
/// two rows per tile without prefetch 8.7-9.5 / 15.1-16.9 (two streams confuse the hardware
/// prefetcher); two rows and 1, 2, 4 or 8 KiB ahead 9.6-11.0, 12.3-13.3, 12.7-14.8, 12.0-13.1 /
/// 19.9-20.1, 22.7-23.8, 22.1-25.6, 21.7-23.4. At 4 rows: 8.4-8.8 / 15.8-16.5 with one row per
/// tile, 10.9-11.7 / 19.5-21.8 with two rows 4 KiB ahead.
const PREFETCH_AHEAD: usize = 4096;

/// The f32 kernel's portable chain (8 lanes, unfused multiply-add, its reduction tree).
fn tile_portable<const M: usize, const N: usize, const BF: bool>(
    x: &[f32],
    w: &[u8],
    k: usize,
    sums: &mut Sums,
) {
    let mut acc = [[[0.0f32; LANES]; N]; M];
    let chunks = k.div_ceil(LANES);
    for c in 0..chunks {
        let off = c * LANES;
        let len = LANES.min(k - off);
        let mut wv = [[0.0f32; LANES]; N];
        for (j, wr) in wv.iter_mut().enumerate() {
            let row = &w[j * 2 * k..(j + 1) * 2 * k];
            for (l, v) in wr[..len].iter_mut().enumerate() {
                *v = widen::<BF>(row, off + l);
            }
        }
        for (i, ai) in acc.iter_mut().enumerate() {
            let mut xv = [0.0f32; LANES];
            xv[..len].copy_from_slice(&x[i * k + off..i * k + off + len]);
            for (aij, wj) in ai.iter_mut().zip(&wv) {
                for l in 0..LANES {
                    aij[l] += xv[l] * wj[l];
                }
            }
        }
    }
    for i in 0..M {
        for j in 0..N {
            let a = &acc[i][j];
            let q = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
            let p = [q[0] + q[2], q[1] + q[3]];
            sums[i][j] = p[0] + p[1];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::Sums;
    use super::widen;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx")]
    fn hsum256(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps::<0b01>(p, p)))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn hsum512(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        hsum256(_mm256_add_ps(lo, hi))
    }

    /// 8 halves at `p` widened.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8<const BF: bool>(p: *const u8) -> __m256 {
        let h = _mm_loadu_si128(p.cast());
        if BF {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        } else {
            _mm256_cvtph_ps(h)
        }
    }

    /// 16 halves at `p` widened.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,f16c")]
    unsafe fn load16<const BF: bool>(p: *const u8) -> __m512 {
        let h = _mm256_loadu_si256(p.cast());
        if BF {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_cvtph_ps(h)
        }
    }

    macro_rules! tile_fn {
        ($name:ident, $features:literal, $vec:ty, $lanes:literal, $zero:ident, $load:ident,
         $wload:ident, $fma:ident, $hsum:ident, $prefetch:literal) => {
            /// # Safety
            /// The CPU must support the enabled features; `x` holds `M * k` floats and `w`
            /// `N * k` halves (checked).
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const M: usize, const N: usize, const BF: bool>(
                x: &[f32],
                w: &[u8],
                k: usize,
                sums: &mut Sums,
            ) {
                assert!(x.len() >= M * k && w.len() >= N * 2 * k && M <= 4 && N <= 4);
                let (xp, wp) = (x.as_ptr(), w.as_ptr());
                let mut acc: [[$vec; N]; M] = [[$zero(); N]; M];
                let full = k / $lanes * $lanes;
                let mut off = 0;
                while off < full {
                    if $prefetch && off % 32 == 0 {
                        // Once per 64-byte line of each row.
                        for j in 0..N {
                            _mm_prefetch::<_MM_HINT_T0>(
                                wp.add(2 * (j * k + off))
                                    .wrapping_add(super::PREFETCH_AHEAD)
                                    .cast(),
                            );
                        }
                    }
                    let mut wv = [$zero(); N];
                    for j in 0..N {
                        wv[j] = $wload::<BF>(wp.add(2 * (j * k + off)));
                    }
                    for i in 0..M {
                        let xv = $load(xp.add(i * k + off));
                        for j in 0..N {
                            acc[i][j] = $fma(xv, wv[j], acc[i][j]);
                        }
                    }
                    off += $lanes;
                }
                if full < k {
                    let rest = k - full;
                    let mut wpad = [[0.0f32; $lanes]; N];
                    for j in 0..N {
                        let row = &w[j * 2 * k..(j + 1) * 2 * k];
                        for l in 0..rest {
                            wpad[j][l] = widen::<BF>(row, full + l);
                        }
                    }
                    for i in 0..M {
                        let mut xpad = [0.0f32; $lanes];
                        xpad[..rest].copy_from_slice(&x[i * k + full..i * k + k]);
                        let xv = $load(xpad.as_ptr());
                        for j in 0..N {
                            acc[i][j] = $fma(xv, $load(wpad[j].as_ptr()), acc[i][j]);
                        }
                    }
                }
                for i in 0..M {
                    for j in 0..N {
                        sums[i][j] = $hsum(acc[i][j]);
                    }
                }
            }
        };
    }

    tile_fn!(
        tile_avx2,
        "avx2,fma,f16c",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        load8,
        _mm256_fmadd_ps,
        hsum256,
        true
    );
    tile_fn!(
        tile_avx512,
        "avx512f,avx2,fma,f16c",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        load16,
        _mm512_fmadd_ps,
        hsum512,
        false
    );
}
