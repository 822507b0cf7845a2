//! Prometheus metrics, hand-written in the text exposition format (version 0.0.4) to keep the
//! dependency count down: a few counters and fixed-bucket histograms on atomics, plus gauges and
//! cumulative counters read from the engine's [`LiveStats`] at scrape time (so they can never
//! drift from the engine's own accounting).
//!
//! [`Metrics`] is also the engine's [`EngineObserver`]: step durations, preemptions, prefix-cache
//! hits and per-request timings arrive from the scheduler thread through it.

use halo_engine::{EngineObserver, Health, LiveStats, Outcome, StepReport, Timings, Usage};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds, 1 ms to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Step-duration buckets in seconds, 100 µs to 10 s.
const STEP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// A histogram over fixed buckets; the sum is kept in microseconds so it fits an atomic integer.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // Buckets are stored non-cumulatively; rendering accumulates them.
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The request counter's labels: which RPC, how it ended, and its status code.
type RequestKey = (&'static str, &'static str, &'static str);

/// Every metric the worker exports.
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    prefix_cache_hits: AtomicU64,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
    pub step: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            prefix_cache_hits: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BUCKETS),
            inter_token: Histogram::new(LATENCY_BUCKETS),
            e2e: Histogram::new(LATENCY_BUCKETS),
            queue: Histogram::new(LATENCY_BUCKETS),
            step: Histogram::new(STEP_BUCKETS),
        }
    }

    /// Counts one finished RPC. `outcome` is a stable label (a finish reason, a failure kind, or
    /// why it was rejected); `code` is the gRPC status name.
    pub fn record_request(&self, rpc: &'static str, outcome: &'static str, code: &'static str) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((rpc, outcome, code)).or_insert(0) += 1;
        }
    }

    /// How many RPCs ended with these labels (tests, and the router's view in GetInfo later).
    pub fn requests(&self, rpc: &str, outcome: &str, code: &str) -> u64 {
        self.requests
            .lock()
            .ok()
            .and_then(|m| {
                m.iter()
                    .find(|((r, o, c), _)| *r == rpc && *o == outcome && *c == code)
                    .map(|(_, n)| *n)
            })
            .unwrap_or(0)
    }

    /// The exposition text: this registry plus the engine's live state.
    pub fn render(&self, stats: &LiveStats, health: Health) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP halo_requests_total Generate RPCs by outcome and gRPC status code.\n");
        out.push_str("# TYPE halo_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((rpc, outcome, code), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "halo_requests_total{{rpc=\"{rpc}\",outcome=\"{outcome}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let gauges: [(&str, &str, usize); 6] = [
            (
                "halo_queue_depth",
                "Requests waiting to be scheduled.",
                stats.waiting,
            ),
            (
                "halo_running_sequences",
                "Sequences admitted to the running batch.",
                stats.running,
            ),
            (
                "halo_kv_blocks_used",
                "KV cache blocks held by sequences.",
                stats.total_blocks.saturating_sub(stats.free_blocks),
            ),
            (
                "halo_kv_blocks_free",
                "KV cache blocks free (cached prefixes included).",
                stats.free_blocks,
            ),
            (
                "halo_kv_blocks_total",
                "KV cache blocks in the pool.",
                stats.total_blocks,
            ),
            (
                "halo_kv_blocks_cached",
                "Free KV blocks still holding a cached prefix.",
                stats.cached_blocks,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let serving = u8::from(health.is_serving());
        let _ = writeln!(
            out,
            "# HELP halo_serving 1 when the worker reports SERVING.\n# TYPE halo_serving gauge\nhalo_serving {serving}"
        );
        let counters: [(&str, &str, u64); 10] = [
            (
                "halo_step_panics_total",
                "Device steps that panicked; their requests failed UNAVAILABLE and the worker recovered.",
                stats.step_panics,
            ),
            (
                "halo_prefix_cache_hits_total",
                "Admissions that reused cached prefix blocks.",
                self.prefix_cache_hits.load(Ordering::Relaxed),
            ),
            (
                "halo_prefix_cache_hit_tokens_total",
                "Prompt tokens served from the prefix cache.",
                stats.prefix_cache_hit_tokens,
            ),
            (
                "halo_preemptions_total",
                "Sequences preempted to free KV blocks.",
                stats.preemptions,
            ),
            (
                "halo_rope_recomputes_total",
                "Sequences recomputed from their start on crossing into LongRoPE's long regime.",
                stats.rope_recomputes,
            ),
            (
                "halo_prompt_tokens_total",
                "Prompt tokens admitted.",
                stats.prompt_tokens,
            ),
            (
                "halo_generated_tokens_total",
                "Tokens generated.",
                stats.generated_tokens,
            ),
            (
                "halo_steps_total",
                "Scheduler steps run on the device.",
                stats.steps,
            ),
            (
                "halo_engine_requests_admitted_total",
                "Requests the engine admitted.",
                stats.requests_admitted,
            ),
            (
                "halo_engine_requests_cancelled_total",
                "Requests cancelled by their caller.",
                stats.requests_cancelled,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        self.ttft.render(
            &mut out,
            "halo_time_to_first_token_seconds",
            "Arrival to first token.",
        );
        self.inter_token.render(
            &mut out,
            "halo_inter_token_latency_seconds",
            "Gap between consecutive token deliveries of a stream.",
        );
        self.e2e.render(
            &mut out,
            "halo_request_duration_seconds",
            "Arrival to finish (end to end).",
        );
        self.queue.render(
            &mut out,
            "halo_queue_time_seconds",
            "Arrival to first scheduled.",
        );
        self.step.render(
            &mut out,
            "halo_step_duration_seconds",
            "Wall time of one device step.",
        );
        out
    }
}

impl EngineObserver for Metrics {
    fn on_step(&self, step: &StepReport) {
        self.step.observe(step.duration);
    }

    fn on_prefix_cache_hit(&self, _tokens: usize) {
        self.prefix_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    fn on_request_finished(&self, _outcome: Outcome, usage: &Usage, t: &Timings) {
        if usage.generated_tokens > 0 {
            self.ttft.observe(Duration::from_micros(t.ttft_us));
        }
        self.e2e.observe(Duration::from_micros(t.e2e_us));
        // A request cancelled while queued was never scheduled: no queue time to report.
        if t.queue_us > 0 || usage.generated_tokens > 0 {
            self.queue.observe(Duration::from_micros(t.queue_us));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.step.observe(Duration::from_micros(50));
        m.step.observe(Duration::from_millis(3));
        m.step.observe(Duration::from_secs(100));
        let text = m.render(&LiveStats::default(), Health::Serving);
        assert!(
            text.contains("halo_step_duration_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(text.contains("halo_step_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("halo_step_duration_seconds_bucket{le=\"10\"} 2"));
        assert!(text.contains("halo_step_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("halo_step_duration_seconds_count 3"));
    }

    #[test]
    fn renders_requests_and_live_state() {
        let m = Metrics::new();
        m.record_request("generate", "length", "OK");
        m.record_request("generate", "length", "OK");
        m.record_request("generate_stream", "queue_full", "RESOURCE_EXHAUSTED");
        let stats = LiveStats {
            free_blocks: 6,
            total_blocks: 10,
            waiting: 2,
            running: 1,
            preemptions: 3,
            rope_recomputes: 4,
            step_panics: 2,
            ..Default::default()
        };
        let text = m.render(&stats, Health::Serving);
        assert!(
            text.contains("halo_requests_total{rpc=\"generate\",outcome=\"length\",code=\"OK\"} 2")
        );
        assert!(text.contains(
            "halo_requests_total{rpc=\"generate_stream\",outcome=\"queue_full\",code=\"RESOURCE_EXHAUSTED\"} 1"
        ));
        assert!(text.contains("halo_kv_blocks_used 4"));
        assert!(text.contains("halo_queue_depth 2"));
        assert!(text.contains("halo_preemptions_total 3"));
        assert!(text.contains("halo_rope_recomputes_total 4"));
        assert!(text.contains("halo_step_panics_total 2"));
        assert!(text.contains("halo_serving 1"));
        assert_eq!(m.requests("generate", "length", "OK"), 2);
        // Every line is a comment or `name{labels} value`.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.split(' ').count() == 2,
                "{line}"
            );
        }
    }
}
