//! [`GaudiDevice`]: the Device the engine drives, and the supervisor of its sidecar process.
//!
//! The engine calls the device from its own OS thread, so each method blocks on a tokio runtime
//! the device owns; background work (reading the sidecar's output, restarting it) runs on that
//! runtime's single worker. A failure mid-step (death, a hang past the watchdog, an incoherent
//! reply) kills the process, returns [`DeviceError::Lost`] for that step, and starts a restart
//! loop with exponential backoff that re-loads the model and re-warms the same KV layout, so
//! later steps work. Each process gets a new epoch; replies carrying another are rejected.

use crate::convert::{self, ReplyError};
use crate::options::GaudiOptions;
use crate::process::Sidecar;
use crate::proto as pb;
use halo_hal::{
    Device, DeviceError, DeviceInfo, DeviceKind, KvCacheLayout, LoadOptions, ModelInfo, StepBatch,
    StepOutput, WarmupRequest,
};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a sidecar must be brought back to after a restart.
#[derive(Clone)]
struct Target {
    load: Option<(PathBuf, LoadOptions, ModelInfo)>,
    warm: Option<(WarmupRequest, KvCacheLayout)>,
}

struct Up {
    sidecar: Sidecar,
    backend: String,
    device_name: String,
    memory_bytes: u64,
}

enum State {
    Up(Box<Up>),
    Restarting(JoinHandle<Box<Up>>),
}

pub struct GaudiDevice {
    rt: Option<tokio::runtime::Runtime>,
    opts: GaudiOptions,
    state: State,
    epochs: Arc<AtomicU64>,
    step_id: u64,
    target: Target,
}

fn short(msg: &str) -> String {
    msg.chars().take(300).collect()
}

async fn with_timeout<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RpcError> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(RpcError::Hung(format!(
            "sidecar {what} took longer than {limit:?}"
        ))),
        Ok(Err(status)) => Err(RpcError::Status(status)),
        Ok(Ok(reply)) => Ok(reply.into_inner()),
    }
}

enum RpcError {
    Hung(String),
    Status(tonic::Status),
}

fn rpc_error(what: &str, e: RpcError) -> DeviceError {
    match e {
        RpcError::Hung(msg) => DeviceError::Lost(msg),
        RpcError::Status(s) => {
            DeviceError::Lost(format!("sidecar {what} failed: {}", short(s.message())))
        }
    }
}

fn reply_error(what: &str, e: ReplyError) -> DeviceError {
    DeviceError::Lost(format!("sidecar {what} reply rejected: {e}"))
}

async fn load_on(
    sidecar: &mut Sidecar,
    opts: &GaudiOptions,
    dir: &Path,
    options: &LoadOptions,
) -> Result<(pb::LoadReply, ModelInfo), DeviceError> {
    let req = pb::LoadRequest {
        epoch: sidecar.epoch,
        model_dir: dir.to_string_lossy().into_owned(),
        dtype: convert::dtype_to_proto(options.dtype) as i32,
    };
    let reply = match with_timeout("load", opts.load_timeout, sidecar.client.load(req)).await {
        Err(RpcError::Status(s)) if s.code() == tonic::Code::InvalidArgument => {
            return Err(DeviceError::Load(short(s.message())))
        }
        Err(e) => return Err(rpc_error("load", e)),
        Ok(r) => r,
    };
    let info = convert::model_info(&reply, sidecar.epoch).map_err(|e| reply_error("load", e))?;
    Ok((reply, info))
}

async fn warmup_on(
    sidecar: &mut Sidecar,
    opts: &GaudiOptions,
    req: &WarmupRequest,
) -> Result<KvCacheLayout, DeviceError> {
    let msg = convert::warmup_request(req, sidecar.epoch);
    match with_timeout("warmup", opts.warmup_timeout, sidecar.client.warmup(msg)).await {
        Err(RpcError::Status(s)) if s.code() == tonic::Code::InvalidArgument => Err(
            DeviceError::BadBatch(format!("warmup refused: {}", short(s.message()))),
        ),
        Err(RpcError::Status(s)) if s.code() == tonic::Code::ResourceExhausted => {
            Err(DeviceError::OutOfMemory(short(s.message())))
        }
        Err(e) => Err(rpc_error("warmup", e)),
        Ok(r) => convert::kv_layout(&r, req, sidecar.epoch).map_err(|e| reply_error("warmup", e)),
    }
}

