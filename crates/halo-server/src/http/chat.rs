//! `POST /v1/chat/completions`: messages rendered by the model's chat template (the same
//! rendering as the worker API's `messages` prompt), then continued by the model.

use super::error::ApiError;
use super::generate::{self, Job, Kind};
use super::types::{self, Fields};
use super::{read_body, HttpState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use halo_proto::worker::v1 as pb;
use serde_json::Value;

/// The most alternatives per token OpenAI's chat API allows (`top_logprobs`).
pub const MAX_TOP_LOGPROBS: u64 = 20;

pub async fn handle(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let refuse = |e| generate::refuse(&state, Kind::Chat, false, e);
    let body = read_body(&state, body).map_err(refuse)?;
    let (job, chat, max_tokens) = parse(&state, &body).map_err(refuse)?;
    // The template runs off the runtime; its error (or a model without one) is a 400 naming it.
    let (_, ids) = state.admission.render_chat(chat).await.map_err(|s| {
        let e = ApiError::from_status(&s).with_param("messages");
        generate::refuse(&state, Kind::Chat, job.stream, e)
    })?;
    let mut job = job;
    job.request.max_new_tokens = max_tokens.unwrap_or_else(|| state.room_after(ids.len()));
    job.request.prompt = Some(pb::generate_request::Prompt::TokenIds(pb::TokenIds { ids }));
    generate::run(state, headers, job).await
}

fn parse(state: &HttpState, body: &[u8]) -> Result<(Job, pb::ChatMessages, Option<u32>), ApiError> {
    let f = Fields::parse(body)?;
    let common = types::common(&f)?;
    state.check_model(common.model.as_deref())?;
    let chat = pb::ChatMessages {
        messages: messages(f.raw("messages"))?,
        add_generation_prompt: f
            .get::<bool>("add_generation_prompt", "a boolean")?
            .unwrap_or(true),
    };
    let max_tokens = types::max_tokens(&f, &["max_completion_tokens", "max_tokens"])?;
    let logprobs = f.get::<bool>("logprobs", "a boolean")?.unwrap_or(false);
    let top_n = match f.raw("top_logprobs") {
        None => 0,
        Some(v) => {
            let n =
                v.as_u64()
                    .filter(|&n| n <= MAX_TOP_LOGPROBS)
                    .ok_or_else(|| {
                        ApiError::invalid(
                    "top_logprobs",
                    format!("top_logprobs must be a whole number between 0 and {MAX_TOP_LOGPROBS}"),
                )
                    })?;
            if !logprobs {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs needs logprobs set to true",
                ));
            }
            n as u32
        }
    };
    let job = Job {
        kind: Kind::Chat,
        request: pb::GenerateRequest {
            request_id: String::new(),
            prompt: None,
            max_new_tokens: 0,
            sampling: Some(common.sampling),
            stop: Some(common.stop),
            logprobs,
            top_n,
            cache_salt: f
                .get::<String>("cache_salt", "a string")?
                .unwrap_or_default(),
        },
        stream: common.stream,
        include_usage: common.include_usage,
    };
    Ok((job, chat, max_tokens))
}

/// `messages`: objects with a `role` and a `content` that is a string, a list of text parts
/// (joined), or null (an assistant turn without text).
fn messages(v: Option<&Value>) -> Result<Vec<pb::ChatMessage>, ApiError> {
    let Some(Value::Array(items)) = v else {
        return Err(ApiError::invalid(
            "messages",
            "messages is required: a list of {role, content} objects",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "messages is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |field: &str| format!("messages[{i}].{field}");
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(at("role"), format!("{} must be a string", at("role"))))?;
            let content = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.get("type").and_then(Value::as_str), part.get("text")) {
                            (Some("text"), Some(Value::String(t))) => text.push_str(t),
                            _ => {
                                return Err(ApiError::invalid(
                                    at("content"),
                                    format!("{}: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported", at("content")),
                                ))
                            }
                        }
                    }
                    text
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        at("content"),
                        format!("{} must be a string or a list of text parts", at("content")),
                    ))
                }
            };
            Ok(pb::ChatMessage {
                role: role.to_string(),
                content,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_forms() {
        let m = messages(Some(&json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ])))
        .unwrap();
        assert_eq!(m[1].content, "ab");
        assert_eq!(m[2].content, "");
        let e = messages(Some(
            &json!([{"role": "user", "content": [{"type": "image_url"}]}]),
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = messages(Some(&json!([{"content": "x"}]))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        assert!(messages(Some(&json!([]))).is_err());
        assert!(messages(None).is_err());
        assert!(messages(Some(&json!("hi"))).is_err());
    }
}
