//! The data of one step: what goes into [`crate::Device::step`] and what comes back.

use crate::error::DeviceError;
use crate::info::KvCacheLayout;
pub use crate::penalty::PenaltyContext;
use std::collections::HashSet;

/// The engine's id for a sequence; stable across steps (and across preemption).
pub type SeqId = u64;
/// The index of a KV block in the device's pool.
pub type BlockId = u32;

/// A block-table entry whose block the engine released because no query can see it any more:
/// with a model whose every layer attends through a sliding window, blocks wholly older than
/// the window of the step's first new position. It keeps the table's positions; attention
/// never reads it (it reads only positions inside the window) and nothing is written to it.
pub const FREED_BLOCK: BlockId = BlockId::MAX;

/// How to pick the next token. Defaults are "off" for every filter: greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax, ties to the lowest id).
    pub temperature: f32,
    /// 0 = off.
    pub top_k: u32,
    /// In (0, 1]; 1 = off.
    pub top_p: f32,
    /// In [0, 1]; 0 = off.
    pub min_p: f32,
    /// > 0; 1 = off. Applied to every token of the prompt and of the output (HF semantics).
    pub repetition_penalty: f32,
    /// In [-2, 2]; 0 = off. Subtracted once per occurrence in the output (OpenAI semantics).
    pub frequency_penalty: f32,
    /// In [-2, 2]; 0 = off. Subtracted once if the token occurs in the output.
    pub presence_penalty: f32,
    /// The RNG seed; with [`SampleRequest::rng_offset`] it fixes the random draw of each step.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self::default()
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether the device needs the token history to sample.
    pub fn uses_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.frequency_penalty != 0.0
            || self.presence_penalty != 0.0
    }
}

/// Asks the device to sample after the last token of a [`SeqStep`].
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRequest {
    pub params: SamplingParams,
    /// How many tokens this sequence sampled before this one: the RNG counter. Stateless, so a
    /// preempted and recomputed sequence draws the same numbers.
    pub rng_offset: u64,
    /// Return the chosen token's logprob (otherwise the result's `logprob` is 0, uncomputed).
    pub logprobs: bool,
    /// Also return this many most likely alternatives.
    pub top_n: u32,
    /// Present when `params.uses_penalties()`.
    pub penalties: Option<PenaltyContext>,
}

impl SampleRequest {
    pub fn greedy() -> Self {
        SampleRequest {
            params: SamplingParams::greedy(),
            rng_offset: 0,
            logprobs: false,
            top_n: 0,
            penalties: None,
        }
    }
}

