//! What one request looked like from the client: the send time, every chunk's arrival and token
//! count, how it ended, and what the target said about it (usage, its own timings). Everything in
//! `metrics` is computed from these records alone, so the definitions can be tested on hand-made
//! timelines.

use serde::{Deserialize, Serialize};

/// One streamed message that carried tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Arrival, seconds after the request was sent.
    pub t: f64,
    /// Tokens it carried (at least 1; messages without tokens are not recorded).
    pub tokens: u32,
}

/// The target's own measurements of the request (halo's `Finish.timings`), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerTimings {
    pub queue_ms: f64,
    pub ttft_ms: f64,
    pub e2e_ms: f64,
    pub decode_ms: f64,
    pub preemptions: u32,
    pub itl_p50_ms: f64,
    pub itl_max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// `status` groups failures in reports: `grpc:UNAVAILABLE`, `http:503`, `transport`,
    /// `timeout`, `protocol`. The message never contains prompt or generated text.
    Failed {
        status: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub target: String,
    /// The load level this request ran at (`c=4`, `rate=2`).
    pub level: String,
    pub index: usize,
    /// When it was sent, seconds after the level started.
    pub start: f64,
    /// When the stream ended (success or failure), seconds after `start`.
    pub end: f64,
    pub chunks: Vec<Chunk>,
    pub outcome: Outcome,
    /// Tokens counted in the stream.
    pub stream_tokens: u32,
    /// Output tokens as the target reported them (`usage`), when it did.
    pub usage_output_tokens: Option<u32>,
    /// Prompt tokens as the target reported them, when it did.
    pub prompt_tokens: Option<u32>,
    pub nominal_input_len: Option<u32>,
    pub max_tokens: u32,
    pub finish_reason: Option<String>,
    pub server: Option<ServerTimings>,
    /// Prompt tokens the target says it reused from its cache (halo `usage.cached_prompt_tokens`,
    /// llama-server `timings.cache_n`, OpenAI `usage.prompt_tokens_details.cached_tokens`), when
    /// it said.
    #[serde(default)]
    pub cached_prompt_tokens: Option<u32>,
    /// The measurement round of this level (0-based; targets alternate round by round).
    #[serde(default)]
    pub round: usize,
    /// Times the client resent the request on a fresh connection because the first one failed
    /// before anything was sent (a client-side event, not charged to the target).
    #[serde(default)]
    pub retries: u32,
}

/// How a failure is counted: `transport` (connection-level, the network or client side),
/// `timeout`, or `server` (the target answered with an error or a malformed stream).
pub fn failure_class(status: &str) -> &'static str {
    match status {
        "transport" | "grpc:UNAVAILABLE" => "transport",
        "timeout" | "grpc:DEADLINE_EXCEEDED" => "timeout",
        _ => "server",
    }
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// Output tokens for throughput: the target's own count when it gave one (it is exact; the
    /// stream may merge tokens into one message), else the tokens seen in the stream.
    pub fn output_tokens(&self) -> u32 {
        self.usage_output_tokens.unwrap_or(self.stream_tokens)
    }

    /// Input tokens: the target's count, else the nominal length of a synthetic prompt.
    pub fn input_tokens(&self) -> Option<u32> {
        self.prompt_tokens.or(self.nominal_input_len)
    }
}
