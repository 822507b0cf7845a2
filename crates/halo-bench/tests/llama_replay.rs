//! Replays a real llama-server response byte for byte through the OpenAI target.
//!
//! `fixtures/llama_server_completions_stream.http` is the raw HTTP/1.1 response (headers, chunked
//! transfer encoding, SSE events, the final chunk with `usage` and `timings`, `data: [DONE]`) that
//! llama.cpp's llama-server (build b1-0c1e570) sent for a streamed `POST /v1/completions` with
//! `stream_options.include_usage`, on tests/fixtures/gguf/kq-shared-Q6_K.gguf (`-c 512 -np 1 -t
//! 1`), captured from the socket with a few lines of Python. That model has random weights, so
//! its byte tokens do not form whole characters: llama-server held incomplete UTF-8 back and sent
//! 24 tokens in 21 non-empty text events, some carrying U+FFFD. The prompt had been sent once
//! before, so the final chunk reports `timings.cache_n` 28 and
//! `usage.prompt_tokens_details.cached_tokens` 28 of 29 prompt tokens. `/props` and `/v1/models`
//! are the same server's answers.
//!
//! The replay server writes the recording with fixed pauses between events, and splits one write
//! by hand inside a UTF-8 character (between the bytes EF BF | BD of the first U+FFFD), so the
//! client receives a read that ends in the middle of a character. Every figure is then checked
//! against the recording and the pauses.

mod common;

use common::read_request;
use halo_bench::target::ClientOptions;
use halo_bench::{
    Arrival, BenchConfig, LengthDist, LoadConfig, LoadLevel, Source, TargetSpec, Workload,
    WorkloadConfig,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const RECORDED: &[u8] = include_bytes!("fixtures/llama_server_completions_stream.http");
const PROPS: &str = include_str!("fixtures/llama_server_props.json");
const MODELS: &str = include_str!("fixtures/llama_server_models.json");
const FIRST: Duration = Duration::from_millis(80);
const GAP: Duration = Duration::from_millis(12);

/// The recording cut into writes: after the headers, after each SSE event, and once inside the
/// first U+FFFD. Returns the pieces and the index of the piece that ends mid-character.
fn pieces() -> (Vec<&'static [u8]>, usize) {
    let head = RECORDED.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut cuts = vec![head];
    let mut i = head;
    while let Some(p) = RECORDED[i..].windows(4).position(|w| w == b"\n\n\r\n") {
        i += p + 4;
        cuts.push(i);
    }
    let fffd = RECORDED
        .windows(3)
        .position(|w| w == "\u{FFFD}".as_bytes())
        .unwrap();
    let mid = fffd + 2;
    cuts.push(mid);
    cuts.sort();
    if *cuts.last().unwrap() != RECORDED.len() {
        cuts.push(RECORDED.len());
    }
    let mut out = Vec::new();
    let mut prev = 0;
    let mut split_piece = 0;
    for c in cuts {
        if c == mid {
            split_piece = out.len();
        }
        out.push(&RECORDED[prev..c]);
        prev = c;
    }
    (out, split_piece)
}

type Log = Arc<Mutex<Vec<(String, String)>>>;

async fn json(s: &mut TcpStream, body: &str) {
    let _ = s
        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nKeep-Alive: timeout=5, max=100\r\n\r\n{body}", body.len()).as_bytes())
        .await;
}

/// Serves like llama-server: answers on a kept-alive connection, and closes it after a streamed
/// completion (the behaviour that made reused connections fail).
async fn serve(mut s: TcpStream, name: String, log: Log) {
    while let Some((head, body)) = read_request(&mut s).await {
        if head.starts_with("GET /v1/models ") {
            json(&mut s, MODELS).await;
            continue;
        }
        if head.starts_with("GET /props ") {
            json(&mut s, PROPS).await;
            continue;
        }
        assert!(head.starts_with("POST /v1/completions "), "{head}");
        let req: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(req["stream_options"]["include_usage"], true);
        log.lock()
            .unwrap()
            .push((name.clone(), req["prompt"].as_str().unwrap().to_string()));
        let (pieces, _) = pieces();
        let _ = s.write_all(pieces[0]).await;
        tokio::time::sleep(FIRST).await;
        for p in &pieces[1..] {
            if s.write_all(p).await.is_err() {
                return;
            }
            let _ = s.flush().await;
            tokio::time::sleep(GAP).await;
        }
        return;
    }
}

async fn start(name: &str, log: Log) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock, name.clone(), log.clone()));
        }
    });
    format!("http://{addr}")
}

