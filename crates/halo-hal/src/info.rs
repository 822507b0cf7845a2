//! Descriptions exchanged at load and warmup time: what the device is, what the model is, and
//! the KV cache layout warmup settled on.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which family of hardware a device drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Gaudi,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Gaudi => "gaudi",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            "gaudi" | "hpu" => Ok(DeviceKind::Gaudi),
            other => Err(format!(
                "unknown device '{other}' (expected cpu, cuda or gaudi)"
            )),
        }
    }
}

/// The numeric type a backend computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(format!(
                "unknown dtype '{other}' (expected f32, f16 or bf16)"
            )),
        }
    }
}

/// What the device is, and the peaks a benchmark divides by for roofline ratios.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    pub name: String,
    pub memory_bytes: u64,
    /// Peak memory bandwidth, measured or declared; 0 when unknown.
    pub peak_bandwidth_bytes_per_s: f64,
    /// Peak dense FLOP/s in the compute dtype; 0 when unknown.
    pub peak_flops: f64,
}

/// How to load a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadOptions {
    /// The compute dtype; `None` lets the backend choose (CPU: f32).
    pub dtype: Option<DType>,
    /// Quantize float weights to this block type at load (`--quantize`); backends that cannot
    /// compute with it refuse.
    pub quantize: Option<halo_model::StoredDType>,
    /// The KV cache's storage type (`--kv-cache-dtype`); `None` lets the backend choose (CPU: f16
    /// for quantized weights, f32 for float ones; CUDA and Gaudi: the compute dtype). Backends refuse a type they cannot store.
    pub kv_cache_dtype: Option<DType>,
    /// What activations are rounded to before they meet float weights in a matmul
    /// (`--activation-dtype`); `None`: the backend decides. The CPU backend computes in f32 and
    /// takes bf16 here for BF16 weights (llama.cpp's arithmetic for bf16 models, on AVX-512
    /// BF16 at twice the f32 rate); by default it rounds to bf16 for GGUF files (their
    /// reference is llama.cpp) and keeps f32 for safetensors checkpoints (transformers'). CUDA
    /// and Gaudi round to their compute dtype and refuse any other type.
    pub activation_dtype: Option<DType>,
}

/// What was loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub dtype: DType,
    pub vocab_size: usize,
    pub context_length: usize,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub param_count: u64,
    /// Bytes of weights read per forward pass in the compute dtype.
    pub weight_bytes: u64,
}

impl ModelInfo {
    /// What a backend reports after loading `model` to compute in `dtype`, reading
    /// `weight_bytes` of weights per forward pass.
    pub fn describe(model: &halo_model::Model, dtype: DType, weight_bytes: u64) -> ModelInfo {
        let c = &model.config;
        ModelInfo {
            name: model.name(),
            architecture: c.architecture.hf_name().to_string(),
            dtype,
            vocab_size: c.vocab_size,
            context_length: c.max_position_embeddings,
            num_layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            param_count: c.param_count(),
            weight_bytes,
        }
    }

    /// Bytes of KV cache one token occupies across all layers in `dtype`.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> u64 {
        (2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype.size_in_bytes()) as u64
    }
}

/// What the engine asks of warmup: the shapes it will schedule and how much KV to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupRequest {
    /// Tokens per KV block.
    pub block_size: usize,
    /// Most tokens (prefill + decode) in one step.
    pub max_batch_tokens: usize,
    /// Most sequences in one step.
    pub max_batch_seqs: usize,
    /// Longest sequence (prompt + generated) the engine will schedule.
    pub max_seq_len: usize,
    /// An exact number of blocks (tests, small pools); overrides `kv_cache_bytes`.
    pub num_blocks: Option<usize>,
    /// A memory budget for the KV pool; `None` lets the device size it from free memory.
    pub kv_cache_bytes: Option<u64>,
    /// Write the whole pool once before returning, so no request pays for its first touch of
    /// a block. Host-memory pools otherwise fault their pages in as sequences first reach each
    /// block (on the CPU backend a measurable part of a decode step); device-memory pools are
    /// resident once allocated and ignore this. For a pool sized to a known job (`halo
    /// generate`); a server's pool sized from free memory would commit all of it at start.
    pub resident_kv_pool: bool,
}

impl Default for WarmupRequest {
    fn default() -> Self {
        WarmupRequest {
            block_size: 16,
            max_batch_tokens: 512,
            max_batch_seqs: 64,
            max_seq_len: 2048,
            num_blocks: None,
            kv_cache_bytes: None,
            resident_kv_pool: false,
        }
    }
}

/// The KV cache warmup allocated: `num_blocks` blocks of `block_size` token slots each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvCacheLayout {
    pub block_size: usize,
    pub num_blocks: usize,
    pub bytes_per_block: u64,
    /// Shapes warmed (buckets on Gaudi, graph sizes on CUDA); informative.
    pub warmed_shapes: Vec<String>,
    pub warmup_ms: u64,
}

impl KvCacheLayout {
    /// Token slots in the whole pool.
    pub fn capacity_tokens(&self) -> usize {
        self.block_size * self.num_blocks
    }
}
