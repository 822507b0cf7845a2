//! One benchmark run. All targets are connected and warmed up first; then, per load level, the
//! targets take turns in rounds (A, B, A, B, … for `rounds` rounds), each round with a fresh
//! request set that every target receives in the same order, so a slow minute on a shared host
//! lands on every target alike and the spread between rounds shows the noise.

use crate::energy::{Energy, Rapl};
use crate::manifest::{Host, Manifest};
use crate::metrics::{Slo, Summary};
use crate::record::{Outcome, RequestRecord};
use crate::runner::{run_level, warmup, LoadConfig, LoadLevel};
use crate::target::{Client, ClientOptions, Kind, TargetSpec};
use crate::workload::{Workload, WorkloadSummary};
use crate::BenchError;
use serde::Serialize;
use std::sync::Arc;

pub struct BenchConfig {
    pub targets: Vec<TargetSpec>,
    pub load: LoadConfig,
    pub slo: Option<Slo>,
    pub client: ClientOptions,
    pub show_progress: bool,
    /// The command line, for the manifest.
    pub command_line: Vec<String>,
}

/// One round of one target at one level.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: usize,
    pub completed: usize,
    pub failed: usize,
    pub duration_s: f64,
    pub output_token_throughput: f64,
    pub ttft_p50_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
}

/// How far the rounds of one target at one level are apart.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub output_tok_s_min: f64,
    pub output_tok_s_max: f64,
    /// (max − min) / mean of the rounds' output token throughput, in percent.
    pub output_tok_s_pct: f64,
    /// (max − min) of the rounds' TTFT p50.
    pub ttft_p50_ms_range: Option<f64>,
}

