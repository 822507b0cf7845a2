//! [`CudaDevice`]: the [`Device`] trait on one NVIDIA GPU. Load compiles the kernels for the
//! GPU's architecture and uploads the weights; warmup allocates activations for the largest
//! step, runs it, sizes the KV pool from what is left and captures the decode graphs; a step
//! uploads the plan, replays a graph (decode) or launches eagerly (prefill, mixed), and samples
//! on the device.

use crate::error::CudaError;
use crate::family::Features;
use crate::forward::{Buffers, Kernels, KvCache, Net};
use crate::gemm::Gemm;
use crate::kernels::Arch;
use crate::plan::StepPlan;
use crate::probe::probe_ordinal;
use crate::sampling::{self, SampleOut, MAX_TOP_N};
use crate::sizing;
use crate::weights::{self, DevBuf, ModelWeights};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{result, CudaContext, CudaGraph, CudaStream, DeviceRepr};
use halo_hal::{
    DType, Device, DeviceError, DeviceInfo, KvCacheLayout, LoadOptions, ModelInfo, StepBatch,
    StepOutput, StepTimings, WarmupRequest,
};
use halo_model::{Model, ModelConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

struct Loaded {
    config: ModelConfig,
    features: Features,
    dtype: DType,
    kernels: Kernels,
    gemm: Gemm,
    weights: ModelWeights,
}

struct Ready {
    layout: KvCacheLayout,
    max_seq_len: usize,
    buffers: Buffers,
    kv: KvCache,
    graphs: BTreeMap<usize, CudaGraph>,
}

pub struct CudaDevice {
    info: DeviceInfo,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: Arch,
    loaded: Option<Loaded>,
    ready: Option<Ready>,
}

// SAFETY: the device is owned and driven by one engine thread at a time (the trait takes
// `&mut self`); cudarc binds the context to the calling thread on every call, and the graphs
// and raw device addresses it holds are only touched through `&mut self`.
unsafe impl Send for CudaDevice {}

impl CudaDevice {
    /// Opens GPU `ordinal`. Fails with `Unavailable` when there is no driver or no such GPU.
    pub fn new(ordinal: usize) -> Result<CudaDevice, DeviceError> {
        let info = probe_ordinal(ordinal)?;
        let ctx = CudaContext::new(ordinal).map_err(CudaError::from)?;
        // One stream, one thread: cudarc's per-buffer events would only add work, and they
        // cannot be recorded inside a graph capture.
        // SAFETY: all work is issued on `stream`, so no cross-stream ordering is needed.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(CudaError::from)?;
        let stream = ctx.default_stream();
        Ok(CudaDevice {
            info,
            ctx,
            stream,
            arch: Arch {
                major: major as u32,
                minor: minor as u32,
            },
            loaded: None,
            ready: None,
        })
    }

    fn net(&self) -> Result<Net<'_>, DeviceError> {
        let l = self
            .loaded
            .as_ref()
            .ok_or_else(|| DeviceError::NotReady("no model loaded".into()))?;
        Ok(Net {
            stream: &self.stream,
            kernels: &l.kernels,
            gemm: &l.gemm,
            w: &l.weights,
            c: &l.config,
            f: &l.features,
            dtype: l.dtype,
        })
    }

    fn htod<T: DeviceRepr>(&self, dst: &DevBuf, src: &[T]) -> Result<(), CudaError> {
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `dst` was sized for the largest plan; pageable sources are staged before the
        // call returns, so `src` may be dropped afterwards.
        unsafe { result::memcpy_htod_async(dst.ptr, src, self.stream.cu_stream()) }?;
        Ok(())
    }

    fn dtoh<T: DeviceRepr + Default + Clone>(
        &self,
        src: &DevBuf,
        n: usize,
    ) -> Result<Vec<T>, CudaError> {
        let mut v = vec![T::default(); n];
        if n > 0 {
            // SAFETY: `src` holds at least `n` elements; the stream is synchronized below.
            unsafe { result::memcpy_dtoh_async(&mut v, src.ptr, self.stream.cu_stream()) }?;
        }
        Ok(v)
    }

    fn upload_plan(&self, b: &Buffers, p: &StepPlan) -> Result<(), CudaError> {
        self.htod(&b.ids, &p.token_ids)?;
        self.htod(&b.positions, &p.positions)?;
        self.htod(&b.long_rope, &p.long_rope)?;
        self.htod(&b.tok_seq, &p.tok_seq)?;
        self.htod(&b.slots, &p.slots)?;
        self.htod(&b.tables, &p.block_tables)?;
        self.htod(&b.sample_rows, &p.sample_rows)
    }
}

