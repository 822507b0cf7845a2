//! The feed-forward of one decoder layer: the seam where families differ in what follows the
//! attention. A dense gated MLP (SwiGLU or GeGLU by the config's activation) for most
//! families; a mixture of experts plugs in as another variant with its own loader and forward.

use crate::activation::glu;
use crate::linear::Linear;
use crate::moe::SparseMoe;
use halo_hal::DeviceError;
use halo_model::Activation;

pub enum FeedForward {
    /// `down(act(gate(x)) * up(x))` with gate and up fused into one projection.
    Dense {
        gate_up: Linear,
        down: Linear,
        inter: usize,
    },
    /// A router and experts ([`crate::moe`]): each token runs only the experts it chose.
    Moe(SparseMoe),
}

impl FeedForward {
    /// Runs `n` rows of `x` (`[n, hidden]`) through the block; returns `[n, hidden]`.
    pub fn forward(&self, x: &[f32], n: usize, act: Activation) -> Result<Vec<f32>, DeviceError> {
        match self {
            FeedForward::Dense {
                gate_up,
                down,
                inter,
            } => {
                let a = glu(&gate_up.forward(x, n)?, *inter, act);
                down.forward(&a, n)
            }
            FeedForward::Moe(m) => m.forward(x, n, act),
        }
    }

    /// Bytes of weights one step streams through this block (a sparse block: one token's
    /// router and experts, what a batch-1 decode step reads).
    pub fn weight_bytes_per_step(&self) -> u64 {
        match self {
            FeedForward::Dense { gate_up, down, .. } => {
                gate_up.weight_bytes() + down.weight_bytes()
            }
            FeedForward::Moe(m) => m.token_weight_bytes(),
        }
    }

    /// Bytes of weights the last forward read (a sparse block: the experts its tokens chose).
    pub fn last_step_weight_bytes(&self) -> u64 {
        match self {
            FeedForward::Dense { .. } => self.weight_bytes_per_step(),
            FeedForward::Moe(m) => m.last_step_weight_bytes(),
        }
    }
}
