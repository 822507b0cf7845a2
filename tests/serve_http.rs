//! The OpenAI-compatible HTTP API of `halo serve --http-listen`, driven with raw HTTP requests:
//! completions and chat, unary and streamed (server-sent events ending in `data: [DONE]`), text
//! equal to transformers' continuation text of the golden fixtures, usage counts, logprobs equal
//! to the gRPC API's, every bad input's status and error object (state unchanged), auth, queue
//! full, a deadline, a client that disconnects (its blocks freed), and SIGTERM draining streams.

mod serve_common;

use halo_proto::worker::v1 as pb;
use serde_json::{json, Value};
use serve_common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn golden(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap()
}

/// A plain-HTTP client. reqwest is built (for halo-bench) without a bundled TLS provider, so
/// ring's is installed first; installing it twice is harmless.
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post(base: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    post_raw(base, path, body.to_string(), headers).await
}

async fn post_raw(base: &str, path: &str, body: String, headers: &[(&str, &str)]) -> Reply {
    let mut rb = http_client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut rb = http_client().get(format!("{base}{path}"));
    if let Some(t) = token {
        rb = rb.header("authorization", format!("Bearer {t}"));
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap(),
    )
}

/// An open event stream: the response and the bytes not yet split into events.
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    async fn open(base: &str, path: &str, body: &Value) -> Events {
        let resp = http_client()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Events {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event's data, or None at the end of the body.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            match self.resp.chunk().await.unwrap() {
                Some(b) => self.buf.extend_from_slice(&b),
                None => {
                    assert!(self.buf.is_empty(), "trailing bytes");
                    return None;
                }
            }
        }
    }

    /// Every remaining event: the JSON chunks, and whether `[DONE]` ended the stream.
    async fn rest(mut self) -> (Vec<Value>, bool) {
        let mut chunks = Vec::new();
        while let Some(d) = self.next().await {
            if d == "[DONE]" {
                assert!(self.next().await.is_none(), "events after [DONE]");
                return (chunks, true);
            }
            chunks.push(serde_json::from_str(&d).unwrap());
        }
        (chunks, false)
    }
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Completion text, ids and finish reason of a completions stream's chunks.
fn concat_completion(chunks: &[Value]) -> (String, Vec<u32>, Option<String>) {
    let (mut text, mut all, mut finish) = (String::new(), Vec::new(), None);
    for c in chunks {
        assert_eq!(c["object"], "text_completion");
        if let Some(choice) = c["choices"].as_array().and_then(|a| a.first()) {
            text.push_str(choice["text"].as_str().unwrap());
            all.extend(ids(&choice["token_ids"]));
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    (text, all, finish)
}

/// The usage of the last chunk (no choices) when usage was asked for.
fn final_usage(chunks: &[Value]) -> Value {
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null(), "usage only on the last chunk: {c}");
    }
    last["usage"].clone()
}

