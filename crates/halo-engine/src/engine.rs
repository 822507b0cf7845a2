//! The engine handle and its scheduler thread.
//!
//! One OS thread per device owns the [`Device`] and a [`Scheduler`] and loops: take commands
//! (submit, cancel, shutdown) from a channel, run one step, send each request its events. Async
//! and blocking callers alike hold a cheap [`Engine`] clone and a [`RequestHandle`] per request.
//!
//! Failure policy: a fatal device error (lost, out of memory) fails every in-flight request with
//! `DeviceLost { tokens_sent }`; while the device is down every submit is refused with
//! [`SubmitError::DeviceLost`] and health reports `DeviceLost`. The loop then asks the device to
//! [`Device::recover`] with backoff (the Gaudi sidecar restarts itself); once it is back, cached
//! prefixes are forgotten (their KV is gone) and requests are accepted again. A device that
//! cannot recover in place is dropped, and recovery is a restart of the worker. A heartbeat stamped every
//! loop iteration lets [`Engine::health`] report `Stalled` when work is pending and the loop
//! stopped turning. A step that is running is told apart (its start is stamped): it counts as
//! stalled only past four stall timeouts (a hung device), and warmup times a full step and
//! lowers the per-step token budget so that one step takes at most a quarter of the timeout.
//!
//! A panic inside a step (a kernel's `assert!`, an `expect` in bookkeeping) is caught at the
//! step boundary: the requests that held KV fail with `DeviceLost { tokens_sent }` (UNAVAILABLE
//! on the wire), the block pool is rebuilt empty, the device is asked to recover as after a
//! loss, and the loop serves again; [`LiveStats::step_panics`] counts these.

use crate::config::{EngineConfig, Limits};
use crate::error::{EngineError, SubmitError};
use crate::event::{Event, Failure, FailureKind, Timings, Usage};
use crate::handle::RequestHandle;
use crate::health::Health;
use crate::observer::LiveStats;
use crate::request::GenerateRequest;
use crate::scheduler::{Output, Scheduler, SchedulerConfig, StepOutcome};
use crate::validate::validate_request;
use halo_hal::{
    Device, DeviceError, DeviceInfo, KvCacheLayout, LoadOptions, ModelInfo, WarmupRequest,
};
use halo_model::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{channel, error::TrySendError, Sender};

/// What the engine runs on, for `GetInfo`.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineInfo {
    pub model: ModelInfo,
    pub device: DeviceInfo,
    pub limits: Limits,
    pub kv: KvCacheLayout,
    /// Most tokens per step after warmup's measurement: `max_batch_tokens`, lowered so that one
    /// step stays well inside the stall timeout on this device.
    pub step_token_budget: usize,
}

pub(crate) enum Command {
    Submit {
        id: u64,
        req: Box<GenerateRequest>,
        arrival: Instant,
        cache_salt: Arc<str>,
        events: Sender<Event>,
    },
    Cancel(u64),
    Shutdown,
}

/// State shared between handles and the scheduler thread.
pub(crate) struct Shared {
    limits: Limits,
    vocab_size: usize,
    /// Accepted requests whose terminal event has not been sent: the queue cap counts these.
    in_flight: AtomicUsize,
    pub(crate) lost: AtomicBool,
    shutting_down: AtomicBool,
    stopped: AtomicBool,
    epoch: Instant,
    heartbeat_us: AtomicU64,
    /// When the running step began (µs since `epoch`, plus one); 0 between steps.
    step_started_us: AtomicU64,
    stall_timeout: Duration,
    stats: Mutex<LiveStats>,
}

impl Shared {
    fn beat(&self) {
        self.heartbeat_us
            .store(self.epoch.elapsed().as_micros() as u64, Ordering::Release);
    }

    fn step_started(&self) {
        self.beat();
        self.step_started_us.store(
            self.epoch.elapsed().as_micros() as u64 + 1,
            Ordering::Release,
        );
    }

