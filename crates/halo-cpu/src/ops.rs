//! Row-wise operations around the matmuls, written to follow Hugging Face's f32 arithmetic
//! order (RMSNorm in f32) so greedy ids match transformers exactly. RoPE is in [`crate::rope`].

/// RMSNorm of every `weight.len()`-wide row of `x` into a new buffer.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let h = weight.len();
    let mut out = vec![0.0; x.len()];
    for (src, dst) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let mean_sq = src.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for ((d, s), w) in dst.iter_mut().zip(src).zip(weight) {
            *d = w * (s * inv);
        }
    }
    out
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
}
