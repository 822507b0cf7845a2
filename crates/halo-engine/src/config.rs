//! Engine configuration and the admission limits derived from it and from warmup.

use crate::observer::EngineObserver;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How to run the engine. `Default` suits a small server; tests set exact pool sizes.
#[derive(Clone)]
pub struct EngineConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// An exact number of KV blocks (tests, small pools); overrides `kv_cache_bytes`.
    pub num_blocks: Option<usize>,
    /// A memory budget for the KV pool; `None` lets the device size it.
    pub kv_cache_bytes: Option<u64>,
    /// Most tokens in one step (decode tokens + prefill chunks): the chunked-prefill budget.
    pub max_batch_tokens: usize,
    /// Most sequences in one step, and so most running sequences.
    pub max_batch_seqs: usize,
    /// Waiting + running requests; beyond it `submit` answers QueueFull.
    pub max_concurrent_requests: usize,
    /// Longest prompt; `None`: max total − 1.
    pub max_input_tokens: Option<usize>,
    /// Longest prompt + generation; `None`: the model's context length. Always capped by what the
    /// KV pool can hold for one sequence alone.
    pub max_total_tokens: Option<usize>,
    /// Largest max_new_tokens a request may ask for.
    pub max_new_tokens_cap: usize,
    pub max_stop_sequences: usize,
    /// Longest stop sequence in bytes.
    pub max_stop_sequence_bytes: usize,
    pub max_top_n: u32,
    /// Reuse KV blocks of identical prefixes across requests.
    pub enable_prefix_caching: bool,
    /// Health reports Stalled when work is pending and no loop iteration completed for this long.
    pub stall_timeout: Duration,
    /// Metrics hook.
    pub observer: Option<Arc<dyn EngineObserver>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            block_size: 16,
            num_blocks: None,
            kv_cache_bytes: None,
            max_batch_tokens: 512,
            max_batch_seqs: 64,
            max_concurrent_requests: 256,
            max_input_tokens: None,
            max_total_tokens: None,
            max_new_tokens_cap: 4096,
            max_stop_sequences: 8,
            max_stop_sequence_bytes: 256,
            max_top_n: 20,
            enable_prefix_caching: true,
            stall_timeout: Duration::from_secs(30),
            observer: None,
        }
    }
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks)
            .field("kv_cache_bytes", &self.kv_cache_bytes)
            .field("max_batch_tokens", &self.max_batch_tokens)
            .field("max_batch_seqs", &self.max_batch_seqs)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_input_tokens", &self.max_input_tokens)
            .field("max_total_tokens", &self.max_total_tokens)
            .field("max_new_tokens_cap", &self.max_new_tokens_cap)
            .field("enable_prefix_caching", &self.enable_prefix_caching)
            .field("stall_timeout", &self.stall_timeout)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl EngineConfig {
    /// Rejects settings the scheduler cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_size == 0 {
            return Err("block_size must be at least 1".into());
        }
        if self.max_batch_seqs == 0 {
            return Err("max_batch_seqs must be at least 1".into());
        }
        // Every running sequence must be able to decode in the same step, or decode latency
        // would depend on admission order.
        if self.max_batch_tokens < self.max_batch_seqs {
            return Err(format!(
                "max_batch_tokens ({}) must be at least max_batch_seqs ({})",
                self.max_batch_tokens, self.max_batch_seqs
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err("max_concurrent_requests must be at least 1".into());
        }
        if self.max_new_tokens_cap == 0 {
            return Err("max_new_tokens_cap must be at least 1".into());
        }
        if self.num_blocks == Some(0) {
            return Err("num_blocks must be at least 1".into());
        }
        Ok(())
    }

    /// The limits once the model's context and the KV pool's capacity are known.
    pub fn limits(&self, context_length: usize, kv_capacity_tokens: usize) -> Limits {
        let max_total = self
            .max_total_tokens
            .unwrap_or(context_length)
            .min(context_length)
            .min(kv_capacity_tokens);
        let max_input = self
            .max_input_tokens
            .unwrap_or(usize::MAX)
            .min(max_total.saturating_sub(1));
        Limits {
            max_input_tokens: max_input,
            max_total_tokens: max_total,
            max_new_tokens: self.max_new_tokens_cap.min(max_total.saturating_sub(1)),
            max_concurrent_requests: self.max_concurrent_requests,
            max_stop_sequences: self.max_stop_sequences,
            max_stop_sequence_bytes: self.max_stop_sequence_bytes,
            max_top_n: self.max_top_n,
        }
    }
}

/// What admission enforces; reported by `GetInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_input_tokens: usize,
    /// Prompt + max_new_tokens; never more than one sequence alone can hold in the KV pool.
    pub max_total_tokens: usize,
    pub max_new_tokens: usize,
    pub max_concurrent_requests: usize,
    pub max_stop_sequences: usize,
    pub max_stop_sequence_bytes: usize,
    pub max_top_n: u32,
}
