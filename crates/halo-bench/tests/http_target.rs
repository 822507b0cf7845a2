//! The OpenAI target against a small SSE server written here on raw TCP, speaking the completions
//! streaming format exactly (`data: {json}\n\n` chunks with `choices[0].text`, a usage chunk
//! because `stream_options.include_usage` was sent, then `data: [DONE]`), with an HTTP 503 for
//! every fifth request. Checks the counts against what the server says it did, and that the
//! reports are written and parse.

mod common;

use common::read_request;
use halo_bench::target::ClientOptions;
use halo_bench::{
    Arrival, BenchConfig, LengthDist, LoadConfig, LoadLevel, Slo, Source, TargetSpec, Workload,
    WorkloadConfig,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Served {
    completions: AtomicU64,
    rejected: AtomicU64,
    tokens: AtomicU64,
    unauthorized: AtomicU64,
}

const TOKEN_GAP: Duration = Duration::from_millis(15);
const FIRST_DELAY: Duration = Duration::from_millis(40);

async fn respond(mut s: TcpStream, served: Arc<Served>) {
    let Some((head, body)) = read_request(&mut s).await else {
        return;
    };
    if !head
        .to_ascii_lowercase()
        .contains("authorization: bearer s3cret")
    {
        served.unauthorized.fetch_add(1, Ordering::SeqCst);
        let _ = s
            .write_all(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return;
    }
    if head.starts_with("GET /v1/models ") {
        let b = r#"{"object":"list","data":[{"id":"tiny","object":"model"}]}"#;
        let _ = s
            .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}", b.len()).as_bytes())
            .await;
        return;
    }
    assert!(head.starts_with("POST /v1/completions "), "{head}");
    let req: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(req["model"], "tiny");
    assert_eq!(req["stream"], true);
    assert_eq!(req["stream_options"]["include_usage"], true);
    assert_eq!(req["ignore_eos"], true);
    assert_eq!(req["temperature"], 0.0);
    let max_tokens = req["max_tokens"].as_u64().unwrap();
    assert_eq!(req["min_tokens"].as_u64(), Some(max_tokens));
    let n = served.completions.fetch_add(1, Ordering::SeqCst);
    if n % 5 == 4 {
        served.rejected.fetch_add(1, Ordering::SeqCst);
        let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        return;
    }
    let prompt_tokens = req["prompt"].as_str().unwrap().split(' ').count();
    let _ = s
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
        .await;
    tokio::time::sleep(FIRST_DELAY).await;
    // The first event carries two tokens (as servers with a stream interval > 1 do), the rest one.
    let mut sent = 0;
    while sent < max_tokens {
        let k = if sent == 0 { 2.min(max_tokens) } else { 1 };
        let toks: Vec<String> = (0..k).map(|i| format!("\" t{}\"", sent + i)).collect();
        let text: String = (0..k).map(|i| format!(" t{}", sent + i)).collect();
        let last = sent + k == max_tokens;
        let finish = if last { "\"length\"" } else { "null" };
        let ev = format!(
            "data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"tiny\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"logprobs\":{{\"tokens\":[{}]}},\"finish_reason\":{finish}}}],\"usage\":null}}\n\n",
            toks.join(",")
        );
        if s.write_all(ev.as_bytes()).await.is_err() {
            return;
        }
        sent += k;
        if !last {
            tokio::time::sleep(TOKEN_GAP).await;
        }
    }
    served.tokens.fetch_add(sent, Ordering::SeqCst);
    let usage = format!(
        "data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"tiny\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{sent},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
        prompt_tokens as u64 + sent
    );
    let _ = s.write_all(usage.as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn start_server() -> (String, Arc<Served>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(Served::default());
    let s2 = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(respond(sock, s2.clone()));
        }
    });
    (format!("http://{addr}/v1"), served)
}

