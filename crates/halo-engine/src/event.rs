//! What the engine streams back per request: token events, then exactly one terminal outcome.

use halo_hal::TopToken;

/// One event of a request's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Tokens generated in one step and the text they completed. `text` is a delta: the deltas
    /// of a request concatenate to its full text. It may be empty while text is held back (an
    /// incomplete UTF-8 character, or a possible start of a stop sequence).
    Tokens {
        token_ids: Vec<u32>,
        text: String,
        /// One per token when logprobs were asked, else empty.
        logprobs: Vec<f32>,
        /// One list per token when top_n > 0, else empty.
        top: Vec<Vec<TopToken>>,
    },
    /// Terminal: the request finished normally.
    Finished(Finish),
    /// Terminal: the request failed.
    Failed(Failure),
}

impl Event {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Event::Tokens { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// max_new_tokens reached.
    Length,
    /// The model produced an EOS id.
    Eos,
    /// The text matched a stop sequence.
    StopSequence,
    /// The model produced one of the request's stop token ids.
    StopToken,
}

impl FinishReason {
    /// A stable label for metrics and the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
            FinishReason::StopSequence => "stop_sequence",
            FinishReason::StopToken => "stop_token",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// Prompt tokens whose KV came from the prefix cache (on the last admission).
    pub cached_prompt_tokens: u32,
}

/// The measurement contract (WORKER_API.md "Timings"): microseconds, taken by the engine where it
/// emits tokens, the same on every backend. Arrival is the moment `submit` accepted the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Arrival → first scheduled into a step.
    pub queue_us: u64,
    /// Arrival → first token emitted (0 when none was).
    pub ttft_us: u64,
    /// Arrival → finish.
    pub e2e_us: u64,
    /// First token → finish (0 when no token was emitted).
    pub decode_us: u64,
    pub preemptions: u32,
    /// Median and largest gap between consecutive emitted tokens (0 with fewer than two).
    pub itl_us_p50: u64,
    pub itl_us_max: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    pub reason: FinishReason,
    /// The stop sequence that matched, for [`FinishReason::StopSequence`].
    pub matched_stop: Option<String>,
    pub usage: Usage,
    pub timings: Timings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The caller cancelled or dropped its handle.
    Cancelled,
    /// The request's deadline passed.
    DeadlineExceeded,
    /// The device was lost (or failed fatally) while the request was in flight.
    DeviceLost { tokens_sent: u32 },
    /// The engine could not produce a valid token (non-finite logits, a device error on one
    /// step); the rest of the batch goes on.
    Internal,
    /// The caller stopped reading its events: more than a bounded backlog piled up, so the
    /// request was dropped rather than buffered without limit.
    SlowReader,
}

impl FailureKind {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Cancelled => "cancelled",
            FailureKind::DeadlineExceeded => "deadline_exceeded",
            FailureKind::DeviceLost { .. } => "device_lost",
            FailureKind::Internal => "internal",
            FailureKind::SlowReader => "slow_reader",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    /// Human-readable; never contains prompt or generated text.
    pub message: String,
    pub usage: Usage,
    pub timings: Timings,
}
