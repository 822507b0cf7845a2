//! `halo bench` end to end: a real `halo serve` on the tiny model, benchmarked over gRPC with a
//! two-level concurrency sweep; the counts in the report are checked against the server's own
//! (Finish usage per request, the Prometheus counters, GetInfo's KV state afterwards), and every
//! report file is checked to exist and parse.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MODEL: &str = "/work/shared/models/tiny-mha";

struct Server {
    child: Child,
    addr: String,
    metrics: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    start_server_with(&[])
}

fn start_server_with(env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_halo"))
        .envs(env.iter().copied())
        .args([
            "serve",
            "--model",
            MODEL,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn halo serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "halo serving on ADDR (metrics on http://MADDR/metrics)"
    let addr = line
        .split_whitespace()
        .nth(3)
        .unwrap_or_else(|| panic!("serving line: {line:?}"))
        .to_string();
    let metrics = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("serving line: {line:?}"))
        .to_string();
    Server {
        child,
        addr,
        metrics,
    }
}

fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("metric {name} not found")) as u64
}

#[test]
fn bench_against_halo_serve_matches_the_servers_counts() {
    let server = start_server();
    let out = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        &format!("tiny=grpc://{}", server.addr),
        "--num-requests",
        "6",
        "--concurrency",
        "1,3",
        "--input-len",
        "uniform:8-24",
        "--output-len",
        "uniform:4-12",
        "--warmup",
        "2",
        "--seed",
        "3",
        "--slo",
        "ttft_ms=60000,tpot_ms=60000",
        "--price-per-hour",
        "1.5",
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ];
    let res = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&res.stdout).expect("--json prints the report");

    // The library builds the same workload from the same arguments: same hash, and the warmup's
    // token count is known.
    let workload = halo_bench::Workload::build(&halo_bench::WorkloadConfig {
        source: halo_bench::Source::Synthetic {
            input: halo_bench::LengthDist::Uniform { lo: 8, hi: 24 },
        },
        output: halo_bench::LengthDist::Uniform { lo: 4, hi: 12 },
        num_requests: 6,
        num_warmup: 2,
        seed: 3,
        ignore_eos: true,
        // Fresh prompts for each of the two levels.
        sets: 2,
        reuse_prompts: false,
    })
    .unwrap();
    assert_eq!(report["workload"]["sha256"], workload.summary.sha256);
    let level_tokens =
        |i: usize| -> u64 { workload.set(i).iter().map(|r| r.max_tokens as u64).sum() };
    let warmup: u64 = workload.warmup.iter().map(|r| r.max_tokens as u64).sum();

    let target = &report["targets"][0];
    assert_eq!(target["info"]["device"]["kind"], "cpu");
    assert!(
        target["info"]["limits"]["max_concurrent_requests"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(target["warmup_failures"], 0);
    let levels = target["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for (i, l) in levels.iter().enumerate() {
        let s = &l["summary"];
        assert_eq!(
            (s["requests"].as_u64(), s["completed"].as_u64()),
            (Some(6), Some(6)),
            "{s}"
        );
        assert_eq!(s["output_tokens"].as_u64(), Some(level_tokens(i)));
        // Fresh prompts: halo reports its prompt-cache reuse for every request, and it is none.
        assert_eq!(s["cache_reported"].as_u64(), Some(6));
        assert_eq!(s["cached_prompt_tokens"].as_u64(), Some(0));
        assert_eq!(s["failures_by_class"], serde_json::json!({}));
        assert_eq!(
            l["energy"]["joules_per_output_token"].is_null(),
            l["energy"]["source"] != "rapl"
        );
        assert_eq!(s["good_requests"].as_u64(), Some(6));
        assert_eq!(s["input_tokens_from_target"], true);
        assert!(s["ttft_ms"]["p99"].as_f64().unwrap() > 0.0);
        assert!(s["server"]["ttft_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(s["cost_per_million_output_tokens"].as_f64().unwrap() > 0.0);
    }

    // Per request: the stream's token count, the server's Finish usage and the request agree.
    let lines = std::fs::read_to_string(out.path().join("requests.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 12);
    let mut prompt_tokens = 0;
    for r in &records {
        assert_eq!(r["outcome"]["result"], "ok");
        assert_eq!(r["stream_tokens"], r["max_tokens"]);
        assert_eq!(r["usage_output_tokens"], r["max_tokens"]);
        assert_eq!(r["finish_reason"], "LENGTH");
        assert!(r["server"]["e2e_ms"].as_f64().unwrap() > 0.0);
        prompt_tokens += r["prompt_tokens"].as_u64().unwrap();
    }

    // The server's own counters: every streamed request and token, warmup included.
    let m = scrape(&server.metrics);
    assert_eq!(
        metric(&m, "halo_generated_tokens_total"),
        level_tokens(0) + level_tokens(1) + warmup
    );
    assert_eq!(
        metric(
            &m,
            "halo_requests_total{rpc=\"generate_stream\",outcome=\"length\",code=\"OK\"}"
        ),
        12 + 2
    );
    assert!(metric(&m, "halo_prompt_tokens_total") >= prompt_tokens);

    // Every KV block came back.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = rt.block_on(async {
        let spec = halo_bench::TargetSpec::parse(&format!("grpc://{}", server.addr)).unwrap();
        let opts = halo_bench::ClientOptions {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        };
        halo_bench::target::Client::connect(&spec, &opts)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
    });
    assert_eq!(info["kv"]["free_blocks"], info["kv"]["total_blocks"]);
    assert_eq!(info["kv"]["running_requests"], 0);

    // The report files.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["workload"]["sha256"], workload.summary.sha256);
    assert_eq!(json["targets"][0]["label"], "tiny");
    let m = &json["manifest"];
    assert_eq!(m["workload_sha256"], workload.summary.sha256);
    assert_eq!(m["command_line"][1], "bench");
    assert!(m["git_commit"].as_str().unwrap().len() >= 7);
    assert!(m["host"]["logical_cpus"].as_u64().unwrap() >= 1);
    let sum = std::fs::read_to_string(out.path().join("report.sha256")).unwrap();
    assert!(
        sum.ends_with("  report.json\n") && sum.len() == 64 + 14,
        "{sum}"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("requests.csv"))
            .unwrap()
            .lines()
            .count(),
        13
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("summary.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        md.contains("## c=1") && md.contains("## c=3") && md.contains(&workload.summary.sha256)
    );
    for svg in [
        "ttft_cdf.svg",
        "tpot_cdf.svg",
        "itl_cdf.svg",
        "e2e_cdf.svg",
        "throughput.svg",
        "ttft_p99.svg",
    ] {
        let text = std::fs::read_to_string(out.path().join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        vec!["bench", "grpc://nohost"],
        vec![
            "bench",
            "grpc://127.0.0.1:1",
            "--rate",
            "1",
            "--concurrency",
            "2",
        ],
        vec!["bench", "grpc://127.0.0.1:1", "--output-len", "normal:0,1"],
        vec!["bench", "grpc://127.0.0.1:1", "--arrival", "gamma:-1"],
        vec!["bench", "grpc://127.0.0.1:1", "--token-env", "nolabel=X"],
    ] {
        let res = Command::new(env!("CARGO_BIN_EXE_halo"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn bench_messages_name_the_real_cause() {
    // A down HTTP target: the message says it cannot be reached and does not suggest --model.
    let res = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["bench", "down=http://127.0.0.1:1/v1", "--num-requests", "1"])
        .env_remove("HALO_BENCH_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("target 'down': cannot reach the target"),
        "{err}"
    );
    assert!(!err.contains("--model"), "{err}");

    // --rounds 0 is a usage error.
    let res = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["bench", "grpc://127.0.0.1:1", "--rounds", "0"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));

    // An auth-protected worker without a token: UNAUTHENTICATED and HALO_BENCH_TOKEN are named,
    // and a closed-loop header says nothing of Poisson arrivals.
    let server = start_server_with(&[("HALO_AUTH_TOKEN", "s3cret-bench")]);
    let res = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args([
            "bench",
            &format!("w=grpc://{}", server.addr),
            "--num-requests",
            "2",
            "--warmup",
            "0",
            "--output-len",
            "2",
            "--input-len",
            "4",
        ])
        .env_remove("HALO_BENCH_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    let out = String::from_utf8_lossy(&res.stdout);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("w: every request was refused as grpc:UNAUTHENTICATED")
            && err.contains("HALO_BENCH_TOKEN"),
        "{err}"
    );
    assert!(
        !out.contains("Poisson") && out.contains("closed loop"),
        "{out}"
    );

    // With the token in HALO_BENCH_TOKEN the same run succeeds.
    let res = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args([
            "bench",
            &format!("w=grpc://{}", server.addr),
            "--num-requests",
            "2",
            "--warmup",
            "0",
            "--output-len",
            "2",
            "--input-len",
            "4",
        ])
        .env("HALO_BENCH_TOKEN", "s3cret-bench")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}
