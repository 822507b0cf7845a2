//! `POST /v1/completions`: a prompt (text, or token ids) continued by the model.

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
use pb::generate_request::Prompt;
use serde_json::Value;

/// OpenAI's default `max_tokens` for completions.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

pub async fn handle(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let refuse = |e| generate::refuse(&state, Kind::Completion, false, e);
    let body = read_body(&state, body).map_err(refuse)?;
    let job = parse(&state, &body).map_err(refuse)?;
    generate::run(state, headers, job).await
}

fn parse(state: &HttpState, body: &[u8]) -> Result<Job, ApiError> {
    let f = Fields::parse(body)?;
    let common = types::common(&f)?;
    state.check_model(common.model.as_deref())?;
    if f.get::<bool>("echo", "a boolean")?.unwrap_or(false) {
        return Err(ApiError::invalid(
            "echo",
            "echo is not supported: the response holds the completion only",
        ));
    }
    if let Some(b) = f.get::<i64>("best_of", "an integer")? {
        if b != 1 {
            return Err(ApiError::invalid(
                "best_of",
                format!("best_of is {b}: this server generates one sequence per request"),
            ));
        }
    }
    if f.get::<String>("suffix", "a string")?
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::invalid(
            "suffix",
            "suffix (insertion) is not supported",
        ));
    }
    let prompt = prompt(f.raw("prompt"))?;
    let max_new_tokens = types::max_tokens(&f, &["max_tokens"])?.unwrap_or(DEFAULT_MAX_TOKENS);
    // `logprobs: N` asks for the sampled token's logprob and the N most likely alternatives.
    let top = match f.raw("logprobs") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "logprobs",
                        "logprobs must be a whole number (alternatives per token)",
                    )
                })?,
        ),
    };
    Ok(Job {
        kind: Kind::Completion,
        request: pb::GenerateRequest {
            request_id: String::new(),
            prompt: Some(prompt),
            max_new_tokens,
            sampling: Some(common.sampling),
            stop: Some(common.stop),
            logprobs: top.is_some(),
            top_n: top.unwrap_or(0),
            cache_salt: f
                .get::<String>("cache_salt", "a string")?
                .unwrap_or_default(),
        },
        stream: common.stream,
        include_usage: common.include_usage,
    })
}

/// A string, a list of token ids, or a list holding exactly one of these.
fn prompt(v: Option<&Value>) -> Result<Prompt, ApiError> {
    let what = "prompt must be a string, a list of token ids, or a list holding one of these";
    let ids = |v: &Value| serde_json::from_value::<Vec<u32>>(v.clone()).ok();
    match v {
        None => Err(ApiError::invalid("prompt", "prompt is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) => {
            if let Some(ids) = ids(&Value::Array(items.clone())) {
                return Ok(Prompt::TokenIds(pb::TokenIds { ids }));
            }
            if items.len() > 1 && items.iter().all(|i| i.is_string() || i.is_array()) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!(
                        "prompt holds {} prompts: this server takes one prompt per request",
                        items.len()
                    ),
                ));
            }
            match items.first() {
                Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
                Some(inner @ Value::Array(_)) => ids(inner)
                    .map(|ids| Prompt::TokenIds(pb::TokenIds { ids }))
                    .ok_or_else(|| ApiError::invalid("prompt", what)),
                _ => Err(ApiError::invalid("prompt", what)),
            }
        }
        Some(_) => Err(ApiError::invalid("prompt", what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_forms() {
        assert_eq!(
            prompt(Some(&json!("hi"))).unwrap(),
            Prompt::Text("hi".into())
        );
        assert_eq!(
            prompt(Some(&json!(["hi"]))).unwrap(),
            Prompt::Text("hi".into())
        );
        let ids = Prompt::TokenIds(pb::TokenIds { ids: vec![1, 2] });
        assert_eq!(prompt(Some(&json!([1, 2]))).unwrap(), ids);
        assert_eq!(prompt(Some(&json!([[1, 2]]))).unwrap(), ids);
        // An empty list is an empty id prompt: the shared check names it.
        assert_eq!(
            prompt(Some(&json!([]))).unwrap(),
            Prompt::TokenIds(pb::TokenIds { ids: vec![] })
        );
        for bad in [
            json!(["a", "b"]),
            json!([[1], [2]]),
            json!(5),
            json!([-1]),
            json!({}),
        ] {
            let e = prompt(Some(&bad)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("prompt"), "{bad}");
        }
        assert!(prompt(None).is_err());
    }
}