    fn step_ended(&self) {
        self.step_started_us.store(0, Ordering::Release);
        self.beat();
    }
}

/// A step still running after this many stall timeouts is a hung device, not a long step (the
/// step budget keeps a step under a quarter of one timeout).
const HUNG_STEP_FACTOR: u32 = 4;

/// The share of the stall timeout one step may take, by warmup's measurement.
const STEP_SHARE_OF_STALL_TIMEOUT: f64 = 0.25;

/// Times one prefill step of `max_batch_tokens` tokens (at position 0 in the first blocks; the
/// pool is empty and nothing is cached yet) and lowers the per-step token budget so that a step
/// takes at most a quarter of the stall timeout: a long prefill chunk (a large model on a small
/// CPU) then never looks like a stalled loop. Never below `max_batch_seqs` (a full decode step).
fn calibrate_step_budget(
    device: &mut dyn Device,
    config: &EngineConfig,
    kv: &KvCacheLayout,
    max_seq_len: usize,
) -> Result<usize, EngineError> {
    let n = config
        .max_batch_tokens
        .min(max_seq_len)
        .min(kv.capacity_tokens());
    if n == 0 {
        return Ok(config.max_batch_tokens);
    }
    let blocks = n.div_ceil(kv.block_size) as halo_hal::BlockId;
    let batch = halo_hal::StepBatch {
        seqs: vec![halo_hal::SeqStep {
            seq_id: 0,
            tokens: vec![0; n],
            start_pos: 0,
            block_table: (0..blocks).collect(),
            sample: None,
            long_rope: false,
        }],
    };
    let started = Instant::now();
    device.step(&batch).map_err(|source| EngineError::Device {
        stage: "warmup",
        source,
    })?;
    let per_token = started.elapsed().as_secs_f64() / n as f64;
    let allowed = config.stall_timeout.as_secs_f64() * STEP_SHARE_OF_STALL_TIMEOUT;
    let fit = if per_token > 0.0 {
        (allowed / per_token).floor().min(usize::MAX as f64) as usize
    } else {
        usize::MAX
    };
    let floor = config.max_batch_seqs.min(config.max_batch_tokens).max(1);
    let budget = fit.clamp(floor, config.max_batch_tokens);
    if budget < config.max_batch_tokens {
        tracing::warn!(
            max_batch_tokens = config.max_batch_tokens,
            budget,
            per_token_us = per_token * 1e6,
            "a full step would take too much of the stall timeout; lowering the step budget"
        );
    }
    Ok(budget)
}

struct Inner {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    tokenizer: halo_model::Tokenizer,
    /// The model's chat template, compiled (or why it does not compile); None without one.
    chat_template: Option<Result<ChatTemplate, ChatTemplateError>>,
    info: EngineInfo,
    next_id: AtomicU64,
}

/// A cheap, cloneable handle on one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// How a device loss ended.
enum Recovery {
    Recovered,
    /// The device cannot restart in place.
    Unsupported,
    /// Shutdown, or every handle to the engine is gone.
    Stopped,
}

/// How long one `Device::recover` call may wait, and the backoff between calls.
const RECOVERY_WAIT: Duration = Duration::from_secs(2);
const RECOVERY_BACKOFF_START: Duration = Duration::from_millis(100);
const RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Events buffered per request between the engine and its caller. The engine never blocks on
/// a caller: past this, token events are coalesced into one in the engine's backlog.
const EVENT_BUFFER: usize = 64;

/// A caller whose coalesced backlog holds more tokens than this has stopped reading: its
/// request fails `SlowReader` (RESOURCE_EXHAUSTED) and its blocks are freed.
const MAX_BACKLOG_TOKENS: usize = 1024;

/// Events waiting for room in one request's channel: at most one coalesced token event (the
/// deltas concatenated) and then the terminal event, so memory per caller is bounded.
struct Backlog {
    tx: Sender<Event>,
    events: std::collections::VecDeque<Event>,
    tokens: usize,
}

