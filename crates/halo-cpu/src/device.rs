//! [`CpuDevice`]: the Device trait on the host CPU.

use crate::kv_cache::KvCache;
use crate::model::{CpuModel, WeightCast, WeightPlan};
use halo_hal::{
    sampling, DType, Device, DeviceError, DeviceInfo, DeviceKind, KvCacheLayout, LoadOptions,
    ModelInfo, SeqResult, StepBatch, StepOutput, StepTimings, WarmupRequest,
};
use halo_model::{Model, ModelFormat, StoredDType};
use rayon::prelude::*;
use std::path::Path;
use std::time::Instant;

/// The KV pool never takes more than this share of available memory unless asked explicitly.
const DEFAULT_KV_MEMORY_FRACTION: f64 = 0.25;
const DEFAULT_KV_MEMORY_CAP: u64 = 8 << 30;

pub struct CpuDevice {
    pool: rayon::ThreadPool,
    threads: usize,
    model: Option<CpuModel>,
    model_info: Option<ModelInfo>,
    cache: Option<KvCache>,
    /// What the next warmup's pool stores (chosen at load).
    kv_dtype: DType,
    layout: Option<KvCacheLayout>,
    max_seq_len: usize,
    /// When a burst of large steps ends (the heap then gives back what it no longer needs).
    bursts: crate::heap::BurstWatch,
}

impl CpuDevice {
    /// A device using `HALO_CPU_THREADS` threads, or every available core, and the kernels
    /// `HALO_CPU_ISA` allows (a value it cannot read is refused here).
    pub fn new() -> Result<CpuDevice, DeviceError> {
        crate::isa_cap::from_env().map_err(DeviceError::Unavailable)?;
        let threads = std::env::var("HALO_CPU_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
        Self::with_threads(threads)
    }

    /// A device on `threads` threads. Its warmup raises glibc's heap thresholds for the whole
    /// process, once (`heap.rs`): a step's buffers would otherwise be unmapped on free and
    /// faulted back in at the next step.
    pub fn with_threads(threads: usize) -> Result<CpuDevice, DeviceError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("halo-cpu-{i}"))
            .build()
            .map_err(|e| DeviceError::Backend(format!("cannot start CPU threads: {e}")))?;
        Ok(CpuDevice {
            pool,
            threads,
            model: None,
            model_info: None,
            cache: None,
            kv_dtype: DType::F32,
            layout: None,
            max_seq_len: 0,
            bursts: Default::default(),
        })
    }

    fn kv_budget(&self, request: &WarmupRequest, bytes_per_block: u64) -> usize {
        if let Some(n) = request.num_blocks {
            return n;
        }
        let budget = request.kv_cache_bytes.unwrap_or_else(|| {
            let available = meminfo_kib("MemAvailable:")
                .unwrap_or(4 << 20)
                .saturating_mul(1024);
            ((available as f64 * DEFAULT_KV_MEMORY_FRACTION) as u64).min(DEFAULT_KV_MEMORY_CAP)
        });
        // No point holding more than every schedulable sequence at full length, each in whole
        // blocks of its own.
        let useful = request
            .max_batch_seqs
            .saturating_mul(self.max_seq_len.div_ceil(request.block_size.max(1)));
        usize::try_from(budget / bytes_per_block.max(1))
            .unwrap_or(usize::MAX)
            .min(useful.max(1))
    }
}

/// Checks a pool's byte size before anything is allocated: it must not overflow `u64` and, where
/// the host says how much memory it has, must fit in it (an absurd `--num-blocks` is a typed
/// error, not an allocation abort).
fn check_pool_bytes(
    bytes_per_block: u64,
    num_blocks: usize,
    host_bytes: Option<u64>,
) -> Result<u64, DeviceError> {
    let bytes = KvCache::pool_bytes(bytes_per_block, num_blocks).ok_or_else(|| {
        DeviceError::OutOfMemory(format!(
            "a KV pool of {num_blocks} blocks × {bytes_per_block} bytes overflows 64 bits"
        ))
    })?;
    if let Some(host) = host_bytes.filter(|&h| h > 0) {
        if bytes > host {
            return Err(DeviceError::OutOfMemory(format!(
                "a KV pool of {num_blocks} blocks × {bytes_per_block} bytes ({bytes} bytes) is \
                 larger than this host's memory ({host} bytes)"
            )));
        }
    }
    Ok(bytes)
}

