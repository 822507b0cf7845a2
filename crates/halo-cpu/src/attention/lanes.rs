//! The two vector loops of attention, `q·k` and `out += w·v`, with one fixed arithmetic: eight
//! partial sums of separately rounded products (no fused multiply-add), reduced left to right.
//! The AVX path runs the same operations eight lanes at a time, so it gives the portable path's
//! bits and the choice of path never changes an output.

/// Which implementation this CPU runs, chosen once per attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lanes {
    #[cfg(target_arch = "x86_64")]
    avx: bool,
}

impl Lanes {
    pub(crate) fn detect() -> Lanes {
        Lanes {
            #[cfg(target_arch = "x86_64")]
            avx: std::arch::is_x86_feature_detected!("avx"),
        }
    }

    #[cfg(test)]
    fn portable() -> Lanes {
        Lanes {
            #[cfg(target_arch = "x86_64")]
            avx: false,
        }
    }

    /// `out[r] = rows[r] · k` for each row of `rows` (`out.len()` rows of `k.len()` values).
    pub(crate) fn dots(self, rows: &[f32], k: &[f32], out: &mut [f32]) {
        assert_eq!(rows.len(), out.len() * k.len());
        #[cfg(target_arch = "x86_64")]
        if self.avx {
            // SAFETY: AVX was detected at run time; the lengths were checked above.
            return unsafe { dots_avx(rows, k, out) };
        }
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(k.len().max(1))) {
            *o = dot_portable(row, k);
        }
    }

    /// `rows[r] += w[r] * v` for each row of `rows` (`w.len()` rows of `v.len()` values).
    pub(crate) fn add_scaled_rows(self, rows: &mut [f32], w: &[f32], v: &[f32]) {
        assert_eq!(rows.len(), w.len() * v.len());
        #[cfg(target_arch = "x86_64")]
        if self.avx {
            // SAFETY: AVX was detected at run time; the lengths were checked above.
            return unsafe { add_scaled_rows_avx(rows, w, v) };
        }
        for (row, &w) in rows.chunks_exact_mut(v.len().max(1)).zip(w) {
            row.iter_mut().zip(v).for_each(|(d, v)| *d += w * v);
        }
    }
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dots_avx(rows: &[f32], k: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = dot_avx_inline(&rows[r * k.len()..][..k.len()], k);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn add_scaled_rows_avx(rows: &mut [f32], w: &[f32], v: &[f32]) {
    for (r, &w) in w.iter().enumerate() {
        add_scaled_avx_inline(&mut rows[r * v.len()..][..v.len()], w, v);
    }
}

/// Only called from functions compiled with AVX enabled, into which it inlines.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_avx_inline(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let chunks = a.len() / 8;
    let mut acc = _mm256_setzero_ps();
    for c in 0..chunks {
        let x = _mm256_loadu_ps(a.as_ptr().add(c * 8));
        let y = _mm256_loadu_ps(b.as_ptr().add(c * 8));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(x, y));
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    let mut s = lanes.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Only called from functions compiled with AVX enabled, into which it inlines.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn add_scaled_avx_inline(dst: &mut [f32], w: f32, v: &[f32]) {
    use std::arch::x86_64::*;
    let chunks = dst.len() / 8;
    let wv = _mm256_set1_ps(w);
    for c in 0..chunks {
        let d = dst.as_mut_ptr().add(c * 8);
        let x = _mm256_loadu_ps(v.as_ptr().add(c * 8));
        _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), _mm256_mul_ps(wv, x)));
    }
    for i in chunks * 8..dst.len() {
        dst[i] += w * v[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 101) as f32 / 37.0 - 1.3)
            .collect()
    }

    #[test]
    fn every_path_gives_the_portable_bits() {
        for n in [1, 7, 8, 15, 64, 72, 128, 131] {
            let a = data(n, 1);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let rows = data(3 * n, 11);
            let (mut want, mut got) = (vec![0.0; 3], vec![0.0; 3]);
            Lanes::portable().dots(&rows, &a, &mut want);
            Lanes::detect().dots(&rows, &a, &mut got);
            assert_eq!(bits(&got), bits(&want), "dots, n = {n}");
            let w = [0.5, -1.25, 3.0];
            let (mut want, mut got) = (rows.clone(), rows.clone());
            Lanes::portable().add_scaled_rows(&mut want, &w, &a);
            Lanes::detect().add_scaled_rows(&mut got, &w, &a);
            assert_eq!(bits(&got), bits(&want), "add_scaled_rows, n = {n}");
        }
    }
}