/// Brings a fresh process to `target`: spawn, load the same model, warm the same layout.
async fn bring_up(opts: &GaudiOptions, epoch: u64, target: &Target) -> Result<Up, DeviceError> {
    let sidecar = Sidecar::spawn(opts, epoch).await?;
    let mut up = Up {
        backend: String::new(),
        device_name: String::new(),
        memory_bytes: 0,
        sidecar,
    };
    let result = async {
        if let Some((dir, options, info)) = &target.load {
            let (reply, again) = load_on(&mut up.sidecar, opts, dir, options).await?;
            if &again != info {
                return Err(DeviceError::Lost(
                    "the restarted sidecar loaded a different model".into(),
                ));
            }
            up.set_device(&reply);
        }
        if let Some((req, layout)) = &target.warm {
            // The engine's block allocator already knows the pool: ask for exactly that many.
            let pinned = WarmupRequest {
                num_blocks: Some(layout.num_blocks),
                ..req.clone()
            };
            let again = warmup_on(&mut up.sidecar, opts, &pinned).await?;
            if again.num_blocks != layout.num_blocks || again.block_size != layout.block_size {
                return Err(DeviceError::Lost(
                    "the restarted sidecar has another KV layout".into(),
                ));
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(up),
        Err(e) => {
            up.sidecar.kill().await;
            up.sidecar.log_death("failed to come back");
            Err(e)
        }
    }
}

/// Restarts until one attempt succeeds; dropped with the device.
async fn restart_loop(opts: GaudiOptions, epochs: Arc<AtomicU64>, target: Target) -> Box<Up> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let delay = opts.backoff(attempt);
        tokio::time::sleep(delay).await;
        let epoch = epochs.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::warn!(attempt, epoch, ?delay, "restarting the gaudi sidecar");
        match bring_up(&opts, epoch, &target).await {
            Ok(up) => {
                tracing::info!(attempt, epoch, "gaudi sidecar restarted");
                return Box::new(up);
            }
            Err(e) => tracing::error!(attempt, epoch, error = %e, "gaudi sidecar restart failed"),
        }
    }
}

impl Up {
    fn set_device(&mut self, reply: &pb::LoadReply) {
        self.backend = short(&reply.backend);
        self.device_name = short(&reply.device_name);
        self.memory_bytes = reply.memory_bytes;
    }
}

