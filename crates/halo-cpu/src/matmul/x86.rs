//! The x86-64 tiles of [`super::matmul_t`]: AVX2+FMA (8 lanes) and AVX-512 (16 lanes).
//!
//! One macro writes both so their chains have the same shape: per (activation row, W row) one
//! pair of accumulator vectors (even and odd chunks of K), FMA in K order, the partial last chunk zero-padded through a stack
//! buffer, then a fixed halving reduction. `M` and `N` only choose how many chains run side by
//! side; the const bounds let the compiler keep every accumulator in a register.

use std::arch::x86_64::*;

/// 8 lanes → 1 in a fixed order: high half onto low, then pairs, then the last two.
#[inline]
#[target_feature(enable = "avx")]
unsafe fn hsum256(v: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps::<0b01>(p, p)))
}

/// 16 lanes → 8 (high half onto low), then as [`hsum256`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn hsum512(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    hsum256(_mm256_add_ps(lo, hi))
}

macro_rules! tile_fn {
    ($name:ident, $features:literal, $vec:ty, $lanes:literal, $zero:ident, $load:ident, $fma:ident, $add:ident, $hsum:ident) => {
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
            // Two accumulators per chain (even and odd chunks of K) so one output row alone
            // still has two FMA chains in flight; every tile shape uses the same pair.
            let mut even: [[$vec; N]; M] = [[$zero(); N]; M];
            let mut odd: [[$vec; N]; M] = [[$zero(); N]; M];
            let full = k / $lanes * $lanes;
            let mut off = 0;
            while off + 2 * $lanes <= full {
                // No closures here: they would not inherit the enabled features.
                let mut w0 = [$zero(); N];
                let mut w1 = [$zero(); N];
                for j in 0..N {
                    w0[j] = $load(wp.add(j * k + off));
                    w1[j] = $load(wp.add(j * k + off + $lanes));
                }
                for i in 0..M {
                    let x0 = $load(xp.add(i * k + off));
                    let x1 = $load(xp.add(i * k + off + $lanes));
                    for j in 0..N {
                        even[i][j] = $fma(x0, w0[j], even[i][j]);
                        odd[i][j] = $fma(x1, w1[j], odd[i][j]);
                    }
                }
                off += 2 * $lanes;
            }
            // At most one full chunk is left (an even one), then the zero-padded partial chunk,
            // which is odd exactly when that full chunk existed.
            let mut partial_is_odd = false;
            if off < full {
                for i in 0..M {
                    let xv = $load(xp.add(i * k + off));
                    for j in 0..N {
                        even[i][j] = $fma(xv, $load(wp.add(j * k + off)), even[i][j]);
                    }
                }
                partial_is_odd = true;
            }
            if full < k {
                let rest = k - full;
                let mut wpad = [[0.0f32; $lanes]; N];
                for j in 0..N {
                    wpad[j][..rest].copy_from_slice(&w[j * k + full..j * k + k]);
                }
                let acc = if partial_is_odd { &mut odd } else { &mut even };
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
                    sums[i][j] = $hsum($add(even[i][j], odd[i][j]));
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
    _mm256_add_ps,
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
    _mm512_add_ps,
    hsum512
);