impl Device for CudaDevice {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn load(&mut self, model_dir: &Path, options: &LoadOptions) -> Result<ModelInfo, DeviceError> {
        self.ctx.bind_to_thread().map_err(CudaError::from)?;
        let model = Model::open(model_dir).map_err(|e| DeviceError::Load(e.to_string()))?;
        // What the forward pass cannot run is refused before anything is compiled or uploaded.
        let features = Features::from_config(&model.config)?;
        let dtype = options.dtype.unwrap_or(DType::BF16);
        if let Some(kv) = options.kv_cache_dtype.filter(|&kv| kv != dtype) {
            return Err(DeviceError::Unavailable(format!(
                "the CUDA backend keeps its KV cache in the compute dtype ({dtype}), not {kv}: \
                 choose it with --dtype"
            )));
        }
        if let Some(a) = options.activation_dtype.filter(|&a| a != dtype) {
            return Err(DeviceError::Unavailable(format!(
                "the CUDA backend computes activations in its compute dtype ({dtype}), not {a}: \
                 choose it with --dtype"
            )));
        }
        let kernels = Kernels::load(&self.stream, self.arch)?;
        let gemm = Gemm::new(&self.stream)?;
        let weights = weights::upload(&model, &features, dtype, &self.stream)?;
        self.stream.synchronize().map_err(CudaError::from)?;
        let info = ModelInfo::describe(&model, dtype, weights.bytes_read);
        self.ready = None;
        self.loaded = Some(Loaded {
            config: model.config,
            features,
            dtype,
            kernels,
            gemm,
            weights,
        });
        Ok(info)
    }

