//! Admission, shared by both fronts (gRPC and the OpenAI-compatible HTTP API): check the wire
//! request, resolve its prompt off the async runtime (tokenize a text, render a chat), and
//! submit to the engine. Every rejection is counted in the metrics under the caller's `rpc`
//! label before it is returned, and none changes the engine's state.

use crate::convert::{self, Parsed, PromptInput, WireError};
use crate::metrics::Metrics;
use crate::status;
use halo_engine::{Engine, RequestHandle};
use halo_proto::worker::v1 as pb;
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

#[derive(Clone)]
pub struct Admission {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
}

impl Admission {
    pub fn new(engine: Engine, metrics: Arc<Metrics>) -> Self {
        Admission { engine, metrics }
    }

    /// Counts a rejection under `rpc` and hands the status back.
    pub fn reject(&self, rpc: &'static str, outcome: &'static str, s: Status) -> Status {
        self.metrics
            .record_request(rpc, outcome, status::code_label(s.code()));
        s
    }

    /// Everything up to and including `submit`. On error the engine's state is unchanged and
    /// the rejection is already counted.
    pub async fn admit(
        &self,
        req: pb::GenerateRequest,
        identity: Option<String>,
        deadline: Option<Instant>,
        rpc: &'static str,
    ) -> Result<(RequestHandle, String), Status> {
        let invalid = |e: WireError| {
            self.reject(
                rpc,
                "invalid_argument",
                Status::invalid_argument(e.to_string()),
            )
        };
        let request_id = convert::request_id(&req.request_id).map_err(invalid)?;
        let parsed = convert::parse_generate(req, request_id.clone(), deadline).map_err(invalid)?;
        let handle = self.submit(parsed, &request_id, identity, rpc).await?;
        Ok((handle, request_id))
    }

    /// Resolves a checked request's prompt and submits it: the second half of [`Self::admit`],
    /// for a front that checks the wire request itself (to name its own fields in errors).
    pub async fn submit(
        &self,
        mut parsed: Parsed,
        request_id: &str,
        identity: Option<String>,
        rpc: &'static str,
    ) -> Result<RequestHandle, Status> {
        parsed.request.prompt = match parsed.prompt {
            PromptInput::Ids(ids) => ids,
            PromptInput::Text(text) => self
                .tokenize(text, true)
                .await
                .map_err(|s| self.reject(rpc, "invalid_argument", s))?,
            PromptInput::Chat(chat) => {
                self.render_chat(chat)
                    .await
                    .map_err(|s| self.reject(rpc, "invalid_argument", s))?
                    .1
            }
        };
        let prompt_tokens = parsed.request.prompt.len();
        let max_new_tokens = parsed.request.max_new_tokens;
        let deadline = parsed.request.deadline.is_some();
        let salt = convert::scoped_salt(identity.as_deref(), &parsed.cache_salt);
        let handle = self
            .engine
            .submit_salted(parsed.request, &salt)
            .map_err(|e| {
                tracing::info!(request_id = ?request_id, reason = e.kind(), "request rejected");
                self.reject(rpc, e.kind(), status::submit_error(&e))
            })?;
        tracing::debug!(
            request_id = ?request_id,
            engine_id = handle.id,
            prompt_tokens,
            max_new_tokens,
            deadline,
            "request admitted"
        );
        Ok(handle)
    }

    /// The chat's prompt text and ids by the model's template; INVALID_ARGUMENT naming the
    /// template's error when it fails to render (or the model has none).
    pub async fn render_chat(&self, chat: pb::ChatMessages) -> Result<(String, Vec<u32>), Status> {
        let engine = self.engine.clone();
        let messages: Vec<halo_engine::ChatMessage> = chat
            .messages
            .into_iter()
            .map(|m| halo_engine::ChatMessage::new(m.role, m.content))
            .collect();
        tokio::task::spawn_blocking(move || {
            engine.render_chat(&messages, chat.add_generation_prompt)
        })
        .await
        .map_err(|_| Status::internal("the chat template task failed"))?
        .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    pub async fn tokenize(
        &self,
        text: String,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, Status> {
        let engine = self.engine.clone();
        let ids = tokio::task::spawn_blocking(move || {
            engine.tokenizer().encode(&text, add_special_tokens)
        })
        .await
        .map_err(|_| Status::internal("the tokenizer task failed"))?;
        // The tokenizer's own message may quote the input: replace it.
        ids.map_err(|_| Status::invalid_argument(WireError::Tokenize.to_string()))
    }
}
