//! The engine flags `generate` and `serve` share: KV pool size, paging and the step budget.

use clap::Args;
use halo_engine::EngineConfig;
use halo_model::StoredDType;

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
    /// Quantize float weights at load: q8_0, q4_0, q4_k, q5_k or q6_k (the CPU backend; the
    /// embedding and head of a 4- or 5-bit model go to q6_k, as llama.cpp's _M mixes do).
    #[arg(long, value_parser = parse_quantize)]
    pub quantize: Option<StoredDType>,
}

fn parse_quantize(s: &str) -> Result<StoredDType, String> {
    let t: StoredDType = s.parse()?;
    if !t.is_quantized() {
        return Err(format!(
            "'{s}' is not a block type (choose q8_0, q4_0, q4_k, q5_k or q6_k)"
        ));
    }
    Ok(t)
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
