//! Chat templates render exactly as transformers' `apply_chat_template` renders them
//! (`tests/fixtures/chat_templates/golden.json`, written by `ci/oracle/chat_templates.py`):
//! Llama 3, Llama 2 with a system message, Mistral, Qwen2/ChatML, Gemma (which rejects a system
//! message) and a template using namespace(), whitespace control and Python string methods. The
//! rendered prompt tokenizes to transformers' ids, the template's BOS once; a template that raises
//! is a render error naming transformers' message.

use halo_model::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError};
use halo_model::config::ModelConfig;
use halo_model::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn templates_render_as_transformers_renders_them() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/chat_templates/golden.json")).unwrap(),
    )
    .unwrap();
    let dir = root().join("tests/fixtures/models/tiny-llama2-spm");
    let config = ModelConfig::from_dir(&dir).unwrap();
    let tok = Tokenizer::from_dir(&dir, &config).unwrap();
    let bos = golden["bos_token"].as_str().unwrap();
    let eos = golden["eos_token"].as_str().unwrap();
    let (mut rendered, mut errors) = (0, 0);
    for t in golden["templates"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let source = t["template"].as_str().unwrap();
        let tmpl = ChatTemplate::new(source, bos, eos).unwrap();
        // the model's own BOS/EOS texts are the same ones
        let for_model = ChatTemplate::for_model(source, &tok).unwrap();
        for case in t["cases"].as_array().unwrap() {
            let messages: Vec<ChatMessage> =
                serde_json::from_value(case["messages"].clone()).unwrap();
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let what = format!("{name} / {} / gen {gen}", case["conversation"]);
            let got = tmpl.render(&messages, gen);
            assert_eq!(got, for_model.render(&messages, gen), "{what}");
            if let Some(want) = case.get("rendered") {
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(got, want.as_str().unwrap(), "{what}");
                let ids = ChatTemplate::encode(&tok, &got).unwrap();
                let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
                assert_eq!(ids, want_ids, "{what}");
                let bos_id = tok.bos_token_id().unwrap();
                assert!(
                    ids.windows(2).all(|w| w != [bos_id, bos_id]),
                    "{what}: doubled BOS"
                );
                rendered += 1;
            } else {
                let want = case["error"].as_str().unwrap();
                match got {
                    Err(ChatTemplateError::Render(msg)) => {
                        assert!(msg.contains(want), "{what}: {msg:?} lacks {want:?}")
                    }
                    other => panic!("{what}: {other:?}, want the error {want:?}"),
                }
                errors += 1;
            }
        }
    }
    assert!(
        rendered >= 40 && errors >= 10,
        "{rendered} rendered, {errors} errors"
    );
}
