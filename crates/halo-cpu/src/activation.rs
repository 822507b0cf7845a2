//! The gated feed-forward activations and tanh soft-capping, in f32 and in the operation order
//! of PyTorch's CPU kernels so logits follow transformers' f32 run.

#[cfg(test)]
use crate::exp::silu;
use crate::exp::silu_gated;
use halo_model::Activation;

/// `act(gate) * up` where each row of `gate_up` holds the gate half then the up half. Rows of a
/// large step spread over the current rayon pool (each value is computed alone, so the split
/// never changes a bit); a decode row stays on the calling thread.
pub fn glu(gate_up: &[f32], inter: usize, act: Activation) -> Vec<f32> {
    use rayon::prelude::*;
    /// Values below which spreading costs more than it saves.
    const PARALLEL_VALUES: usize = 1 << 15;
    let mut out = vec![0.0f32; gate_up.len() / 2];
    fn gated(out: &mut [f32], gate: &[f32], up: &[f32], f: impl Fn(f32) -> f32) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = f(g) * u;
        }
    }
    let row = |(out, row): (&mut [f32], &[f32])| {
        let (gate, up) = row.split_at(inter);
        match act {
            Activation::Silu => silu_gated(out, gate, up),
            Activation::GeluTanh => gated(out, gate, up, gelu_tanh),
        }
    };
    if inter == 0 {
        return out;
    }
    if out.len() < PARALLEL_VALUES {
        out.chunks_exact_mut(inter)
            .zip(gate_up.chunks_exact(2 * inter))
            .for_each(row);
    } else {
        out.par_chunks_exact_mut(inter)
            .zip(gate_up.par_chunks_exact(2 * inter))
            .for_each(row);
    }
    out
}

/// GELU's tanh approximation (`gelu_pytorch_tanh`), in PyTorch's order:
/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    const BETA: f32 = (std::f64::consts::SQRT_2 * std::f64::consts::FRAC_2_SQRT_PI * 0.5) as f32;
    const KAPPA: f32 = 0.044715;
    let cube = x * x * x;
    let inner = BETA * (x + KAPPA * cube);
    0.5 * x * (1.0 + inner.tanh())
}

/// `cap * tanh(x / cap)` on every value: bounds scores or logits to (-cap, cap).
pub fn softcap_in_place(x: &mut [f32], cap: f32) {
    x.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_the_formula_in_f64() {
        for &x in &[-6.0f32, -1.5, -0.3, 0.0, 0.2, 1.0, 3.7, 8.0] {
            let xd = x as f64;
            let want = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!((gelu_tanh(x) as f64 - want).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn glu_applies_the_activation_to_the_gate_half_only() {
        let row = [1.0f32, -2.0, 3.0, 4.0];
        let silu_out = glu(&row, 2, Activation::Silu);
        assert_eq!(silu_out, vec![silu(1.0) * 3.0, silu(-2.0) * 4.0]);
        let gelu_out = glu(&row, 2, Activation::GeluTanh);
        assert_eq!(gelu_out, vec![gelu_tanh(1.0) * 3.0, gelu_tanh(-2.0) * 4.0]);
    }

    #[test]
    fn softcap_bounds_and_keeps_small_values() {
        let mut x = vec![1e-3f32, -1e6, 1e6, 0.0];
        softcap_in_place(&mut x, 30.0);
        assert!((x[0] - 1e-3).abs() < 1e-8);
        assert!(x[1] >= -30.0 && x[1] < -29.99);
        assert!(x[2] <= 30.0 && x[2] > 29.99);
        assert_eq!(x[3], 0.0);
    }
}
