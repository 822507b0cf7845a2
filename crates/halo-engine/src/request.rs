//! What a caller asks of the engine: one generation request and its stop rules.
//!
//! Prompts arrive as token ids: the server tokenizes text with [`crate::Engine::tokenizer`], so
//! the engine never guesses at special-token handling.

use halo_hal::SamplingParams;
use std::time::Instant;

/// When to stop besides `max_new_tokens`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StopCriteria {
    /// Stop when the generated text contains one of these; the match is not returned.
    pub stop_sequences: Vec<String>,
    /// Stop after generating one of these ids (the id is returned, its text is not).
    pub stop_token_ids: Vec<u32>,
    /// Keep going past the model's EOS ids (benchmarks want exact lengths).
    pub ignore_eos: bool,
}

/// One generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    /// The client's id, echoed in logs; the engine assigns its own numeric id.
    pub request_id: String,
    /// The prompt as token ids; at least one.
    pub prompt: Vec<u32>,
    /// At least one.
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: StopCriteria,
    /// Return the chosen token's logprob with each token.
    pub logprobs: bool,
    /// Also return this many most likely alternatives per token.
    pub top_n: u32,
    /// Enforced by the scheduler: past it the request fails DeadlineExceeded and frees its blocks.
    pub deadline: Option<Instant>,
}

impl GenerateRequest {
    /// A greedy request with default stop rules (EOS) and no deadline.
    pub fn greedy(prompt: Vec<u32>, max_new_tokens: usize) -> Self {
        GenerateRequest {
            request_id: String::new(),
            prompt,
            max_new_tokens,
            sampling: SamplingParams::greedy(),
            stop: StopCriteria::default(),
            logprobs: false,
            top_n: 0,
            deadline: None,
        }
    }
}
