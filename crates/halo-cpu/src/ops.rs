//! Row-wise operations around the matmuls, written to follow Hugging Face's f32 arithmetic
//! order (RMSNorm in f32) so greedy ids match transformers exactly. RoPE is in [`crate::rope`].

/// RMSNorm of every `weight.len()`-wide row of `x` into a new buffer. Rows of a large step
/// spread over the current rayon pool (each row is its own computation, so the bits are the
/// same); a decode row stays on the calling thread.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    use rayon::prelude::*;
    /// Values below which one thread beats spreading the rows.
    const PARALLEL_VALUES: usize = 1 << 15;
    let h = weight.len();
    let mut out = vec![0.0; x.len()];
    if h == 0 {
        return out;
    }
    let row = |(src, dst): (&[f32], &mut [f32])| rms_norm_row(src, dst, weight, eps);
    if x.len() < PARALLEL_VALUES {
        x.chunks_exact(h).zip(out.chunks_exact_mut(h)).for_each(row);
    } else {
        x.par_chunks_exact(h)
            .zip(out.par_chunks_exact_mut(h))
            .for_each(row);
    }
    out
}

/// RMSNorm of one `weight.len()`-wide row `src` into `dst`.
#[inline]
pub fn rms_norm_row(src: &[f32], dst: &mut [f32], weight: &[f32], eps: f32) {
    let mean_sq = src.iter().map(|v| v * v).sum::<f32>() / weight.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for ((d, s), w) in dst.iter_mut().zip(src).zip(weight) {
        *d = w * (s * inv);
    }
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rows() {
        let out = rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0);
        let inv = 1.0 / (12.5f32).sqrt();
        assert_eq!(out, vec![3.0 * inv, 2.0 * (4.0 * inv)]);
    }

    /// A step large enough to spread over the pool gives each row the bits it gets alone.
    #[test]
    fn rows_of_a_large_step_match_rows_alone() {
        let (rows, h) = (80, 768);
        let x: Vec<f32> = (0..rows * h)
            .map(|i| ((i * 7919) % 113) as f32 / 17.0 - 3.0)
            .collect();
        let w: Vec<f32> = (0..h).map(|i| 0.5 + (i % 7) as f32 / 10.0).collect();
        assert!(x.len() >= 1 << 15);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let all = pool.install(|| rms_norm(&x, &w, 1e-5));
        for r in 0..rows {
            let alone = rms_norm(&x[r * h..][..h], &w, 1e-5);
            assert_eq!(all[r * h..][..h], alone[..], "row {r}");
        }
    }
}