impl Spread {
    pub fn of(rounds: &[RoundReport]) -> Option<Spread> {
        if rounds.len() < 2 {
            return None;
        }
        let tps: Vec<f64> = rounds.iter().map(|r| r.output_token_throughput).collect();
        let min = tps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = tps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = tps.iter().sum::<f64>() / tps.len() as f64;
        let ttfts: Option<Vec<f64>> = rounds.iter().map(|r| r.ttft_p50_ms).collect();
        Some(Spread {
            output_tok_s_min: min,
            output_tok_s_max: max,
            output_tok_s_pct: if mean > 0.0 {
                (max - min) / mean * 100.0
            } else {
                0.0
            },
            ttft_p50_ms_range: ttfts.map(|t| {
                t.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    - t.iter().copied().fold(f64::INFINITY, f64::min)
            }),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    pub level: LoadLevel,
    pub name: String,
    /// Over all rounds: the rounds' windows are laid end to end, so throughput is all tokens over
    /// the time this target was under load.
    pub summary: Summary,
    pub rounds: Vec<RoundReport>,
    pub spread: Option<Spread>,
    pub energy: Energy,
    /// Written to requests.jsonl / requests.csv, not into report.json.
    #[serde(skip)]
    pub records: Vec<RequestRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub label: String,
    pub url: String,
    pub kind: Kind,
    pub price_per_hour: Option<f64>,
    /// What the target said about itself (halo: GetInfo — device, model, limits; OpenAI:
    /// `/v1/models` and `/props` where the server has it).
    pub info: Option<serde_json::Value>,
    pub info_error: Option<String>,
    pub warmup_failures: usize,
    pub levels: Vec<LevelReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub tool: String,
    pub version: String,
    /// Unix seconds when the run started.
    pub started_at: u64,
    pub manifest: Manifest,
    pub workload: WorkloadSummary,
    pub load: LoadConfig,
    pub slo: Option<Slo>,
    pub targets: Vec<TargetReport>,
}

impl BenchReport {
    pub fn records(&self) -> impl Iterator<Item = &RequestRecord> {
        self.targets
            .iter()
            .flat_map(|t| t.levels.iter().flat_map(|l| l.records.iter()))
    }

    /// The closing message for targets on which nothing succeeded, naming the cause where the
    /// failures say it: refused credentials name UNAUTHENTICATED (or HTTP 401/403) and the
    /// token variable. `None` when every target completed something.
    pub fn dead_targets_message(&self, token_env_default: &str) -> Option<String> {
        let mut lines = Vec::new();
        for t in &self.targets {
            if t.levels.iter().any(|l| l.summary.completed > 0) {
                continue;
            }
            let statuses: Vec<&str> = t
                .levels
                .iter()
                .flat_map(|l| l.records.iter())
                .filter_map(|r| match &r.outcome {
                    Outcome::Failed { status, .. } => Some(status.as_str()),
                    Outcome::Ok => None,
                })
                .collect();
            let auth = [
                "grpc:UNAUTHENTICATED",
                "grpc:PERMISSION_DENIED",
                "http:401",
                "http:403",
            ];
            if !statuses.is_empty() && statuses.iter().all(|s| auth.contains(s)) {
                let s = statuses[0];
                lines.push(format!(
                    "{}: every request was refused as {s}: the target wants a bearer token; put \
                     it in {token_env_default} (or name another variable with --token-env {}=NAME)",
                    t.label, t.label
                ));
            } else {
                let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
                for s in &statuses {
                    *by.entry(s).or_default() += 1;
                }
                let by: Vec<String> = by.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                lines.push(format!(
                    "{}: every request failed ({})",
                    t.label,
                    if by.is_empty() {
                        "none was sent".to_string()
                    } else {
                        by.join(", ")
                    }
                ));
            }
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// One target's level so far: its records (rounds laid end to end), round summaries, where the
/// next round's window starts, and the energy spent (None once a reading failed).
#[derive(Clone)]
struct Acc {
    records: Vec<RequestRecord>,
    rounds: Vec<RoundReport>,
    offset: Option<f64>,
    joules: Option<f64>,
}

impl Default for Acc {
    fn default() -> Acc {
        Acc {
            records: Vec::new(),
            rounds: Vec::new(),
            offset: None,
            joules: Some(0.0),
        }
    }
}

struct Live {
    spec: TargetSpec,
    client: Client,
    info: Option<serde_json::Value>,
    info_error: Option<String>,
    warmup_failures: usize,
}

/// Runs the whole benchmark. Targets never run at the same time (they would compete for a shared
/// host or network); they alternate round by round at every level.
pub async fn run(cfg: &BenchConfig, workload: &Workload) -> Result<BenchReport, BenchError> {
    if cfg.targets.is_empty() {
        return Err(BenchError::Arg("no target given".into()));
    }
    if cfg.load.levels.is_empty() {
        return Err(BenchError::Arg("no load level given".into()));
    }
    let rounds = cfg.load.rounds.max(1);
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rapl = Rapl::open();
    let mut live = Vec::new();
    for spec in &cfg.targets {
        let client = Client::connect(spec, &cfg.client).await?;
        let (info, info_error) = match client.info().await {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        live.push(Live {
            spec: spec.clone(),
            client,
            info,
            info_error,
            warmup_failures: 0,
        });
    }
    // Warmup: the same (fresh, never measured) prompts for every target.
    let warm_c = match cfg.load.levels[0] {
        LoadLevel::Closed { concurrency } => concurrency,
        LoadLevel::Open { .. } => 1,
    };
    for t in &mut live {
        t.warmup_failures = warmup(&t.client, &workload.warmup, warm_c).await;
        if t.warmup_failures > 0 {
            tracing::warn!(target = %t.spec.label, failures = t.warmup_failures, "warmup requests failed");
        }
    }
    let mut levels: Vec<Vec<LevelReport>> = vec![Vec::new(); live.len()];
    for (li, &level) in cfg.load.levels.iter().enumerate() {
        let mut per_target: Vec<Acc> = vec![Acc::default(); live.len()];
        for round in 0..rounds {
            let set = Arc::new(workload.set(li * rounds + round).to_vec());
            for (ti, t) in live.iter().enumerate() {
                let before = rapl.as_ref().ok().map(|r| r.read());
                let mut records = run_level(
                    &t.client,
                    &t.spec.label,
                    set.clone(),
                    level,
                    &cfg.load,
                    cfg.show_progress,
                )
                .await;
                let Acc {
                    records: acc,
                    rounds: round_reports,
                    offset,
                    joules,
                } = &mut per_target[ti];
                if let (Ok(r), Some(b)) = (&rapl, before) {
                    *joules = joules.and_then(|j| Some(j + r.joules(&b, &r.read())?));
                }
                let s = Summary::compute(&records, None, None);
                round_reports.push(RoundReport {
                    round,
                    completed: s.completed,
                    failed: s.failed,
                    duration_s: s.duration_s,
                    output_token_throughput: s.output_token_throughput,
                    ttft_p50_ms: s.ttft_ms.map(|x| x.p50),
                    e2e_p50_ms: s.e2e_ms.map(|x| x.p50),
                });
                // Lay this round's window right after the previous one's, so the level's window
                // is the sum of the rounds'.
                let first = records
                    .iter()
                    .map(|r| r.start)
                    .fold(f64::INFINITY, f64::min);
                let shift = if first.is_finite() {
                    offset.unwrap_or(first) - first
                } else {
                    0.0
                };
                for r in &mut records {
                    r.round = round;
                    r.start += shift;
                }
                if let Some(end) = records.iter().map(|r| r.start + r.end).reduce(f64::max) {
                    *offset = Some(end);
                }
                acc.append(&mut records);
            }
        }
        for (ti, a) in per_target.into_iter().enumerate() {
            let (records, round_reports, joules) = (a.records, a.rounds, a.joules);
            let spec = &live[ti].spec;
            let summary = Summary::compute(&records, cfg.slo, spec.price_per_hour);
            let energy = match (&rapl, joules) {
                (Ok(_), Some(j)) => Energy::measured(j, summary.output_tokens),
                (Ok(_), None) => Energy::not_available("a RAPL counter could not be read"),
                (Err(why), _) => Energy::not_available(why),
            };
            levels[ti].push(LevelReport {
                level,
                name: level.name(),
                spread: Spread::of(&round_reports),
                summary,
                rounds: round_reports,
                energy,
                records,
            });
        }
    }
    let targets = live
        .into_iter()
        .zip(levels)
        .map(|(t, levels)| TargetReport {
            label: t.spec.label.clone(),
            url: t.spec.url.clone(),
            kind: t.spec.kind,
            price_per_hour: t.spec.price_per_hour,
            info: t.info,
            info_error: t.info_error,
            warmup_failures: t.warmup_failures,
            levels,
        })
        .collect();
    let manifest = Manifest {
        tool: "halo-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: crate::manifest::git_commit().into(),
        command_line: cfg.command_line.clone(),
        workload_sha256: workload.summary.sha256.clone(),
        host: Host::detect(),
        energy: match &rapl {
            Ok(_) => "rapl".into(),
            Err(why) => format!("not available: {why}"),
        },
    };
    Ok(BenchReport {
        tool: "halo-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        manifest,
        workload: workload.summary.clone(),
        load: cfg.load.clone(),
        slo: cfg.slo,
        targets,
    })
}
