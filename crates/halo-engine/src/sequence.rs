//! One request inside the scheduler: its tokens, how many have KV in the cache, its block table,
//! and its output state (stop rules, detokenizer, timer).
//!
//! A sequence's tokens are prompt + generated; `num_computed` of them have KV. While decoding,
//! the newest token is the one not yet computed. Preemption drops the KV (and the blocks) but
//! keeps tokens, rng offsets and the streamed-text state, so recomputation resumes exactly.

use crate::block_manager::CacheScope;
use crate::detok::IncrementalDetokenizer;
use crate::event::{Event, Finish, FinishReason, Usage};
use crate::request::GenerateRequest;
use crate::stop::{StopMatcher, StopScan};
use crate::timing::RequestTimer;
use halo_hal::{BlockId, PenaltyContext, SampleRequest, SampledToken};
use std::sync::Arc;
use std::time::Instant;
use tokenizers::Tokenizer;

/// Where a sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqState {
    Waiting,
    Running,
}

pub struct Sequence {
    pub id: u64,
    pub state: SeqState,
    pub req: GenerateRequest,
    pub prompt: Arc<[u32]>,
    pub tokens: Vec<u32>,
    pub num_computed: usize,
    pub blocks: Vec<BlockId>,
    /// Chained hashes of the leading full blocks whose KV is computed (and so cacheable).
    pub block_hashes: Vec<u64>,
    /// Scopes prefix-cache reuse: only requests with the same salt share blocks.
    pub cache_salt: Arc<str>,
    /// The RoPE regime its KV is computed in (and its steps run in): set at admission from its
    /// length, see crate::rope_regime.
    pub long_rope: bool,
    pub timer: RequestTimer,
    pub tokens_sent: u32,
    pub cached_prompt_tokens: u32,
    /// Whether to produce text; the detokenizer starts at the first sampled token (it takes the
    /// prompt's tail as context).
    detokenize: bool,
    detok: Option<IncrementalDetokenizer>,
    stop: StopMatcher,
    /// Token counts for penalties, kept up to date token by token (present when the request
    /// uses penalties); they depend on the tokens alone, so preemption keeps them.
    penalties: Option<PenaltyContext>,
}

/// The outcome of accepting one sampled token.
pub struct Accepted {
    pub event: Event,
    pub finish: Option<(FinishReason, Option<String>)>,
}

impl Sequence {
    /// Where its blocks live in the prefix cache: its salt, in its RoPE regime.
    pub fn cache_scope(&self) -> CacheScope {
        CacheScope {
            salt: self.cache_salt.clone(),
            long_rope: self.long_rope,
        }
    }

    pub fn new(id: u64, req: GenerateRequest, arrival: Instant, detokenize: bool) -> Self {
        let prompt: Arc<[u32]> = req.prompt.as_slice().into();
        let mut tokens = Vec::with_capacity(req.prompt.len() + req.max_new_tokens);
        tokens.extend_from_slice(&req.prompt);
        let stop = StopMatcher::new(req.stop.stop_sequences.clone());
        let penalties = req
            .sampling
            .uses_penalties()
            .then(|| PenaltyContext::from_history(&req.prompt, &[]));
        Sequence {
            id,
            state: SeqState::Waiting,
            prompt,
            tokens,
            num_computed: 0,
            blocks: Vec::new(),
            block_hashes: Vec::new(),
            cache_salt: Arc::from(""),
            long_rope: false,
            timer: RequestTimer::new(arrival),
            tokens_sent: 0,
            cached_prompt_tokens: 0,
            detokenize,
            detok: None,
            stop,
            penalties,
            req,
        }
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt.len()
    }

    /// Tokens still to run before the next sample.
    pub fn remaining(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Decoding: everything but the newest (sampled) token has KV.
    pub fn is_decoding(&self) -> bool {
        self.generated() > 0 && self.remaining() == 1
    }

    /// Blocks to add so that positions `0..num_computed + n` are covered.
    pub fn blocks_needed(&self, n: usize, block_size: usize) -> usize {
        (self.num_computed + n)
            .div_ceil(block_size)
            .saturating_sub(self.blocks.len())
    }

    /// How many of the next tokens fit in the current blocks plus `free` more.
    pub fn coverable(&self, free: usize, block_size: usize) -> usize {
        ((self.blocks.len() + free) * block_size).saturating_sub(self.num_computed)
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt.len() as u32,
            generated_tokens: self.generated() as u32,
            cached_prompt_tokens: self.cached_prompt_tokens,
        }
    }