    fn warmup(&mut self, req: &WarmupRequest) -> Result<KvCacheLayout, DeviceError> {
        let t0 = Instant::now();
        self.ready = None;
        let (config, features, dtype) = {
            let l = self
                .loaded
                .as_ref()
                .ok_or_else(|| DeviceError::NotReady("warmup before load".into()))?;
            (l.config.clone(), l.features.clone(), l.dtype)
        };
        if req.block_size == 0 || req.max_batch_seqs == 0 || req.max_batch_tokens == 0 {
            return Err(DeviceError::BadBatch(
                "warmup limits must be positive".into(),
            ));
        }
        let rows = req.max_batch_tokens.max(req.max_batch_seqs);
        let width = req.max_seq_len.div_ceil(req.block_size);
        let buffers = Buffers::new(
            &self.stream,
            &config,
            &features,
            dtype,
            rows,
            req.max_batch_seqs,
            width,
        )?;
        let bytes_per_block = (2
            * config.num_hidden_layers
            * config.num_key_value_heads
            * config.head_dim
            * dtype.size_in_bytes()
            * req.block_size) as u64;
        // The largest step once, on a one-block scratch cache, so cuBLAS's and the driver's
        // lazy allocations are counted before free memory is read.
        let scratch_kv = KvCache {
            layers: (0..config.num_hidden_layers)
                .map(|_| {
                    let n = req.block_size
                        * config.num_key_value_heads
                        * config.head_dim
                        * dtype.size_in_bytes();
                    Ok((
                        DevBuf::zeros(&self.stream, n)?,
                        DevBuf::zeros(&self.stream, n)?,
                    ))
                })
                .collect::<Result<_, CudaError>>()?,
            block_size: req.block_size,
        };
        // Rows all point at sequence -1 / slot -1 (buffers are zeroed: set tok_seq and slots).
        self.htod(&buffers.tok_seq, &vec![-1i32; rows])?;
        self.htod(&buffers.slots, &vec![-1i64; rows])?;
        self.net()?
            .forward(&buffers, &scratch_kv, rows, req.max_batch_seqs)?;
        self.stream.synchronize().map_err(CudaError::from)?;
        drop(scratch_kv);
        let (free, total) = result::mem_get_info().map_err(CudaError::from)?;
        let num_blocks = sizing::kv_pool_blocks(req, free as u64, total as u64, bytes_per_block)?;
        let per_layer = num_blocks
            * req.block_size
            * config.num_key_value_heads
            * config.head_dim
            * dtype.size_in_bytes();
        let kv = KvCache {
            layers: (0..config.num_hidden_layers)
                .map(|_| {
                    Ok((
                        DevBuf::zeros(&self.stream, per_layer)?,
                        DevBuf::zeros(&self.stream, per_layer)?,
                    ))
                })
                .collect::<Result<_, CudaError>>()?,
            block_size: req.block_size,
        };
        // Decode graphs, one per bucket: captured over padding rows (sequence -1, slot -1).
        let mut graphs = BTreeMap::new();
        let mut warmed = Vec::new();
        for bucket in sizing::graph_buckets(req.max_batch_seqs) {
            self.net()?.forward(&buffers, &kv, bucket, bucket)?; // eager first: lazy init outside capture
            self.stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(CudaError::from)?;
            let captured = self.net()?.forward(&buffers, &kv, bucket, bucket);
            let graph = self
                .stream
                .end_capture(CUgraphInstantiate_flags(0))
                .map_err(CudaError::from)?;
            captured?;
            let graph = graph
                .ok_or_else(|| DeviceError::Backend("stream capture produced no graph".into()))?;
            graph.upload().map_err(CudaError::from)?;
            graphs.insert(bucket, graph);
            warmed.push(format!("decode-graph:{bucket}"));
        }
        self.stream.synchronize().map_err(CudaError::from)?;
        let layout = KvCacheLayout {
            block_size: req.block_size,
            num_blocks,
            bytes_per_block,
            warmed_shapes: warmed,
            warmup_ms: t0.elapsed().as_millis() as u64,
        };
        self.ready = Some(Ready {
            layout: layout.clone(),
            max_seq_len: req.max_seq_len,
            buffers,
            kv,
            graphs,
        });
        Ok(layout)
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, DeviceError> {
        let t0 = Instant::now();
        let ready = self
            .ready
            .as_ref()
            .ok_or_else(|| DeviceError::NotReady("step before warmup".into()))?;
        let vocab = self
            .loaded
            .as_ref()
            .map(|l| l.config.vocab_size)
            .unwrap_or(0);
        batch.validate(&ready.layout, vocab, ready.max_seq_len)?;
        self.ctx.bind_to_thread().map_err(CudaError::from)?;
        let b = &ready.buffers;
        let bucket = if StepPlan::is_decode(batch) && batch.num_samples() == batch.seqs.len() {
            sizing::choose_bucket(
                &ready.graphs.keys().copied().collect::<Vec<_>>(),
                batch.seqs.len(),
            )
        } else {
            None
        };
        let plan = match bucket {
            Some(g) => StepPlan::build(batch, ready.layout.block_size, b.width, g, g, g)?,
            None => StepPlan::build(
                batch,
                ready.layout.block_size,
                b.width,
                batch.num_tokens(),
                batch.seqs.len(),
                batch.num_samples(),
            )?,
        };
        if plan.rows > b.rows || plan.block_tables.len() > b.seqs * b.width {
            return Err(DeviceError::BadBatch(format!(
                "{} tokens exceed the warmed-up step of {}",
                plan.rows, b.rows
            )));
        }
        self.upload_plan(b, &plan)?;
        match bucket {
            Some(g) => ready.graphs[&g].launch().map_err(CudaError::from)?,
            None => self
                .net()?
                .forward(b, &ready.kv, plan.rows, plan.sampled.len())?,
        }
        let n = plan.sampled.len();
        let mut results = Vec::new();
        if n > 0 {
            let pack = sampling::pack(batch, &plan.sampled, vocab)?;
            if pack.penalties.len() > b.pens_cap {
                return Err(DeviceError::BadBatch(format!(
                    "{} distinct penalty tokens exceed the CUDA backend's {} per step",
                    pack.penalties.len(),
                    b.pens_cap
                )));
            }
            self.htod(&b.params, &pack.params)?;
            self.htod(&b.pens, &pack.penalties)?;
            self.net()?.sample(b, n)?;
            let outs: Vec<SampleOut> = self.dtoh(&b.outs, n)?;
            let tt: Vec<i32> = self.dtoh(&b.top_tokens, n * MAX_TOP_N)?;
            let tl: Vec<f32> = self.dtoh(&b.top_logprobs, n * MAX_TOP_N)?;
            self.stream.synchronize().map_err(CudaError::from)?;
            results = sampling::unpack(batch, &plan.sampled, &outs, &tt, &tl, vocab)?;
        } else {
            self.stream.synchronize().map_err(CudaError::from)?;
        }
        Ok(StepOutput {
            results,
            timings: StepTimings {
                forward_us: t0.elapsed().as_micros() as u64,
                padded_tokens: (plan.rows - plan.num_tokens) as u32,
                bucket: bucket.map(|g| format!("decode-graph:{g}")),
                graph_compiled: false,
            },
        })
    }
}
