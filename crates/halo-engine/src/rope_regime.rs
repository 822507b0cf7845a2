//! RoPE regimes: a model whose RoPE has a long-context set (Phi-3's LongRoPE) rotates a sequence
//! with it once the sequence is longer than the pretraining length. transformers decides per
//! forward call from `seq_len = max(position_ids) + 1 > original_max_position_embeddings`, and
//! its `generate` drops the KV cache and recomputes the whole sequence when a generation first
//! crosses that length. The engine follows it exactly:
//!
//! - the regime belongs to the sequence and is decided from its length once the step is done
//!   (prompt + generated tokens), so every chunk of a long prompt is already long;
//! - a sequence whose KV was computed short and whose next step is long recomputes: its blocks
//!   are released and prompt + generated are prefilled again in the long regime;
//! - the prefix cache never shares KV across regimes: the regime is part of a block's
//!   [`crate::block_manager::CacheScope`], beside the cache salt.

use halo_model::ModelConfig;

/// When a model's sequences switch to the long RoPE regime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RopeRegime {
    /// Sequences longer than this are long; `None`: the model has a single regime.
    long_above: Option<usize>,
}

impl RopeRegime {
    /// A model with one regime (every sequence short).
    pub fn single() -> Self {
        RopeRegime { long_above: None }
    }

    /// Sequences longer than `len` tokens use the long regime.
    pub fn long_above(len: usize) -> Self {
        RopeRegime {
            long_above: Some(len),
        }
    }

    /// The model's regimes: from the RoPE of its layers (a local RoPE with its own long set
    /// switches at its own length; the earliest switch decides, since one sequence has one
    /// regime across its layers and transformers' configs give them all the same length).
    pub fn for_model(config: &ModelConfig) -> Self {
        let above = [Some(&config.rope), config.local_rope.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|r| r.long_regime_above())
            .min();
        RopeRegime { long_above: above }
    }

    /// Whether a sequence of `seq_len` tokens (prompt + generated once the step is done) is in
    /// the long regime.
    pub fn is_long(&self, seq_len: usize) -> bool {
        self.long_above.is_some_and(|n| seq_len > n)
    }

    /// The length above which sequences are long, if the model has a long regime.
    pub fn threshold(&self) -> Option<usize> {
        self.long_above
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_only_past_the_original_length() {
        let r = RopeRegime::long_above(32);
        assert!(!r.is_long(1));
        assert!(!r.is_long(32));
        assert!(r.is_long(33));
        assert_eq!(r.threshold(), Some(32));
        assert!(!RopeRegime::single().is_long(usize::MAX));
    }

    #[test]
    fn phi3_fixture_switches_at_32() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/families/tiny-phi3");
        let config = ModelConfig::from_dir(&dir).unwrap();
        assert_eq!(RopeRegime::for_model(&config).threshold(), Some(32));
        let llama = ModelConfig::from_dir(&crate::testing::tiny_mha_dir()).unwrap();
        assert_eq!(RopeRegime::for_model(&llama), RopeRegime::single());
    }
}
