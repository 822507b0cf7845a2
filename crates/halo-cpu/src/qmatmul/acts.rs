//! Activations quantized for the integer kernels, each row on its own (so a row's codes never
//! depend on the rest of the batch): blocks of 32 (for Q4_0/Q8_0 weights) or 256 (K-quants)
//! int8 codes in [-127, 127] with an f32 scale `d = amax / 127`, and, for the K-quants, the sum
//! of every 16 consecutive codes.

use halo_model::dtype::StoredDType;

pub(crate) struct Acts {
    /// Values per row.
    pub k: usize,
    /// Values per block (32 or 256).
    pub block: usize,
    /// `[m, k]` codes.
    pub q: Vec<i8>,
    /// `[m, k / block]` scales.
    pub d: Vec<f32>,
    /// `[m, k / 16]` sums of 16 codes (K-quant activations only; empty otherwise).
    pub bsums: Vec<i16>,
    /// `[m, k / 32]` each block's code sum times −128 (32-value blocks only; empty otherwise):
    /// the packed Q8_0 kernel starts its integer sums there to take off the unsigned-code
    /// offset, a broadcast load instead of scalar arithmetic per row and block.
    pub offset32: Vec<i32>,
}

/// Values below which quantizing on one thread beats spreading the blocks over the pool.
const PARALLEL_VALUES: usize = 1 << 15;

impl Acts {
    /// Quantizes the `m` rows of `x` (each `k` long, `k` a whole number of `dtype`'s blocks) for
    /// weights of `dtype`.
    pub fn quantize(dtype: StoredDType, x: &[f32], m: usize, k: usize) -> Acts {
        let block = if dtype.block_elems() == 256 { 256 } else { 32 };
        debug_assert!(k.is_multiple_of(block) && x.len() == m * k);
        let mut q = vec![0i8; m * k];
        let mut d = vec![0.0f32; m * k / block];
        #[cfg(target_arch = "x86_64")]
        let simd = simd();
        let one = |((xb, qb), db): ((&[f32], &mut [i8]), &mut f32)| {
            #[cfg(target_arch = "x86_64")]
            {
                *db = match simd {
                    // SAFETY: simd() checked the CPU; both slices hold a whole block.
                    Simd::Avx512 => unsafe { quantize_block_avx512(xb, qb) },
                    // SAFETY: as above; blocks are 32 or 256 values, whole chunks of 32.
                    Simd::Avx2 => unsafe { quantize_block_avx2(xb, qb) },
                    Simd::None => quantize_block(xb, qb),
                };
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                *db = quantize_block(xb, qb);
            }
        };
        // Blocks quantize on their own, so a large step's spread over the pool gives the same
        // codes; a decode row stays on the calling thread.
        if x.len() < PARALLEL_VALUES {
            x.chunks_exact(block)
                .zip(q.chunks_exact_mut(block))
                .zip(d.iter_mut())
                .for_each(one);
        } else {
            use rayon::prelude::*;
            x.par_chunks_exact(block)
                .zip(q.par_chunks_exact_mut(block))
                .zip(d.par_iter_mut())
                .for_each(one);
        }
        let bsums = if block == 256 {
            q.chunks_exact(16)
                .map(|c| c.iter().map(|&v| v as i16).sum())
                .collect()
        } else {
            Vec::new()
        };
        let offset32 = if block == 32 {
            q.chunks_exact(32)
                .map(|c| -128 * c.iter().map(|&v| v as i32).sum::<i32>())
                .collect()
        } else {
            Vec::new()
        };
        Acts {
            k,
            block,
            q,
            d,
            bsums,
            offset32,
        }
    }

    /// Row `i`'s codes.
    #[inline]
    pub fn row(&self, i: usize) -> &[i8] {
        &self.q[i * self.k..][..self.k]
    }

    /// Row `i`'s block scales.
    #[inline]
    pub fn scales(&self, i: usize) -> &[f32] {
        let nb = self.k / self.block;
        &self.d[i * nb..][..nb]
    }

    /// Row `i`'s sums of 16.
    #[inline]
    pub fn sums16(&self, i: usize) -> &[i16] {
        &self.bsums[i * (self.k / 16)..][..self.k / 16]
    }
}

/// The vector quantizers this CPU runs within `HALO_CPU_ISA`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    None,
}

