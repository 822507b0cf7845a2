//! Rotary position embedding on the CPU, in transformers' f32 order: `angle = pos * inv_freq`,
//! `cos`/`sin` scaled by the attention factor, then rotate-half over the first `rotary_dim`
//! values of each head (partial rotary leaves the rest as they are).
//!
//! LongRoPE (Phi-3) has two frequency sets. transformers picks one per forward call from
//! `seq_len = max(position_ids) + 1 > original_max_position_embeddings`, and its `generate`
//! recomputes the whole sequence when it first crosses. Here the set is the sequence's regime,
//! [`halo_hal::SeqStep::long_rope`], decided by the engine from the sequence's full length (so
//! every chunk of a long prompt is long) and never by what else is batched with it; the engine
//! recomputes a sequence that crosses.

use halo_hal::StepBatch;
use halo_model::{RopeConfig, RotaryTables};

/// One RoPE of a model (a model with a local RoPE for sliding layers has two).
pub struct Rotary {
    tables: RotaryTables,
    head_dim: usize,
}

impl Rotary {
    pub fn new(rope: &RopeConfig, head_dim: usize) -> Rotary {
        Rotary {
            tables: rope.tables(head_dim),
            head_dim,
        }
    }

    #[cfg(test)]
    pub fn tables(&self) -> &RotaryTables {
        &self.tables
    }

    /// Per token of `batch` (in batch order), whether its sequence is in the long regime.
    pub fn step_long_regimes(batch: &StepBatch) -> Vec<bool> {
        let mut out = Vec::with_capacity(batch.num_tokens());
        for s in &batch.seqs {
            out.extend(std::iter::repeat_n(s.long_rope, s.tokens.len()));
        }
        out
    }

    /// Rotates every head of every row of `x` (`[rows, heads * head_dim]`) in place: row `r`
    /// is at `positions[r]` and its sequence's regime is `long[r]`. (The model rotates row by
    /// row with the rest of its attention inputs, [`crate::qkv`]; this is their reference.)
    #[cfg(test)]
    pub fn apply(&self, x: &mut [f32], positions: &[usize], long: &[bool], heads: usize) {
        let mut angles = Angles::new(self);
        let rows = x.chunks_exact_mut(heads * self.head_dim);
        for ((row, &pos), &long) in rows.zip(positions).zip(long) {
            angles.at(self, pos, long);
            self.rotate(row, &angles);
        }
    }

    /// Rotates every head of `row` (a whole number of heads) by `angles`.
    pub fn rotate(&self, row: &mut [f32], angles: &Angles) {
        let half = self.tables.rotary_dim / 2;
        let (cos, sin) = (&angles.cos, &angles.sin);
        for head in row.chunks_exact_mut(self.head_dim) {
            for i in 0..half {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = b * cos[i] + a * sin[i];
            }
        }
    }
}

/// One position's `cos` and `sin` tables (attention factor applied), computed once and used for
/// every q and k head of the token.
pub struct Angles {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Angles {
    pub fn new(r: &Rotary) -> Angles {
        let half = r.tables.rotary_dim / 2;
        Angles {
            cos: vec![0.0; half],
            sin: vec![0.0; half],
        }
    }

    /// Fills the tables for position `pos` in the regime `long`.
    pub fn at(&mut self, r: &Rotary, pos: usize, long: bool) {
        let t = &r.tables;
        let inv_freq = &t.select(long)[..self.cos.len()];
        let af = t.attention_factor;
        for ((c, s), &f) in self.cos.iter_mut().zip(&mut self.sin).zip(inv_freq) {
            let angle = pos as f32 * f;
            // transformers multiplies by its attention scaling even when it is 1.0; the
            // product is then exact, so one path serves every RoPE type
            *c = angle.cos() * af;
            *s = angle.sin() * af;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_hal::SeqStep;
    use halo_model::{LongRope, RopeScaling};

    fn plain(rotary_dim: Option<usize>) -> RopeConfig {
        RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
            rotary_dim,
        }
    }

    fn long_rope() -> RopeConfig {
        RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::LongRope(LongRope {
                short_factor: vec![1.0, 2.0],
                long_factor: vec![4.0, 8.0],
                original_max_position_embeddings: 8,
                attention_factor: 1.25,
            }),
            rotary_dim: None,
        }
    }

    fn seq(id: u64, start_pos: usize, n: usize) -> SeqStep {
        SeqStep {
            seq_id: id,
            tokens: vec![1; n],
            start_pos,
            block_table: Vec::new(),
            sample: None,
            long_rope: false,
        }
    }

    #[test]
    fn position_zero_is_identity_and_rotation_preserves_norm() {
        let r = Rotary::new(&plain(None), 4);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        r.apply(&mut x, &[0], &[false], 1);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
        r.apply(&mut x, &[7], &[false], 1);
        let norm: f32 = x.iter().map(|v| v * v).sum();
        assert!((norm - 30.0).abs() < 1e-4);
    }

    #[test]
    fn partial_rotary_leaves_the_tail_alone() {
        // head of 8, 4 rotated: pairs (0, 2) and (1, 3); 4..8 untouched
        let r = Rotary::new(&plain(Some(4)), 8);
        let mut x: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        let before = x.clone();
        r.apply(&mut x, &[3], &[false], 2);
        let inv = plain(None).inv_freq(4);
        for head in 0..2 {
            let b = &before[head * 8..][..8];
            let a = &x[head * 8..][..8];
            assert_eq!(&a[4..], &b[4..]);
            for i in 0..2 {
                let (c, s) = ((3.0 * inv[i]).cos(), (3.0 * inv[i]).sin());
                assert_eq!(a[i], b[i] * c - b[i + 2] * s);
                assert_eq!(a[i + 2], b[i + 2] * c + b[i] * s);
            }
        }
    }

    #[test]
    fn long_rope_scales_and_switches_per_sequence() {
        let r = Rotary::new(&long_rope(), 4);
        let t = r.tables().clone();
        let x0 = vec![1.0f32, 0.0, 0.0, 0.0];
        let mut short = x0.clone();
        r.apply(&mut short, &[2], &[false], 1);
        let mut long = x0.clone();
        r.apply(&mut long, &[2], &[true], 1);
        assert_eq!(short[0], (2.0 * t.short[0]).cos() * 1.25);
        assert_eq!(long[0], (2.0 * t.long.as_ref().unwrap().0[0]).cos() * 1.25);
        assert_ne!(short, long);
    }

    /// The regime is the sequence's, not the chunk's: the first chunk of a long prompt rotates
    /// exactly as the same rows of the whole prompt in one chunk, and a short sequence batched
    /// beside it keeps the short set.
    #[test]
    fn each_sequence_rotates_in_its_own_regime() {
        let mut first_chunk = seq(1, 0, 6);
        first_chunk.long_rope = true;
        let batch = StepBatch {
            seqs: vec![first_chunk, seq(2, 20, 1)],
        };
        let long = Rotary::step_long_regimes(&batch);
        assert_eq!(long, vec![true, true, true, true, true, true, false]);
        let r = Rotary::new(&long_rope(), 4);
        let mut whole = vec![1.0f32, 0.5, -1.0, 2.0];
        r.apply(&mut whole, &[3], &[true], 1);
        let mut chunked = vec![1.0f32, 0.5, -1.0, 2.0];
        r.apply(&mut chunked, &[3], &long[3..4], 1);
        assert_eq!(whole, chunked);
        let mut short = vec![1.0f32, 0.5, -1.0, 2.0];
        r.apply(&mut short, &[3], &long[6..7], 1);
        assert_ne!(short, whole);
    }
}