#[test]
fn completions_and_chat_unary_and_streamed_give_the_golden_text() {
    let rt = runtime();
    let chatml = qwen2_with_chatml();
    for (name, dir) in [
        ("tiny-llama2-spm", fixture("tiny-llama2-spm")),
        ("tiny-qwen2", chatml.path().to_path_buf()),
    ] {
        let golden = golden(&dir);
        let server = Server::start_with_model(&dir, &["--http-listen", "127.0.0.1:0"], &[]);
        let base = server.http_base();
        rt.block_on(async {
            let (status, models) = get(&base, "/models", None).await;
            assert_eq!(status, 200);
            let model = models["data"][0]["id"].as_str().unwrap().to_string();
            for case in golden["cases"].as_array().unwrap() {
                let prompt = case["prompt"].as_str().unwrap();
                let want_ids = ids(&case["greedy_ids"]);
                let want_text = case["continuation_text"].as_str().unwrap();
                let prompt_len = case["prompt_ids"].as_array().unwrap().len();
                let body = json!({
                    "model": model, "prompt": prompt, "max_tokens": want_ids.len(),
                    "temperature": 0, "ignore_eos": true,
                });
                let r = post(&base, "/completions", &body, &[]).await;
                assert_eq!(r.status, 200, "{}", r.body);
                let choice = &r.body["choices"][0];
                assert_eq!(choice["text"], want_text, "{name}: {prompt}");
                assert_eq!(ids(&choice["token_ids"]), want_ids);
                assert_eq!(choice["finish_reason"], "length");
                assert_eq!(r.body["object"], "text_completion");
                assert_eq!(r.body["model"], model.as_str());
                let u = &r.body["usage"];
                assert_eq!(u["completion_tokens"], want_ids.len());
                assert_eq!(u["prompt_tokens"], prompt_len);
                assert_eq!(u["total_tokens"], want_ids.len() + prompt_len);

                let mut sbody = body.clone();
                sbody["stream"] = true.into();
                sbody["stream_options"] = json!({"include_usage": true});
                let (chunks, done) = Events::open(&base, "/completions", &sbody)
                    .await
                    .rest()
                    .await;
                assert!(done, "{name}: no [DONE]");
                let (text, got, finish) = concat_completion(&chunks);
                assert_eq!(text, want_text, "{name}: {prompt} (streamed)");
                assert_eq!(got, want_ids);
                assert_eq!(finish.as_deref(), Some("length"));
                assert_eq!(final_usage(&chunks)["completion_tokens"], want_ids.len());
            }
            if name == "tiny-qwen2" {
                chat_checks(&server, &base, &golden).await;
                logprob_checks(&server, &base, &golden).await;
            }
        });
    }
}

