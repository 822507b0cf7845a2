//! End-to-end tests of `halo serve`'s API against the real binary: one test per row of
//! RELIABILITY.md's bad-input and overload table, each checking that a rejection left the queue
//! and the free blocks unchanged; auth, message size, queue full, cancel, deadline, golden
//! greedy output under load, reflection, metrics, and that prompts never reach the logs.
//!
//! One server process serves every test in this file (CI has two cores); the tests take turns
//! through a lock because several of them read the global KV state.

mod serve_common;

use halo_proto::worker::v1 as pb;
use serve_common::*;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_types::StatusExt;

const TOKEN: &str = "test-token-7f3a";
const MAX_CONCURRENT: usize = 4;
const SECRET: &str = "ZQXJ SECRET MARKER";

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(
            &[
                "--max-concurrent",
                "4",
                "--num-blocks",
                "256",
                "--max-batch-seqs",
                "16",
            ],
            &[("HALO_AUTH_TOKEN", TOKEN), ("RUST_LOG", "debug")],
        )
    })
}

/// Runs one test body against the shared server, one test at a time.
fn with_server<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    static TURN: Mutex<()> = Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let url = server().url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(body(url));
}

async fn authed(url: &str) -> Client {
    client(url, Some(TOKEN)).await
}

async fn limits(c: &mut Client) -> pb::Limits {
    c.get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .limits
        .unwrap()
}

/// Sends `req` both ways (unary and stream), expects `code` from each, and checks that the live
/// state is exactly as before. Returns the unary status message.
async fn assert_rejected(c: &mut Client, req: pb::GenerateRequest, code: Code) -> String {
    let before = wait_idle(c, Duration::from_secs(10)).await;
    let unary = c
        .generate(req.clone())
        .await
        .expect_err("unary should be rejected");
    assert_eq!(unary.code(), code, "unary: {}", unary.message());
    let (ids, stream) = run_stream(c, req).await;
    let s = stream.expect_err("stream should be rejected");
    assert_eq!(s.code(), code, "stream: {}", s.message());
    assert!(ids.is_empty());
    let after = kv(c).await;
    assert_eq!(before, after, "a rejection changed the state");
    unary.message().to_string()
}

fn sampled(f: impl FnOnce(&mut pb::SamplingParams)) -> pb::GenerateRequest {
    let mut r = ids_request(prompt(8, 1), 4);
    let mut s = pb::SamplingParams::default();
    f(&mut s);
    r.sampling = Some(s);
    r
}

#[test]
fn empty_prompt_and_length_limits_are_invalid_argument_naming_both_numbers() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let l = limits(&mut c).await;
        assert!(l.max_total_tokens >= 2 && l.max_input_tokens < l.max_total_tokens);

        assert_rejected(&mut c, ids_request(vec![], 4), Code::InvalidArgument).await;
        let mut text = ids_request(vec![], 4);
        text.prompt = Some(pb::generate_request::Prompt::Text(String::new()));
        assert_rejected(&mut c, text, Code::InvalidArgument).await;
        let mut none = ids_request(vec![], 4);
        none.prompt = None;
        assert_rejected(&mut c, none, Code::InvalidArgument).await;

        let long = l.max_input_tokens as usize + 1;
        let msg = assert_rejected(
            &mut c,
            ids_request(prompt(long, 2), 1),
            Code::InvalidArgument,
        )
        .await;
        assert!(
            msg.contains(&long.to_string()) && msg.contains(&l.max_input_tokens.to_string()),
            "{msg}"
        );

        let p = 100usize;
        let new = l.max_total_tokens - p as u32 + 1;
        let msg = assert_rejected(
            &mut c,
            ids_request(prompt(p, 3), new),
            Code::InvalidArgument,
        )
        .await;
        assert!(
            msg.contains(&l.max_total_tokens.to_string()) && msg.contains("100"),
            "{msg}"
        );
    });
}

