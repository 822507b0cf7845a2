//! Load generation: closed loop (N requests in flight, the next sent when one finishes) or open
//! loop (sends at seeded Poisson or gamma arrival times, whatever is in flight), with warmup, a
//! bound on requests and on time, and a progress bar.

use crate::record::RequestRecord;
use crate::rng::{Rng, Stream};
use crate::target::{Attempt, Client};
use crate::workload::RequestSpec;
use crate::BenchError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadLevel {
    Closed { concurrency: usize },
    Open { rate: f64 },
}

impl LoadLevel {
    pub fn name(&self) -> String {
        match self {
            LoadLevel::Closed { concurrency } => format!("c={concurrency}"),
            LoadLevel::Open { rate } => format!("rate={rate}"),
        }
    }

    /// The x coordinate of charts against load.
    pub fn x(&self) -> f64 {
        match self {
            LoadLevel::Closed { concurrency } => *concurrency as f64,
            LoadLevel::Open { rate } => *rate,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrival {
    /// Exponential gaps: shape 1 of the gamma family.
    Poisson,
    /// Gamma gaps with this shape and mean 1/rate: shape < 1 is burstier than Poisson, > 1 more
    /// regular.
    Gamma { shape: f64 },
}

impl Arrival {
    pub fn parse(s: &str) -> Result<Arrival, BenchError> {
        let bad = || BenchError::Arg(format!("bad --arrival '{s}' (poisson or gamma:SHAPE)"));
        match s.split_once(':') {
            None if s == "poisson" => Ok(Arrival::Poisson),
            Some(("gamma", shape)) => {
                let shape: f64 = shape.parse().map_err(|_| bad())?;
                if !shape.is_finite() || shape <= 0.0 {
                    return Err(bad());
                }
                Ok(Arrival::Gamma { shape })
            }
            _ => Err(bad()),
        }
    }

    /// Send offsets (seconds from the level start) for `n` requests at `rate` per second. Seeded:
    /// every target gets the same schedule.
    pub fn schedule(&self, seed: u64, rate: f64, n: usize) -> Vec<f64> {
        let mut rng = Rng::for_stream(seed, Stream::Arrivals);
        let mut t = 0.0;
        (0..n)
            .map(|_| {
                let gap = match self {
                    Arrival::Poisson => rng.exponential() / rate,
                    Arrival::Gamma { shape } => rng.gamma(*shape) / (shape * rate),
                };
                let at = t;
                t += gap;
                at
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    pub levels: Vec<LoadLevel>,
    pub arrival: Arrival,
    /// Per level: no request is sent after this long (those in flight finish).
    pub max_duration: Option<Duration>,
    pub seed: u64,
    /// Rounds per level: each target runs the level this many times, the targets taking turns
    /// (A, B, A, B, …), each round with a fresh request set. 0 counts as 1.
    pub rounds: usize,
}

fn progress_bar(len: usize, msg: String, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    // stderr draws nothing when it is not a terminal, so pipes and CI logs stay clean.
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>20} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_message(msg);
    pb
}

fn record(target: &str, level: &str, req: &RequestSpec, start: f64, a: Attempt) -> RequestRecord {
    RequestRecord {
        target: target.to_string(),
        level: level.to_string(),
        index: req.index,
        start,
        end: a.end,
        stream_tokens: a.chunks.iter().map(|c| c.tokens).sum(),
        chunks: a.chunks,
        outcome: a.outcome,
        usage_output_tokens: a.usage_output_tokens,
        prompt_tokens: a.prompt_tokens,
        nominal_input_len: req.nominal_input_len,
        max_tokens: req.max_tokens,
        finish_reason: a.finish_reason,
        server: a.server,
        cached_prompt_tokens: a.cached_prompt_tokens,
        round: 0,
        retries: a.retries,
    }
}

/// Runs `requests` against `client` at one load level and returns one record per request sent.
pub async fn run_level(
    client: &Client,
    target: &str,
    requests: Arc<Vec<RequestSpec>>,
    level: LoadLevel,
    cfg: &LoadConfig,
    show_progress: bool,
) -> Vec<RequestRecord> {
    let name = level.name();
    let pb = progress_bar(requests.len(), format!("{target} {name}"), show_progress);
    let t0 = Instant::now();
    let deadline = cfg.max_duration.map(|d| t0 + d);
    let past_deadline = move || deadline.is_some_and(|d| Instant::now() >= d);
    let mut tasks = tokio::task::JoinSet::new();
    match level {
        LoadLevel::Closed { concurrency } => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..concurrency.max(1) {
                let (client, requests, next, pb) =
                    (client.clone(), requests.clone(), next.clone(), pb.clone());
                let (target, name) = (target.to_string(), name.clone());
                tasks.spawn(async move {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests.len() || past_deadline() {
                            break;
                        }
                        let start = t0.elapsed().as_secs_f64();
                        let a = client.send(&requests[i]).await;
                        out.push(record(&target, &name, &requests[i], start, a));
                        pb.inc(1);
                    }
                    out
                });
            }
        }
        LoadLevel::Open { rate } => {
            let offsets = cfg.arrival.schedule(cfg.seed, rate, requests.len());
            for (i, at) in offsets.into_iter().enumerate() {
                tokio::time::sleep_until((t0 + Duration::from_secs_f64(at)).into()).await;
                if past_deadline() {
                    break;
                }
                let (client, requests, pb) = (client.clone(), requests.clone(), pb.clone());
                let (target, name) = (target.to_string(), name.clone());
                tasks.spawn(async move {
                    let start = t0.elapsed().as_secs_f64();
                    let a = client.send(&requests[i]).await;
                    pb.inc(1);
                    vec![record(&target, &name, &requests[i], start, a)]
                });
            }
        }
    }
    let mut records = Vec::with_capacity(requests.len());
    while let Some(done) = tasks.join_next().await {
        // A panicking task is a bug in this crate; its requests are simply missing from the
        // records (and the counts show it) rather than aborting the whole run.
        if let Ok(mut rs) = done {
            records.append(&mut rs);
        }
    }
    pb.finish_and_clear();
    records.sort_by_key(|r| r.index);
    records
}

/// Warmup: sends `requests` with `concurrency` in flight and discards the results, except that
/// the number of failures is returned so that a dead target is noticed before measuring.
pub async fn warmup(client: &Client, requests: &[RequestSpec], concurrency: usize) -> usize {
    let requests = Arc::new(requests.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
        tasks.spawn(async move {
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests.len() {
                    break failures;
                }
                if client.send(&requests[i]).await.outcome != crate::record::Outcome::Ok {
                    failures += 1;
                }
            }
        });
    }
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        failures += r.unwrap_or(0);
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_have_the_right_rate_and_are_seeded() {
        let n = 20_000;
        for arrival in [
            Arrival::Poisson,
            Arrival::Gamma { shape: 0.5 },
            Arrival::Gamma { shape: 4.0 },
        ] {
            let s = arrival.schedule(9, 10.0, n);
            assert_eq!(s, arrival.schedule(9, 10.0, n));
            assert_eq!(s[0], 0.0);
            assert!(s.windows(2).all(|w| w[1] >= w[0]));
            let rate = (n - 1) as f64 / s[n - 1];
            assert!((rate - 10.0).abs() < 0.3, "{arrival:?}: {rate}");
        }
        // Burstiness: the gaps' coefficient of variation is 1/sqrt(shape).
        let s = Arrival::Gamma { shape: 0.25 }.schedule(1, 1.0, n);
        let gaps: Vec<f64> = s.windows(2).map(|w| w[1] - w[0]).collect();
        let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - m) * (g - m)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / m - 2.0).abs() < 0.15, "{}", sd / m);
    }

    #[test]
    fn parses_arrivals() {
        assert_eq!(Arrival::parse("poisson").unwrap(), Arrival::Poisson);
        assert_eq!(
            Arrival::parse("gamma:0.5").unwrap(),
            Arrival::Gamma { shape: 0.5 }
        );
        for bad in ["gamma", "gamma:0", "gamma:-1", "uniform", "poisson:2"] {
            assert!(Arrival::parse(bad).is_err(), "{bad}");
        }
    }
}
