//! Metrics hooks: the server builds Prometheus metrics on [`EngineObserver`] callbacks and on the
//! cumulative counters of [`LiveStats`].

use crate::event::{FailureKind, FinishReason, Timings, Usage};
use std::time::Duration;

/// What one scheduler step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Wall time of the device step alone.
    pub duration: Duration,
    /// Tokens run (prefill chunks + decode tokens).
    pub num_tokens: usize,
    pub num_prefill_tokens: usize,
    pub num_decode_tokens: usize,
    /// Sequences in the batch.
    pub num_seqs: usize,
    /// The device's own report (padding, bucket, compiles).
    pub device: halo_hal::StepTimings,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished(FinishReason),
    Failed(FailureKind),
}

impl Outcome {
    /// A stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Finished(r) => r.as_str(),
            Outcome::Failed(k) => k.as_str(),
        }
    }
}

/// Callbacks from the scheduler thread. Keep them cheap: they run between device steps.
pub trait EngineObserver: Send + Sync {
    fn on_step(&self, _step: &StepReport) {}
    /// A running sequence was preempted to free KV blocks (it will be recomputed).
    fn on_preemption(&self) {}
    /// An admitted sequence reused this many prompt tokens from the prefix cache.
    fn on_prefix_cache_hit(&self, _tokens: usize) {}
    fn on_request_finished(&self, _outcome: Outcome, _usage: &Usage, _timings: &Timings) {}
}

/// A snapshot of the engine's state and its counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Free KV blocks, counting cached blocks no sequence holds (they are evicted on demand).
    pub free_blocks: usize,
    pub total_blocks: usize,
    /// Free blocks that still hold a cached prefix.
    pub cached_blocks: usize,
    pub waiting: usize,
    pub running: usize,
    pub steps: u64,
    pub requests_admitted: u64,
    pub requests_finished: u64,
    pub requests_failed: u64,
    pub requests_cancelled: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub prefix_cache_hit_tokens: u64,
    pub preemptions: u64,
    /// Sequences recomputed because they crossed into the long RoPE regime (crate::rope_regime).
    pub rope_recomputes: u64,
    /// Steps that panicked (caught at the step boundary; their requests failed UNAVAILABLE).
    pub step_panics: u64,
}
