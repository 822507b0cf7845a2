//! Test doubles for the engine's own tests and benches: a scripted device that needs no model.
//!
//! [`ScriptedDevice`] in `Echo` mode really stores each token id in the KV slot the batch names
//! and, to "sample", reads the whole history back through the block table and hashes it. A wrong
//! block table, a stale or wrongly shared prefix block, or a lost position changes the output, so
//! scheduler tests compare against [`ScriptedDevice::expected_next`] computed on the true
//! history. `NoOp` mode skips all of that (scheduling-overhead benchmarks). With a window
//! ([`ScriptedDevice::with_window`]) it reads, like sliding-window attention, only the last
//! `window` positions, and fails the step if any position a new token could attend to sits in a
//! freed block.
//! Failures are injected through [`Control`], shared so tests can reach a device the engine owns.

use halo_hal::rng::{mix64, uniform};
use halo_hal::{
    DType, Device, DeviceError, DeviceInfo, DeviceKind, KvCacheLayout, LoadOptions, ModelInfo,
    SampleRequest, SampledToken, SeqFailure, SeqResult, StepBatch, StepOutput, TopToken,
    WarmupRequest,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The shared tiny model directory (tests); `HALO_SHARED_DIR` overrides the sibling checkout.
pub fn tiny_mha_dir() -> PathBuf {
    let local = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/models/tiny-mha"
    ));
    if local.join("config.json").exists() {
        return local;
    }
    match std::env::var_os("HALO_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir).join("models/tiny-mha"),
        None => local,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Store tokens in KV slots and derive each sample from the history read back.
    Echo,
    /// Answer every sample with a fixed token, touching nothing.
    NoOp,
}

/// Failure injection and a record of what ran.
#[derive(Debug, Default)]
pub struct Control {
    /// The next step fails with this error.
    pub fail_next_step: Option<DeviceError>,
    /// The next step panics (as a kernel's `assert!` would), after releasing this lock.
    pub panic_next_step: bool,
    /// These sequences get non-finite logits at their next sample.
    pub non_finite: HashSet<u64>,
    /// After a loss, `recover` fails this many times before it succeeds; `None`: the device
    /// cannot recover in place (the trait's default answer).
    pub recover_after: Option<u32>,
    /// Sleep this long in every step (stall and deadline tests).
    pub step_delay: Duration,
    /// And this long per token of the step (a device whose step time grows with its size).
    pub per_token_delay: Duration,
    /// One entry per successful step when `record` is set.
    pub record: bool,
    pub batches: Vec<BatchRecord>,
}

/// The shape of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub num_tokens: usize,
    pub num_seqs: usize,
    /// Sequences that ran exactly one token and sampled (decode steps).
    pub decode_seqs: usize,
}

pub struct ScriptedDevice {
    mode: Mode,
    vocab_size: usize,
    context_length: usize,
    layout: Option<KvCacheLayout>,
    max_seq_len: usize,
    kv: Vec<u32>,
    control: Arc<Mutex<Control>>,
    window: Option<usize>,
}

const UNWRITTEN: u32 = u32::MAX;

impl ScriptedDevice {
    pub fn new(mode: Mode, vocab_size: usize, context_length: usize) -> Self {
        ScriptedDevice {
            mode,
            vocab_size,
            context_length,
            layout: None,
            max_seq_len: 0,
            kv: Vec::new(),
            control: Arc::new(Mutex::new(Control::default())),
            window: None,
        }
    }

    /// Attend (and so hash) only the last `window` positions, as a model whose every layer
    /// uses that sliding window.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = Some(window);
        self
    }

    pub fn control(&self) -> Arc<Mutex<Control>> {
        self.control.clone()
    }

    /// Warms up without `load` (scheduler tests that drive the device directly).
    pub fn ready(mut self, block_size: usize, num_blocks: usize, max_seq_len: usize) -> Self {
        let req = WarmupRequest {
            block_size,
            num_blocks: Some(num_blocks),
            max_seq_len,
            ..WarmupRequest::default()
        };
        self.warmup(&req).expect("scripted warmup cannot fail");
        self
    }

    /// The token this device samples after `history` (prompt + generated so far). Never 0 or 1
    /// (tiny-mha's BOS and EOS), so runs end by length unless a test says otherwise.
    pub fn expected_next(vocab_size: usize, history: &[u32], req: &SampleRequest) -> u32 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &t in history {
            h = mix64(h ^ t as u64);
        }
        if !req.params.is_greedy() {
            h ^= (uniform(req.params.seed, req.rng_offset) * (1u64 << 53) as f64) as u64;
            h = mix64(h);
        }
        2 + (h % (vocab_size as u64 - 2)) as u32
    }
}