/// One sequence's share of a step: a prefill chunk or one decode token.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqStep {
    pub seq_id: SeqId,
    /// The new tokens to run; at least one.
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]`; positions before it are already in the KV cache.
    pub start_pos: usize,
    /// KV blocks holding positions `0..start_pos + tokens.len()`, in order.
    pub block_table: Vec<BlockId>,
    /// Sample after the last token (the chunk ends the prompt, or a decode step).
    pub sample: Option<SampleRequest>,
    /// Rotate with the model's long-context RoPE set (LongRoPE's long factors). A property of
    /// the whole sequence, decided by the engine from the sequence's full length once this step
    /// is done (transformers' `seq_len > original_max_position_embeddings`), so every chunk of a
    /// long prompt is long: a device cannot tell from one chunk's positions. Every position
    /// with KV in `block_table` must have been computed in the same regime. Ignored by models
    /// with a single RoPE set.
    pub long_rope: bool,
}

impl SeqStep {
    /// The position after the last new token: the sequence's length once this step ran.
    pub fn end_pos(&self) -> usize {
        self.start_pos + self.tokens.len()
    }

    /// The KV slot (block * block_size + offset) of a position.
    pub fn slot(&self, pos: usize, block_size: usize) -> usize {
        self.block_table[pos / block_size] as usize * block_size + pos % block_size
    }
}

/// A mixed batch: every sequence's new tokens run through one forward pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepBatch {
    pub seqs: Vec<SeqStep>,
}

impl StepBatch {
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }

    pub fn num_samples(&self) -> usize {
        self.seqs.iter().filter(|s| s.sample.is_some()).count()
    }

    /// Checks the batch against the KV layout and the vocabulary. Every backend calls this
    /// before touching memory, so an engine bug is a typed error, never an out-of-bounds write.
    pub fn validate(
        &self,
        layout: &KvCacheLayout,
        vocab_size: usize,
        max_seq_len: usize,
    ) -> Result<(), DeviceError> {
        let bad = |msg: String| Err(DeviceError::BadBatch(msg));
        if self.seqs.is_empty() {
            return bad("empty batch".into());
        }
        let mut ids = HashSet::with_capacity(self.seqs.len());
        let mut slots_in_use = HashSet::new();
        for s in &self.seqs {
            if !ids.insert(s.seq_id) {
                return bad(format!("sequence {} appears twice", s.seq_id));
            }
            if s.tokens.is_empty() {
                return bad(format!("sequence {} has no tokens", s.seq_id));
            }
            if let Some(t) = s.tokens.iter().find(|&&t| t as usize >= vocab_size) {
                return bad(format!(
                    "sequence {}: token {t} outside the vocabulary of {vocab_size}",
                    s.seq_id
                ));
            }
            if s.end_pos() > max_seq_len {
                return bad(format!(
                    "sequence {}: length {} exceeds the maximum {max_seq_len}",
                    s.seq_id,
                    s.end_pos()
                ));
            }
            let needed = s.end_pos().div_ceil(layout.block_size);
            if s.block_table.len() < needed {
                return bad(format!(
                    "sequence {}: {} blocks cover fewer than {} positions",
                    s.seq_id,
                    s.block_table.len(),
                    s.end_pos()
                ));
            }
            for (i, &b) in s.block_table.iter().enumerate() {
                if b == FREED_BLOCK {
                    // only blocks wholly before this step's new positions may have been freed
                    if (i + 1) * layout.block_size > s.start_pos {
                        return bad(format!(
                            "sequence {}: block {i} of its table was freed but position {} is written",
                            s.seq_id,
                            (i * layout.block_size).max(s.start_pos)
                        ));
                    }
                } else if b as usize >= layout.num_blocks {
                    return bad(format!(
                        "sequence {}: block {b} outside the pool of {}",
                        s.seq_id, layout.num_blocks
                    ));
                }
            }
            // Two sequences may share (read) prefix blocks, but never write the same slot.
            for pos in s.start_pos..s.end_pos() {
                if !slots_in_use.insert(s.slot(pos, layout.block_size)) {
                    return bad(format!(
                        "sequence {}: KV slot for position {pos} is written twice in one step",
                        s.seq_id
                    ));
                }
            }
            if let Some(req) = &s.sample {
                if req.params.uses_penalties() && req.penalties.is_none() {
                    return bad(format!(
                        "sequence {}: penalties requested without a token history",
                        s.seq_id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An alternative token and its logprob.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopToken {
    pub token: u32,
    pub logprob: f32,
}

/// The token a device sampled for a sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    /// Log-probability of `token` under the model's raw distribution (before penalties and
    /// temperature); NaN-free.
    pub logprob: f32,
    /// The `top_n` most likely tokens under the raw distribution, most likely first.
    pub top: Vec<TopToken>,
}

/// Why a device could not sample for one sequence (the rest of the batch goes on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeqFailure {
    /// NaN or infinity in this sequence's logits.
    NonFiniteLogits,
}

/// The outcome for one sequence that asked for a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqResult {
    pub seq_id: SeqId,
    pub outcome: Result<SampledToken, SeqFailure>,
}

/// What the device measured of a step (Gaudi fills in buckets and compiles).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepTimings {
    pub forward_us: u64,
    /// Tokens added to reach a static shape.
    pub padded_tokens: u32,
    /// The shape bucket the step ran in, where the device buckets.
    pub bucket: Option<String>,
    /// A graph was compiled during this step (expected never after warmup).
    pub graph_compiled: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    /// One per sequence with `sample: Some(..)`, in batch order.
    pub results: Vec<SeqResult>,
    pub timings: StepTimings,
}

impl StepOutput {
    /// Checks a device's answer against the batch it answers (the Gaudi sidecar is untrusted).
    pub fn validate_against(
        &self,
        batch: &StepBatch,
        vocab_size: usize,
    ) -> Result<(), DeviceError> {
        let expected: Vec<SeqId> = batch
            .seqs
            .iter()
            .filter(|s| s.sample.is_some())
            .map(|s| s.seq_id)
            .collect();
        if self.results.len() != expected.len() {
            return Err(DeviceError::Backend(format!(
                "{} results for {} sampled sequences",
                self.results.len(),
                expected.len()
            )));
        }
        for (r, (want, step)) in self.results.iter().zip(
            expected
                .iter()
                .zip(batch.seqs.iter().filter(|s| s.sample.is_some())),
        ) {
            if r.seq_id != *want {
                return Err(DeviceError::Backend(format!(
                    "result for sequence {} where {} was expected",
                    r.seq_id, want
                )));
            }
            if let Ok(tok) = &r.outcome {
                let req = step.sample.as_ref().expect("filtered on sample");
                if tok.token as usize >= vocab_size {
                    return Err(DeviceError::Backend(format!(
                        "sampled token {} outside the vocabulary of {vocab_size}",
                        tok.token
                    )));
                }
                if !tok.logprob.is_finite() || tok.logprob > 0.0 {
                    return Err(DeviceError::Backend(format!(
                        "logprob {} is not a log-probability",
                        tok.logprob
                    )));
                }
                if tok.top.len() > req.top_n as usize {
                    return Err(DeviceError::Backend(format!(
                        "{} alternatives where at most {} were asked",
                        tok.top.len(),
                        req.top_n
                    )));
                }
                if tok.top.iter().any(|t| {
                    t.token as usize >= vocab_size || !t.logprob.is_finite() || t.logprob > 0.0
                }) {
                    return Err(DeviceError::Backend(
                        "an alternative token is outside the vocabulary or its logprob is invalid"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KvCacheLayout {
        KvCacheLayout {
            block_size: 4,
            num_blocks: 8,
            bytes_per_block: 0,
            warmed_shapes: vec![],
            warmup_ms: 0,
        }
    }

    fn seq(id: SeqId, tokens: Vec<u32>, start: usize, blocks: Vec<BlockId>) -> SeqStep {
        SeqStep {
            seq_id: id,
            tokens,
            start_pos: start,
            block_table: blocks,
            sample: Some(SampleRequest::greedy()),
            long_rope: false,
        }
    }

    #[test]
    fn valid_mixed_batch_passes() {
        let b = StepBatch {
            seqs: vec![
                seq(1, vec![1, 2, 3, 4, 5], 0, vec![0, 1]),
                seq(2, vec![7], 6, vec![2, 3]),
            ],
        };
        b.validate(&layout(), 16, 64).unwrap();
    }

    #[test]
    fn rejects_uncovered_positions_and_foreign_blocks() {
        let short = StepBatch {
            seqs: vec![seq(1, vec![1; 5], 0, vec![0])],
        };
        assert!(matches!(
            short.validate(&layout(), 16, 64),
            Err(DeviceError::BadBatch(_))
        ));
        let foreign = StepBatch {
            seqs: vec![seq(1, vec![1], 0, vec![8])],
        };
        assert!(foreign.validate(&layout(), 16, 64).is_err());
        let oov = StepBatch {
            seqs: vec![seq(1, vec![16], 0, vec![0])],
        };
        assert!(oov.validate(&layout(), 16, 64).is_err());
    }

    #[test]
    fn freed_entries_only_before_the_written_positions() {
        // positions 8..=9 written; blocks 0 and 1 (positions 0..8) may be freed
        let ok = StepBatch {
            seqs: vec![seq(1, vec![1, 2], 8, vec![FREED_BLOCK, FREED_BLOCK, 3])],
        };
        ok.validate(&layout(), 16, 64).unwrap();
        // position 7 is written into a freed block
        let bad = StepBatch {
            seqs: vec![seq(1, vec![1, 2], 7, vec![FREED_BLOCK, FREED_BLOCK, 3])],
        };
        let Err(DeviceError::BadBatch(msg)) = bad.validate(&layout(), 16, 64) else {
            panic!("a write into a freed block passed");
        };
        assert_eq!(
            msg,
            "sequence 1: block 1 of its table was freed but position 7 is written"
        );
    }

    #[test]
    fn rejects_two_writers_of_one_slot() {
        let b = StepBatch {
            seqs: vec![seq(1, vec![1], 1, vec![0]), seq(2, vec![2], 1, vec![0])],
        };
        assert!(b.validate(&layout(), 16, 64).is_err());
    }

    #[test]
    fn output_validation_catches_garbage() {
        let b = StepBatch {
            seqs: vec![seq(1, vec![1], 0, vec![0])],
        };
        let good = StepOutput {
            results: vec![SeqResult {
                seq_id: 1,
                outcome: Ok(SampledToken {
                    token: 3,
                    logprob: -0.5,
                    top: vec![],
                }),
            }],
            timings: StepTimings::default(),
        };
        good.validate_against(&b, 16).unwrap();
        let mut oov = good.clone();
        oov.results[0].outcome = Ok(SampledToken {
            token: 99,
            logprob: -0.5,
            top: vec![],
        });
        assert!(oov.validate_against(&b, 16).is_err());
        let mut wrong_id = good.clone();
        wrong_id.results[0].seq_id = 2;
        assert!(wrong_id.validate_against(&b, 16).is_err());
        let empty = StepOutput::default();
        assert!(empty.validate_against(&b, 16).is_err());
    }
}
