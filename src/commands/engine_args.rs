//! The engine flags `generate` and `serve` share: KV pool size, paging and the step budget.

use clap::Args;
use halo_engine::EngineConfig;

#[derive(Args, Debug)]
pub struct EngineArgs {
    /// Exact number of KV blocks (overrides --kv-cache-mb).
    #[arg(long)]
    pub num_blocks: Option<usize>,
    /// KV cache budget in MiB (default: the device decides).
    #[arg(long)]
    pub kv_cache_mb: Option<u64>,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Token budget of one step (chunked prefill).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Most sequences in one step.
    #[arg(long, default_value_t = 64)]
    pub max_batch_seqs: usize,
    /// Turn off prefix caching.
    #[arg(long)]
    pub no_prefix_caching: bool,
}

impl EngineArgs {
    /// The engine configuration these flags describe; the rest stays at its defaults.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            block_size: self.block_size,
            num_blocks: self.num_blocks,
            kv_cache_bytes: self.kv_cache_mb.map(|mb| mb << 20),
            max_batch_tokens: self.max_batch_tokens,
            max_batch_seqs: self.max_batch_seqs,
            enable_prefix_caching: !self.no_prefix_caching,
            ..EngineConfig::default()
        }
    }
}
