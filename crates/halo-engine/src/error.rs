//! Typed errors: why a submit was refused (each maps to one gRPC status upstream) and why the
//! engine could not start.

use halo_hal::DeviceError;
use thiserror::Error;

/// Why [`crate::Engine::submit`] refused a request. Nothing changed in the engine.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {len} tokens, more than the maximum input of {max}")]
    PromptTooLong { len: usize, max: usize },
    #[error("max_new_tokens must be at least 1")]
    ZeroMaxNewTokens,
    #[error("max_new_tokens {requested} exceeds the maximum of {max}")]
    MaxNewTokensTooLarge { requested: usize, max: usize },
    #[error(
        "prompt tokens ({prompt}) + max_new_tokens ({max_new}) = {} exceeds the maximum total of {max_total} (the KV cache and the model's context)",
        prompt + max_new
    )]
    TotalTooLong {
        prompt: usize,
        max_new: usize,
        max_total: usize,
    },
    #[error("{field} token at index {index} is outside the vocabulary of {vocab_size}")]
    TokenOutOfVocab {
        field: &'static str,
        index: usize,
        vocab_size: usize,
    },
    #[error("sampling parameter {field} {reason}")]
    InvalidSampling {
        field: &'static str,
        reason: &'static str,
    },
    #[error("{count} stop sequences, more than the maximum of {max}")]
    TooManyStopSequences { count: usize, max: usize },
    #[error("stop sequence {index} is {reason}")]
    InvalidStopSequence { index: usize, reason: &'static str },
    #[error("top_n {requested} exceeds the maximum of {max}")]
    TopNTooLarge { requested: u32, max: u32 },
    #[error("queue full: {max} requests already in flight")]
    QueueFull { max: usize },
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("the device was lost; the engine must be restarted")]
    DeviceLost,
    #[error("the engine is not running")]
    Unavailable,
}

impl SubmitError {
    /// True for errors in the request itself (INVALID_ARGUMENT), false for the engine's state.
    pub fn is_invalid_argument(&self) -> bool {
        !matches!(
            self,
            SubmitError::QueueFull { .. }
                | SubmitError::ShuttingDown
                | SubmitError::DeviceLost
                | SubmitError::Unavailable
        )
    }

    /// A stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SubmitError::QueueFull { .. } => "queue_full",
            SubmitError::ShuttingDown => "shutting_down",
            SubmitError::DeviceLost => "device_lost",
            SubmitError::Unavailable => "unavailable",
            _ => "invalid_argument",
        }
    }
}

/// Why [`crate::Engine::start`] failed.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid engine configuration: {0}")]
    Config(String),
    #[error("reading the model config or tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("device {stage} failed: {source}")]
    Device {
        stage: &'static str,
        #[source]
        source: DeviceError,
    },
    #[error("the KV cache of {blocks} blocks of {block_size} tokens cannot hold even one token of a sequence")]
    NoKvCapacity { blocks: usize, block_size: usize },
    #[error("could not spawn the scheduler thread: {0}")]
    Spawn(String),
    #[error("the scheduler thread exited during startup")]
    StartupAborted,
}
