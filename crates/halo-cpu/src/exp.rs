//! `exp` for the softmax of attention and for SiLU, eight values at a time on AVX2 and one at a
//! time elsewhere, with the same IEEE operations in the same order on both paths, so the choice
//! of path never changes a bit (as in [`crate::attention::lanes`]).
//!
//! libm's `expf` is a call per value: at 32 sequences a decode step takes ~1.7 million of them
//! (every attention weight and every FFN gate), 4% of the step in `perf`. This is ggml's
//! approach (its vectorized `expf` serves softmax and SiLU): Cody–Waite reduction
//! `x = n·ln2 + r`, |r| ≤ ln2/2, a degree-7 polynomial for `eʳ`, and the scale `2ⁿ` applied as
//! two exponent-field products so gradual underflow and overflow to infinity come out right.
//! Without fused multiply-adds (so the portable path needs none) the result stays within 2 ulp
//! of the correctly rounded value (tested against f64 over the whole range below).

/// `n·ln2` in two parts: `LN2_HI` has 9 significant bits, so `n·LN2_HI` is exact for every `n`
/// the clamp allows.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// Below this `exp` rounds to 0 and above it to infinity; clamping there keeps `n` in the
/// range the two scale factors cover.
const X_MIN: f32 = -104.0;
const X_MAX: f32 = 89.0;
/// Taylor coefficients 1/k! for k = 2..=7 (the terms 1 + r are added exactly at the end).
const C: [f32; 6] = [
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];

/// `2^e` for `e` in the normal exponent range.
#[inline(always)]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// `e^x` (NaN for NaN).
#[inline]
pub(crate) fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(X_MIN, X_MAX);
    let n = (x * LOG2_E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = C[5];
    for &c in C[..5].iter().rev() {
        p = p * r + c;
    }
    let p = (p * r) * r + r + 1.0;
    let n = n as i32;
    let half = n >> 1;
    (p * pow2(half)) * pow2(n - half)
}

/// Eight lanes of [`exp`]: the same operations, so each lane equals `exp` of its value.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
    let xc = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(X_MIN)),
        _mm256_set1_ps(X_MAX),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(LOG2_E),
    ));
    let r = _mm256_sub_ps(
        _mm256_sub_ps(xc, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI))),
        _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
    );
    let mut p = _mm256_set1_ps(C[5]);
    for &c in C[..5].iter().rev() {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
    }
    let p = _mm256_add_ps(
        _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r),
        _mm256_set1_ps(1.0),
    );
    let n = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32::<1>(n);
    let pow2 = |e: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            e,
            _mm256_set1_epi32(127),
        )))
    };
    let y = _mm256_mul_ps(
        _mm256_mul_ps(p, pow2(half)),
        pow2(_mm256_sub_epi32(n, half)),
    );
    _mm256_blendv_ps(y, x, nan)
}

/// Whether [`exp8`] may run here (AVX2 detected and allowed by `HALO_CPU_ISA`).
#[inline]
pub(crate) fn has_exp8() -> bool {
    crate::attention::lanes::has_avx()
}

/// `s[i] = exp(s[i] - max)` for every value; returns their sum, taken in eight lanes (value `i`
/// into lane `i mod 8`, in order), the lanes then added 0..8 and the tail after them: the same
/// sum on either path.
pub(crate) fn exp_shifted_sum(s: &mut [f32], max: f32) -> f32 {
    let full = s.len() / 8 * 8;
    let mut lanes = [0.0f32; 8];
    #[cfg(target_arch = "x86_64")]
    if has_exp8() {
        // SAFETY: AVX2 was detected; every load and store is inside `s[..full]`.
        unsafe { exp_shifted_avx(&mut s[..full], max, &mut lanes) };
    } else {
        exp_shifted_portable(&mut s[..full], max, &mut lanes);
    }
    #[cfg(not(target_arch = "x86_64"))]
    exp_shifted_portable(&mut s[..full], max, &mut lanes);
    let mut sum = lanes.iter().sum::<f32>();
    for v in &mut s[full..] {
        *v = exp(*v - max);
        sum += *v;
    }
    sum
}

