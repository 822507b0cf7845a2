//! The request bodies as OpenAI clients send them, and the response bodies they expect.
//!
//! Requests are read field by field from the JSON object, so a field of the wrong type is a 400
//! that names the field (without quoting its value, which may be prompt text), while fields this
//! server does not know are ignored, as OpenAI clients expect of compatible servers. The values
//! are then checked by the same code as gRPC requests (`crate::convert`) and the engine.

use super::error::ApiError;
use halo_proto::worker::v1 as pb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// OpenAI's default sampling temperature when a request leaves it out.
pub const DEFAULT_TEMPERATURE: f32 = 1.0;

/// A request body: one JSON object.
pub struct Fields(Map<String, Value>);

impl Fields {
    pub fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(_) => Err(ApiError::bad_request(
                "the request body must be a JSON object",
            )),
            // serde_json's message gives the line and column, never the input.
            Err(e) => Err(ApiError::bad_request(format!(
                "the request body is not valid JSON: {e}"
            ))),
        }
    }

    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// `name` as a `T`; absent and `null` are `None`, another type is a 400 naming `name`.
    pub fn get<T: DeserializeOwned>(
        &self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|_| ApiError::invalid(name, format!("{name} must be {expected}"))),
        }
    }
}

/// The sampling and stop fields both endpoints share, as the worker API's messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub model: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub sampling: pb::SamplingParams,
    pub stop: pb::StopCriteria,
}

pub fn common(f: &Fields) -> Result<Common, ApiError> {
    let model = f.get::<String>("model", "a string")?;
    if let Some(n) = f.get::<i64>("n", "an integer")? {
        if n != 1 {
            return Err(ApiError::invalid(
                "n",
                format!("n is {n}: this server returns one choice per request (n = 1)"),
            ));
        }
    }
    let stream = f.get::<bool>("stream", "a boolean")?.unwrap_or(false);
    let include_usage = match f.raw("stream_options") {
        None => false,
        Some(Value::Object(o)) => {
            if !stream {
                return Err(ApiError::invalid(
                    "stream_options",
                    "stream_options is only allowed when stream is true",
                ));
            }
            match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::invalid(
                        "stream_options.include_usage",
                        "stream_options.include_usage must be a boolean",
                    ))
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options must be an object",
            ))
        }
    };
    let number = "a number";
    let temperature = f.get::<f32>("temperature", number)?;
    // vLLM's convention: top_k = -1 (like 0) turns the filter off.
    let top_k = match f.get::<i64>("top_k", "an integer")? {
        None | Some(-1) => 0,
        Some(k) => i32::try_from(k).unwrap_or(if k < 0 { -2 } else { i32::MAX }),
    };
    let seed = match f.raw("seed") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|s| s as u64))
                .ok_or_else(|| ApiError::invalid("seed", "seed must be an integer"))?,
        ),
    };
    let sampling = pb::SamplingParams {
        temperature: temperature.unwrap_or(DEFAULT_TEMPERATURE),
        top_k,
        top_p: f.get::<f32>("top_p", number)?,
        min_p: f.get::<f32>("min_p", number)?.unwrap_or(0.0),
        repetition_penalty: f.get::<f32>("repetition_penalty", number)?,
        frequency_penalty: f.get::<f32>("frequency_penalty", number)?.unwrap_or(0.0),
        presence_penalty: f.get::<f32>("presence_penalty", number)?.unwrap_or(0.0),
        seed,
    };
    let stop_sequences = match f.raw("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(v) => Vec::<String>::deserialize(v)
            .map_err(|_| ApiError::invalid("stop", "stop must be a string or a list of strings"))?,
    };
    let stop = pb::StopCriteria {
        stop_sequences,
        stop_token_ids: f
            .get::<Vec<u32>>("stop_token_ids", "a list of token ids")?
            .unwrap_or_default(),
        ignore_eos: f.get::<bool>("ignore_eos", "a boolean")?.unwrap_or(false),
    };
    Ok(Common {
        model,
        stream,
        include_usage,
        sampling,
        stop,
    })
}

/// A whole number of tokens from `names` (the first one present wins), saturated to `u32`: an
/// over-large value then meets the engine's limit and its message with both numbers.
pub fn max_tokens(f: &Fields, names: &[&str]) -> Result<Option<u32>, ApiError> {
    for name in names {
        if let Some(v) = f.raw(name) {
            let n = v.as_u64().ok_or_else(|| {
                ApiError::invalid(*name, format!("{name} must be a whole number"))
            })?;
            if n == 0 {
                return Err(ApiError::invalid(
                    *name,
                    format!("{name} must be at least 1"),
                ));
            }
            return Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)));
        }
    }
    Ok(None)
}

/// `usage` of a response.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl Usage {
    pub fn from_pb(u: &pb::Usage) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.generated_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.generated_tokens),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_prompt_tokens,
            },
        }
    }
}