/// The best of [`quantize_block_avx512`] and [`quantize_block_avx2`] that can run here and
/// that `HALO_CPU_ISA` allows (detected once; both give [`quantize_block`]'s bits, so the
/// choice never changes a result, only the time: the scalar one calls libm's `roundf` per
/// value, which made a 512-token prefill on the AVX2 path spend a tenth of its time here).
#[cfg(target_arch = "x86_64")]
fn simd() -> Simd {
    use crate::isa_cap::{cap, IsaCap};
    static SIMD: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *SIMD.get_or_init(|| {
        if cap() >= IsaCap::Avx512 && is_x86_feature_detected!("avx512f") {
            Simd::Avx512
        } else if cap() >= IsaCap::Avx2 && is_x86_feature_detected!("avx2") {
            Simd::Avx2
        } else {
            Simd::None
        }
    })
}

/// [`quantize_block`] eight values at a time with AVX2, as [`quantize_block_avx512`] does
/// sixteen: the same IEEE operations, so the same codes and scale. `x.len()` must be a
/// multiple of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_block_avx2(x: &[f32], q: &mut [i8]) -> f32 {
    use std::arch::x86_64::*;
    debug_assert!(x.len() == q.len() && x.len().is_multiple_of(32));
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut vmax = _mm256_setzero_ps();
    let mut bad = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        let a = _mm256_and_ps(_mm256_loadu_ps(c.as_ptr()), abs_mask);
        // Unordered (NaN) or infinite: not below +inf.
        bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_NLT_UQ>(a, inf));
        vmax = _mm256_max_ps(vmax, a);
    }
    if _mm256_movemask_ps(bad) != 0 {
        return quantize_block(x, q);
    }
    // The maximum is exact in any order (no NaN is left).
    let m4 = _mm_max_ps(
        _mm256_castps256_ps128(vmax),
        _mm256_extractf128_ps::<1>(vmax),
    );
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2)));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let sign_bit = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    // Packing i32 → i16 → i8 interleaves the four vectors by 128-bit lane; this puts the
    // 32-bit groups back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (c, qc) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
        let mut r = [_mm256_setzero_si256(); 4];
        for (j, r) in r.iter_mut().enumerate() {
            let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr().add(8 * j)), idv);
            // Half away from zero: truncate, then step away from zero where the dropped
            // fraction is at least one half (exact: |v| ≤ 127 + ε).
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
            let frac = _mm256_and_ps(_mm256_sub_ps(v, t), abs_mask);
            let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, half);
            let step = _mm256_or_ps(one, _mm256_and_ps(v, sign_bit));
            let rounded = _mm256_add_ps(t, _mm256_and_ps(up, step));
            *r = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(rounded, lo), hi));
        }
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(r[0], r[1]),
            _mm256_packs_epi32(r[2], r[3]),
        );
        _mm256_storeu_si256(
            qc.as_mut_ptr().cast(),
            _mm256_permutevar8x32_epi32(packed, order),
        );
    }
    d
}

/// [`quantize_block`] sixteen values at a time, giving its very codes and scale (the same
/// IEEE operations; `round` is half away from zero, rebuilt from truncation, which is exact
/// here since |v·id| ≤ 127 + ε). Blocks with a NaN or an infinity go to [`quantize_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_block_avx512(x: &[f32], q: &mut [i8]) -> f32 {
    use std::arch::x86_64::*;
    debug_assert!(x.len() == q.len() && x.len().is_multiple_of(16));
    let mut vmax = _mm512_setzero_ps();
    let mut bad: u16 = 0;
    for c in x.chunks_exact(16) {
        let v = _mm512_loadu_ps(c.as_ptr());
        let a = _mm512_abs_ps(v);
        // Unordered (NaN) or infinite: not below +inf.
        bad |= !_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(f32::INFINITY));
        vmax = _mm512_max_ps(vmax, a);
    }
    if bad != 0 {
        return quantize_block(x, q);
    }
    let amax = _mm512_reduce_max_ps(vmax);
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm512_set1_ps(id);
    let one = _mm512_set1_ps(1.0);
    let half = _mm512_set1_ps(0.5);
    for (c, qc) in x.chunks_exact(16).zip(q.chunks_exact_mut(16)) {
        let v = _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), idv);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        let frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, half);
        // t ± 1 away from zero where the dropped fraction is at least one half.
        let step = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(one),
            _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN)),
        ));
        let r = _mm512_mask_add_ps(t, up, t, step);
        let r = _mm512_min_ps(
            _mm512_max_ps(r, _mm512_set1_ps(-127.0)),
            _mm512_set1_ps(127.0),
        );
        _mm_storeu_si128(
            qc.as_mut_ptr().cast(),
            _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)),
        );
    }
    d
}