fn workload(n: usize) -> Workload {
    Workload::build(&WorkloadConfig {
        source: Source::Synthetic {
            input: LengthDist::Uniform { lo: 8, hi: 24 },
        },
        output: LengthDist::Uniform { lo: 3, hi: 9 },
        num_requests: n,
        num_warmup: 0,
        seed: 11,
        ignore_eos: true,
        sets: 1,
        reuse_prompts: false,
    })
    .unwrap()
}

fn spec(label: &str, url: &str) -> TargetSpec {
    let mut t = TargetSpec::parse(&format!("{label}={url}")).unwrap();
    t.token_env = Some("HALO_BENCH_TEST_TOKEN".into());
    t.price_per_hour = Some(2.0);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_target_counts_match_the_server_and_reports_parse() {
    std::env::set_var("HALO_BENCH_TEST_TOKEN", "s3cret");
    let (url, served) = start_server().await;
    let w = workload(20);
    let expected_tokens: u64 = w
        .requests
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 4)
        .map(|(_, r)| r.max_tokens as u64)
        .sum();
    let cfg = BenchConfig {
        targets: vec![spec("a", &url)],
        load: LoadConfig {
            levels: vec![LoadLevel::Closed { concurrency: 1 }],
            arrival: Arrival::Poisson,
            max_duration: None,
            seed: 11,
            rounds: 1,
        },
        slo: Some(Slo {
            ttft_ms: Some(10_000.0),
            tpot_ms: None,
            e2e_ms: None,
        }),
        client: ClientOptions {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        },
        show_progress: false,
        command_line: vec![],
    };
    let report = halo_bench::run(&cfg, &w).await.unwrap();
    assert_eq!(served.unauthorized.load(Ordering::SeqCst), 0);
    // Concurrency 1: the server saw the requests in workload order, so the 503s are known.
    assert_eq!(served.completions.load(Ordering::SeqCst), 20);
    let s = &report.targets[0].levels[0].summary;
    assert_eq!((s.requests, s.completed, s.failed), (20, 16, 4));
    assert_eq!(s.failures_by_status.get("http:503"), Some(&4));
    assert_eq!(s.output_tokens, expected_tokens);
    assert_eq!(served.tokens.load(Ordering::SeqCst), expected_tokens);
    assert!(s.input_tokens_from_target);
    let recs = &report.targets[0].levels[0].records;
    for r in recs.iter().filter(|r| r.ok()) {
        // Stream count (first event counted as 2 from logprobs.tokens) agrees with usage.
        assert_eq!(r.stream_tokens, r.max_tokens);
        assert_eq!(r.usage_output_tokens, Some(r.max_tokens));
        assert_eq!(Some(r.prompt_tokens.unwrap()), r.nominal_input_len);
        assert_eq!(r.chunks[0].tokens, 2);
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
    }
    let ttft = s.ttft_ms.unwrap();
    assert!(ttft.min >= FIRST_DELAY.as_secs_f64() * 1e3, "{ttft:?}");
    let itl = s.itl_ms.unwrap();
    // One zero gap per request from its two-token first event, the rest about TOKEN_GAP.
    assert_eq!(itl.count as u64, expected_tokens - 16);
    assert!(itl.p50 >= TOKEN_GAP.as_secs_f64() * 1e3 * 0.9, "{itl:?}");
    assert_eq!(s.good_requests, Some(16));
    let cost = s.cost_per_million_output_tokens.unwrap();
    assert!((cost - 2.0 / 3600.0 / s.output_token_throughput * 1e6).abs() < 1e-6);
    assert_eq!(report.targets[0].info.as_ref().unwrap()["model"], "tiny");

    let dir = tempfile::tempdir().unwrap();
    let files = halo_bench::report::write_all(&report, dir.path()).unwrap();
    assert!(files.len() >= 11);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["workload"]["sha256"], w.summary.sha256);
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["targets"][0]["levels"][0]["summary"]["completed"], 16);
    let lines = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 20);
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["target"], "a");
    }
    let csv = std::fs::read_to_string(dir.path().join("requests.csv")).unwrap();
    assert_eq!(csv.lines().count(), 21);
    let cols = csv.lines().next().unwrap().split(',').count();
    assert!(csv.lines().all(|l| l.split(',').count() == cols));
    let summary = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 2);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains(&w.summary.sha256) && md.contains("| TTFT ms"));
    // A closed-loop run says so, and nothing about arrivals.
    assert!(
        md.contains("closed loop") && !md.contains("Poisson"),
        "{md}"
    );
    let sum = std::fs::read_to_string(dir.path().join("report.sha256")).unwrap();
    assert!(md.contains(&sum[..64]));
    for svg in [
        "ttft_cdf.svg",
        "tpot_cdf.svg",
        "itl_cdf.svg",
        "e2e_cdf.svg",
        "throughput.svg",
        "ttft_p99.svg",
    ] {
        let text = std::fs::read_to_string(dir.path().join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_targets_get_identical_requests_across_a_sweep_and_open_loop() {
    std::env::set_var("HALO_BENCH_TEST_TOKEN", "s3cret");
    let (url_a, served_a) = start_server().await;
    let (url_b, served_b) = start_server().await;
    let w = workload(10);
    let cfg = BenchConfig {
        targets: vec![spec("a", &url_a), spec("b", &url_b)],
        load: LoadConfig {
            levels: vec![
                LoadLevel::Closed { concurrency: 4 },
                LoadLevel::Open { rate: 200.0 },
            ],
            arrival: Arrival::Gamma { shape: 0.5 },
            max_duration: None,
            seed: 11,
            rounds: 1,
        },
        slo: None,
        client: ClientOptions {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        },
        show_progress: false,
        command_line: vec![],
    };
    let report = halo_bench::run(&cfg, &w).await.unwrap();
    assert_eq!(served_a.completions.load(Ordering::SeqCst), 20);
    assert_eq!(served_b.completions.load(Ordering::SeqCst), 20);
    for t in &report.targets {
        for l in &t.levels {
            assert_eq!(l.summary.requests, 10);
            assert_eq!(l.summary.completed + l.summary.failed, 10);
            let idx: Vec<usize> = l.records.iter().map(|r| r.index).collect();
            assert_eq!(idx, (0..10).collect::<Vec<_>>());
            assert!(l.summary.goodput.is_none());
        }
    }
    let md = halo_bench::report::markdown::render(&report);
    assert!(md.contains("| metric | a | b |"));
    assert!(md.contains("## c=4") && md.contains("## rate=200"));
    assert!(md.contains("open loop, gamma (shape 0.5) arrivals"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_bound_stops_sending_and_missing_token_is_an_argument_error() {
    std::env::set_var("HALO_BENCH_TEST_TOKEN", "s3cret");
    let (url, served) = start_server().await;
    let w = workload(1000);
    let cfg = BenchConfig {
        targets: vec![spec("a", &url)],
        load: LoadConfig {
            levels: vec![LoadLevel::Closed { concurrency: 2 }],
            arrival: Arrival::Poisson,
            max_duration: Some(Duration::from_millis(300)),
            seed: 11,
            rounds: 1,
        },
        slo: None,
        client: ClientOptions {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        },
        show_progress: false,
        command_line: vec![],
    };
    let report = halo_bench::run(&cfg, &w).await.unwrap();
    let s = &report.targets[0].levels[0].summary;
    assert!(s.requests >= 2 && s.requests < 100, "{}", s.requests);
    assert_eq!(served.completions.load(Ordering::SeqCst), s.requests as u64);

    let mut t = spec("a", &url);
    t.token_env = Some("HALO_BENCH_TEST_NO_SUCH_VARIABLE".into());
    let cfg = BenchConfig {
        targets: vec![t],
        ..cfg
    };
    let e = halo_bench::run(&cfg, &w).await.unwrap_err();
    assert!(matches!(e, halo_bench::BenchError::Arg(_)), "{e}");
}