/// OpenAI's finish reasons: a length cut, else a stop (EOS, a stop sequence or a stop token).
pub fn finish_reason(f: &pb::Finish) -> &'static str {
    match pb::FinishReason::try_from(f.reason) {
        Ok(pb::FinishReason::Length) => "length",
        _ => "stop",
    }
}

/// `/v1/completions` `logprobs` (the legacy shape).
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    /// One map of alternative token to logprob per token; `None` when no alternatives were asked.
    pub top_logprobs: Option<Vec<Map<String, Value>>>,
}

#[derive(Serialize, Debug, Clone)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
    /// The generated ids (an extension, as vLLM's `token_ids`): exact token counts per chunk.
    pub token_ids: Vec<u32>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Skip::skip")]
    pub usage: Skip<Usage>,
}

/// Chat `logprobs`: one entry per token.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Serialize, Debug, Clone)]
pub struct ChatMessageOut {
    pub role: &'static str,
    pub content: String,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Serialize, Debug, Clone)]
pub struct ChatChoice {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<ChatMessageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<ChatDelta>,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Serialize, Debug, Clone)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    #[serde(skip_serializing_if = "Skip::skip")]
    pub usage: Skip<Usage>,
}

/// A field that is left out, written as `null`, or written with a value: a stream's chunks
/// carry `"usage": null` when usage was asked for (and the value on the last one), and no
/// `usage` at all otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Skip<T> {
    Absent,
    Null,
    Value(T),
}

impl<T> Skip<T> {
    fn skip(&self) -> bool {
        matches!(self, Skip::Absent)
    }
}

impl<T: Serialize> Serialize for Skip<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Skip::Value(v) => v.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Prompt + completion tokens one request may use (an extension, as vLLM's).
    pub max_model_len: usize,
}

#[derive(Serialize, Debug, Clone)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields {
        Fields::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn wrong_types_name_the_field_and_unknown_fields_are_ignored() {
        let e = common(&fields(r#"{"temperature": "hot"}"#)).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(!e.message.contains("hot"));
        assert!(common(&fields(r#"{"frobnicate": {"x": 1}, "user": "u"}"#)).is_ok());
        let e = common(&fields(r#"{"stop": 5}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stop"));
        assert!(Fields::parse(b"[1]").is_err());
        assert!(Fields::parse(b"{").is_err());
    }

    #[test]
    fn defaults_and_conversions() {
        let c = common(&fields("{}")).unwrap();
        assert_eq!(c.sampling.temperature, DEFAULT_TEMPERATURE);
        assert_eq!(c.sampling.top_p, None);
        assert!(!c.stream && !c.include_usage);
        let c = common(&fields(
            r#"{"stop": "x", "top_k": -1, "seed": -1, "stream": true,
                "stream_options": {"include_usage": true}, "n": 1, "model": null}"#,
        ))
        .unwrap();
        assert_eq!(c.stop.stop_sequences, vec!["x".to_string()]);
        assert_eq!(c.sampling.top_k, 0);
        assert_eq!(c.sampling.seed, Some(u64::MAX));
        assert!(c.include_usage);
        let c = common(&fields(r#"{"stop": ["a", "b"], "top_k": -5}"#)).unwrap();
        assert_eq!(c.stop.stop_sequences.len(), 2);
        assert_eq!(c.sampling.top_k, -5, "left for the shared range check");
    }

    #[test]
    fn n_other_than_one_and_misplaced_stream_options_are_refused() {
        let e = common(&fields(r#"{"n": 2}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = common(&fields(r#"{"stream_options": {"include_usage": true}}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stream_options"));
    }

    #[test]
    fn max_tokens_takes_the_first_name_present() {
        let f = fields(r#"{"max_tokens": 5, "max_completion_tokens": 7}"#);
        assert_eq!(
            max_tokens(&f, &["max_completion_tokens", "max_tokens"]).unwrap(),
            Some(7)
        );
        let f = fields(r#"{"max_tokens": 0}"#);
        assert!(max_tokens(&f, &["max_tokens"]).is_err());
        let f = fields(r#"{"max_tokens": 1e30}"#);
        assert!(max_tokens(&f, &["max_tokens"]).is_err());
        let f = fields(r#"{"max_tokens": 99999999999}"#);
        assert_eq!(max_tokens(&f, &["max_tokens"]).unwrap(), Some(u32::MAX));
    }

    #[test]
    fn usage_is_absent_null_or_a_value() {
        let mut c = ChatCompletion {
            id: "x".into(),
            object: "chat.completion.chunk",
            created: 0,
            model: "m".into(),
            choices: vec![],
            usage: Skip::Absent,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert!(v.get("usage").is_none());
        c.usage = Skip::Null;
        assert!(serde_json::to_value(&c).unwrap()["usage"].is_null());
    }
}