fn workload(n: usize, sets: usize, reuse: bool) -> Workload {
    Workload::build(&WorkloadConfig {
        source: Source::Synthetic {
            input: LengthDist::Fixed { len: 6 },
        },
        output: LengthDist::Fixed { len: 24 },
        num_requests: n,
        num_warmup: 1,
        seed: 4,
        ignore_eos: true,
        sets,
        reuse_prompts: reuse,
    })
    .unwrap()
}

fn config(targets: Vec<TargetSpec>, rounds: usize) -> BenchConfig {
    BenchConfig {
        targets,
        load: LoadConfig {
            levels: vec![LoadLevel::Closed { concurrency: 1 }],
            arrival: Arrival::Poisson,
            max_duration: None,
            seed: 4,
            rounds,
        },
        slo: None,
        client: ClientOptions {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        },
        show_progress: false,
        command_line: vec!["halo".into(), "bench".into()],
    }
}

#[test]
fn the_recording_is_what_the_header_says() {
    let text = String::from_utf8_lossy(RECORDED);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\nServer: llama.cpp\r\n"));
    assert!(text.contains("Transfer-Encoding: chunked") && text.contains("Keep-Alive"));
    assert!(text.contains("\"timings\":{\"cache_n\":28"));
    assert!(text.trim_end().ends_with("data: [DONE]\n\n\r\n0"));
    let (p, split) = pieces();
    assert_eq!(p.concat(), RECORDED);
    // The hand split: the piece ends with EF BF, the next starts with BD.
    assert!(p[split].ends_with(&[0xEF, 0xBF]) && p[split + 1].starts_with(&[0xBD]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_llama_server_stream_gives_every_figure() {
    let log: Log = Default::default();
    let url = start("llama", log.clone()).await;
    let spec = TargetSpec::parse(&format!("llama={url}/v1")).unwrap();
    let w = workload(3, 1, false);
    let report = halo_bench::run(&config(vec![spec], 1), &w).await.unwrap();
    let t = &report.targets[0];
    // Self-description: the model from /v1/models, /props where llama-server has it.
    let info = t.info.as_ref().unwrap();
    assert_eq!(
        info["model"],
        "/work/main/tests/fixtures/gguf/kq-shared-Q6_K.gguf"
    );
    assert_eq!(info["props"]["build_info"], "b1-0c1e570");
    assert_eq!(t.warmup_failures, 0);
    let l = &t.levels[0];
    let s = &l.summary;
    assert_eq!((s.requests, s.completed, s.failed), (3, 3, 0));
    assert!(s.failures_by_class.is_empty() && s.client_retries == 0);
    // Usage from the final chunk: 24 output and 29 prompt tokens per request.
    assert_eq!((s.output_tokens, s.input_tokens), (72, 87));
    assert!(s.input_tokens_from_target);
    // The reuse llama-server reported (cached_tokens / cache_n): 28 per request.
    assert_eq!((s.cache_reported, s.cached_prompt_tokens), (3, 84));
    let first_ms = FIRST.as_secs_f64() * 1e3;
    let gap_ms = GAP.as_secs_f64() * 1e3;
    for r in &l.records {
        assert!(r.ok(), "{:?}", r.outcome);
        // 21 non-empty text events, the one split inside a character among them.
        assert_eq!(r.chunks.len(), 21);
        assert_eq!(r.stream_tokens, 21);
        assert_eq!(r.usage_output_tokens, Some(24));
        assert_eq!(r.output_tokens(), 24);
        assert_eq!(r.prompt_tokens, Some(29));
        assert_eq!(r.cached_prompt_tokens, Some(28));
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        assert_eq!(r.retries, 0);
        let ttft = halo_bench::metrics::ttft(&r.chunks).unwrap() * 1e3;
        assert!(ttft >= first_ms && ttft < first_ms + 200.0, "ttft {ttft}");
        // The server pauses between events, so text event i cannot arrive before i pauses
        // after the first (one more around the hand split). Bounded from the request's start,
        // not gap by gap: a gap after an event the client read late is legitimately short
        // (seen in CI: 18.6 ms then 8.6 ms against 12 ms pauses).
        let gaps = halo_bench::metrics::itl_gaps(&r.chunks);
        assert_eq!(gaps.len(), 20);
        for (i, c) in r.chunks.iter().enumerate() {
            assert!(
                c.t * 1e3 >= first_ms + i as f64 * gap_ms * 0.9,
                "event {i} at {} ms: {gaps:?}",
                c.t * 1e3
            );
        }
        // The stream ends with [DONE], after the usage chunk: 23 events and a split after the
        // first chunk.
        assert!(r.end * 1e3 >= first_ms + 23.0 * gap_ms * 0.9, "{}", r.end);
        let tpot = halo_bench::metrics::tpot(ttft / 1e3, r.end, 24).unwrap() * 1e3;
        assert!((tpot - (r.end * 1e3 - ttft) / 23.0).abs() < 1e-9);
    }
    let tpot = s.tpot_ms.unwrap();
    assert!(tpot.min > 0.0 && tpot.min < tpot.max + 1e-9);
    assert_eq!(s.itl_ms.unwrap().count, 60);
    let md = halo_bench::report::markdown::render(&report);
    assert!(md.contains("server b1-0c1e570; n_ctx 512; slots 1"), "{md}");
    assert!(md.contains("| prompt tokens reused (target-reported) | 84 (in 3 of 3 requests) |"));
    assert!(md.contains("| failures: transport / timeout / server | 0 / 0 / 0 |"));
    assert_eq!(
        log.lock().unwrap().len(),
        4,
        "one warmup and three measured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_take_turns_in_rounds_with_fresh_prompts() {
    let log: Log = Default::default();
    let a = start("a", log.clone()).await;
    let b = start("b", log.clone()).await;
    let specs = vec![
        TargetSpec::parse(&format!("a={a}/v1")).unwrap(),
        TargetSpec::parse(&format!("b={b}/v1")).unwrap(),
    ];
    // One level, three rounds: three fresh sets of two prompts.
    let w = workload(2, 3, false);
    let report = halo_bench::run(&config(specs.clone(), 3), &w)
        .await
        .unwrap();
    let log = log.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|(n, _)| n.as_str()).collect();
    // Warmup a, warmup b, then a a b b (round 0), a a b b, a a b b.
    assert_eq!(
        names,
        ["a", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b"]
    );
    let prompts: Vec<&str> = log.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(prompts[0], prompts[1], "the same warmup for both");
    for round in 0..3 {
        let at = 2 + round * 4;
        assert_eq!(
            prompts[at..at + 2],
            prompts[at + 2..at + 4],
            "same set for a and b"
        );
        let want: Vec<&str> = w.set(round).iter().map(|r| r.prompt.as_str()).collect();
        assert_eq!(prompts[at..at + 2], want[..]);
    }
    let mut distinct = prompts[2..].to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        6,
        "no measured prompt is sent twice to a target"
    );
    assert!(
        !prompts[2..].contains(&prompts[0]),
        "warmup prompts are not measured"
    );
    for t in &report.targets {
        let l = &t.levels[0];
        assert_eq!(l.rounds.len(), 3);
        assert_eq!(l.summary.completed, 6);
        let rounds: Vec<usize> = l.records.iter().map(|r| r.round).collect();
        assert_eq!(rounds, [0, 0, 1, 1, 2, 2]);
        // Rounds are laid end to end: the level's window is the sum of the rounds'.
        let sum: f64 = l.rounds.iter().map(|r| r.duration_s).sum();
        assert!((l.summary.duration_s - sum).abs() < 1e-6);
        let sp = l.spread.as_ref().unwrap();
        assert!(sp.output_tok_s_min <= sp.output_tok_s_max && sp.output_tok_s_pct >= 0.0);
        // Energy: a figure only where RAPL can be read; never a guess.
        match l.energy.source.as_str() {
            "rapl" => assert!(l.energy.joules.is_some()),
            _ => assert!(l.energy.joules.is_none() && l.energy.joules_per_output_token.is_none()),
        }
    }
    let md = halo_bench::report::markdown::render(&report);
    assert!(md.contains("| output tokens/s by round |"));
    assert!(md.contains("| spread between rounds (tok/s, TTFT p50) | ±"));
    assert!(md.contains("3 round(s) per level") && md.contains("3 sets"));

    // --reuse-prompts: every round gets the first set.
    let w = workload(2, 3, true);
    let report = halo_bench::run(&config(specs, 2), &w).await.unwrap();
    assert_eq!(report.workload.sets, 1);
    let md = halo_bench::report::markdown::render(&report);
    assert!(md.contains("--reuse-prompts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_http_target_is_named_without_suggesting_model() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let spec = TargetSpec::parse(&format!("down=http://{addr}/v1")).unwrap();
    let w = workload(1, 1, false);
    let e = halo_bench::run(&config(vec![spec], 1), &w)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("target 'down': cannot reach the target: GET /models"),
        "{e}"
    );
    assert!(!e.contains("--model"), "{e}");
}
