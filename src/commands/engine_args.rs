//! The engine flags `generate` and `serve` share: KV pool size, paging and the step budget.

use clap::Args;
use halo_engine::config::{
    MAX_BATCH_SEQS, MAX_BATCH_TOKENS, MAX_BLOCK_SIZE, MAX_KV_CACHE_MB, MAX_NUM_BLOCKS,
};
use halo_engine::EngineConfig;
use halo_hal::DType;
use halo_model::StoredDType;

#[derive(Args, Debug)]
pub struct EngineArgs {
    /// Exact number of KV blocks (overrides --kv-cache-mb).
    #[arg(long, value_parser = parse_num_blocks)]
    pub num_blocks: Option<usize>,
    /// KV cache budget in MiB (default: the device decides).
    #[arg(long, value_parser = parse_kv_cache_mb)]
    pub kv_cache_mb: Option<u64>,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16, value_parser = parse_block_size)]
    pub block_size: usize,
    /// Token budget of one step (chunked prefill).
    #[arg(long, default_value_t = 512, value_parser = parse_max_batch_tokens)]
    pub max_batch_tokens: usize,
    /// Most sequences in one step.
    #[arg(long, default_value_t = 64, value_parser = parse_max_batch_seqs)]
    pub max_batch_seqs: usize,
    /// Turn off prefix caching.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Quantize float weights at load: q8_0, q4_0, q4_k, q5_k or q6_k (the CPU backend; the
    /// embedding and head of a 4- or 5-bit model go to q6_k, as llama.cpp's _M mixes do).
    #[arg(long, value_parser = parse_quantize)]
    pub quantize: Option<StoredDType>,
    /// What the KV cache stores: f32, f16 or bf16 (default: the device decides; the CPU keeps
    /// f16 for quantized weights, as llama.cpp does, and f32 for float ones).
    #[arg(long, value_name = "TYPE", value_parser = parse_kv_cache_dtype)]
    pub kv_cache_dtype: Option<DType>,
    /// What activations are rounded to before they meet float weights: f32 or bf16 (default:
    /// the device decides; the CPU takes bf16 for GGUF files, as llama.cpp does, and f32 for
    /// safetensors checkpoints, as transformers does). bf16 on the CPU backend makes BF16
    /// weights meet bf16 activations, llama.cpp's arithmetic for bf16 models, at twice the f32
    /// rate on CPUs with AVX-512 BF16; f16, f32 and quantized weights are unchanged.
    #[arg(long, value_name = "TYPE", value_parser = parse_activation_dtype)]
    pub activation_dtype: Option<DType>,
}

/// A whole number in `lo..=hi`; clap prefixes the flag, so the one-line error names it.
fn parse_count(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number between {lo} and {hi}"))?;
    if v < lo || v > hi {
        return Err(format!("must be between {lo} and {hi}"));
    }
    Ok(v)
}

fn parse_num_blocks(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_NUM_BLOCKS as u64).map(|v| v as usize)
}

fn parse_kv_cache_mb(s: &str) -> Result<u64, String> {
    parse_count(s, 1, MAX_KV_CACHE_MB)
}

fn parse_block_size(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_BLOCK_SIZE as u64).map(|v| v as usize)
}

fn parse_max_batch_tokens(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_BATCH_TOKENS as u64).map(|v| v as usize)
}

fn parse_max_batch_seqs(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_BATCH_SEQS as u64).map(|v| v as usize)
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

fn parse_kv_cache_dtype(s: &str) -> Result<DType, String> {
    s.parse()
}

fn parse_activation_dtype(s: &str) -> Result<DType, String> {
    match s.parse()? {
        DType::F16 => Err("f16 activations are not offered (choose f32 or bf16)".into()),
        t => Ok(t),
    }
}

impl EngineArgs {
    /// The engine configuration these flags describe; the rest stays at its defaults.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            block_size: self.block_size,
            num_blocks: self.num_blocks,
            // The parser bounds the MiB; a value past u64 bytes saturates and validate() names it.
            kv_cache_bytes: self.kv_cache_mb.map(|mb| mb.saturating_mul(1 << 20)),
            max_batch_tokens: self.max_batch_tokens,
            max_batch_seqs: self.max_batch_seqs,
            enable_prefix_caching: !self.no_prefix_caching,
            ..EngineConfig::default()
        }
    }
}
