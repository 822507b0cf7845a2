//! Engine configuration and the admission limits derived from it and from warmup.

use crate::observer::EngineObserver;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds on what an operator may ask for. Each one is far past any real deployment and
/// small enough that every product the engine or a device forms from these values (blocks ×
/// block size, tokens × hidden size, MiB → bytes) stays inside `u64`/`usize`, and that block ids
/// fit the `u32` the batch carries.
pub const MAX_BLOCK_SIZE: usize = 1024;
/// Blocks in one KV pool (× [`MAX_BLOCK_SIZE`] is 2^32 token slots).
pub const MAX_NUM_BLOCKS: usize = 1 << 22;
/// The KV budget in MiB (16 TiB).
pub const MAX_KV_CACHE_MB: u64 = 1 << 24;
pub const MAX_BATCH_TOKENS: usize = 1 << 20;
pub const MAX_BATCH_SEQS: usize = 1 << 16;
pub const MAX_CONCURRENT_REQUESTS: usize = 1 << 20;
/// Prompt, total and new-token limits (16M tokens).
pub const MAX_SEQUENCE_TOKENS: usize = 1 << 24;
pub const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How to run the engine. `Default` suits a small server; tests set exact pool sizes.
#[derive(Clone)]
pub struct EngineConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// An exact number of KV blocks (tests, small pools); overrides `kv_cache_bytes`.
    pub num_blocks: Option<usize>,
    /// A memory budget for the KV pool; `None` lets the device size it.
    pub kv_cache_bytes: Option<u64>,
    /// Make the whole KV pool resident at start (see `WarmupRequest::resident_kv_pool`): for
    /// a pool sized to a known job, as `halo generate` sizes it.
    pub resident_kv_pool: bool,
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
            resident_kv_pool: false,
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
            .field("resident_kv_pool", &self.resident_kv_pool)
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
    /// Rejects settings the scheduler cannot honour, and sizes past the `MAX_*` bounds. Each
    /// message names the setting with its command-line flag, so the CLI can print it as is.
    pub fn validate(&self) -> Result<(), String> {
        fn range(name: &str, v: u64, lo: u64, hi: u64) -> Result<(), String> {
            if v < lo || v > hi {
                return Err(format!("{name} must be between {lo} and {hi}, got {v}"));
            }
            Ok(())
        }
        let n = |v: usize| v as u64;
        range(
            "--block-size (block_size)",
            n(self.block_size),
            1,
            n(MAX_BLOCK_SIZE),
        )?;
        if let Some(b) = self.num_blocks {
            range("--num-blocks (num_blocks)", n(b), 1, n(MAX_NUM_BLOCKS))?;
        }
        if let Some(bytes) = self.kv_cache_bytes {
            range(
                "--kv-cache-mb (kv_cache_bytes)",
                bytes,
                1,
                MAX_KV_CACHE_MB << 20,
            )?;
        }
        range(
            "--max-batch-seqs (max_batch_seqs)",
            n(self.max_batch_seqs),
            1,
            n(MAX_BATCH_SEQS),
        )?;
        range(
            "--max-batch-tokens (max_batch_tokens)",
            n(self.max_batch_tokens),
            1,
            n(MAX_BATCH_TOKENS),
        )?;
        // Every running sequence must be able to decode in the same step, or decode latency
        // would depend on admission order.
        if self.max_batch_tokens < self.max_batch_seqs {
            return Err(format!(
                "max_batch_tokens ({}) must be at least max_batch_seqs ({})",
                self.max_batch_tokens, self.max_batch_seqs
            ));
        }
        range(
            "--max-concurrent (max_concurrent_requests)",
            n(self.max_concurrent_requests),
            1,
            n(MAX_CONCURRENT_REQUESTS),
        )?;
        range(
            "--max-new-tokens (max_new_tokens_cap)",
            n(self.max_new_tokens_cap),
            1,
            n(MAX_SEQUENCE_TOKENS),
        )?;
        if let Some(t) = self.max_input_tokens {
            range(
                "--max-input-tokens (max_input_tokens)",
                n(t),
                1,
                n(MAX_SEQUENCE_TOKENS),
            )?;
        }
        if let Some(t) = self.max_total_tokens {
            range(
                "--max-total-tokens (max_total_tokens)",
                n(t),
                1,
                n(MAX_SEQUENCE_TOKENS),
            )?;
        }
        if self.stall_timeout > MAX_STALL_TIMEOUT {
            return Err(format!(
                "--stall-timeout-secs (stall_timeout) must be at most {}, got {}",
                MAX_STALL_TIMEOUT.as_secs(),
                self.stall_timeout.as_secs()
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_has_an_upper_bound_that_names_its_flag() {
        type Set = fn(&mut EngineConfig);
        let cases: [(Set, &str); 10] = [
            (|c| c.block_size = MAX_BLOCK_SIZE + 1, "--block-size"),
            (|c| c.num_blocks = Some(MAX_NUM_BLOCKS + 1), "--num-blocks"),
            (|c| c.kv_cache_bytes = Some(u64::MAX), "--kv-cache-mb"),
            (|c| c.max_batch_seqs = usize::MAX, "--max-batch-seqs"),
            (|c| c.max_batch_tokens = usize::MAX, "--max-batch-tokens"),
            (
                |c| c.max_concurrent_requests = usize::MAX,
                "--max-concurrent",
            ),
            (|c| c.max_new_tokens_cap = usize::MAX, "--max-new-tokens"),
            (
                |c| c.max_input_tokens = Some(usize::MAX),
                "--max-input-tokens",
            ),
            (
                |c| c.max_total_tokens = Some(usize::MAX),
                "--max-total-tokens",
            ),
            (
                |c| c.stall_timeout = Duration::from_secs(u64::MAX),
                "--stall-timeout-secs",
            ),
        ];
        for (set, flag) in cases {
            let mut c = EngineConfig::default();
            set(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(flag), "{flag}: {e}");
        }
        assert_eq!(EngineConfig::default().validate(), Ok(()));
        // The bounds multiply without overflow: the largest pool's slots fit in u64 and its
        // block ids in u32.
        assert!((MAX_BLOCK_SIZE as u64)
            .checked_mul(MAX_NUM_BLOCKS as u64)
            .is_some());
        assert!(MAX_NUM_BLOCKS as u64 <= u32::MAX as u64 + 1);
        assert!(MAX_KV_CACHE_MB.checked_mul(1 << 20).is_some());
    }
}
