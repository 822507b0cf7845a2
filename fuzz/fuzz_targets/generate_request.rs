//! A client's GenerateRequest from arbitrary bytes, through the server's request path in the
//! order the service runs it: protobuf decode, `convert::request_id`, `convert::parse_generate`
//! (wire checks), prompt tokenization, then the engine's `validate::validate_request`
//! (limits and vocabulary). Properties: nothing panics; every rejection maps to
//! INVALID_ARGUMENT and never quotes the prompt; an accepted request has every float finite and
//! in range, the wire's values carried over unchanged, and every limit respected.

#![no_main]

use halo_engine::validate::validate_request;
use halo_engine::Limits;
use halo_fuzz::{chat_template, tokenizer, vocab_size};
use halo_model::chat_template::ChatMessage;
use halo_proto::worker::v1 as pb;
use halo_server::convert::{self, PromptInput};
use halo_server::status::submit_error;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;

fn limits() -> Limits {
    Limits {
        max_input_tokens: 64,
        max_total_tokens: 96,
        max_new_tokens: 64,
        max_concurrent_requests: 4,
        max_stop_sequences: 8,
        max_stop_sequence_bytes: 32,
        max_top_n: 5,
    }
}

/// An error message must not echo the prompt (prompts never reach logs or errors). Messages are
/// ASCII templates with numbers and field names, so an ASCII prompt can be a substring of one by
/// chance (the fuzzer finds "must be at least"); only a prompt with a non-ASCII or control
/// character, which no template contains, is checked.
fn assert_not_quoted(msg: &str, prompt: Option<&str>) {
    let distinctive = |p: &&str| {
        p.chars().count() >= 4 && p.chars().any(|c| !c.is_ascii() || c.is_ascii_control())
    };
    if let Some(p) = prompt.filter(distinctive) {
        assert!(!msg.contains(p), "error message quotes the prompt: {msg:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = pb::GenerateRequest::decode(data) else {
        return;
    };
    let text = match &wire.prompt {
        Some(pb::generate_request::Prompt::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let wire_sampling = wire.sampling;
    let request_id = match convert::request_id(&wire.request_id) {
        Ok(id) => id,
        Err(e) => return assert_not_quoted(&e.to_string(), text.as_deref()),
    };
    assert!(!request_id.is_empty() && !request_id.chars().any(char::is_control));
    let mut parsed = match convert::parse_generate(wire.clone(), request_id, None) {
        Ok(p) => p,
        Err(e) => return assert_not_quoted(&e.to_string(), text.as_deref()),
    };
    parsed.request.prompt = match parsed.prompt {
        PromptInput::Ids(ids) => ids,
        PromptInput::Text(t) => match tokenizer().encode(t.as_str(), true) {
            Ok(enc) => enc.get_ids().to_vec(),
            Err(_) => return,
        },
        // The server renders chat messages with the model's template, then tokenizes the text
        // without special tokens (the template writes them): a bad conversation is a template
        // error, never a panic.
        PromptInput::Chat(chat) => {
            let messages: Vec<ChatMessage> = chat
                .messages
                .into_iter()
                .map(|m| ChatMessage::new(m.role, m.content))
                .collect();
            let Ok(text) = chat_template().render(&messages, chat.add_generation_prompt) else {
                return;
            };
            match tokenizer().encode(text.as_str(), false) {
                Ok(enc) => enc.get_ids().to_vec(),
                Err(_) => return,
            }
        }
    };
    let req = parsed.request;
    if let Err(e) = validate_request(&req, &limits(), vocab_size()) {
        let status = submit_error(&e);
        assert_eq!(status.code(), Code::InvalidArgument, "{e}");
        return assert_not_quoted(status.message(), text.as_deref());
    }

    // Accepted: every float finite and in its documented range.
    let s = &req.sampling;
    assert!(s.temperature.is_finite() && s.temperature >= 0.0, "{s:?}");
    assert!(
        s.top_p.is_finite() && s.top_p > 0.0 && s.top_p <= 1.0,
        "{s:?}"
    );
    assert!(
        s.min_p.is_finite() && (0.0..=1.0).contains(&s.min_p),
        "{s:?}"
    );
    assert!(
        s.repetition_penalty.is_finite() && s.repetition_penalty > 0.0,
        "{s:?}"
    );
    for v in [s.frequency_penalty, s.presence_penalty] {
        assert!(v.is_finite() && (-2.0..=2.0).contains(&v), "{s:?}");
    }
    // ... carried over from the wire unchanged (no silent clamping or defaulting of a set value).
    if let Some(w) = &wire_sampling {
        assert_eq!(s.temperature, w.temperature);
        assert_eq!(i64::from(s.top_k), i64::from(w.top_k));
        assert_eq!(s.top_p, w.top_p.unwrap_or(1.0));
        assert_eq!(s.min_p, w.min_p);
        assert_eq!(s.repetition_penalty, w.repetition_penalty.unwrap_or(1.0));
        assert_eq!(s.frequency_penalty, w.frequency_penalty);
        assert_eq!(s.presence_penalty, w.presence_penalty);
        if let Some(seed) = w.seed {
            assert_eq!(s.seed, seed);
        }
    }
    // ... and within every limit.
    let l = limits();
    let vocab = vocab_size();
    assert!(!req.prompt.is_empty() && req.prompt.len() <= l.max_input_tokens);
    assert!(req.max_new_tokens >= 1 && req.max_new_tokens <= l.max_new_tokens);
    assert_eq!(req.max_new_tokens, wire.max_new_tokens as usize);
    assert!(req.prompt.len() + req.max_new_tokens <= l.max_total_tokens);
    assert!(req.prompt.iter().all(|&t| (t as usize) < vocab));
    assert!(req
        .stop
        .stop_token_ids
        .iter()
        .all(|&t| (t as usize) < vocab));
    assert!(req.stop.stop_sequences.len() <= l.max_stop_sequences);
    assert!(req
        .stop
        .stop_sequences
        .iter()
        .all(|s| !s.is_empty() && s.len() <= l.max_stop_sequence_bytes));
    assert!(req.top_n <= l.max_top_n);
    assert_eq!(req.logprobs, wire.logprobs);
});