fn exp_shifted_portable(s: &mut [f32], max: f32, lanes: &mut [f32; 8]) {
    for chunk in s.chunks_exact_mut(8) {
        for (v, l) in chunk.iter_mut().zip(lanes.iter_mut()) {
            *v = exp(*v - max);
            *l += *v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_shifted_avx(s: &mut [f32], max: f32, lanes: &mut [f32; 8]) {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    for chunk in s.chunks_exact_mut(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), m));
        _mm256_storeu_ps(chunk.as_mut_ptr(), e);
        acc = _mm256_add_ps(acc, e);
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
}

/// `x / (1 + exp(-x))`, PyTorch's SiLU formula.
#[inline]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `out[i] = silu(gate[i]) * up[i]`, eight at a time where AVX2 is allowed (same bits).
pub(crate) fn silu_gated(out: &mut [f32], gate: &[f32], up: &[f32]) {
    let n = out.len().min(gate.len()).min(up.len());
    #[cfg(target_arch = "x86_64")]
    let done = if has_exp8() {
        let done = n / 8 * 8;
        // SAFETY: AVX2 was detected; the three slices hold at least `done` values.
        unsafe { silu_gated_avx(&mut out[..done], &gate[..done], &up[..done]) };
        done
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for ((o, &g), &u) in out[done..n]
        .iter_mut()
        .zip(&gate[done..n])
        .zip(&up[done..n])
    {
        *o = silu(g) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn silu_gated_avx(out: &mut [f32], gate: &[f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    for ((o, g), u) in out
        .chunks_exact_mut(8)
        .zip(gate.chunks_exact(8))
        .zip(up.chunks_exact(8))
    {
        let g = _mm256_loadu_ps(g.as_ptr());
        let e = exp8(_mm256_xor_ps(g, sign));
        let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(
            o.as_mut_ptr(),
            _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in representable f32 values between two finite values of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Every 1013th f32 bit pattern in the finite, non-flushed range, plus the edges.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (0..u32::MAX / 1013)
            .map(|i| f32::from_bits(i * 1013))
            .filter(|x| x.is_finite() && (-110.0..=95.0).contains(x))
            .collect();
        xs.extend([
            0.0, -0.0, 1.0, -1.0, 88.72, 88.73, -87.33, -87.34, -103.9, -104.1, X_MIN, X_MAX,
        ]);
        xs
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_and_saturates_like_expf() {
        let mut worst = 0;
        for x in sweep() {
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            if want == 0.0 || want.is_infinite() || want < f32::MIN_POSITIVE {
                // Overflow gives infinity; the subnormal tail may differ by one unit of the
                // smallest subnormal from the double rounding, or flush where libm flushes.
                assert!(
                    got == want || (got - want).abs() <= f32::from_bits(1),
                    "exp({x}) = {got}, want {want}"
                );
                continue;
            }
            let u = ulps(got, want);
            worst = worst.max(u);
            assert!(u <= 2, "exp({x}) = {got}, want {want} ({u} ulp)");
        }
        assert!(worst >= 1, "the sweep should reach the rounding error");
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_lanes_give_the_scalar_bits() {
        if !has_exp8() {
            return;
        }
        let mut xs = sweep();
        xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        while !xs.len().is_multiple_of(8) {
            xs.push(0.5);
        }
        for chunk in xs.chunks_exact(8) {
            let mut got = [0.0f32; 8];
            // SAFETY: AVX2 was detected; both arrays hold eight values.
            unsafe {
                use std::arch::x86_64::*;
                _mm256_storeu_ps(got.as_mut_ptr(), exp8(_mm256_loadu_ps(chunk.as_ptr())));
            }
            for (&x, g) in chunk.iter().zip(got) {
                assert_eq!(g.to_bits(), exp(x).to_bits(), "exp({x})");
            }
        }
    }

    #[test]
    fn shifted_sum_and_silu_give_the_portable_bits() {
        for n in [0usize, 1, 7, 8, 9, 64, 197] {
            let s: Vec<f32> = (0..n)
                .map(|i| ((i * 37) % 101) as f32 / 9.0 - 6.0)
                .collect();
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (mut got, mut want) = (s.clone(), s.clone());
            let sum = exp_shifted_sum(&mut got, max);
            let full = n / 8 * 8;
            let mut lanes = [0.0f32; 8];
            exp_shifted_portable(&mut want[..full], max, &mut lanes);
            let mut want_sum = lanes.iter().sum::<f32>();
            for v in &mut want[full..] {
                *v = exp(*v - max);
                want_sum += *v;
            }
            assert_eq!(sum.to_bits(), want_sum.to_bits(), "n = {n}");
            assert_eq!(got, want, "n = {n}");

            let up: Vec<f32> = (0..n).map(|i| i as f32 / 7.0 - 3.0).collect();
            let mut out = vec![0.0f32; n];
            silu_gated(&mut out, &s, &up);
            for i in 0..n {
                assert_eq!(out[i].to_bits(), (silu(s[i]) * up[i]).to_bits(), "n = {n}");
            }
        }
    }
}
