//! Row-wise operations around the matmuls, written to follow Hugging Face's f32 arithmetic
//! order (RMSNorm in f32, rotate-half RoPE) so greedy ids match transformers exactly.

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

/// Rotates each head of each row in place (rotate-half layout): row `r` is at `positions[r]`.
pub fn rope(x: &mut [f32], positions: &[usize], heads: usize, head_dim: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    let mut cos = vec![0.0f32; half];
    let mut sin = vec![0.0f32; half];
    for (row, &pos) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
        for i in 0..half {
            let angle = pos as f32 * inv_freq[i];
            cos[i] = angle.cos();
            sin[i] = angle.sin();
        }
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = b * cos[i] + a * sin[i];
            }
        }
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

    #[test]
    fn rope_at_zero_is_identity_and_preserves_norm() {
        let inv: Vec<f32> = vec![1.0, 0.1];
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rope(&mut x, &[0], 1, 4, &inv);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
        rope(&mut x, &[7], 1, 4, &inv);
        let norm: f32 = x.iter().map(|v| v * v).sum();
        assert!((norm - 30.0).abs() < 1e-4);
    }
}
