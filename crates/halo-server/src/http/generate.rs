//! One generation over HTTP, shared by `/v1/completions` and `/v1/chat/completions`: the
//! request id and deadline from the headers, the shared wire checks and admission, then the
//! engine's events (through the gRPC front's stream pump, which watches the client leave and the
//! deadline pass) rendered as one JSON body or as server-sent events ending in `data: [DONE]`.
//!
//! A client that disconnects drops the response; that drops the pump's receiver, the pump drops
//! the engine request, and its KV blocks are free within one step.

use super::error::ApiError;
use super::types::{
    finish_reason, ChatChoice, ChatCompletion, ChatDelta, ChatLogprobs, ChatMessageOut, Completion,
    CompletionChoice, CompletionLogprobs, Skip, TokenLogprob, TopLogprob, Usage,
};
use super::{HttpState, REQUEST_ID_HEADER, TIMEOUT_HEADER};
use crate::convert;
use crate::stream;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use halo_engine::Engine;
use halo_proto::worker::v1 as pb;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Server-sent events buffered between the renderer and the connection.
const SSE_BUFFER: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}

impl Kind {
    fn prompt_param(self) -> &'static str {
        match self {
            Kind::Completion => "prompt",
            Kind::Chat => "messages",
        }
    }

    /// The metrics label of the call.
    fn rpc(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Kind::Completion, false) => "openai_completions",
            (Kind::Completion, true) => "openai_completions_stream",
            (Kind::Chat, false) => "openai_chat_completions",
            (Kind::Chat, true) => "openai_chat_completions_stream",
        }
    }
}

/// What a handler hands over: the worker API request (prompt resolved, or text to tokenize)
/// and how to answer.
pub struct Job {
    pub kind: Kind,
    pub request: pb::GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// Counts a request refused before admission (a bad body or header) as the gRPC front counts
/// its wire rejections.
pub fn refuse(state: &HttpState, kind: Kind, stream: bool, e: ApiError) -> ApiError {
    state.admission.metrics.record_request(
        kind.rpc(stream),
        "invalid_argument",
        "INVALID_ARGUMENT",
    );
    e
}

/// The `halo-timeout-ms` header: the request's deadline, measured from arrival.
fn deadline(headers: &HeaderMap, arrival: Instant) -> Result<Option<Instant>, ApiError> {
    let Some(v) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let ms = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0 && ms <= 86_400_000)
        .ok_or_else(|| {
            ApiError::invalid(
                TIMEOUT_HEADER,
                format!("{TIMEOUT_HEADER} must be whole milliseconds between 1 and 86400000"),
            )
        })?;
    Ok(Some(arrival + Duration::from_millis(ms)))
}

pub async fn run(state: HttpState, headers: HeaderMap, job: Job) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let rpc = job.kind.rpc(job.stream);
    let refuse = |e| refuse(&state, job.kind, job.stream, e);
    let given_id = match headers.get(REQUEST_ID_HEADER) {
        None => "",
        Some(v) => v.to_str().map_err(|_| {
            refuse(ApiError::invalid(
                REQUEST_ID_HEADER,
                format!("{REQUEST_ID_HEADER} must be visible ASCII"),
            ))
        })?,
    };
    let prompt_param = job.kind.prompt_param();
    let request_id =
        convert::request_id(given_id).map_err(|e| refuse(ApiError::wire(&e, prompt_param)))?;
    let deadline = deadline(&headers, arrival).map_err(refuse)?;
    let logprobs = job.request.logprobs;
    let top_n = job.request.top_n;
    let parsed = convert::parse_generate(job.request, request_id.clone(), deadline)
        .map_err(|e| refuse(ApiError::wire(&e, prompt_param)))?;

    let active = state.active.enter();
    let handle = state
        .admission
        .submit(parsed, &request_id, state.identity(), rpc)
        .await
        .map_err(|s| ApiError::from_status(&s))?;
    let events = stream::spawn_pump(
        handle,
        request_id.clone(),
        deadline,
        state.admission.metrics.clone(),
        active,
        rpc,
    );
    let render = Render {
        kind: job.kind,
        id: match job.kind {
            Kind::Completion => format!("cmpl-{request_id}"),
            Kind::Chat => format!("chatcmpl-{request_id}"),
        },
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: state.model.clone(),
        logprobs,
        top_n,
        engine: state.admission.engine.clone(),
        include_usage: job.include_usage,
    };
    let mut response = if job.stream {
        let rx = spawn_sse(render, events, state.active.enter());
        Sse::new(ReceiverStream::new(rx)).into_response()
    } else {
        unary(render, events).await?
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    Ok(response)
}