impl Backlog {
    fn push(&mut self, event: Event) {
        if let Event::Tokens { token_ids, .. } = &event {
            self.tokens += token_ids.len();
        }
        if let (
            Some(Event::Tokens {
                token_ids,
                text,
                logprobs,
                top,
            }),
            Event::Tokens {
                token_ids: t2,
                text: x2,
                logprobs: l2,
                top: p2,
            },
        ) = (self.events.back_mut(), &event)
        {
            token_ids.extend_from_slice(t2);
            text.push_str(x2);
            logprobs.extend_from_slice(l2);
            top.extend(p2.iter().cloned());
            return;
        }
        self.events.push_back(event);
    }

    /// Sends what fits; false when the caller is gone.
    fn drain(&mut self) -> bool {
        while let Some(e) = self.events.pop_front() {
            match self.tx.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    self.events.push_front(e);
                    break;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        self.tokens = self
            .events
            .iter()
            .map(|e| match e {
                Event::Tokens { token_ids, .. } => token_ids.len(),
                _ => 0,
            })
            .sum();
        true
    }
}

/// How often an idle loop retries a backlog.
const BACKLOG_TICK: Duration = Duration::from_millis(5);

/// How long an idle loop sleeps between heartbeats.
const IDLE_TICK: Duration = Duration::from_millis(50);

impl Engine {
    /// Loads the model on `device`, warms up (which sizes the KV pool), and starts the scheduler
    /// thread. Blocks until the engine is ready or failed.
    pub fn start(
        device: Box<dyn Device>,
        model_dir: &Path,
        load: LoadOptions,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        // A directory with config.json or a GGUF file (or a directory holding one).
        let (model_config, tokenizer) = halo_model::open_config_and_tokenizer(model_dir)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let kv_window = kv_window(&model_config);
        let rope_regime = crate::rope_regime::RopeRegime::for_model(&model_config);
        let detok_tokenizer = tokenizer.shared();
        let chat_template = halo_model::chat_template::for_path(model_dir)
            .map(|source| ChatTemplate::for_model(&source, &tokenizer));
        let eos_ids = tokenizer.eos_token_ids().to_vec();

        let (ready_tx, ready_rx) =
            mpsc::sync_channel::<Result<(Arc<Shared>, EngineInfo), EngineError>>(1);
        let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
        let model_dir = model_dir.to_path_buf();
        std::thread::Builder::new()
            .name("halo-engine".into())
            .spawn(move || {
                let mut device = device;
                let setup = (|| {
                    let model =
                        device
                            .load(&model_dir, &load)
                            .map_err(|source| EngineError::Device {
                                stage: "load",
                                source,
                            })?;
                    let max_seq_len = config
                        .max_total_tokens
                        .unwrap_or(model.context_length)
                        .min(model.context_length);
                    let warm = WarmupRequest {
                        block_size: config.block_size,
                        max_batch_tokens: config.max_batch_tokens,
                        max_batch_seqs: config.max_batch_seqs,
                        max_seq_len,
                        num_blocks: config.num_blocks,
                        kv_cache_bytes: config.kv_cache_bytes,
                        resident_kv_pool: config.resident_kv_pool,
                    };
                    let kv = device.warmup(&warm).map_err(|source| EngineError::Device {
                        stage: "warmup",
                        source,
                    })?;
                    if kv.block_size != config.block_size {
                        return Err(EngineError::Device {
                            stage: "warmup",
                            source: halo_hal::DeviceError::Backend(format!(
                                "block size {} where {} was asked",
                                kv.block_size, config.block_size
                            )),
                        });
                    }
                    if kv.capacity_tokens() < 2 {
                        return Err(EngineError::NoKvCapacity {
                            blocks: kv.num_blocks,
                            block_size: kv.block_size,
                        });
                    }
                    let limits = config.limits(model.context_length, kv.capacity_tokens());
                    let step_token_budget =
                        calibrate_step_budget(&mut *device, &config, &kv, max_seq_len)?;
                    let info = EngineInfo {
                        model,
                        device: device.info(),
                        limits,
                        kv,
                        step_token_budget,
                    };
                    Ok(info)
                })();
                let info = match setup {
                    Ok(info) => info,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let shared = Arc::new(Shared {
                    limits: info.limits.clone(),
                    vocab_size: info.model.vocab_size,
                    in_flight: AtomicUsize::new(0),
                    lost: AtomicBool::new(false),
                    shutting_down: AtomicBool::new(false),
                    stopped: AtomicBool::new(false),
                    epoch: Instant::now(),
                    heartbeat_us: AtomicU64::new(0),
                    step_started_us: AtomicU64::new(0),
                    stall_timeout: config.stall_timeout,
                    stats: Mutex::new(LiveStats::default()),
                });
                let sched_cfg = SchedulerConfig {
                    max_batch_tokens: info.step_token_budget,
                    max_batch_seqs: config.max_batch_seqs,
                    enable_prefix_caching: config.enable_prefix_caching,
                    limits: info.limits.clone(),
                    vocab_size: info.model.vocab_size,
                    eos_token_ids: eos_ids,
                };
                let scheduler = Scheduler::new(
                    sched_cfg,
                    info.kv.num_blocks,
                    info.kv.block_size,
                    Some(detok_tokenizer),
                    config.observer.clone(),
                )
                .with_kv_window(kv_window)
                .with_rope_regime(rope_regime);
                // Readers see the real pool from the start, not zeros until the first step.
                if let Ok(mut s) = shared.stats.lock() {
                    *s = scheduler.stats();
                }
                if ready_tx.send(Ok((shared.clone(), info))).is_err() {
                    return;
                }
                let _stopped = StoppedGuard(shared.clone());
                run_loop(device, scheduler, cmd_rx, &shared);
            })
            .map_err(|e| EngineError::Spawn(e.to_string()))?;

        let (shared, info) = ready_rx.recv().map_err(|_| EngineError::StartupAborted)??;
        Ok(Engine {
            inner: Arc::new(Inner {
                commands: cmd_tx,
                shared,
                tokenizer,
                chat_template,
                info,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// Validates `req` and queues it. On error nothing changed (queue and blocks untouched).
    pub fn submit(&self, req: GenerateRequest) -> Result<RequestHandle, SubmitError> {
        self.submit_salted(req, "")
    }

    /// As [`Self::submit`], with a prefix-cache salt: cached prompt blocks are shared only
    /// between requests with the same salt (a tenant), so neither KV nor
    /// `usage.cached_prompt_tokens` crosses salts. The empty salt is one shared scope.
    pub fn submit_salted(
        &self,
        req: GenerateRequest,
        cache_salt: &str,
    ) -> Result<RequestHandle, SubmitError> {
        let shared = &self.inner.shared;
        if shared.lost.load(Ordering::Acquire) {
            return Err(SubmitError::DeviceLost);
        }
        if shared.shutting_down.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        if shared.stopped.load(Ordering::Acquire) {
            return Err(SubmitError::Unavailable);
        }
        validate_request(&req, &shared.limits, shared.vocab_size)?;
        let max = shared.limits.max_concurrent_requests;
        shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| SubmitError::QueueFull { max })?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel(EVENT_BUFFER);
        let cmd = Command::Submit {
            id,
            req: Box::new(req),
            arrival: Instant::now(),
            cache_salt: Arc::from(cache_salt),
            events: tx,
        };
        if self.inner.commands.send(cmd).is_err() {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Unavailable);
        }
        Ok(RequestHandle::new(
            id,
            rx,
            self.inner.commands.clone(),
            shared.clone(),
        ))
    }

    pub fn tokenizer(&self) -> &halo_model::Tokenizer {
        &self.inner.tokenizer
    }

    /// Renders chat `messages` with the model's template and tokenizes the prompt (the
    /// template's own BOS only, as transformers does).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<u32>), ChatTemplateError> {
        let tmpl = match &self.inner.chat_template {
            None => return Err(ChatTemplateError::Missing),
            Some(Err(e)) => return Err(e.clone()),
            Some(Ok(t)) => t,
        };
        let text = tmpl.render(messages, add_generation_prompt)?;
        let ids = ChatTemplate::encode(&self.inner.tokenizer, &text)
            .map_err(|e| ChatTemplateError::Render(format!("the rendered prompt: {e}")))?;
        Ok((text, ids))
    }

    pub fn info(&self) -> EngineInfo {
        self.inner.info.clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.shared.limits
    }

    /// Live KV and queue state and cumulative counters. `waiting` includes requests accepted by
    /// `submit` that the scheduler thread has not picked up yet.
    pub fn stats(&self) -> LiveStats {
        let shared = &self.inner.shared;
        let mut s = shared.stats.lock().map(|s| s.clone()).unwrap_or_default();
        let in_flight = shared.in_flight.load(Ordering::Acquire);
        s.waiting = in_flight.saturating_sub(s.running);
        s
    }

    pub fn health(&self) -> Health {
        let shared = &self.inner.shared;
        if shared.lost.load(Ordering::Acquire) {
            return Health::DeviceLost;
        }
        if shared.shutting_down.load(Ordering::Acquire) {
            return Health::ShuttingDown;
        }
        if shared.stopped.load(Ordering::Acquire) {
            return Health::DeviceLost;
        }
        if shared.in_flight.load(Ordering::Acquire) == 0 {
            return Health::Serving;
        }
        let now = shared.epoch.elapsed();
        // A running step is not a stalled loop; only one far longer than the budget allows is
        // a hung device.
        let step = shared.step_started_us.load(Ordering::Acquire);
        if step > 0 {
            let running = now.saturating_sub(Duration::from_micros(step - 1));
            if running > shared.stall_timeout * HUNG_STEP_FACTOR {
                return Health::Stalled;
            }
            return Health::Serving;
        }
        let beat = Duration::from_micros(shared.heartbeat_us.load(Ordering::Acquire));
        if now.saturating_sub(beat) > shared.stall_timeout {
            return Health::Stalled;
        }
        Health::Serving
    }

    /// Stops admission; in-flight requests run to completion, then the thread exits.
    pub fn shutdown(&self) {
        self.inner
            .shared
            .shutting_down
            .store(true, Ordering::Release);
        let _ = self.inner.commands.send(Command::Shutdown);
    }

    /// Whether the scheduler thread has exited.
    pub fn is_stopped(&self) -> bool {
        self.inner.shared.stopped.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for the scheduler thread to exit (after `shutdown`).
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while !self.is_stopped() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// Marks the engine stopped however the thread ends (panics included).
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
    }
}

struct Loop<'a> {
    scheduler: Scheduler,
    senders: HashMap<u64, Sender<Event>>,
    /// Events a caller has not made room for yet, coalesced (see [`Backlog`]).
    backlog: HashMap<u64, Backlog>,
    shared: &'a Shared,
    out: Vec<Output>,
    shutting_down: bool,
    disconnected: bool,
}

fn run_loop(
    mut device: Box<dyn Device>,
    scheduler: Scheduler,
    rx: mpsc::Receiver<Command>,
    shared: &Shared,
) {
    let mut l = Loop {
        scheduler,
        senders: HashMap::new(),
        backlog: HashMap::new(),
        shared,
        out: Vec::new(),
        shutting_down: false,
        disconnected: false,
    };
    loop {
        shared.beat();
        // Block only when idle; with work pending, take what is there and step. Backlogged
        // events (a slow caller) are retried on a short tick.
        if !l.backlog.is_empty() {
            l.dispatch();
        }
        if !l.scheduler.has_work() {
            if l.shutting_down || l.disconnected {
                break;
            }
            let tick = if l.backlog.is_empty() {
                IDLE_TICK
            } else {
                BACKLOG_TICK
            };
            match rx.recv_timeout(tick) {
                Ok(cmd) => l.command(cmd),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => l.command(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    l.disconnected = true;
                    break;
                }
            }
        }
        l.flush();
        if l.scheduler.has_work() {
            shared.step_started();
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                l.scheduler.step(&mut *device, &mut l.out)
            }));
            shared.step_ended();
            let outcome = match stepped {
                Ok(outcome) => outcome,
                Err(_) => {
                    // The panic hook already printed where. The step's requests fail
                    // UNAVAILABLE; the pool is rebuilt, then the device is asked back.
                    tracing::error!("a device step panicked; failing its requests and recovering");
                    shared.lost.store(true, Ordering::Release);
                    l.scheduler.recover_from_panic(&mut l.out);
                    l.flush();
                    let back = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        device.recover(RECOVERY_WAIT)
                    }));
                    match back {
                        // A device without in-place recovery reported no loss: its KV contents
                        // are discarded with the rebuilt pool, and the next step tells.
                        Ok(Ok(())) | Ok(Err(DeviceError::Unavailable(_))) => {
                            shared.lost.store(false, Ordering::Release);
                            continue;
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "device not back yet"),
                        Err(_) => tracing::error!("device recovery panicked"),
                    }
                    match l.recover(&mut *device, &rx) {
                        Recovery::Recovered => {
                            shared.lost.store(false, Ordering::Release);
                            continue;
                        }
                        Recovery::Unsupported => {
                            drop(device);
                            l.refuse_until_disconnected(&rx);
                            return;
                        }
                        Recovery::Stopped => break,
                    }
                }
            };
            let fatal = matches!(&outcome, StepOutcome::DeviceFailed(e) if e.is_fatal());
            if fatal {
                // Before the failures go out, so a caller that sees one also sees health flip.
                shared.lost.store(true, Ordering::Release);
            }
            l.flush();
            if fatal {
                match l.recover(&mut *device, &rx) {
                    Recovery::Recovered => {
                        shared.lost.store(false, Ordering::Release);
                        continue;
                    }
                    Recovery::Unsupported => {
                        drop(device);
                        l.refuse_until_disconnected(&rx);
                        return;
                    }
                    Recovery::Stopped => break,
                }
            }
        }
    }
    l.publish();
}

