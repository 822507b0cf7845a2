//! Progress for the long steps before a worker is ready: loading the model and warming up. On a
//! terminal, a spinner with the elapsed time while a step runs; on a terminal or not (a log file,
//! a pipe, a service manager), one line per step when it finishes, with its duration:
//!
//! ```text
//! halo: loaded tiny-mha in 0.21 s (2 layers, 0.3 M parameters)
//! halo: warmed up in 0.05 s (KV cache: 512 blocks of 16 tokens)
//! ```
//!
//! Done as a [`Device`] wrapper so the engine needs no callbacks: the engine calls `load` and
//! `warmup` exactly once each, in that order, before it reports ready.

use halo_hal::{
    Device, DeviceError, DeviceInfo, KvCacheLayout, LoadOptions, ModelInfo, StepBatch, StepOutput,
    WarmupRequest,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::Path;
use std::time::{Duration, Instant};

/// `inner`, reporting its load and warmup on stderr.
pub struct WithProgress {
    inner: Box<dyn Device>,
    terminal: bool,
}

impl WithProgress {
    pub fn wrap(inner: Box<dyn Device>) -> Box<dyn Device> {
        Box::new(WithProgress {
            inner,
            terminal: super::stderr_is_terminal(),
        })
    }

    fn stage<T>(
        &mut self,
        running: String,
        run: impl FnOnce(&mut dyn Device) -> Result<T, DeviceError>,
        done: impl FnOnce(&T, Duration) -> String,
    ) -> Result<T, DeviceError> {
        let spinner = self.terminal.then(|| spinner(running));
        let started = Instant::now();
        let result = run(&mut *self.inner);
        let took = started.elapsed();
        // The spinner leaves no trace; a finished step leaves the same line as off a terminal.
        // A failed one leaves nothing: the caller reports the error, once.
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        if let Ok(v) = &result {
            eprintln!("halo: {}", done(v, took));
        }
        result
    }
}

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        pb.set_style(style);
    }
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// "0.21 s", "12.3 s", "2 min 05 s".
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

impl Device for WithProgress {
    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }

    fn load(&mut self, model_dir: &Path, options: &LoadOptions) -> Result<ModelInfo, DeviceError> {
        let kind = self.inner.info().kind;
        self.stage(
            format!("loading {} on {kind}", model_dir.display()),
            |d| d.load(model_dir, options),
            |m, took| {
                format!(
                    "loaded {} in {} ({} layers, {:.1} M parameters)",
                    m.name,
                    seconds(took),
                    m.num_layers,
                    m.param_count as f64 / 1e6
                )
            },
        )
    }

    fn warmup(&mut self, request: &WarmupRequest) -> Result<KvCacheLayout, DeviceError> {
        self.stage(
            "warming up".to_string(),
            |d| d.warmup(request),
            |kv, took| {
                format!(
                    "warmed up in {} (KV cache: {} blocks of {} tokens)",
                    seconds(took),
                    kv.num_blocks,
                    kv.block_size
                )
            },
        )
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, DeviceError> {
        self.inner.step(batch)
    }

    fn recover(&mut self, limit: Duration) -> Result<(), DeviceError> {
        self.inner.recover(limit)
    }
}
