//! The Markdown report: what ran (tool, workload hash, load, targets and their GetInfo), then one
//! table per load level with the targets side by side.

use crate::bench::{BenchReport, LevelReport, TargetReport};
use crate::metrics::{Stats, Summary};
use std::fmt::Write;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn stats(s: &Option<Stats>) -> String {
    match s {
        Some(s) => format!("{:.1} / {:.1} / {:.1} / {:.1}", s.mean, s.p50, s.p90, s.p99),
        None => "–".into(),
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn describe(t: &TargetReport) -> String {
    let Some(info) = &t.info else {
        return t.info_error.clone().unwrap_or_else(|| "–".into());
    };
    let s = |p: &str| {
        info.pointer(p)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    match info.get("api").and_then(|a| a.as_str()) {
        Some("halo-worker-v1") => format!(
            "{} {} ({}); model {} {}; max concurrent {}; halo {}",
            s("/device/kind"),
            s("/device/name"),
            info.pointer("/device/memory_bytes")
                .and_then(|v| v.as_u64())
                .map_or(String::new(), |b| format!(
                    "{:.1} GiB",
                    b as f64 / (1u64 << 30) as f64
                )),
            s("/model/name"),
            s("/model/dtype"),
            info.pointer("/limits/max_concurrent_requests")
                .map_or(String::new(), |v| v.to_string()),
            s("/version"),
        ),
        _ => {
            let mut d = format!("OpenAI completions, model {}", s("/model"));
            if let Some(b) = info.pointer("/props/build_info").and_then(|v| v.as_str()) {
                let _ = write!(d, "; server {b}");
            }
            if let Some(n) = info
                .pointer("/props/default_generation_settings/n_ctx")
                .and_then(|v| v.as_u64())
            {
                let _ = write!(d, "; n_ctx {n}");
            }
            if let Some(n) = info.pointer("/props/total_slots").and_then(|v| v.as_u64()) {
                let _ = write!(d, "; slots {n}");
            }
            d
        }
    }
}

type Row = (&'static str, fn(&Summary) -> String);

const ROWS: &[Row] = &[
    ("completed / failed", |s| {
        format!("{} / {}", s.completed, s.failed)
    }),
    ("TTFT ms (mean / p50 / p90 / p99)", |s| stats(&s.ttft_ms)),
    ("TPOT ms (mean / p50 / p90 / p99)", |s| stats(&s.tpot_ms)),
    ("ITL ms (mean / p50 / p90 / p99)", |s| stats(&s.itl_ms)),
    ("E2E ms (mean / p50 / p90 / p99)", |s| stats(&s.e2e_ms)),
    ("requests/s", |s| format!("{:.3}", s.request_throughput)),
    ("output tokens/s", |s| {
        format!("{:.1}", s.output_token_throughput)
    }),
    ("total tokens/s", |s| {
        format!("{:.1}", s.total_token_throughput)
    }),
    ("goodput (good requests/s)", |s| {
        match (s.goodput, s.good_requests) {
            (Some(g), Some(n)) => format!("{g:.3} ({n} of {})", s.requests),
            _ => "–".into(),
        }
    }),
    ("$ per 1M output tokens", |s| {
        num(s.cost_per_million_output_tokens, 4)
    }),
    ("$ per 1M total tokens", |s| {
        num(s.cost_per_million_total_tokens, 4)
    }),
    ("server TTFT ms (mean / p50 / p90 / p99)", |s| {
        stats(&s.server.as_ref().and_then(|v| v.ttft_ms))
    }),
    ("server TPOT ms (mean / p50 / p90 / p99)", |s| {
        stats(&s.server.as_ref().and_then(|v| v.tpot_ms))
    }),
    ("server queue ms (mean / p50 / p90 / p99)", |s| {
        stats(&s.server.as_ref().and_then(|v| v.queue_ms))
    }),
    ("input / output tokens", |s| {
        format!(
            "{}{} / {}",
            s.input_tokens,
            if s.input_tokens_from_target {
                ""
            } else {
                " (nominal)"
            },
            s.output_tokens
        )
    }),
    ("prompt tokens reused (target-reported)", |s| {
        if s.cache_reported == 0 {
            "not reported".into()
        } else {
            format!(
                "{} (in {} of {} requests)",
                s.cached_prompt_tokens, s.cache_reported, s.completed
            )
        }
    }),
    ("duration s", |s| format!("{:.2}", s.duration_s)),
    ("failures: transport / timeout / server", |s| {
        let n = |k: &str| s.failures_by_class.get(k).copied().unwrap_or(0);
        format!("{} / {} / {}", n("transport"), n("timeout"), n("server"))
    }),
    ("client retries (fresh connection)", |s| {
        s.client_retries.to_string()
    }),
    ("failures by status", |s| {
        if s.failures_by_status.is_empty() {
            "–".into()
        } else {
            s.failures_by_status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }),
];

type LevelRow = (&'static str, fn(&LevelReport) -> String);

const LEVEL_ROWS: &[LevelRow] = &[
    ("output tokens/s by round", |l| {
        l.rounds
            .iter()
            .map(|r| format!("{:.1}", r.output_token_throughput))
            .collect::<Vec<_>>()
            .join(", ")
    }),
    ("spread between rounds (tok/s, TTFT p50)", |l| {
        match &l.spread {
            None => "– (one round)".into(),
            Some(s) => format!(
                "±{:.1}% ({:.1}–{:.1}); TTFT p50 range {} ms",
                s.output_tok_s_pct / 2.0,
                s.output_tok_s_min,
                s.output_tok_s_max,
                num(s.ttft_p50_ms_range, 1)
            ),
        }
    }),
    ("energy J per output token", |l| {
        match l.energy.joules_per_output_token {
            Some(j) => format!("{j:.4} ({})", l.energy.source),
            None => l.energy.source.clone(),
        }
    }),
];

pub fn render(r: &BenchReport) -> String {
    let mut md = String::new();
    let w = &r.workload;
    let _ = writeln!(md, "# halo bench\n");
    let m = &r.manifest;
    let _ = writeln!(
        md,
        "- tool: {} {} (commit {})",
        r.tool, r.version, m.git_commit
    );
    if !m.command_line.is_empty() {
        let _ = writeln!(md, "- command: `{}`", cell(&m.command_line.join(" ")));
    }
    let _ = writeln!(
        md,
        "- host: {} {}, {}, {} logical CPUs, {} memory",
        m.host.os,
        m.host.arch,
        cell(m.host.cpu_model.as_deref().unwrap_or("unknown CPU")),
        m.host.logical_cpus.map_or("?".into(), |n| n.to_string()),
        m.host.memory_bytes.map_or("unknown".into(), |b| format!(
            "{:.1} GiB",
            b as f64 / (1u64 << 30) as f64
        ))
    );
    if !m.host.gpus.is_empty() {
        let _ = writeln!(md, "- GPUs: {}", cell(&m.host.gpus.join(", ")));
    }
    let _ = writeln!(md, "- energy: {}", cell(&m.energy));
    let _ = writeln!(
        md,
        "- workload: {}, seed {}, {} requests (+{} warmup), input {}, output {}, ignore_eos {}",
        cell(&w.kind),
        w.seed,
        w.num_requests,
        w.num_warmup,
        w.input_len.as_deref().unwrap_or("from file"),
        w.output_len,
        w.ignore_eos
    );
    let _ = writeln!(md, "- workload sha256: `{}`", w.sha256);
    let _ = writeln!(
        md,
        "- prompts: {}",
        if w.reuse_prompts {
            "the same set at every level and round (--reuse-prompts: cache hits are expected)"
                .to_string()
        } else {
            format!("a fresh set for every level and round ({} sets)", w.sets)
        }
    );
    let levels: Vec<String> = r.load.levels.iter().map(|l| l.name()).collect();
    let open = r
        .load
        .levels
        .iter()
        .any(|l| matches!(l, crate::runner::LoadLevel::Open { .. }));
    let arrival = match r.load.arrival {
        crate::runner::Arrival::Poisson => "Poisson".to_string(),
        crate::runner::Arrival::Gamma { shape } => format!("gamma (shape {shape})"),
    };
    let _ = writeln!(
        md,
        "- load: {} ({}), {} round(s) per level, targets taking turns",
        levels.join(", "),
        if open {
            format!("open loop, {arrival} arrivals")
        } else {
            "closed loop: that many requests in flight".to_string()
        },
        r.load.rounds.max(1)
    );
    if let Some(d) = r.load.max_duration {
        let _ = writeln!(md, "- time bound per level: {:.0} s", d.as_secs_f64());
    }
    if let Some(slo) = r.slo {
        let _ = writeln!(
            md,
            "- SLO: ttft_ms {}, tpot_ms {}, e2e_ms {}",
            num(slo.ttft_ms, 0),
            num(slo.tpot_ms, 0),
            num(slo.e2e_ms, 0)
        );
    }
    let _ = writeln!(
        md,
        "\n## Targets\n\n| label | url | what it is | $/hour |\n| --- | --- | --- | --- |"
    );
    for t in &r.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            cell(&t.label),
            cell(&t.url),
            cell(&describe(t)),
            num(t.price_per_hour, 2)
        );
    }
    let names: Vec<String> = r
        .targets
        .first()
        .map(|t| t.levels.iter().map(|l| l.name.clone()).collect())
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let _ = write!(md, "\n## {name}\n\n| metric |");
        for t in &r.targets {
            let _ = write!(md, " {} |", cell(&t.label));
        }
        let _ = write!(md, "\n| --- |");
        for _ in &r.targets {
            let _ = write!(md, " --- |");
        }
        md.push('\n');
        for (label, f) in ROWS {
            let _ = write!(md, "| {label} |");
            for t in &r.targets {
                let v = t.levels.get(i).map_or("–".into(), |l| f(&l.summary));
                let _ = write!(md, " {} |", cell(&v));
            }
            md.push('\n');
        }
        for (label, f) in LEVEL_ROWS {
            let _ = write!(md, "| {label} |");
            for t in &r.targets {
                let v = t.levels.get(i).map_or("–".into(), f);
                let _ = write!(md, " {} |", cell(&v));
            }
            md.push('\n');
        }
    }
    md
}