impl Loop<'_> {
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                id,
                req,
                arrival,
                cache_salt,
                events,
            } => {
                match self.scheduler.submit_salted(id, *req, arrival, cache_salt) {
                    Ok(()) => {
                        self.senders.insert(id, events);
                    }
                    Err(e) => {
                        // Only a race with device loss gets here: submit() validated already.
                        let kind = match e {
                            SubmitError::DeviceLost => FailureKind::DeviceLost { tokens_sent: 0 },
                            _ => FailureKind::Internal,
                        };
                        let _ = events.try_send(refusal(kind, &e));
                        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            Command::Cancel(id) => {
                self.scheduler.cancel(id, &mut self.out);
            }
            Command::Shutdown => self.shutting_down = true,
        }
    }

    /// Publishes the stats, then sends the queued events, so a caller that sees a terminal event
    /// also sees the blocks it freed.
    fn flush(&mut self) {
        self.publish();
        self.dispatch();
        self.publish();
    }

    /// Sends queued events without ever blocking: a caller that went away is cancelled, one
    /// whose channel is full gets its events coalesced in the backlog, and one whose backlog
    /// passes [`MAX_BACKLOG_TOKENS`] has stopped reading and is dropped.
    fn dispatch(&mut self) {
        let mut gone = Vec::new();
        self.backlog.retain(|id, b| {
            let alive = b.drain();
            if !alive {
                gone.push(*id);
            }
            alive && !b.events.is_empty()
        });
        for Output { id, event } in self.out.drain(..) {
            let terminal = event.is_terminal();
            let tx = if terminal {
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.senders.remove(&id)
            } else {
                self.senders.get(&id).cloned()
            };
            let Some(tx) = tx else { continue };
            if let Some(b) = self.backlog.get_mut(&id) {
                b.push(event);
                continue;
            }
            match tx.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    let mut b = Backlog {
                        tx,
                        events: Default::default(),
                        tokens: 0,
                    };
                    b.push(event);
                    self.backlog.insert(id, b);
                }
                Err(TrySendError::Closed(_)) => {
                    if !terminal {
                        gone.push(id);
                    }
                }
            }
        }
        let slow: Vec<u64> = self
            .backlog
            .iter()
            .filter(|(id, b)| b.tokens > MAX_BACKLOG_TOKENS && self.senders.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for id in slow {
            if let Some(b) = self.backlog.get_mut(&id) {
                b.events.retain(Event::is_terminal);
                b.tokens = 0;
            }
            tracing::warn!(
                engine_id = id,
                "the caller stopped reading; dropping its request"
            );
            self.scheduler.abort(
                id,
                FailureKind::SlowReader,
                "the client stopped reading its stream",
                &mut self.out,
            );
        }
        for id in gone {
            self.backlog.remove(&id);
            self.scheduler.cancel(id, &mut self.out);
        }
        if !self.out.is_empty() {
            self.dispatch();
        }
    }

    fn publish(&self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.scheduler.stats();
        }
    }

    /// After a fatal device error (every request already failed): asks the device to come back,
    /// with backoff, refusing submits meanwhile. Shutdown or a closed channel ends the wait.
    fn recover(&mut self, device: &mut dyn Device, rx: &mpsc::Receiver<Command>) -> Recovery {
        let mut backoff = RECOVERY_BACKOFF_START;
        loop {
            self.shared.beat();
            match device.recover(RECOVERY_WAIT) {
                Ok(()) => {
                    self.scheduler.recovered();
                    self.publish();
                    tracing::warn!("device recovered; accepting requests again");
                    return Recovery::Recovered;
                }
                Err(DeviceError::Unavailable(reason)) => {
                    tracing::error!(%reason, "device lost and cannot recover in place");
                    return Recovery::Unsupported;
                }
                Err(e) => tracing::warn!(error = %e, "device not back yet"),
            }
            let until = Instant::now() + backoff;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                self.shared.beat();
                match rx.recv_timeout(left) {
                    Ok(Command::Submit { events, .. }) => {
                        let _ = events.try_send(refusal(
                            FailureKind::DeviceLost { tokens_sent: 0 },
                            &SubmitError::DeviceLost,
                        ));
                        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                    Ok(Command::Cancel(_)) => {}
                    Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                        return Recovery::Stopped
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            backoff = (backoff * 2).min(RECOVERY_BACKOFF_MAX);
        }
    }

    /// After a fatal device error: every new submit fails at once, until all handles are gone.
    fn refuse_until_disconnected(&mut self, rx: &mpsc::Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            if let Command::Submit { events, .. } = cmd {
                let _ = events.try_send(refusal(
                    FailureKind::DeviceLost { tokens_sent: 0 },
                    &SubmitError::DeviceLost,
                ));
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

fn refusal(kind: FailureKind, e: &SubmitError) -> Event {
    Event::Failed(Failure {
        kind,
        message: e.to_string(),
        usage: Usage::default(),
        timings: Timings::default(),
    })
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.inner.info.model.name)
            .field("device", &self.inner.info.device.name)
            .field("health", &self.health())
            .finish()
    }
}

/// The window every layer of the model attends through (the widest when they differ), or
/// `None` when any layer sees the whole history (Gemma-style mixes of local and global layers
/// keep every block). The scheduler releases KV blocks older than this window.
pub fn kv_window(config: &halo_model::ModelConfig) -> Option<usize> {
    let windows: Option<Vec<usize>> = (0..config.num_hidden_layers)
        .map(|l| config.window_for_layer(l))
        .collect();
    windows?.into_iter().max()
}