/// Chat, unary and streamed, is generation from the template's rendering of the messages.
async fn chat_checks(server: &Server, base: &str, golden: &Value) {
    let mut grpc = client(&server.url(), None).await;
    for case in golden["cases"].as_array().unwrap() {
        let messages = json!([
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": case["prompt"]},
        ]);
        let body = json!({
            "messages": messages, "max_completion_tokens": 12, "temperature": 0,
            "ignore_eos": true,
        });
        let r = post(base, "/chat/completions", &body, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["object"], "chat.completion");
        let msg = &r.body["choices"][0]["message"];
        assert_eq!(msg["role"], "assistant");
        let content = msg["content"].as_str().unwrap().to_string();
        assert_eq!(r.body["choices"][0]["finish_reason"], "length");
        assert_eq!(r.body["usage"]["completion_tokens"], 12);

        let rendered = grpc
            .render_chat(pb::RenderChatRequest {
                chat: Some(pb::ChatMessages {
                    messages: vec![
                        pb::ChatMessage {
                            role: "system".into(),
                            content: "Be terse.".into(),
                        },
                        pb::ChatMessage {
                            role: "user".into(),
                            content: case["prompt"].as_str().unwrap().into(),
                        },
                    ],
                    add_generation_prompt: true,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.body["usage"]["prompt_tokens"], rendered.ids.len());
        let plain = post(
            base,
            "/completions",
            &json!({"prompt": rendered.ids, "max_tokens": 12, "temperature": 0, "ignore_eos": true}),
            &[],
        )
        .await;
        assert_eq!(plain.body["choices"][0]["text"], content.as_str());

        let mut sbody = body.clone();
        sbody["stream"] = true.into();
        let (chunks, done) = Events::open(base, "/chat/completions", &sbody)
            .await
            .rest()
            .await;
        assert!(done);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let mut text = String::new();
        let mut finish = None;
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert!(c.get("usage").is_none(), "usage not asked for: {c}");
            let choice = &c["choices"][0];
            if let Some(t) = choice["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        assert_eq!(text, content);
        assert_eq!(finish.as_deref(), Some("length"));
    }
}

/// Logprobs over HTTP are the gRPC API's numbers for the same request, in OpenAI's shapes.
async fn logprob_checks(server: &Server, base: &str, golden: &Value) {
    let mut grpc = client(&server.url(), None).await;
    let prompt_ids = ids(&golden["cases"][0]["prompt_ids"]);
    let mut req = ids_request(prompt_ids.clone(), 6);
    req.logprobs = true;
    req.top_n = 3;
    let want = grpc.generate(req).await.unwrap().into_inner();

    let r = post(
        base,
        "/completions",
        &json!({"prompt": prompt_ids, "max_tokens": 6, "temperature": 0, "ignore_eos": true,
                "logprobs": 3}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let lp = &r.body["choices"][0]["logprobs"];
    let got: Vec<f32> = serde_json::from_value(lp["token_logprobs"].clone()).unwrap();
    assert_eq!(got, want.logprobs);
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 6);
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let values: Vec<f32> = top
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert!(!values.is_empty() && values.len() <= 3);
        // Greedy: the chosen token is the most likely one.
        let best = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(best, got[i]);
        assert_eq!(best, want.top_tokens[i].logprobs[0]);
    }

    // Chat: logprobs: true + top_logprobs, streamed, one entry per token.
    let body = json!({
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0,
        "ignore_eos": true, "logprobs": true, "top_logprobs": 2, "stream": true,
        "stream_options": {"include_usage": true},
    });
    let (chunks, done) = Events::open(base, "/chat/completions", &body)
        .await
        .rest()
        .await;
    assert!(done);
    let mut entries = Vec::new();
    for c in &chunks {
        if let Some(content) = c["choices"][0]["logprobs"]["content"].as_array() {
            entries.extend(content.iter().cloned());
        }
    }
    assert_eq!(entries.len(), 5);
    for e in &entries {
        let tops = e["top_logprobs"].as_array().unwrap();
        assert_eq!(tops.len(), 2);
        assert_eq!(e["logprob"], tops[0]["logprob"]);
        assert_eq!(
            e["bytes"],
            json!(e["token"].as_str().unwrap().as_bytes().to_vec())
        );
    }
    assert_eq!(final_usage(&chunks)["completion_tokens"], 5);
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metrics_text(server: &Server) -> String {
    http_client()
        .get(format!("http://{}/metrics", server.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Path, body, extra headers, the status and the `param` the error object must name.
type BadCase<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    u16,
    Option<&'a str>,
);

#[test]
fn bad_inputs_auth_and_request_ids() {
    let token = "http-test-token";
    let server = Server::start(
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--max-message-bytes",
            "8192",
        ],
        &[("HALO_AUTH_TOKEN", token)],
    );
    let base = server.http_base();
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let rt = runtime();
    rt.block_on(async {
        let mut grpc = client(&server.url(), Some(token)).await;
        let before = kv(&mut grpc).await;

        // Auth: health needs no token; everything else does, and the token must be right.
        let (status, h) = get(&base.replace("/v1", ""), "/health", None).await;
        assert_eq!((status, h["status"].as_str()), (200, Some("ok")));
        let (status, e) = get(&base, "/models", None).await;
        assert_eq!(status, 401);
        assert_eq!(e["error"]["type"], "authentication_error");
        let (status, m) = get(&base, "/models", Some(token)).await;
        assert_eq!(status, 200);
        let model = m["data"][0]["id"].as_str().unwrap().to_string();
        let ok = json!({"prompt": [5, 6, 7], "max_tokens": 2, "temperature": 0});
        for h in [
            vec![],
            vec![("authorization", "Bearer wrong")],
            vec![("authorization", token)],
        ] {
            let r = post(&base, "/completions", &ok, &h).await;
            assert_eq!(r.status, 401, "{h:?}");
            assert_eq!(r.body["error"]["code"], "invalid_api_key");
            assert!(!r.body.to_string().contains(token));
        }

        // The request id: given, echoed and in the response id; else made.
        let mut with_id = auth.to_vec();
        with_id.push(("x-request-id", "req-42"));
        let r = post(&base, "/completions", &ok, &with_id).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.headers["x-request-id"], "req-42");
        assert_eq!(r.body["id"], "cmpl-req-42");
        let r = post(&base, "/completions", &ok, &auth).await;
        assert!(r.headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("halo-"));

        // Every bad input: its status, OpenAI's error object, the field it names.
        let long_id = "x".repeat(200);
        let big = "word ".repeat(4000);
        let cases: Vec<BadCase> = vec![
            ("/completions", "{".into(), vec![], 400, None),
            ("/completions", "[1]".into(), vec![], 400, None),
            ("/completions", json!({"max_tokens": 2}).to_string(), vec![], 400, Some("prompt")),
            ("/completions", json!({"prompt": ""}).to_string(), vec![], 400, Some("prompt")),
            ("/completions", json!({"prompt": [], "max_tokens": 2}).to_string(), vec![], 400, Some("prompt")),
            ("/completions", json!({"prompt": ["a", "b"]}).to_string(), vec![], 400, Some("prompt")),
            ("/completions", json!({"prompt": "x", "temperature": "hot"}).to_string(), vec![], 400, Some("temperature")),
            ("/completions", json!({"prompt": "x", "temperature": -1}).to_string(), vec![], 400, Some("temperature")),
            ("/completions", json!({"prompt": "x", "top_p": 2}).to_string(), vec![], 400, Some("top_p")),
            ("/completions", json!({"prompt": "x", "top_k": -3}).to_string(), vec![], 400, Some("top_k")),
            ("/completions", json!({"prompt": "x", "min_p": 2}).to_string(), vec![], 400, Some("min_p")),
            ("/completions", json!({"prompt": "x", "presence_penalty": 3}).to_string(), vec![], 400, Some("presence_penalty")),
            ("/completions", json!({"prompt": "x", "frequency_penalty": -3}).to_string(), vec![], 400, Some("frequency_penalty")),
            ("/completions", json!({"prompt": "x", "repetition_penalty": 0}).to_string(), vec![], 400, Some("repetition_penalty")),
            ("/completions", json!({"prompt": "x", "n": 2}).to_string(), vec![], 400, Some("n")),
            ("/completions", json!({"prompt": "x", "max_tokens": 0}).to_string(), vec![], 400, Some("max_tokens")),
            ("/completions", json!({"prompt": "x", "max_tokens": "many"}).to_string(), vec![], 400, Some("max_tokens")),
            ("/completions", json!({"prompt": "x", "max_tokens": 100_000_000}).to_string(), vec![], 400, None),
            ("/completions", json!({"prompt": "x", "stop": 5}).to_string(), vec![], 400, Some("stop")),
            ("/completions", json!({"prompt": "x", "stop": vec!["a"; 9]}).to_string(), vec![], 400, None),
            ("/completions", json!({"prompt": "x", "seed": "s"}).to_string(), vec![], 400, Some("seed")),
            ("/completions", json!({"prompt": "x", "echo": true}).to_string(), vec![], 400, Some("echo")),
            ("/completions", json!({"prompt": "x", "logprobs": -1}).to_string(), vec![], 400, Some("logprobs")),
            ("/completions", json!({"prompt": "x", "logprobs": 1000}).to_string(), vec![], 400, None),
            ("/completions", json!({"prompt": [10_000_000]}).to_string(), vec![], 400, None),
            ("/completions", json!({"prompt": "x", "stream_options": {"include_usage": true}}).to_string(), vec![], 400, Some("stream_options")),
            ("/completions", json!({"prompt": "x", "model": "not-this-one"}).to_string(), vec![], 404, Some("model")),
            ("/completions", json!({"prompt": "x"}).to_string(), vec![("x-request-id", long_id.as_str())], 400, Some("x-request-id")),
            ("/completions", json!({"prompt": "x"}).to_string(), vec![("halo-timeout-ms", "soon")], 400, Some("halo-timeout-ms")),
            ("/completions", json!({"prompt": big}).to_string(), vec![], 413, None),
            ("/chat/completions", json!({"messages": []}).to_string(), vec![], 400, Some("messages")),
            ("/chat/completions", json!({"messages": "hi"}).to_string(), vec![], 400, Some("messages")),
            ("/chat/completions", json!({"messages": [{"role": 1, "content": "x"}]}).to_string(), vec![], 400, Some("messages[0].role")),
            ("/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}).to_string(), vec![], 400, Some("top_logprobs")),
            // tiny-mha has no chat template: a 400 naming the problem.
            ("/chat/completions", json!({"messages": [{"role": "user", "content": "x"}]}).to_string(), vec![], 400, Some("messages")),
            ("/nothing", "{}".into(), vec![], 404, None),
        ];
        for (path, body, extra, status, param) in cases {
            let mut h = auth.to_vec();
            h.extend(extra.iter().cloned());
            let r = post_raw(&base, path, body.clone(), &h).await;
            let short: String = body.chars().take(80).collect();
            assert_eq!(r.status, status, "{path} {short}: {}", r.body);
            let e = &r.body["error"];
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.body);
            assert!(e["type"].is_string(), "{}", r.body);
            assert!(e.get("code").is_some() && e.get("param").is_some(), "{}", r.body);
            if let Some(p) = param {
                assert_eq!(e["param"], p, "{path} {short}: {}", r.body);
            }
            assert!(!e["message"].as_str().unwrap().contains("word word"));
        }
        let r = post(&base, "/completions", &json!({"prompt": "x", "model": model, "max_tokens": 2}), &auth).await;
        assert_eq!(r.status, 200, "the served model's own name is accepted");

        // Unknown fields are ignored; nothing above changed the engine's state.
        let r = post(&base, "/completions", &json!({"prompt": "x", "max_tokens": 1, "user": "u", "frobnicate": [1]}), &auth).await;
        assert_eq!(r.status, 200);
        let after = wait_idle(&mut grpc, Duration::from_secs(10)).await;
        assert_eq!(after.free_blocks, before.free_blocks);
        let m = metrics_text(&server).await;
        assert!(
            metric(&m, "halo_requests_total{rpc=\"openai_completions\",outcome=\"invalid_argument\",code=\"INVALID_ARGUMENT\"}") >= 20,
            "{m}"
        );
        assert!(metric(&m, "halo_requests_total{rpc=\"openai_completions\",outcome=\"length\",code=\"OK\"}") >= 3, "{m}");
    });
}

/// Generation budget for a long request: most of what the worker allows.
async fn long_tokens(c: &mut Client) -> u32 {
    let info = c
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let l = info.limits.unwrap();
    l.max_new_tokens.min(l.max_total_tokens - 8).min(3000)
}

#[test]
fn queue_full_deadline_and_disconnects_free_blocks() {
    let server = Server::start(
        &["--http-listen", "127.0.0.1:0", "--max-concurrent", "1"],
        &[],
    );
    let base = server.http_base();
    let rt = runtime();
    rt.block_on(async {
        let mut grpc = client(&server.url(), None).await;
        let long = long_tokens(&mut grpc).await;
        let body = json!({"prompt": prompt(8, 1), "max_tokens": long, "temperature": 0,
                          "ignore_eos": true, "stream": true});
        let mut stream = Events::open(&base, "/completions", &body).await;
        assert!(stream.next().await.is_some());

        // The one slot is taken: 429 at once, with OpenAI's error object.
        let r = post(
            &base,
            "/completions",
            &json!({"prompt": "x", "max_tokens": 2}),
            &[],
        )
        .await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "queue_full");
        assert_eq!(r.body["error"]["type"], "rate_limit_error");
        let k = kv(&mut grpc).await;
        assert!(k.free_blocks < k.total_blocks, "the stream holds blocks");

        // Disconnect mid-stream: the request is cancelled and its blocks freed.
        drop(stream);
        wait_idle(&mut grpc, Duration::from_secs(10)).await;

        // A unary request whose client goes away is cancelled too.
        let unary = json!({"prompt": prompt(8, 2), "max_tokens": long, "temperature": 0,
                           "ignore_eos": true});
        let b = base.clone();
        let task = tokio::spawn(async move { post(&b, "/completions", &unary, &[]).await });
        let until = Instant::now() + Duration::from_secs(10);
        while kv(&mut grpc).await.running_requests == 0 {
            assert!(Instant::now() < until, "the unary request never ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        wait_idle(&mut grpc, Duration::from_secs(10)).await;

        // A deadline that passes: 504, blocks freed.
        let r = post(
            &base,
            "/completions",
            &json!({"prompt": prompt(8, 3), "max_tokens": long, "ignore_eos": true}),
            &[("halo-timeout-ms", "50")],
        )
        .await;
        assert_eq!(r.status, 504, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "deadline_exceeded");
        wait_idle(&mut grpc, Duration::from_secs(10)).await;

        // A deadline that passes mid-stream: the status line is sent, so the stream ends with
        // an error event (OpenAI's error object) and no [DONE].
        let resp = http_client()
            .post(format!("{base}/completions"))
            .header("halo-timeout-ms", "400")
            .body(
                json!({"prompt": prompt(8, 4), "max_tokens": long, "ignore_eos": true,
                       "stream": true})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let (chunks, done) = Events {
            resp,
            buf: Vec::new(),
        }
        .rest()
        .await;
        assert!(!done, "an interrupted stream has no [DONE]");
        let last = chunks.last().unwrap();
        assert_eq!(last["error"]["code"], "deadline_exceeded", "{last}");
        wait_idle(&mut grpc, Duration::from_secs(10)).await;

        let m = metrics_text(&server).await;
        for outcome in ["cancelled", "deadline_exceeded"] {
            let name = format!(
                "halo_requests_total{{rpc=\"openai_completions_stream\",outcome=\"{outcome}\""
            );
            assert!(metric(&m, &name) >= 1, "{name}: {m}");
        }
        assert!(
            metric(
                &m,
                "halo_requests_total{rpc=\"openai_completions\",outcome=\"queue_full\""
            ) >= 1,
            "{m}"
        );
        assert!(
            metric(
                &m,
                "halo_requests_total{rpc=\"openai_completions\",outcome=\"cancelled\""
            ) >= 1,
            "{m}"
        );
    });
}

#[test]
fn sigterm_drains_http_streams() {
    let mut server = Server::start(&["--http-listen", "127.0.0.1:0"], &[]);
    let base = server.http_base();
    let rt = runtime();
    let tokens = rt.block_on(async {
        let mut grpc = client(&server.url(), None).await;
        long_tokens(&mut grpc).await.min(1500)
    });
    let (results, refused) = rt.block_on(async {
        let mut streams = Vec::new();
        for salt in 0..2 {
            let body = json!({"prompt": prompt(8, salt), "max_tokens": tokens, "temperature": 0,
                              "ignore_eos": true, "stream": true,
                              "stream_options": {"include_usage": true}});
            let mut s = Events::open(&base, "/completions", &body).await;
            assert!(s.next().await.is_some());
            streams.push(tokio::spawn(s.rest()));
        }
        server.sigterm();
        // New work is refused with 503 while the streams drain.
        let mut refused = None;
        let until = Instant::now() + Duration::from_secs(5);
        while refused.is_none() && Instant::now() < until {
            let r = post(
                &base,
                "/completions",
                &json!({"prompt": "x", "max_tokens": 1}),
                &[],
            )
            .await;
            if r.status == 503 {
                refused = Some(r.body);
                // Health says so too, without a token, while the streams still run.
                let (status, h) = get(&base.replace("/v1", ""), "/health", None).await;
                assert_eq!((status, h["status"].as_str()), (503, Some("unavailable")));
            }
        }
        let mut results = Vec::new();
        for s in streams {
            results.push(s.await.unwrap());
        }
        (results, refused)
    });
    let refused = refused.expect("no 503 while draining");
    assert_eq!(refused["error"]["code"], "shutting_down");
    for (chunks, done) in results {
        assert!(done, "a drained stream ends with [DONE]");
        assert_eq!(final_usage(&chunks)["completion_tokens"], tokens);
    }
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
}