/// Symmetric int8 codes for one block; returns the scale.
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    if !amax.is_finite() || x.iter().any(|v| v.is_nan()) {
        // A NaN or infinity poisons the block's outputs rather than vanishing into the codes.
        q.fill(0);
        return f32::NAN;
    }
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (qv, &v) in q.iter_mut().zip(x) {
        *qv = (v * id).round().clamp(-127.0, 127.0) as i8;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_quantization_gives_the_scalar_codes_and_scale() {
        let avx512 = simd() == Simd::Avx512;
        let avx2 = is_x86_feature_detected!("avx2");
        // Ties at ±k.5 after scaling, tiny and huge values, zeros, and random values.
        let mut blocks: Vec<Vec<f32>> = vec![
            (0..32).map(|i| i as f32 - 15.5).collect(),
            // amax 127 makes the scale 1, so these are exact ties.
            (0..32)
                .map(|i| if i == 0 { 127.0 } else { i as f32 - 16.5 })
                .collect(),
            (0..32)
                .map(|i| (i as f32 - 16.0) * 127.0 / 16.0 + 0.5)
                .collect(),
            vec![0.0; 32],
            (0..32).map(|i| if i == 3 { -1e-30 } else { 0.0 }).collect(),
            (0..32).map(|i| (i as f32 * 0.37).sin() * 3e4).collect(),
            (0..32)
                .map(|i| if i == 7 { f32::NAN } else { 1.0 })
                .collect(),
            (0..32)
                .map(|i| if i == 9 { f32::INFINITY } else { 1.0 })
                .collect(),
        ];
        let mut z = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            blocks.push(
                (0..256)
                    .map(|_| {
                        z = z
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((z >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                            * 10f32.powi((z % 7) as i32 - 3)
                    })
                    .collect(),
            );
        }
        for x in blocks {
            let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            let da = quantize_block(&x, &mut a);
            if avx512 {
                // SAFETY: checked above.
                let db = unsafe { quantize_block_avx512(&x, &mut b) };
                assert_eq!(da.to_bits(), db.to_bits(), "{x:?}");
                assert_eq!(a, b, "{x:?}");
            }
            if avx2 {
                b.fill(0);
                // SAFETY: checked above; the blocks are 32 or 256 values.
                let db = unsafe { quantize_block_avx2(&x, &mut b) };
                assert_eq!(da.to_bits(), db.to_bits(), "avx2 {x:?}");
                assert_eq!(a, b, "avx2 {x:?}");
            }
        }
    }

    /// A step large enough to spread over the pool gives each row the codes, scales and sums it
    /// gets alone, for both block sizes.
    #[test]
    fn rows_of_a_large_step_match_rows_alone() {
        let (m, k) = (64, 1024);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 251) as f32 / 31.0 - 4.0)
            .collect();
        assert!(x.len() >= PARALLEL_VALUES);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for dtype in [StoredDType::Q8_0, StoredDType::Q4_K] {
            let all = pool.install(|| Acts::quantize(dtype, &x, m, k));
            let per_row = all.d.len() / m;
            for r in 0..m {
                let alone = Acts::quantize(dtype, &x[r * k..][..k], 1, k);
                assert_eq!(all.row(r), &alone.q[..], "{dtype} row {r}");
                assert_eq!(
                    all.d[r * per_row..][..per_row],
                    alone.d[..],
                    "{dtype} row {r}"
                );
                let (sums, one) = (all.bsums.len() / m, alone.bsums.len());
                assert_eq!(all.bsums[r * sums..][..sums], alone.bsums[..one]);
                let (sums, one) = (all.offset32.len() / m, alone.offset32.len());
                assert_eq!(all.offset32[r * sums..][..sums], alone.offset32[..one]);
            }
        }
    }
}