#[test]
fn sampling_out_of_range_and_non_finite_floats_are_invalid_argument() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let mut zero = ids_request(prompt(4, 0), 0);
        zero.max_new_tokens = 0;
        assert_rejected(&mut c, zero, Code::InvalidArgument).await;

        type Set = fn(&mut pb::SamplingParams, f32);
        let fields: [(&str, Set); 6] = [
            ("temperature", |s, v| s.temperature = v),
            ("top_p", |s, v| s.top_p = Some(v)),
            ("min_p", |s, v| s.min_p = v),
            ("repetition_penalty", |s, v| s.repetition_penalty = Some(v)),
            ("frequency_penalty", |s, v| s.frequency_penalty = v),
            ("presence_penalty", |s, v| s.presence_penalty = v),
        ];
        for (name, set) in fields {
            for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let msg =
                    assert_rejected(&mut c, sampled(|s| set(s, v)), Code::InvalidArgument).await;
                assert!(msg.contains(name), "{name}={v}: {msg}");
            }
        }
        let out_of_range = [
            sampled(|s| s.temperature = -0.5),
            sampled(|s| s.top_p = Some(0.0)),
            sampled(|s| s.top_p = Some(1.5)),
            sampled(|s| s.top_k = -1),
            sampled(|s| s.min_p = -0.1),
            sampled(|s| s.min_p = 1.1),
            sampled(|s| s.repetition_penalty = Some(0.0)),
            sampled(|s| s.repetition_penalty = Some(-1.0)),
            sampled(|s| s.frequency_penalty = 2.1),
            sampled(|s| s.presence_penalty = -2.1),
        ];
        for r in out_of_range {
            assert_rejected(&mut c, r, Code::InvalidArgument).await;
        }
        // The boundaries themselves are accepted.
        let ok = sampled(|s| {
            s.temperature = 0.8;
            s.top_p = Some(1.0);
            s.min_p = 1.0;
            s.repetition_penalty = Some(1.2);
            s.frequency_penalty = -2.0;
            s.presence_penalty = 2.0;
            s.seed = Some(5);
        });
        let r = c
            .generate(ok)
            .await
            .expect("boundary values are valid")
            .into_inner();
        assert_eq!(r.token_ids.len(), 4);
    });
}

#[test]
fn stop_sequences_and_top_n_over_their_caps_are_invalid_argument() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let l = limits(&mut c).await;
        let with_stops = |stops: Vec<String>| {
            let mut r = ids_request(prompt(6, 4), 4);
            r.stop = Some(pb::StopCriteria {
                stop_sequences: stops,
                ..Default::default()
            });
            r
        };
        let too_many = (0..=l.max_stop_sequences)
            .map(|i| format!("s{i}"))
            .collect();
        assert_rejected(&mut c, with_stops(too_many), Code::InvalidArgument).await;
        assert_rejected(
            &mut c,
            with_stops(vec![String::new()]),
            Code::InvalidArgument,
        )
        .await;
        let long = "x".repeat(l.max_stop_sequence_bytes as usize + 1);
        assert_rejected(&mut c, with_stops(vec![long]), Code::InvalidArgument).await;
        let mut top = ids_request(prompt(6, 4), 4);
        top.top_n = l.max_top_n + 1;
        let msg = assert_rejected(&mut c, top, Code::InvalidArgument).await;
        assert!(
            msg.contains(&(l.max_top_n + 1).to_string()) && msg.contains(&l.max_top_n.to_string())
        );
        // At the caps, it runs.
        let mut ok = with_stops(
            (0..l.max_stop_sequences)
                .map(|i| format!("never{i}"))
                .collect(),
        );
        ok.top_n = l.max_top_n;
        ok.logprobs = true;
        let r = c.generate(ok).await.unwrap().into_inner();
        assert_eq!(r.top_tokens.len(), r.token_ids.len());
        assert_eq!(r.logprobs.len(), r.token_ids.len());
        assert!(r
            .top_tokens
            .iter()
            .all(|t| t.ids.len() == l.max_top_n as usize));
    });
}