/// Everything generated so far.
#[derive(Default)]
struct Acc {
    text: String,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    top: Vec<pb::TopTokens>,
}

impl Acc {
    fn push(&mut self, m: pb::GenerateStreamResponse) {
        self.text.push_str(&m.text);
        self.ids.extend(m.token_ids);
        self.logprobs.extend(m.logprobs);
        self.top.extend(m.top_tokens);
    }
}

type Item = Result<pb::GenerateStreamResponse, Status>;

async fn unary(render: Render, mut events: mpsc::Receiver<Item>) -> Result<Response, ApiError> {
    let mut acc = Acc::default();
    loop {
        match events.recv().await {
            Some(Ok(m)) => {
                let finish = m.finish.clone();
                acc.push(m);
                if let Some(f) = finish {
                    // Naming every token (and its alternatives) for logprobs is tokenizer work
                    // in proportion to the output: off the async runtime.
                    return tokio::task::spawn_blocking(move || render.unary(acc, &f))
                        .await
                        .map_err(|_| {
                            ApiError::from_status(&Status::internal("the response task failed"))
                        });
                }
            }
            Some(Err(s)) => return Err(ApiError::from_status(&s)),
            None => {
                return Err(ApiError::from_status(&Status::internal(
                    "the request ended without an outcome",
                )))
            }
        }
    }
}

/// Renders the pump's messages as server-sent events. Returns as soon as the client is gone
/// (the receiver dropped), which drops the pump's receiver and so cancels the engine request.
fn spawn_sse(
    render: Render,
    mut events: mpsc::Receiver<Item>,
    active: crate::service::ActiveGuard,
) -> mpsc::Receiver<Result<SseEvent, Infallible>> {
    let (tx, rx) = mpsc::channel(SSE_BUFFER);
    tokio::spawn(async move {
        // Drain waits for the last event to be queued, not only for the engine to finish.
        let _active = active;
        let send = |data: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(SseEvent::default().data(data))).await.is_ok() }
        };
        if render.kind == Kind::Chat && !send(render.chat_role_chunk()).await {
            return;
        }
        loop {
            let item = tokio::select! {
                biased;
                _ = tx.closed() => return,
                m = events.recv() => m,
            };
            match item {
                Some(Ok(m)) => {
                    let finish = m.finish.clone();
                    if !m.token_ids.is_empty() || !m.text.is_empty() {
                        let mut acc = Acc::default();
                        acc.push(m);
                        if !send(render.chunk(&acc, None)).await {
                            return;
                        }
                    }
                    if let Some(f) = finish {
                        if !send(render.chunk(&Acc::default(), Some(&f))).await {
                            return;
                        }
                        if render.include_usage {
                            let usage = Usage::from_pb(&f.usage.unwrap_or_default());
                            if !send(render.usage_chunk(usage)).await {
                                return;
                            }
                        }
                        send("[DONE]".to_string()).await;
                        return;
                    }
                }
                Some(Err(s)) => {
                    // The status line is long sent: the error goes in the stream, as an
                    // `{"error": ...}` event (what OpenAI's clients raise on), and no [DONE].
                    send(ApiError::from_status(&s).json()).await;
                    return;
                }
                None => {
                    let s = Status::internal("the request ended without an outcome");
                    send(ApiError::from_status(&s).json()).await;
                    return;
                }
            }
        }
    });
    rx
}

/// Turns generated tokens into OpenAI's response and chunk objects.
struct Render {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
    top_n: u32,
    engine: Engine,
    include_usage: bool,
}

impl Render {
    /// One token's text alone (how OpenAI's logprobs name tokens).
    fn token(&self, id: u32) -> String {
        self.engine
            .tokenizer()
            .decode(&[id], false)
            .unwrap_or_default()
    }

