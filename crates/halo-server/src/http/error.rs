//! OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`, with the HTTP status
//! RELIABILITY.md gives each case: 400 bad input, 401 auth, 404 unknown model or route, 413 too
//! large, 429 queue full, 503 draining or device lost, 504 deadline, 500 otherwise. Engine and
//! wire errors arrive as the gRPC front's statuses (one mapping of engine outcomes, in
//! `crate::status`), so both fronts answer the same case the same way.

use crate::convert::WireError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400 naming the field at fault.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    /// 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or invalid bearer token (Authorization: Bearer <token>)".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    pub fn not_found(message: impl Into<String>, code: &'static str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
        }
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body is larger than the maximum of {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    pub fn draining() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the worker is shutting down".into(),
            kind: "service_unavailable",
            param: None,
            code: Some("shutting_down"),
        }
    }

    /// A wire check that failed, with the OpenAI field it concerns.
    pub fn wire(e: &WireError, prompt_param: &str) -> ApiError {
        let param = match e {
            WireError::BadSampling { field, .. } => (*field).to_string(),
            WireError::ZeroMaxNewTokens => "max_tokens".to_string(),
            WireError::RequestIdTooLong { .. } | WireError::RequestIdControl => {
                super::REQUEST_ID_HEADER.to_string()
            }
            WireError::CacheSaltTooLong { .. } | WireError::CacheSaltControl => {
                "cache_salt".to_string()
            }
            WireError::MissingPrompt | WireError::EmptyPrompt | WireError::Tokenize => {
                prompt_param.to_string()
            }
        };
        ApiError::invalid(param, e.to_string())
    }

    /// The HTTP answer for a gRPC status of the shared admission and stream code.
    pub fn from_status(s: &Status) -> ApiError {
        let (status, kind, code) = match s.code() {
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            Code::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                Some("invalid_api_key"),
            ),
            // At admission the engine's only RESOURCE_EXHAUSTED is a full queue; after it, a
            // reader too slow for the event backlog.
            Code::ResourceExhausted => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("queue_full"),
            ),
            Code::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("unavailable"),
            ),
            Code::DeadlineExceeded => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                Some("deadline_exceeded"),
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        };
        ApiError {
            status,
            message: s.message().to_string(),
            kind,
            param: None,
            code,
        }
    }

    pub fn with_param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }

    /// The error object as JSON text (also the payload of an error event inside a stream).
    pub fn json(&self) -> String {
        serde_json::to_string(&Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .expect("the error object serializes")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.json()).into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_reliability_table() {
        let cases = [
            (Status::invalid_argument("x"), 400),
            (Status::unauthenticated("x"), 401),
            (Status::resource_exhausted("x"), 429),
            (Status::unavailable("x"), 503),
            (Status::deadline_exceeded("x"), 504),
            (Status::internal("x"), 500),
        ];
        for (s, want) in cases {
            assert_eq!(ApiError::from_status(&s).status.as_u16(), want, "{s:?}");
        }
        assert_eq!(ApiError::too_large(10).status.as_u16(), 413);
    }

    #[test]
    fn body_is_openais_error_object() {
        let e = ApiError::invalid("temperature", "bad");
        let v: serde_json::Value = serde_json::from_str(&e.json()).unwrap();
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert!(v["error"]["code"].is_null());
    }

    #[test]
    fn wire_errors_name_the_openai_field() {
        let e = WireError::BadSampling {
            field: "top_p",
            value: "2".into(),
            rule: "in (0, 1]",
        };
        assert_eq!(ApiError::wire(&e, "prompt").param.as_deref(), Some("top_p"));
        assert_eq!(
            ApiError::wire(&WireError::EmptyPrompt, "messages")
                .param
                .as_deref(),
            Some("messages")
        );
    }
}