impl Device for CpuDevice {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: DeviceKind::Cpu,
            name: format!("{} ({} threads)", cpu_model_name(), self.threads),
            memory_bytes: meminfo_kib("MemTotal:").unwrap_or(0) * 1024,
            peak_bandwidth_bytes_per_s: 0.0,
            peak_flops: 0.0,
        }
    }

    fn load(&mut self, model_dir: &Path, options: &LoadOptions) -> Result<ModelInfo, DeviceError> {
        crate::heap::return_load_temporaries();
        let cast = match (options.dtype, options.quantize) {
            (Some(_), Some(_)) => {
                return Err(DeviceError::Unavailable(
                    "choose one of a weight dtype and a quantization, not both".into(),
                ))
            }
            (Some(d), None) => WeightCast::Float(match d {
                DType::F32 => StoredDType::F32,
                DType::F16 => StoredDType::F16,
                DType::BF16 => StoredDType::BF16,
            }),
            (None, Some(q)) => WeightCast::Quantize(q),
            (None, None) => WeightCast::Keep,
        };
        let model = Model::open(model_dir).map_err(|e| DeviceError::Load(e.to_string()))?;
        model
            .check_tensors()
            .map_err(|e| DeviceError::Load(e.to_string()))?;
        let bf16_activations = match options.activation_dtype {
            // Each format follows its reference's arithmetic: a GGUF's is llama.cpp, which
            // rounds activations to bf16 before they meet BF16 weights (and at twice the f32
            // rate on AVX-512 BF16); a safetensors checkpoint's is transformers' f32 run.
            None => matches!(model.format, ModelFormat::Gguf { .. }),
            Some(DType::F32) => false,
            Some(DType::BF16) => true,
            Some(other) => {
                return Err(DeviceError::Unavailable(format!(
                    "the CPU backend rounds activations to f32 or bf16, not {other}"
                )))
            }
        };
        let plan = WeightPlan {
            cast,
            bf16_activations,
        };
        // Casting weights (quantizing at load) runs on the device's threads.
        let cpu = self.pool.install(|| CpuModel::load(&model, plan))?;
        // Activations are f32; the weights a step streams are in their stored types.
        let info = ModelInfo::describe(&model, DType::F32, cpu.weight_bytes_per_step());
        self.kv_dtype = options
            .kv_cache_dtype
            .unwrap_or_else(|| cpu.default_kv_dtype());
        self.model = Some(cpu);
        self.model_info = Some(info.clone());
        self.cache = None;
        self.layout = None;
        Ok(info)
    }

    fn warmup(&mut self, request: &WarmupRequest) -> Result<KvCacheLayout, DeviceError> {
        let started = Instant::now();
        let model = self
            .model
            .as_ref()
            .ok_or_else(|| DeviceError::NotReady("warmup before load".into()))?;
        if request.block_size == 0 {
            return Err(DeviceError::BadBatch("block size must be positive".into()));
        }
        self.max_seq_len = request
            .max_seq_len
            .min(model.config.max_position_embeddings)
            .max(1);
        let layers = model.config.num_hidden_layers;
        let row = model.kv_row();
        let bytes_per_block =
            KvCache::bytes_per_block(layers, request.block_size, row, self.kv_dtype).ok_or_else(
                || {
                    DeviceError::OutOfMemory(format!(
                        "a KV block of {} tokens overflows 64 bits",
                        request.block_size
                    ))
                },
            )?;
        let num_blocks = self.kv_budget(request, bytes_per_block);
        if num_blocks == 0 {
            return Err(DeviceError::OutOfMemory(
                "no memory for a single KV block".into(),
            ));
        }
        let host = meminfo_kib("MemTotal:").map(|k| k.saturating_mul(1024));
        check_pool_bytes(bytes_per_block, num_blocks, host)?;
        let mut cache = KvCache::new(
            layers,
            request.block_size,
            num_blocks,
            row,
            model.config.num_key_value_heads,
            self.kv_dtype,
        )?;
        if request.resident_kv_pool {
            cache.make_resident();
        }
        let layout = KvCacheLayout {
            block_size: request.block_size,
            num_blocks,
            bytes_per_block,
            warmed_shapes: vec![format!("{} threads", self.threads)],
            warmup_ms: 0,
        };
        self.cache = Some(cache);
        self.layout = Some(layout);
        // Touch every weight once so the first request does not pay the page faults.
        let probe = StepBatch {
            seqs: vec![halo_hal::SeqStep {
                seq_id: 0,
                tokens: vec![0],
                start_pos: 0,
                block_table: vec![0],
                sample: Some(halo_hal::SampleRequest::greedy()),
                long_rope: false,
            }],
        };
        self.step(&probe)?;
        crate::heap::start_stepping();
        let layout = self.layout.as_mut().expect("set above");
        layout.warmup_ms = started.elapsed().as_millis() as u64;
        Ok(layout.clone())
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, DeviceError> {
        let started = Instant::now();
        let (Some(model), Some(cache), Some(layout)) = (&self.model, &mut self.cache, &self.layout)
        else {
            return Err(DeviceError::NotReady("step before warmup".into()));
        };
        batch.validate(layout, model.config.vocab_size, self.max_seq_len)?;
        let vocab = model.config.vocab_size;
        let results = self
            .pool
            .install(|| -> Result<Vec<SeqResult>, DeviceError> {
                let logits = model.forward(batch, cache)?;
                let sampled: Vec<_> = batch
                    .seqs
                    .iter()
                    .filter_map(|s| s.sample.as_ref().map(|r| (s.seq_id, r)))
                    .collect();
                // Rows sample independently (each draws from its own counter-based RNG), so
                // they spread over the pool; at 32 sequences a serial pass left a core idle.
                Ok(sampled
                    .into_par_iter()
                    .zip(logits.par_chunks_exact(vocab))
                    .map(|((seq_id, req), row)| SeqResult {
                        seq_id,
                        outcome: sampling::sample(row, req),
                    })
                    .collect())
            })?;
        let tokens = batch.seqs.iter().map(|s| s.tokens.len()).sum();
        if self.bursts.after_step(tokens) {
            crate::heap::release_free_memory(&self.pool);
        }
        Ok(StepOutput {
            results,
            timings: StepTimings {
                forward_us: started.elapsed().as_micros() as u64,
                ..Default::default()
            },
        })
    }
}

