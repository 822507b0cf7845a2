//! One benchmark run: every target, in order, gets the same warmup and then the same requests at
//! every load level; the result is the report every output format is written from.

use crate::metrics::{Slo, Summary};
use crate::record::RequestRecord;
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
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    pub level: LoadLevel,
    pub name: String,
    pub summary: Summary,
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
    /// What the target said about itself (halo: GetInfo — device, model, limits).
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
}

/// Runs the whole benchmark. Targets run one after another (never at once), so they never compete
/// for a shared network or host.
pub async fn run(cfg: &BenchConfig, workload: &Workload) -> Result<BenchReport, BenchError> {
    if cfg.targets.is_empty() {
        return Err(BenchError::Arg("no target given".into()));
    }
    if cfg.load.levels.is_empty() {
        return Err(BenchError::Arg("no load level given".into()));
    }
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let requests = Arc::new(workload.requests.clone());
    let mut targets = Vec::new();
    for spec in &cfg.targets {
        let client = Client::connect(spec, &cfg.client).await?;
        let (info, info_error) = match client.info().await {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let warm_c = match cfg.load.levels[0] {
            LoadLevel::Closed { concurrency } => concurrency,
            LoadLevel::Open { .. } => 1,
        };
        let warmup_failures = warmup(&client, &workload.warmup, warm_c).await;
        if warmup_failures > 0 {
            tracing::warn!(target = %spec.label, failures = warmup_failures, "warmup requests failed");
        }
        let mut levels = Vec::new();
        for &level in &cfg.load.levels {
            let records = run_level(
                &client,
                &spec.label,
                requests.clone(),
                level,
                &cfg.load,
                cfg.show_progress,
            )
            .await;
            let summary = Summary::compute(&records, cfg.slo, spec.price_per_hour);
            levels.push(LevelReport {
                level,
                name: level.name(),
                summary,
                records,
            });
        }
        targets.push(TargetReport {
            label: spec.label.clone(),
            url: spec.url.clone(),
            kind: spec.kind,
            price_per_hour: spec.price_per_hour,
            info,
            info_error,
            warmup_failures,
            levels,
        });
    }
    Ok(BenchReport {
        tool: "halo-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        workload: workload.summary.clone(),
        load: cfg.load.clone(),
        slo: cfg.slo,
        targets,
    })
}