impl GaudiDevice {
    /// Starts the sidecar and waits until it answers. Unavailable when the sidecar's Python or
    /// sources cannot be found (see [`GaudiOptions`]).
    pub fn new(opts: GaudiOptions) -> Result<Self, DeviceError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("halo-gaudi")
            .enable_all()
            .build()
            .map_err(|e| DeviceError::Unavailable(format!("cannot start a runtime: {e}")))?;
        let epochs = Arc::new(AtomicU64::new(1));
        let sidecar = block(&rt, Sidecar::spawn(&opts, 1))?;
        let up = Up {
            sidecar,
            backend: String::new(),
            device_name: String::new(),
            memory_bytes: 0,
        };
        Ok(GaudiDevice {
            rt: Some(rt),
            opts,
            state: State::Up(Box::new(up)),
            epochs,
            step_id: 0,
            target: Target {
                load: None,
                warm: None,
            },
        })
    }

    fn run<F: Future>(&self, fut: F) -> F::Output {
        block(self.rt.as_ref().expect("runtime lives until drop"), fut)
    }

    /// The current sidecar's process id (tests send it signals); None while restarting.
    pub fn sidecar_pid(&self) -> Option<u32> {
        match &self.state {
            State::Up(up) => Some(up.sidecar.pid),
            State::Restarting(_) => None,
        }
    }

    /// The current sidecar's epoch; None while restarting.
    pub fn epoch(&self) -> Option<u64> {
        match &self.state {
            State::Up(up) => Some(up.sidecar.epoch),
            State::Restarting(_) => None,
        }
    }

    /// Whether a sidecar is up (loaded and warmed as before, after a restart). Never blocks.
    pub fn is_ready(&mut self) -> bool {
        self.wait_until_ready(Duration::ZERO)
    }

    /// Waits up to `limit` for a restart in progress to finish.
    pub fn wait_until_ready(&mut self, limit: Duration) -> bool {
        self.ensure_up(limit).is_ok()
    }

    /// The sidecar's own counters (steps, padded tokens, compiles after warmup).
    pub fn health(&mut self) -> Result<pb::HealthReply, DeviceError> {
        self.ensure_up(Duration::ZERO)?;
        let State::Up(up) = &mut self.state else {
            unreachable!("ensure_up")
        };
        let epoch = up.sidecar.epoch;
        let mut client = up.sidecar.client.clone();
        let reply = self
            .run(with_timeout(
                "health",
                Duration::from_secs(5),
                client.health(pb::HealthRequest { epoch }),
            ))
            .map_err(|e| rpc_error("health", e))?;
        if reply.epoch != epoch {
            return Err(self.fail(format!(
                "health reply for epoch {} in epoch {epoch}",
                reply.epoch
            )));
        }
        Ok(reply)
    }

    fn ensure_up(&mut self, limit: Duration) -> Result<(), DeviceError> {
        let State::Restarting(handle) = &mut self.state else {
            return Ok(());
        };
        if limit.is_zero() && !handle.is_finished() {
            return Err(DeviceError::Lost("the gaudi sidecar is restarting".into()));
        }
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        let limit = limit.max(Duration::from_millis(1));
        // Built inside the runtime: a timer needs its reactor.
        match block(rt, async { tokio::time::timeout(limit, handle).await }) {
            Err(_) => Err(DeviceError::Lost("the gaudi sidecar is restarting".into())),
            Ok(Ok(up)) => {
                self.state = State::Up(up);
                Ok(())
            }
            Ok(Err(join)) => {
                self.schedule_restart();
                Err(DeviceError::Lost(format!(
                    "the gaudi sidecar restart task failed: {join}"
                )))
            }
        }
    }

    fn schedule_restart(&mut self) {
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        let task = restart_loop(self.opts.clone(), self.epochs.clone(), self.target.clone());
        self.state = State::Restarting(rt.spawn(task));
    }

    /// Kills the current process (logging its output's tail), starts the restart loop and
    /// returns the Lost error for the caller.
    fn fail(&mut self, reason: String) -> DeviceError {
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        if let State::Up(up) = &mut self.state {
            let exited = up.sidecar.exited();
            block(rt, up.sidecar.kill());
            up.sidecar.log_death(&match exited {
                Some(status) => format!("died ({status}): {reason}"),
                None => format!("was killed: {reason}"),
            });
        }
        self.schedule_restart();
        DeviceError::Lost(reason)
    }

    fn up(&mut self, limit: Duration) -> Result<&mut Up, DeviceError> {
        self.ensure_up(limit)?;
        match &mut self.state {
            State::Up(up) => Ok(up),
            State::Restarting(_) => {
                Err(DeviceError::Lost("the gaudi sidecar is restarting".into()))
            }
        }
    }

    fn layout(&self) -> Result<(&ModelInfo, &WarmupRequest, &KvCacheLayout), DeviceError> {
        match (&self.target.load, &self.target.warm) {
            (Some((_, _, info)), Some((req, layout))) => Ok((info, req, layout)),
            _ => Err(DeviceError::NotReady("step before load and warmup".into())),
        }
    }
}

/// Blocks the calling thread on `rt`. From inside another runtime's worker (an async caller),
/// the worker is first handed back to its runtime so the nested block is allowed.
fn block<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(|| rt.block_on(fut))
    } else {
        rt.block_on(fut)
    }
}

impl Drop for GaudiDevice {
    fn drop(&mut self) {
        if let State::Up(up) = &mut self.state {
            let _ = up.sidecar.start_kill();
        }
        if let Some(rt) = self.rt.take() {
            // Allowed from async contexts, unlike dropping the runtime; the sidecar process is
            // killed on drop (kill_on_drop) either way.
            rt.shutdown_background();
        }
    }
}

impl Device for GaudiDevice {
    /// The supervisor restarts a dead or hung sidecar on its own (with backoff) and re-loads and
    /// re-warms it; recovering is waiting for that restart.
    fn recover(&mut self, limit: Duration) -> Result<(), DeviceError> {
        self.ensure_up(limit)
    }

    fn info(&self) -> DeviceInfo {
        let (name, memory) = match &self.state {
            State::Up(up) if !up.backend.is_empty() => (
                format!("{} (halo sidecar, torch {})", up.device_name, up.backend),
                up.memory_bytes,
            ),
            _ => ("halo gaudi sidecar".to_string(), 0),
        };
        DeviceInfo {
            kind: DeviceKind::Gaudi,
            name,
            memory_bytes: memory,
            peak_bandwidth_bytes_per_s: 0.0,
            peak_flops: 0.0,
        }
    }

