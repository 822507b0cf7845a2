//! `halo bench`: parses the command line into a halo-bench run, runs it on a tokio runtime, prints
//! the Markdown table (or the JSON report) and writes the report files.

use anyhow::Context;
use halo_bench::target::ClientOptions;
use halo_bench::{
    Arrival, BenchConfig, BenchError, LengthDist, LoadConfig, LoadLevel, Slo, Source, TargetSpec,
    Workload, WorkloadConfig,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Read when no `--token-env` names a variable for a target.
const DEFAULT_TOKEN_ENV: &str = "HALO_BENCH_TOKEN";

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Targets, each `[LABEL=]grpc://HOST:PORT` (a halo worker) or `[LABEL=]http(s)://HOST:PORT/v1`
    /// (an OpenAI-compatible completions endpoint). All get the identical request sequence.
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// `synthetic` (seeded random words) or `jsonl:PATH` (one {"prompt", "max_tokens"?} per line).
    #[arg(long, default_value = "synthetic")]
    workload: String,
    /// Input length distribution of synthetic prompts, in words (≈ tokens): N, fixed:N,
    /// uniform:LO-HI, normal:MEAN,STD, hist:LEN=W,... or hist:PATH.
    #[arg(long, default_value = "fixed:256")]
    input_len: String,
    /// Output length distribution (same syntax); forced with ignore_eos unless --no-ignore-eos.
    #[arg(long, default_value = "fixed:128")]
    output_len: String,
    /// Measured requests per load level.
    #[arg(long, default_value_t = 100)]
    num_requests: usize,
    /// Closed loop: requests in flight, a comma-separated sweep (default 1).
    #[arg(long, value_name = "N[,N...]")]
    concurrency: Option<String>,
    /// Open loop: requests per second, a comma-separated sweep (instead of --concurrency).
    #[arg(long, value_name = "R[,R...]")]
    rate: Option<String>,
    /// Open-loop arrivals: poisson or gamma:SHAPE (shape < 1 is burstier).
    #[arg(long, default_value = "poisson")]
    arrival: String,
    /// Rounds per load level: the targets take turns (A, B, A, B, …), each round with fresh
    /// prompts, and the report shows the spread between rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Send the same prompts at every level and round (to measure prefix caches). By default
    /// every level and round gets fresh prompts, so no target answers from its cache.
    #[arg(long)]
    reuse_prompts: bool,
    /// Warmup requests per target, not counted.
    #[arg(long, default_value_t = 4)]
    warmup: usize,
    /// Per level: stop sending after this many seconds (requests in flight finish).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Goodput objective: ttft_ms=X,tpot_ms=Y,e2e_ms=Z (any subset).
    #[arg(long)]
    slo: Option<String>,
    /// Hourly price for cost per million tokens: X for every target, or LABEL=X (repeatable).
    #[arg(long, value_name = "[LABEL=]X")]
    price_per_hour: Vec<String>,
    /// Environment variable with the bearer token: NAME, or LABEL=NAME (repeatable).
    /// Default: HALO_BENCH_TOKEN when it is set.
    #[arg(long, value_name = "[LABEL=]NAME")]
    token_env: Vec<String>,
    /// Model name sent to OpenAI targets: NAME or LABEL=NAME (default: the first of GET /models).
    #[arg(long, value_name = "[LABEL=]NAME")]
    model: Vec<String>,
    /// Do not force output lengths (no ignore_eos / min_tokens; for endpoints that reject them).
    #[arg(long)]
    no_ignore_eos: bool,
    /// Seconds before one request counts as failed ("timeout").
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Write report.json, requests.jsonl, requests.csv, summary.csv, report.md and SVG charts here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

fn arg_err(e: BenchError) -> anyhow::Error {
    match e {
        BenchError::Arg(m) => super::usage(m),
        other => anyhow::Error::new(other),
    }
}

fn positive_secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v <= 0.0 {
        return Err(super::usage(format!(
            "{flag} must be a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `VALUE` applies to every target; `LABEL=VALUE` to one.
fn per_target(
    flag: &str,
    values: &[String],
    labels: &[String],
) -> anyhow::Result<(Option<String>, HashMap<String, String>)> {
    let mut all = None;
    let mut one = HashMap::new();
    for v in values {
        match v.split_once('=') {
            Some((l, x)) if labels.iter().any(|k| k == l) => {
                one.insert(l.to_string(), x.to_string());
            }
            Some((l, _)) => {
                return Err(super::usage(format!(
                    "{flag} '{v}': no target is labelled '{l}'"
                )))
            }
            None => all = Some(v.clone()),
        }
    }
    Ok((all, one))
}

fn levels(args: &BenchArgs) -> anyhow::Result<Vec<LoadLevel>> {
    let list = |flag: &str, s: &str| -> anyhow::Result<Vec<f64>> {
        s.split(',')
            .map(|x| match x.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
                _ => Err(super::usage(format!(
                    "{flag}: '{x}' is not a positive number"
                ))),
            })
            .collect()
    };
    match (&args.concurrency, &args.rate) {
        (Some(_), Some(_)) => Err(super::usage(
            "give --concurrency (closed loop) or --rate (open loop), not both",
        )),
        (None, Some(r)) => Ok(list("--rate", r)?
            .into_iter()
            .map(|rate| LoadLevel::Open { rate })
            .collect()),
        (c, None) => list("--concurrency", c.as_deref().unwrap_or("1"))?
            .into_iter()
            .map(|c| {
                if c.fract() != 0.0 || c > 100_000.0 {
                    return Err(super::usage(format!(
                        "--concurrency: '{c}' is not a whole number of requests"
                    )));
                }
                Ok(LoadLevel::Closed {
                    concurrency: c as usize,
                })
            })
            .collect(),
    }
}

fn targets(args: &BenchArgs) -> anyhow::Result<Vec<TargetSpec>> {
    let mut specs: Vec<TargetSpec> = args
        .targets
        .iter()
        .map(|t| TargetSpec::parse(t))
        .collect::<Result<_, _>>()
        .map_err(arg_err)?;
    let labels: Vec<String> = specs.iter().map(|s| s.label.clone()).collect();
    for (i, l) in labels.iter().enumerate() {
        if labels[..i].contains(l) {
            return Err(super::usage(format!(
                "two targets are labelled '{l}'; name them with LABEL=URL"
            )));
        }
    }
    let (price_all, price_one) = per_target("--price-per-hour", &args.price_per_hour, &labels)?;
    let (token_all, token_one) = per_target("--token-env", &args.token_env, &labels)?;
    let (model_all, model_one) = per_target("--model", &args.model, &labels)?;
    let default_token = std::env::var_os(DEFAULT_TOKEN_ENV).map(|_| DEFAULT_TOKEN_ENV.to_string());
    for s in &mut specs {
        let price = price_one.get(&s.label).or(price_all.as_ref());
        s.price_per_hour = match price {
            None => None,
            Some(p) => match p.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
                _ => {
                    return Err(super::usage(format!(
                        "--price-per-hour: '{p}' is not a price"
                    )))
                }
            },
        };
        s.token_env = token_one
            .get(&s.label)
            .or(token_all.as_ref())
            .cloned()
            .or_else(|| default_token.clone());
        s.model = model_one.get(&s.label).or(model_all.as_ref()).cloned();
    }
    Ok(specs)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let targets = targets(&args)?;
    let levels = levels(&args)?;
    let source = match args.workload.as_str() {
        "synthetic" => Source::Synthetic {
            input: LengthDist::parse(&args.input_len).map_err(arg_err)?,
        },
        w => match w.strip_prefix("jsonl:") {
            Some(p) if !p.is_empty() => Source::Jsonl {
                path: PathBuf::from(p),
            },
            _ => {
                return Err(super::usage(format!(
                    "--workload '{w}': expected synthetic or jsonl:PATH"
                )))
            }
        },
    };
    if args.rounds == 0 || args.rounds > 1000 {
        return Err(super::usage("--rounds must be between 1 and 1000"));
    }
    let workload = Workload::build(&WorkloadConfig {
        source,
        output: LengthDist::parse(&args.output_len).map_err(arg_err)?,
        num_requests: args.num_requests,
        num_warmup: args.warmup,
        seed: args.seed,
        ignore_eos: !args.no_ignore_eos,
        sets: levels.len() * args.rounds,
        reuse_prompts: args.reuse_prompts,
    })
    .map_err(arg_err)?;
    let slo = args
        .slo
        .as_deref()
        .map(Slo::parse)
        .transpose()
        .map_err(arg_err)?;
    let config = BenchConfig {
        targets,
        load: LoadConfig {
            levels,
            arrival: Arrival::parse(&args.arrival).map_err(arg_err)?,
            max_duration: args
                .duration
                .map(|d| positive_secs("--duration", d))
                .transpose()?,
            seed: args.seed,
            rounds: args.rounds,
        },
        slo,
        client: ClientOptions {
            request_timeout: positive_secs("--request-timeout", args.request_timeout)?,
            connect_timeout: Duration::from_secs(10),
        },
        show_progress: true,
        command_line: std::env::args().collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(halo_bench::run(&config, &workload))
        .map_err(arg_err)?;
    if let Some(dir) = &args.out {
        halo_bench::report::write_all(&report, dir)?;
        eprintln!("reports written to {}", dir.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", halo_bench::report::markdown::render(&report));
    }
    if let Some(msg) = report.dead_targets_message(DEFAULT_TOKEN_ENV) {
        anyhow::bail!("{msg}");
    }
    Ok(())
}