#[test]
fn token_ids_outside_the_vocabulary_are_invalid_argument() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let vocab = c
            .get_info(pb::GetInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .model
            .unwrap()
            .vocab_size;
        assert_rejected(
            &mut c,
            ids_request(vec![3, vocab, 4], 4),
            Code::InvalidArgument,
        )
        .await;
        assert_rejected(
            &mut c,
            ids_request(vec![3, u32::MAX], 4),
            Code::InvalidArgument,
        )
        .await;
        let mut stop = ids_request(prompt(5, 5), 4);
        stop.stop = Some(pb::StopCriteria {
            stop_token_ids: vec![vocab],
            ..Default::default()
        });
        assert_rejected(&mut c, stop, Code::InvalidArgument).await;
        let e = c
            .detokenize(pb::DetokenizeRequest {
                ids: vec![5, vocab],
                skip_special_tokens: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    });
}

#[test]
fn a_message_over_the_limit_is_resource_exhausted() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let l = limits(&mut c).await;
        assert_eq!(l.max_message_bytes, 4 * 1024 * 1024);
        let mut big = ids_request(vec![], 4);
        big.prompt = Some(pb::generate_request::Prompt::Text(
            "a".repeat(5 * 1024 * 1024),
        ));
        let msg = assert_rejected(&mut c, big, Code::ResourceExhausted).await;
        assert!(msg.contains("4194304"), "{msg}");
        // Under the limit the same path reaches validation instead.
        let ids: Vec<u32> = (0..600_000).map(|i| 2 + i % 500).collect();
        assert_rejected(&mut c, ids_request(ids, 4), Code::InvalidArgument).await;
    });
}

#[test]
fn a_missing_or_wrong_bearer_token_is_unauthenticated_and_health_needs_none() {
    with_server(|url| async move {
        let mut owner = authed(&url).await;
        let before = wait_idle(&mut owner, Duration::from_secs(10)).await;
        for token in [None, Some("wrong-token"), Some("test-token-7f3b")] {
            let mut c = client(&url, token).await;
            let e = c.generate(ids_request(prompt(4, 6), 2)).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated);
            assert!(!e.message().contains(TOKEN));
            let e = c.get_info(pb::GetInfoRequest {}).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated);
        }
        assert_eq!(kv(&mut owner).await, before);
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&url).await);
        for service in ["", "halo.worker.v1.Worker"] {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                r.status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
    });
}

#[test]
fn with_limit_n_two_n_at_once_admit_n_and_reject_n_with_queue_full() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        wait_idle(&mut c, Duration::from_secs(10)).await;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..2 * MAX_CONCURRENT {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = c.generate(ids_request(prompt(16, i as u32), 400)).await;
                (r, t.elapsed())
            }));
        }
        let (mut ok, mut full) = (0, 0);
        for t in tasks {
            let (r, took) = t.await.unwrap();
            match r {
                Ok(r) => {
                    assert_eq!(r.into_inner().token_ids.len(), 400);
                    ok += 1;
                }
                Err(s) => {
                    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
                    let info = s.get_details_error_info().expect("ErrorInfo in details");
                    assert_eq!(
                        (info.reason.as_str(), info.domain.as_str()),
                        ("QUEUE_FULL", "halo")
                    );
                    assert!(took < Duration::from_secs(2), "rejection took {took:?}");
                    full += 1;
                }
            }
        }
        assert_eq!(
            (ok, full),
            (MAX_CONCURRENT, MAX_CONCURRENT),
            "after {:?}",
            started.elapsed()
        );
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&url).await);
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert_eq!(
            r.unwrap().into_inner().status,
            1,
            "health stays SERVING under overload"
        );
        wait_idle(&mut c, Duration::from_secs(10)).await;
    });
}

#[test]
fn client_cancel_and_drop_free_every_block() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        wait_idle(&mut c, Duration::from_secs(10)).await;
        // A stream dropped after two messages.
        let mut s = c
            .generate_stream(ids_request(prompt(40, 7), 3000))
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap();
        s.message().await.unwrap().unwrap();
        assert!(kv(&mut c).await.running_requests == 1);
        drop(s);
        wait_idle(&mut c, Duration::from_secs(5)).await;
        // A unary call abandoned mid-generation.
        let mut c2 = c.clone();
        let task = tokio::spawn(async move { c2.generate(ids_request(prompt(40, 8), 3000)).await });
        let until = Instant::now() + Duration::from_secs(10);
        while kv(&mut c).await.running_requests == 0 {
            assert!(Instant::now() < until);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        wait_idle(&mut c, Duration::from_secs(5)).await;
    });
}