    fn load(&mut self, model_dir: &Path, options: &LoadOptions) -> Result<ModelInfo, DeviceError> {
        if let Some(kv) = options.kv_cache_dtype {
            return Err(DeviceError::Unavailable(format!(
                "the Gaudi sidecar keeps its KV cache in the compute dtype (--dtype), so \
                 --kv-cache-dtype {kv} cannot be honoured"
            )));
        }
        if let Some(a) = options
            .activation_dtype
            .filter(|&a| Some(a) != options.dtype)
        {
            return Err(DeviceError::Unavailable(format!(
                "the Gaudi sidecar computes activations in its compute dtype (--dtype), so \
                 --activation-dtype {a} cannot be honoured"
            )));
        }
        let ready = self.opts.ready_timeout;
        self.up(ready)?;
        let opts = self.opts.clone();
        let State::Up(up) = &mut self.state else {
            unreachable!("up() succeeded")
        };
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        let result = block(rt, load_on(&mut up.sidecar, &opts, model_dir, options));
        match result {
            Ok((reply, info)) => {
                up.set_device(&reply);
                self.target = Target {
                    load: Some((model_dir.to_owned(), options.clone(), info.clone())),
                    warm: None,
                };
                Ok(info)
            }
            Err(DeviceError::Lost(reason)) => Err(self.fail(reason)),
            Err(e) => Err(e),
        }
    }

    fn warmup(&mut self, request: &WarmupRequest) -> Result<KvCacheLayout, DeviceError> {
        if self.target.load.is_none() {
            return Err(DeviceError::NotReady("warmup before load".into()));
        }
        let ready = self.opts.ready_timeout;
        self.up(ready)?;
        let opts = self.opts.clone();
        let State::Up(up) = &mut self.state else {
            unreachable!()
        };
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        match block(rt, warmup_on(&mut up.sidecar, &opts, request)) {
            Ok(layout) => {
                self.target.warm = Some((request.clone(), layout.clone()));
                Ok(layout)
            }
            Err(DeviceError::Lost(reason)) => Err(self.fail(reason)),
            Err(e) => Err(e),
        }
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, DeviceError> {
        let (info, req, layout) = self.layout()?;
        let vocab = info.vocab_size;
        batch.validate(layout, vocab, req.max_seq_len)?;
        // A restart in progress gets up to one watchdog period before this step gives up.
        let limit = self.opts.step_timeout;
        let up = self.up(limit)?;
        let epoch = up.sidecar.epoch;
        let mut client = up.sidecar.client.clone();
        self.step_id += 1;
        let step_id = self.step_id;
        let msg = convert::step_request(batch, epoch, step_id);
        let reply = self.run(with_timeout("step", limit, client.step(msg)));
        match reply {
            Ok(reply) => convert::validate_step_reply(&reply, batch, epoch, step_id, vocab)
                .map_err(|e| self.fail(format!("sidecar step reply rejected: {e}"))),
            Err(RpcError::Hung(msg)) => Err(self.fail(format!("{msg}: hung, killed"))),
            Err(RpcError::Status(s)) => Err(self.step_status(s)),
        }
    }
}

impl GaudiDevice {
    /// Maps a failed Step RPC: the sidecar's own refusals pass through; anything that means
    /// the process died or lost its state kills it and restarts.
    fn step_status(&mut self, s: tonic::Status) -> DeviceError {
        let msg = short(s.message());
        match s.code() {
            // The sidecar checks every batch before touching memory: its state is intact.
            tonic::Code::InvalidArgument => DeviceError::BadBatch(format!("sidecar: {msg}")),
            tonic::Code::ResourceExhausted => {
                let _ = self.fail(format!("out of device memory: {msg}"));
                DeviceError::OutOfMemory(msg)
            }
            // A Python exception inside the step: the process lives, but its KV writes may be
            // partial, so it is replaced like a dead one.
            tonic::Code::Unknown if msg.starts_with("Exception calling application") => {
                self.fail(format!("sidecar step raised: {msg}"))
            }
            code => self.fail(format!("sidecar step failed ({code:?}): {msg}")),
        }
    }
}
