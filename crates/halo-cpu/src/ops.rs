//! Row-wise operations around the matmuls, written to follow Hugging Face's f32 arithmetic
//! order (RMSNorm in f32, rotate-half RoPE, SiLU) so greedy ids match transformers exactly.

use crate::matmul::matmul_t;
use halo_hal::DeviceError;

/// A projection `y = x W^T (+ b)` over `rows` rows; `w` is stored `[out, in]` as in the checkpoint.
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out_dim: usize,
    pub in_dim: usize,
}

impl Linear {
    pub fn new(
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Self, DeviceError> {
        if weight.len() != out_dim * in_dim || bias.as_ref().is_some_and(|b| b.len() != out_dim) {
            return Err(DeviceError::Load(format!(
                "projection [{out_dim}, {in_dim}] got {} weights and {:?} biases",
                weight.len(),
                bias.as_ref().map(Vec::len)
            )));
        }
        Ok(Linear {
            weight,
            bias,
            out_dim,
            in_dim,
        })
    }

    /// `x` is `[rows, in_dim]`; returns `[rows, out_dim]`. Each output row depends only on its
    /// own input row, bit for bit (see [`crate::matmul`]).
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, DeviceError> {
        if x.len() != rows * self.in_dim {
            return Err(DeviceError::Backend(format!(
                "projection input has {} values, expected {rows} x {}",
                x.len(),
                self.in_dim
            )));
        }
        let mut y = vec![0.0f32; rows * self.out_dim];
        matmul_t(x, rows, self.in_dim, &self.weight, self.out_dim, &mut y);
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.out_dim) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        Ok(y)
    }
}

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

/// `silu(gate) * up` where each row of `gate_up` holds the gate half then the up half.
pub fn silu_mul(gate_up: &[f32], inter: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(gate_up.len() / 2);
    for row in gate_up.chunks_exact(2 * inter) {
        let (gate, up) = row.split_at(inter);
        out.extend(
            gate.iter()
                .zip(up)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u),
        );
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

    #[test]
    fn linear_matches_hand_product() {
        let l = Linear::new(
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            Some(vec![0.5, -0.5]),
            2,
            3,
        )
        .unwrap();
        let y = l.forward(&[1.0, 1.0, 1.0, 0.0, 1.0, 0.0], 2).unwrap();
        assert_eq!(y, vec![6.5, 14.5, 2.5, 4.5]);
    }
}