#[test]
fn grpc_timeout_ends_a_long_stream_and_a_long_unary_call_with_deadline_exceeded() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        wait_idle(&mut c, Duration::from_secs(10)).await;
        let mut req = tonic::Request::new(ids_request(prompt(20, 9), 4000));
        req.set_timeout(Duration::from_millis(400));
        let t = Instant::now();
        let mut s = c
            .generate_stream(req)
            .await
            .expect("headers come before the deadline")
            .into_inner();
        let mut tokens = 0;
        let status = loop {
            match s.message().await {
                Ok(Some(m)) => {
                    tokens += m.token_ids.len();
                    assert!(m.finish.is_none(), "4000 tokens cannot finish in 400 ms");
                }
                Ok(None) => panic!("stream ended without a status"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "{}",
            status.message()
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        assert!(tokens > 0);
        wait_idle(&mut c, Duration::from_secs(5)).await;

        let mut req = tonic::Request::new(ids_request(prompt(20, 10), 4000));
        req.set_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let e = c.generate(req).await.unwrap_err();
        // tonic's client runs its own timer on the same grpc-timeout and, for a unary call, it
        // fires at the same instant as the server's: the client then reports its local
        // CANCELLED("Timeout expired") instead of the server's DEADLINE_EXCEEDED. Either way
        // the call ends on time and the server frees the request.
        let local_timer = e.code() == Code::Cancelled && e.message().contains("Timeout expired");
        assert!(
            e.code() == Code::DeadlineExceeded || local_timer,
            "{:?}: {}",
            e.code(),
            e.message()
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        wait_idle(&mut c, Duration::from_secs(5)).await;
    });
}

#[test]
fn greedy_output_under_concurrent_load_equals_the_golden_ids() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let cases = golden();
        assert!(!cases.is_empty());
        // Up to the queue cap at once: golden cases next to sampled noise of other lengths.
        let mut tasks = Vec::new();
        for (i, (prompt_ids, want)) in cases.iter().cloned().enumerate() {
            let mut gc = c.clone();
            tasks.push(tokio::spawn(async move {
                let (ids, fin) =
                    run_stream(&mut gc, ids_request(prompt_ids, want.len() as u32)).await;
                fin.unwrap_or_else(|e| panic!("case {i}: {e}"));
                assert_eq!(ids, want, "golden case {i} under load");
            }));
            if tasks.len() % MAX_CONCURRENT == MAX_CONCURRENT - 1 {
                let mut c = c.clone();
                tasks.push(tokio::spawn(async move {
                    let mut r = ids_request(prompt(30 + i, 11), 20 + i as u32);
                    r.sampling = Some(pb::SamplingParams {
                        temperature: 0.9,
                        seed: Some(i as u64),
                        ..Default::default()
                    });
                    c.generate(r).await.unwrap();
                }));
            }
            if tasks.len() >= MAX_CONCURRENT {
                for t in tasks.drain(..) {
                    t.await.unwrap();
                }
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        wait_idle(&mut c, Duration::from_secs(10)).await;
    });
}

#[test]
fn streamed_text_deltas_concatenate_to_the_full_decode() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let (prompt_ids, want) = golden().remove(0);
        let mut s = c
            .generate_stream(ids_request(prompt_ids, want.len() as u32))
            .await
            .unwrap()
            .into_inner();
        let (mut ids, mut text) = (Vec::new(), String::new());
        while let Some(m) = s.message().await.unwrap() {
            ids.extend(m.token_ids);
            text.push_str(&m.text);
        }
        let full = c
            .detokenize(pb::DetokenizeRequest {
                ids: ids.clone(),
                skip_special_tokens: true,
            })
            .await
            .unwrap()
            .into_inner()
            .text;
        assert_eq!(ids, want);
        assert_eq!(text, full);
    });
}