    pub fn sample_request(&self) -> SampleRequest {
        SampleRequest {
            params: self.req.sampling.clone(),
            rng_offset: self.generated() as u64,
            logprobs: self.req.logprobs,
            top_n: self.req.top_n,
            // shared, not copied: the counts are updated in place after the step
            penalties: self.penalties.clone(),
        }
    }

    /// Appends a sampled token, runs the stop rules and the detokenizer, and records the
    /// emission time. An error means the tokenizer failed on this sequence's ids.
    pub fn accept(
        &mut self,
        sampled: SampledToken,
        eos_ids: &[u32],
        tokenizer: Option<&Tokenizer>,
        now: Instant,
    ) -> Result<Accepted, crate::detok::DetokError> {
        let tok = sampled.token;
        self.tokens.push(tok);
        if let Some(p) = &mut self.penalties {
            p.record_output(tok);
        }
        self.timer.token(now);
        self.tokens_sent += 1;

        let mut finish = if !self.req.stop.ignore_eos && eos_ids.contains(&tok) {
            Some((FinishReason::Eos, None))
        } else if self.req.stop.stop_token_ids.contains(&tok) {
            Some((FinishReason::StopToken, None))
        } else {
            None
        };
        let at_length = self.generated() >= self.req.max_new_tokens;
        let mut delta = String::new();
        if let (true, Some(t)) = (self.detokenize, tokenizer) {
            if self.detok.is_none() {
                self.detok = Some(IncrementalDetokenizer::with_prompt(t, &self.prompt, true)?);
            }
            let detok = self.detok.as_mut().expect("just set");
            // A terminating EOS or stop id ends the text; it contributes none, but what the
            // detokenizer held back (an unfinished byte run) is flushed on every finish.
            if finish.is_none() {
                delta = detok.push(t, tok)?;
            }
            if finish.is_some() || at_length {
                delta.push_str(&detok.finish(t)?);
            }
        }
        if finish.is_none() && at_length {
            finish = Some((FinishReason::Length, None));
        }
        let text = match self.stop.push(&delta) {
            StopScan::Emit(mut t) => {
                if finish.is_some() {
                    t.push_str(&self.stop.flush());
                }
                t
            }
            StopScan::Matched { before, stop } => {
                finish = Some((FinishReason::StopSequence, Some(stop)));
                before
            }
        };
        let (logprobs, top) = if self.req.logprobs || self.req.top_n > 0 {
            (
                if self.req.logprobs {
                    vec![sampled.logprob]
                } else {
                    Vec::new()
                },
                if self.req.top_n > 0 {
                    vec![sampled.top]
                } else {
                    Vec::new()
                },
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Accepted {
            event: Event::Tokens {
                token_ids: vec![tok],
                text,
                logprobs,
                top,
            },
            finish,
        })
    }

    /// The text held back when the sequence ends early (cancelled): the detokenizer's unfinished
    /// run and the stop matcher's partial match. Empty when there is none.
    pub fn flush_text(&mut self, tokenizer: Option<&Tokenizer>) -> String {
        let mut text = String::new();
        if let (Some(detok), Some(t)) = (self.detok.as_mut(), tokenizer) {
            // a tokenizer error here loses only the held-back bytes of an ending request
            text = detok.finish(t).unwrap_or_default();
        }
        match self.stop.push(&text) {
            StopScan::Emit(mut t) => {
                t.push_str(&self.stop.flush());
                t
            }
            StopScan::Matched { before, .. } => before,
        }
    }

    pub fn finished_event(
        &self,
        reason: FinishReason,
        matched_stop: Option<String>,
        now: Instant,
    ) -> Event {
        Event::Finished(Finish {
            reason,
            matched_stop,
            usage: self.usage(),
            timings: self.timer.finish(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_hal::SampledToken;

    /// The SentencePiece fixture: byte-fallback tokens `<0xNN>` at 3 + NN, EOS 2.
    fn spm() -> Tokenizer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/tiny-llama2-spm/tokenizer.json");
        Tokenizer::from_file(path).unwrap()
    }

    fn byte(b: u8) -> u32 {
        3 + b as u32
    }

    /// Streams `gen` into a sequence; (the texts of the events, the finish reason).
    fn run(req: GenerateRequest, gen: &[u32]) -> (String, Option<FinishReason>) {
        let tok = spm();
        let mut s = Sequence::new(1, req, Instant::now(), true);
        let mut text = String::new();
        for &t in gen {
            let acc = s
                .accept(
                    SampledToken {
                        token: t,
                        logprob: 0.0,
                        top: Vec::new(),
                    },
                    &[2],
                    Some(&tok),
                    Instant::now(),
                )
                .unwrap();
            if let Event::Tokens { text: t, .. } = acc.event {
                text.push_str(&t);
            }
            if let Some((reason, _)) = acc.finish {
                return (text, Some(reason));
            }
        }
        (text, None)
    }

    fn prompt() -> Vec<u32> {
        spm().encode("a", true).unwrap().get_ids().to_vec()
    }

    #[test]
    fn held_bytes_are_flushed_on_every_finish() {
        // an unfinished 我 (E6 88 …) then EOS: the bytes come out as the full decode has them
        let (text, reason) = run(
            GenerateRequest::greedy(prompt(), 10),
            &[byte(0xE6), byte(0x88), 2],
        );
        assert_eq!(
            (text.as_str(), reason),
            ("\u{FFFD}\u{FFFD}", Some(FinishReason::Eos))
        );

        let mut req = GenerateRequest::greedy(prompt(), 10);
        req.stop.stop_token_ids = vec![byte(0x41)];
        let (text, reason) = run(req, &[byte(0xE6), byte(0x88), byte(0x91), byte(0x41)]);
        assert_eq!(
            (text.as_str(), reason),
            ("我", Some(FinishReason::StopToken))
        );

        let (text, reason) = run(
            GenerateRequest::greedy(prompt(), 3),
            &[byte(0xF0), byte(0x9F), byte(0xA6)],
        );
        assert_eq!(
            (text.as_str(), reason),
            ("\u{FFFD}\u{FFFD}\u{FFFD}", Some(FinishReason::Length))
        );

        // cancelled mid-run: flush_text gives the held bytes
        let tok = spm();
        let mut s = Sequence::new(
            1,
            GenerateRequest::greedy(prompt(), 10),
            Instant::now(),
            true,
        );
        for t in [byte(0xE6), byte(0x88), byte(0x91)] {
            let sampled = SampledToken {
                token: t,
                logprob: 0.0,
                top: Vec::new(),
            };
            let acc = s.accept(sampled, &[2], Some(&tok), Instant::now()).unwrap();
            assert!(matches!(acc.event, Event::Tokens { ref text, .. } if text.is_empty()));
        }
        assert_eq!(s.flush_text(Some(&tok)), "我");
        assert_eq!(s.flush_text(Some(&tok)), "");
    }

    #[test]
    fn penalty_counts_follow_the_tokens_without_copying() {
        let mut req = GenerateRequest::greedy(vec![5, 7, 5], 10);
        req.sampling.repetition_penalty = 1.2;
        let mut s = Sequence::new(1, req, Instant::now(), false);
        for t in [7, 9, 7] {
            let step = s.sample_request();
            let counts = step.penalties.clone().expect("penalties requested");
            assert!(
                counts.is_shared(),
                "the request shares the sequence's counts"
            );
            drop(step);
            drop(counts);
            let sampled = SampledToken {
                token: t,
                logprob: 0.0,
                top: Vec::new(),
            };
            s.accept(sampled, &[2], None, Instant::now()).unwrap();
            assert!(!s.penalties.as_ref().unwrap().is_shared());
        }
        assert_eq!(
            s.sample_request().penalties,
            Some(PenaltyContext::from_history(&[5, 7, 5], &[7, 9, 7]))
        );
        // without penalties nothing is kept or sent
        let s = Sequence::new(
            2,
            GenerateRequest::greedy(vec![5], 10),
            Instant::now(),
            false,
        );
        assert_eq!(s.sample_request().penalties, None);
    }
}