impl CpuDevice {
    /// Bytes of weights the last step read (a mixture of experts reads only the experts that
    /// step's tokens chose; dense models read every projection), 0 before a model is loaded.
    pub fn last_step_weight_bytes(&self) -> u64 {
        self.model
            .as_ref()
            .map_or(0, |m| m.last_step_weight_bytes())
    }

    /// The raw logits (`[n, vocab]`) of every sampled sequence in `batch`, without sampling.
    /// Not part of the Device trait (logits never cross it): golden tests compare these with
    /// transformers' own.
    pub fn logits(&mut self, batch: &StepBatch) -> Result<Vec<f32>, DeviceError> {
        let (Some(model), Some(cache), Some(layout)) = (&self.model, &mut self.cache, &self.layout)
        else {
            return Err(DeviceError::NotReady("step before warmup".into()));
        };
        batch.validate(layout, model.config.vocab_size, self.max_seq_len)?;
        self.pool.install(|| model.forward(batch, cache))
    }
}

fn meminfo_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod kv_sizing_tests {
    use super::*;

    #[test]
    fn pool_bytes_are_checked_before_allocating() {
        assert_eq!(check_pool_bytes(1024, 8, Some(1 << 20)).unwrap(), 8192);
        assert_eq!(check_pool_bytes(1024, 8, None).unwrap(), 8192);
        let e = check_pool_bytes(u64::MAX / 2, 3, None).unwrap_err();
        assert!(matches!(e, DeviceError::OutOfMemory(_)));
        assert!(e.to_string().contains("overflows 64 bits"), "{e}");
        let e = check_pool_bytes(1 << 20, 1 << 22, Some(1 << 30)).unwrap_err();
        assert!(
            e.to_string().contains("larger than this host's memory"),
            "{e}"
        );
    }
}