#[test]
fn text_prompts_work_and_never_reach_the_logs() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        let ids = c
            .tokenize(pb::TokenizeRequest {
                text: SECRET.into(),
                add_special_tokens: true,
            })
            .await
            .unwrap()
            .into_inner()
            .ids;
        assert!(!ids.is_empty());
        let mut r = ids_request(vec![], 6);
        r.request_id = "log-check-1".into();
        r.prompt = Some(pb::generate_request::Prompt::Text(SECRET.into()));
        let resp = c.generate(r.clone()).await.unwrap();
        assert_eq!(
            resp.metadata().get("halo-request-id").unwrap(),
            "log-check-1"
        );
        let resp = resp.into_inner();
        assert_eq!(resp.request_id, "log-check-1");
        assert_eq!(
            resp.finish.unwrap().usage.unwrap().prompt_tokens as usize,
            ids.len()
        );
        // A rejected text prompt must not echo it either.
        r.sampling = Some(pb::SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        });
        let e = c.generate(r).await.unwrap_err();
        assert!(!e.message().contains("SECRET"));
        let log = server().log_text();
        assert!(log.contains("log-check-1"), "request ids are logged");
        assert!(!log.contains("SECRET"), "the prompt leaked into the log");
        assert!(!log.contains(TOKEN), "the token leaked into the log");
    });
}

#[test]
fn reflection_lists_the_services_on_v1_and_v1alpha() {
    with_server(|url| async move {
        use tonic_reflection::pb::{v1, v1alpha};
        let auth = Auth(Some(format!("Bearer {TOKEN}").parse().unwrap()));
        let ch = channel(&url).await;

        let mut r1 = v1::server_reflection_client::ServerReflectionClient::with_interceptor(
            ch.clone(),
            auth.clone(),
        );
        let req = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut s = r1
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let names: Vec<String> = match s
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            v1::server_reflection_response::MessageResponse::ListServicesResponse(l) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected {other:?}"),
        };
        for want in ["halo.worker.v1.Worker", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == want), "{names:?}");
        }

        let mut ra =
            v1alpha::server_reflection_client::ServerReflectionClient::with_interceptor(ch, auth);
        let req = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "halo.worker.v1.Worker".into(),
                ),
            ),
        };
        let mut s = ra
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        match s
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
        {
            v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => {
                assert!(!f.file_descriptor_proto.is_empty())
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn metrics_port_serves_prometheus_text() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        c.generate(ids_request(prompt(12, 12), 8)).await.unwrap();
        let addr = server().metrics_addr.clone();
        let text = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        for name in [
            "halo_requests_total{rpc=\"generate\",outcome=\"length\",code=\"OK\"}",
            "halo_queue_depth ",
            "halo_running_sequences ",
            "halo_kv_blocks_used ",
            "halo_kv_blocks_total 256",
            "halo_prefix_cache_hits_total ",
            "halo_preemptions_total ",
            "halo_prompt_tokens_total ",
            "halo_generated_tokens_total ",
            "halo_time_to_first_token_seconds_bucket",
            "halo_inter_token_latency_seconds_count",
            "halo_request_duration_seconds_sum",
            "halo_queue_time_seconds_count",
            "halo_step_duration_seconds_bucket",
            "halo_serving 1",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    });
}

#[test]
fn cache_salts_keep_tenants_from_seeing_each_others_prefixes() {
    with_server(|url| async move {
        let mut c = authed(&url).await;
        wait_idle(&mut c, Duration::from_secs(10)).await;
        let salted = |salt: &str| pb::GenerateRequest {
            cache_salt: salt.into(),
            ..ids_request(prompt(40, 31), 2)
        };
        let cached =
            |r: pb::GenerateResponse| r.finish.unwrap().usage.unwrap().cached_prompt_tokens;
        let gen = |req| {
            let mut c = c.clone();
            async move { c.generate(req).await.unwrap().into_inner() }
        };
        assert_eq!(cached(gen(salted("tenant-a")).await), 0);
        // The same prompt under another salt, or none, is served cold: no probing oracle.
        assert_eq!(cached(gen(salted("tenant-b")).await), 0);
        assert_eq!(cached(gen(salted("")).await), 0);
        // The first tenant hits its own prefix.
        assert!(cached(gen(salted("tenant-a")).await) > 0);
        // A salt is bounded and printable.
        let e = c.generate(salted(&"s".repeat(257))).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c.generate(salted("a\0b")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    });
}
