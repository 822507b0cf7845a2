//! Chat messages over the worker API: `RenderChat` gives the model's chat template's prompt as
//! transformers renders it (tests/fixtures/chat_templates/golden.json) with the template's BOS
//! once, `Generate` with a `messages` prompt generates from exactly those ids, and a template
//! that raises, or a model without a template, is INVALID_ARGUMENT naming the error.

mod serve_common;

use halo_proto::worker::v1 as pb;
use serde_json::Value;
use serve_common::*;
use std::path::Path;
use tonic::Code;

fn chat(messages: &Value, add_generation_prompt: bool) -> pb::ChatMessages {
    pb::ChatMessages {
        messages: messages
            .as_array()
            .unwrap()
            .iter()
            .map(|m| pb::ChatMessage {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect(),
        add_generation_prompt,
    }
}

/// tiny-llama2-spm with the Mistral template as the "default" of a list of named templates.
fn model_with_template(template: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama2-spm");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join("tokenizer_config.json");
    let mut tc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tc["chat_template"] = serde_json::json!([
        {"name": "tool_use", "template": "{{ raise_exception('not this one') }}"},
        {"name": "default", "template": template},
    ]);
    std::fs::write(&path, serde_json::to_string(&tc).unwrap()).unwrap();
    dir
}

#[test]
fn messages_render_and_generate_as_transformers_renders_them() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates/golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mistral = golden["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "mistral")
        .unwrap();
    let model = model_with_template(mistral["template"].as_str().unwrap());
    let server = Server::start_with_model(model.path(), &[], &[]);
    let plain = Server::start_with_model(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama2-spm"),
        &[],
        &[],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = client(&server.url(), None).await;
        let mut rendered = 0;
        for case in mistral["cases"].as_array().unwrap() {
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let req = pb::RenderChatRequest {
                chat: Some(chat(&case["messages"], gen)),
            };
            match (c.render_chat(req).await, case.get("rendered")) {
                (Ok(r), Some(want)) => {
                    let r = r.into_inner();
                    assert_eq!(r.text, want.as_str().unwrap());
                    let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
                    assert_eq!(r.ids, want_ids);
                    assert_eq!(
                        r.ids.iter().filter(|&&i| i == 1).count(),
                        r.text.matches("<s>").count()
                    );
                    rendered += 1;

                    // generating from messages is generating from the rendered ids
                    let mut from_chat = ids_request(Vec::new(), 8);
                    from_chat.prompt = Some(pb::generate_request::Prompt::Messages(chat(
                        &case["messages"],
                        gen,
                    )));
                    let a = c.generate(from_chat).await.unwrap().into_inner();
                    let b = c
                        .generate(ids_request(r.ids.clone(), 8))
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(a.token_ids, b.token_ids);
                    assert_eq!(a.text, b.text);
                    assert_eq!(
                        a.finish.unwrap().usage.unwrap().prompt_tokens as usize,
                        r.ids.len()
                    );
                }
                (Err(s), None) => {
                    let want = case["error"].as_str().unwrap();
                    assert_eq!(s.code(), Code::InvalidArgument);
                    assert!(
                        s.message().contains(want),
                        "{:?} lacks {want:?}",
                        s.message()
                    );
                    // the same from Generate
                    let mut r = ids_request(Vec::new(), 8);
                    r.prompt = Some(pb::generate_request::Prompt::Messages(chat(
                        &case["messages"],
                        gen,
                    )));
                    let s = c.generate(r).await.unwrap_err();
                    assert_eq!(s.code(), Code::InvalidArgument);
                    assert!(s.message().contains(want), "{:?}", s.message());
                }
                (got, want) => panic!("{got:?}, want {want:?}"),
            }
        }
        assert!(rendered >= 2);

        // a model without a template
        let mut p = client(&plain.url(), None).await;
        let s = p
            .render_chat(pb::RenderChatRequest {
                chat: Some(chat(
                    &serde_json::json!([{"role": "user", "content": "hi"}]),
                    true,
                )),
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("no chat template"), "{}", s.message());
    });
}
