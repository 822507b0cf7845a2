//! `halo bench` through its OpenAI target against `halo serve --http-listen`, and through its
//! gRPC target against the same worker, with one seeded workload: every request completes on
//! both, and the per-request counts agree (prompt tokens, streamed tokens, usage), so the two
//! fronts' figures describe the same work. Prefix caching is off so that the second target does
//! not find the first one's prompts cached.

mod serve_common;

use serde_json::Value;
use serve_common::*;
use std::collections::BTreeMap;
use std::process::Command;

#[test]
fn bench_over_http_and_grpc_sees_the_same_work() {
    let server = Server::start(
        &["--http-listen", "127.0.0.1:0", "--no-prefix-caching"],
        &[],
    );
    let out = tempfile::tempdir().unwrap();
    let res = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args([
            "bench",
            &format!("grpc=grpc://{}", server.addr),
            &format!("http={}", server.http_base()),
            "--num-requests",
            "6",
            "--concurrency",
            "1,3",
            "--input-len",
            "uniform:8-24",
            "--output-len",
            "uniform:4-12",
            "--warmup",
            "1",
            "--seed",
            "5",
            "--out",
            out.path().to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "stderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&res.stderr),
        server.log_text()
    );
    let report: Value = serde_json::from_slice(&res.stdout).expect("--json prints the report");
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    let summary = |t: &Value, level: usize| t["levels"][level]["summary"].clone();
    for level in 0..2 {
        let (g, h) = (summary(&targets[0], level), summary(&targets[1], level));
        for s in [&g, &h] {
            assert_eq!(s["completed"].as_u64(), Some(6), "{s}");
            assert_eq!(s["failures_by_class"], serde_json::json!({}), "{s}");
            assert!(s["ttft_ms"]["p50"].as_f64().unwrap() > 0.0, "{s}");
            assert!(
                s["output_tokens_per_s"].as_f64().unwrap_or(1.0) > 0.0,
                "{s}"
            );
        }
        assert!(g["output_tokens"].as_u64().unwrap() > 0);
        assert_eq!(g["output_tokens"], h["output_tokens"]);
        assert!(g["input_tokens"].as_u64().unwrap() > 0);
        assert_eq!(g["input_tokens"], h["input_tokens"]);
    }

    // Request by request: the same prompt tokens, every token seen in the stream, usage exact.
    let lines = std::fs::read_to_string(out.path().join("requests.jsonl")).unwrap();
    let mut by_target: BTreeMap<String, BTreeMap<(String, usize), Value>> = BTreeMap::new();
    for l in lines.lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        let key = (
            r["level"].as_str().unwrap().to_string(),
            r["index"].as_u64().unwrap() as usize,
        );
        by_target
            .entry(r["target"].as_str().unwrap().to_string())
            .or_default()
            .insert(key, r);
    }
    let (grpc, http) = (&by_target["grpc"], &by_target["http"]);
    assert_eq!(grpc.len(), 12);
    assert_eq!(http.len(), 12);
    for (key, g) in grpc {
        let h = &http[key];
        assert_eq!(h["outcome"]["result"], "ok", "{h}");
        assert_eq!(h["stream_tokens"], h["max_tokens"], "{h}");
        assert_eq!(h["usage_output_tokens"], h["max_tokens"], "{h}");
        assert_eq!(h["finish_reason"], "length", "{h}");
        assert_eq!(g["stream_tokens"], h["stream_tokens"], "{key:?}");
        assert_eq!(g["prompt_tokens"], h["prompt_tokens"], "{key:?}");
    }
}