    fn completion_logprobs(&self, acc: &Acc) -> Option<CompletionLogprobs> {
        if !self.logprobs {
            return None;
        }
        let top_logprobs = (self.top_n > 0).then(|| {
            acc.top
                .iter()
                .map(|t| {
                    let mut m = Map::new();
                    for (&id, &lp) in t.ids.iter().zip(&t.logprobs) {
                        m.insert(self.token(id), Value::from(lp));
                    }
                    m
                })
                .collect()
        });
        Some(CompletionLogprobs {
            tokens: acc.ids.iter().map(|&id| self.token(id)).collect(),
            token_logprobs: acc.logprobs.clone(),
            top_logprobs,
        })
    }

    fn chat_logprobs(&self, acc: &Acc) -> Option<ChatLogprobs> {
        if !self.logprobs {
            return None;
        }
        let content = acc
            .ids
            .iter()
            .zip(&acc.logprobs)
            .enumerate()
            .map(|(i, (&id, &logprob))| {
                let token = self.token(id);
                let top_logprobs = acc
                    .top
                    .get(i)
                    .map(|t| {
                        t.ids
                            .iter()
                            .zip(&t.logprobs)
                            .map(|(&id, &logprob)| {
                                let token = self.token(id);
                                TopLogprob {
                                    bytes: token.as_bytes().to_vec(),
                                    token,
                                    logprob,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                TokenLogprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob,
                    top_logprobs,
                }
            })
            .collect();
        Some(ChatLogprobs { content })
    }

    fn unary(&self, acc: Acc, f: &pb::Finish) -> Response {
        let usage = Skip::Value(Usage::from_pb(&f.usage.unwrap_or_default()));
        let reason = Some(finish_reason(f));
        let body = match self.kind {
            Kind::Completion => serde_json::to_string(&Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    logprobs: self.completion_logprobs(&acc),
                    text: acc.text,
                    finish_reason: reason,
                    token_ids: acc.ids,
                }],
                usage,
            }),
            Kind::Chat => serde_json::to_string(&ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    logprobs: self.chat_logprobs(&acc),
                    message: Some(ChatMessageOut {
                        role: "assistant",
                        content: acc.text,
                    }),
                    delta: None,
                    finish_reason: reason,
                }],
                usage,
            }),
        }
        .expect("responses serialize");
        (
            [(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }

    fn usage_skip(&self) -> Skip<Usage> {
        if self.include_usage {
            Skip::Null
        } else {
            Skip::Absent
        }
    }

    fn chat_chunk(&self, choices: Vec<ChatChoice>, usage: Skip<Usage>) -> String {
        serde_json::to_string(&ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
        .expect("chunks serialize")
    }

    /// The chat stream's first chunk: the assistant role, no content yet.
    fn chat_role_chunk(&self) -> String {
        let choice = ChatChoice {
            index: 0,
            message: None,
            delta: Some(ChatDelta {
                role: Some("assistant"),
                content: Some(String::new()),
            }),
            logprobs: None,
            finish_reason: None,
        };
        self.chat_chunk(vec![choice], self.usage_skip())
    }

    /// A chunk with the tokens of `acc`, or the closing chunk with the finish reason.
    fn chunk(&self, acc: &Acc, finish: Option<&pb::Finish>) -> String {
        let reason = finish.map(finish_reason);
        match self.kind {
            Kind::Completion => serde_json::to_string(&Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    text: acc.text.clone(),
                    logprobs: if finish.is_some() {
                        None
                    } else {
                        self.completion_logprobs(acc)
                    },
                    finish_reason: reason,
                    token_ids: acc.ids.clone(),
                }],
                usage: self.usage_skip(),
            })
            .expect("chunks serialize"),
            Kind::Chat => {
                let delta = if finish.is_some() {
                    ChatDelta::default()
                } else {
                    ChatDelta {
                        role: None,
                        content: Some(acc.text.clone()),
                    }
                };
                let choice = ChatChoice {
                    index: 0,
                    message: None,
                    delta: Some(delta),
                    logprobs: if finish.is_some() {
                        None
                    } else {
                        self.chat_logprobs(acc)
                    },
                    finish_reason: reason,
                };
                self.chat_chunk(vec![choice], self.usage_skip())
            }
        }
    }

    /// The last chunk when usage was asked for: no choices, the request's usage.
    fn usage_chunk(&self, usage: Usage) -> String {
        match self.kind {
            Kind::Completion => serde_json::to_string(&Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![],
                usage: Skip::Value(usage),
            })
            .expect("chunks serialize"),
            Kind::Chat => self.chat_chunk(vec![], Skip::Value(usage)),
        }
    }
}