impl Device for ScriptedDevice {
    fn recover(&mut self, _limit: Duration) -> Result<(), DeviceError> {
        let mut control = self.control.lock().expect("control lock");
        match control.recover_after.as_mut() {
            None => Err(DeviceError::Unavailable(
                "scripted device without recovery".into(),
            )),
            Some(0) => Ok(()),
            Some(n) => {
                *n -= 1;
                Err(DeviceError::Lost("still restarting".into()))
            }
        }
    }

    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: DeviceKind::Cpu,
            name: "scripted test device".into(),
            memory_bytes: 0,
            peak_bandwidth_bytes_per_s: 0.0,
            peak_flops: 0.0,
        }
    }

    fn load(
        &mut self,
        _model_dir: &Path,
        _options: &LoadOptions,
    ) -> Result<ModelInfo, DeviceError> {
        Ok(ModelInfo {
            name: "scripted".into(),
            architecture: "scripted".into(),
            dtype: DType::F32,
            vocab_size: self.vocab_size,
            context_length: self.context_length,
            num_layers: 1,
            hidden_size: 1,
            num_kv_heads: 1,
            head_dim: 1,
            param_count: 0,
            weight_bytes: 0,
        })
    }

    fn warmup(&mut self, request: &WarmupRequest) -> Result<KvCacheLayout, DeviceError> {
        let num_blocks = request.num_blocks.unwrap_or(1024);
        let layout = KvCacheLayout {
            block_size: request.block_size,
            num_blocks,
            bytes_per_block: 4 * request.block_size as u64,
            warmed_shapes: vec![],
            warmup_ms: 0,
        };
        if self.mode == Mode::Echo {
            self.kv = vec![UNWRITTEN; layout.capacity_tokens()];
        }
        self.max_seq_len = request.max_seq_len;
        self.layout = Some(layout.clone());
        Ok(layout)
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, DeviceError> {
        let mut control = self
            .control
            .lock()
            .map_err(|_| DeviceError::Backend("control poisoned".into()))?;
        let delay = control.step_delay + control.per_token_delay * batch.num_tokens() as u32;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if let Some(e) = control.fail_next_step.take() {
            return Err(e);
        }
        if std::mem::take(&mut control.panic_next_step) {
            drop(control);
            panic!("scripted device: injected panic in a step");
        }
        let layout = self
            .layout
            .as_ref()
            .ok_or_else(|| DeviceError::NotReady("step before warmup".into()))?;
        if control.record {
            control.batches.push(BatchRecord {
                num_tokens: batch.num_tokens(),
                num_seqs: batch.seqs.len(),
                decode_seqs: batch
                    .seqs
                    .iter()
                    .filter(|s| s.tokens.len() == 1 && s.sample.is_some())
                    .count(),
            });
        }
        let mut results = Vec::with_capacity(batch.num_samples());
        if self.mode == Mode::NoOp {
            for s in batch.seqs.iter().filter(|s| s.sample.is_some()) {
                results.push(SeqResult {
                    seq_id: s.seq_id,
                    outcome: Ok(SampledToken {
                        token: 7,
                        logprob: -1.0,
                        top: vec![],
                    }),
                });
            }
            return Ok(StepOutput {
                results,
                timings: Default::default(),
            });
        }
        batch.validate(layout, self.vocab_size, self.max_seq_len)?;
        let bs = layout.block_size;
        for s in &batch.seqs {
            // every position any new token can see must still be in a live block
            let visible = self
                .window
                .map_or(0, |w| (s.start_pos + 1).saturating_sub(w));
            if let Some(i) = (visible / bs..s.end_pos().div_ceil(bs))
                .find(|&i| s.block_table[i] == halo_hal::FREED_BLOCK)
            {
                return Err(DeviceError::BadBatch(format!(
                    "sequence {}: block {i} was freed but position {} can still be attended",
                    s.seq_id,
                    (i * bs).max(visible)
                )));
            }
        }
        for s in &batch.seqs {
            for (i, &t) in s.tokens.iter().enumerate() {
                self.kv[s.slot(s.start_pos + i, bs)] = t;
            }
        }
        for s in &batch.seqs {
            let Some(req) = &s.sample else { continue };
            if control.non_finite.remove(&s.seq_id) {
                results.push(SeqResult {
                    seq_id: s.seq_id,
                    outcome: Err(SeqFailure::NonFiniteLogits),
                });
                continue;
            }
            let first = self.window.map_or(0, |w| s.end_pos().saturating_sub(w));
            let history: Vec<u32> = (first..s.end_pos())
                .map(|p| self.kv[s.slot(p, bs)])
                .collect();
            if history.contains(&UNWRITTEN) {
                return Err(DeviceError::BadBatch(format!(
                    "sequence {} reads a KV slot nothing wrote",
                    s.seq_id
                )));
            }
            let token = Self::expected_next(self.vocab_size, &history, req);
            let top = (0..req.top_n.min(self.vocab_size as u32))
                .map(|i| TopToken {
                    token: (token + i) % self.vocab_size as u32,
                    logprob: -1.0 - i as f32,
                })
                .collect();
            results.push(SeqResult {
                seq_id: s.seq_id,
                outcome: Ok(SampledToken {
                    token,
                    logprob: -1.0,
                    top,
                }),
            });
        }
        Ok(StepOutput {
            results,
            timings: Default::default(),
        })
    }
}
