//! Completion text over the worker API for every fixture, the SentencePiece one included: the
//! unary `Generate` text and the concatenated `GenerateStream` deltas both equal transformers'
//! continuation text (`decode(prompt + ids) - decode(prompt)`, golden.json's
//! `continuation_text`), so the first word keeps its leading space and byte-fallback runs are
//! neither dropped nor stalled. Every prompt goes in as text, tokenized by the worker.

mod serve_common;

use halo_proto::worker::v1 as pb;
use serde_json::Value;
use serve_common::*;
use std::path::Path;

fn text_request(text: &str) -> pb::GenerateRequest {
    pb::GenerateRequest {
        prompt: Some(pb::generate_request::Prompt::Text(text.into())),
        max_new_tokens: 48,
        stop: Some(pb::StopCriteria {
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn unary_and_streamed_text_equal_transformers_continuation_text() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    for name in ["tiny-llama2-spm", "tiny-qwen2"] {
        let dir = fixtures.join(name);
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                .unwrap();
        let server = Server::start_with_model(&dir, &[], &[]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = client(&server.url(), None).await;
            for case in golden["cases"].as_array().unwrap() {
                let prompt = case["prompt"].as_str().unwrap();
                let want_ids: Vec<u32> =
                    serde_json::from_value(case["greedy_ids"].clone()).unwrap();
                let want_text = case["continuation_text"].as_str().unwrap();
                let unary = c.generate(text_request(prompt)).await.unwrap().into_inner();
                assert_eq!(unary.token_ids, want_ids, "{name}: {prompt}");
                assert_eq!(unary.text, want_text, "{name}: {prompt}");

                let mut s = c
                    .generate_stream(text_request(prompt))
                    .await
                    .unwrap()
                    .into_inner();
                let (mut ids, mut text) = (Vec::new(), String::new());
                while let Some(m) = s.message().await.unwrap() {
                    ids.extend(m.token_ids);
                    text.push_str(&m.text);
                }
                assert_eq!(ids, want_ids, "{name}: {prompt}");
                assert_eq!(text, want_text, "{name}: {prompt} (streamed)");
            }
        });
    }
}
