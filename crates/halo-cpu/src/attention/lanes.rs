//! The two vector loops of attention, `q·k` and `out += w·v`, with one fixed arithmetic: eight
//! partial sums of separately rounded products (no fused multiply-add), reduced left to right.
//! The AVX path runs the same operations eight lanes at a time, so it gives the portable path's
//! bits and the choice of path never changes an output. Keys and values arrive in the KV pool's
//! type and are widened to f32 exactly before any arithmetic, so the chain is the same f32 chain
//! for every storage type.

use half::{bf16, f16};

/// A KV pool element: widening it to f32 is exact.
pub(crate) trait KvValue: Copy + Send + Sync {
    fn widen(self) -> f32;

    /// Eight consecutive values at `p`, widened.
    ///
    /// # Safety
    /// Eight values must be readable at `p`, and the caller must run with AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvValue for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl KvValue for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
}

impl KvValue for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // A bf16 is the top half of the f32 with the same value.
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    }
}

/// One implementation of the two loops. Methods are `unsafe` because [`Avx`]'s need AVX2 and
/// F16C; they are `inline(always)` so they compile inside the caller's target features.
pub(crate) trait Lanes {
    /// `a · b`, both `a.len()` long.
    ///
    /// # Safety
    /// `b.len() >= a.len()`, and the CPU features the implementation names.
    unsafe fn dot<T: KvValue>(a: &[f32], b: &[T]) -> f32;

    /// `dst += w * v`, `v.len() >= dst.len()`.
    ///
    /// # Safety
    /// As for [`Lanes::dot`].
    unsafe fn add_scaled<T: KvValue>(dst: &mut [f32], w: f32, v: &[T]);
}

/// Plain Rust, for any CPU.
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    unsafe fn dot<T: KvValue>(a: &[f32], b: &[T]) -> f32 {
        let mut acc = [0.0f32; 8];
        let chunks = a.len() / 8;
        for c in 0..chunks {
            for l in 0..8 {
                acc[l] += a[c * 8 + l] * b[c * 8 + l].widen();
            }
        }
        let mut s = acc.iter().sum::<f32>();
        for i in chunks * 8..a.len() {
            s += a[i] * b[i].widen();
        }
        s
    }

    #[inline(always)]
    unsafe fn add_scaled<T: KvValue>(dst: &mut [f32], w: f32, v: &[T]) {
        dst.iter_mut().zip(v).for_each(|(d, v)| *d += w * v.widen());
    }
}

/// Eight lanes of AVX: callers must have detected AVX2 and F16C ([`has_avx`]).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx {
    #[inline(always)]
    unsafe fn dot<T: KvValue>(a: &[f32], b: &[T]) -> f32 {
        use std::arch::x86_64::*;
        debug_assert!(b.len() >= a.len());
        let chunks = a.len() / 8;
        let mut acc = _mm256_setzero_ps();
        for c in 0..chunks {
            let x = _mm256_loadu_ps(a.as_ptr().add(c * 8));
            let y = T::load8(b.as_ptr().add(c * 8));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(x, y));
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut s = lanes.iter().sum::<f32>();
        for i in chunks * 8..a.len() {
            s += a[i] * b[i].widen();
        }
        s
    }

    #[inline(always)]
    unsafe fn add_scaled<T: KvValue>(dst: &mut [f32], w: f32, v: &[T]) {
        use std::arch::x86_64::*;
        debug_assert!(v.len() >= dst.len());
        let chunks = dst.len() / 8;
        let wv = _mm256_set1_ps(w);
        for c in 0..chunks {
            let d = dst.as_mut_ptr().add(c * 8);
            let x = T::load8(v.as_ptr().add(c * 8));
            _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), _mm256_mul_ps(wv, x)));
        }
        for i in chunks * 8..dst.len() {
            dst[i] += w * v[i].widen();
        }
    }
}

/// Whether this CPU runs [`Avx`] (and `HALO_CPU_ISA` allows AVX2).
pub(crate) fn has_avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::isa_cap::cap() >= crate::isa_cap::IsaCap::Avx2
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 101) as f32 / 37.0 - 1.3)
            .collect()
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn avx_dot<T: KvValue>(a: &[f32], b: &[T]) -> f32 {
        Avx::dot(a, b)
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn avx_add<T: KvValue>(d: &mut [f32], w: f32, v: &[T]) {
        Avx::add_scaled(d, w, v)
    }

    fn check<T: KvValue + std::fmt::Debug>(narrow: fn(f32) -> T) {
        if !has_avx() {
            return;
        }
        for n in [1, 7, 8, 15, 64, 72, 128, 131] {
            let a = data(n, 1);
            let b: Vec<T> = data(n, 11).into_iter().map(narrow).collect();
            // SAFETY: AVX2 and F16C were detected; the slices are n long.
            let (want, got) = unsafe { (Portable::dot(&a, &b), avx_dot(&a, &b)) };
            assert_eq!(got.to_bits(), want.to_bits(), "dot, n = {n}");
            let (mut want, mut got) = (a.clone(), a.clone());
            unsafe {
                Portable::add_scaled(&mut want, -1.25, &b);
                avx_add(&mut got, -1.25, &b);
            }
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "add_scaled, n = {n}");
        }
    }

    #[test]
    fn avx_gives_the_portable_bits_for_every_storage_type() {
        check::<f32>(|x| x);
        check::<f16>(f16::from_f32);
        check::<bf16>(bf16::from_f32);
    }
}
