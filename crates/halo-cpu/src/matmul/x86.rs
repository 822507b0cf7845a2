//! The x86-64 tiles of [`super::matmul_t`]: AVX2+FMA (8 lanes) and AVX-512 (16 lanes).
//!
//! One macro writes both so their chains have the same shape: per (activation row, W row) one
//! accumulator vector, FMA in K order, the partial last chunk zero-padded through a stack
//! buffer, then a fixed halving reduction. `M` and `N` only choose how many chains run side by
//! side; the const bounds let the compiler keep every accumulator in a register.

use std::arch::x86_64::*;

/// 8 lanes → 1 in a fixed order: high half onto low, then pairs, then the last two.
#[inline]
#[target_feature(enable = "avx")]
pub(super) unsafe fn hsum256(v: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps::<0b01>(p, p)))
}

/// 16 lanes → 8 (high half onto low), then as [`hsum256`].
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn hsum512(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    hsum256(_mm256_add_ps(lo, hi))
}

macro_rules! tile_fn {
    ($name:ident, $features:literal, $vec:ty, $lanes:literal, $zero:ident, $load:ident, $fma:ident, $hsum:ident) => {
        /// `sums[i][j] = x_i · w_j` for the `M` rows of `x` and `N` rows of `w` (each `k` long).
        ///
        /// # Safety
        /// The CPU must support the enabled features; `x` and `w` must hold `M * k` and `N * k`
        /// floats (checked).
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const M: usize, const N: usize>(
            x: &[f32],
            w: &[f32],
            k: usize,
            sums: &mut [[f32; 4]; super::MR],
        ) {
            assert!(x.len() >= M * k && w.len() >= N * k && M <= super::MR && N <= 4);
            let (xp, wp) = (x.as_ptr(), w.as_ptr());
            // One accumulator per chain; the tile's M·N independent chains keep the FMA
            // pipes busy, and every tile shape runs each chain identically.
            let mut acc: [[$vec; N]; M] = [[$zero(); N]; M];
            let full = k / $lanes * $lanes;
            let mut off = 0;
            while off < full {
                // No closures here: they would not inherit the enabled features.
                let mut wv = [$zero(); N];
                for j in 0..N {
                    wv[j] = $load(wp.add(j * k + off));
                }
                for i in 0..M {
                    let xv = $load(xp.add(i * k + off));
                    for j in 0..N {
                        acc[i][j] = $fma(xv, wv[j], acc[i][j]);
                    }
                }
                off += $lanes;
            }
            // The partial last chunk, zero-padded.
            if full < k {
                let rest = k - full;
                let mut wpad = [[0.0f32; $lanes]; N];
                for j in 0..N {
                    wpad[j][..rest].copy_from_slice(&w[j * k + full..j * k + k]);
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
    "avx2,fma",
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_fmadd_ps,
    hsum256
);
tile_fn!(
    tile_avx512,
    "avx512f",
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_fmadd_ps,
    hsum512
);
