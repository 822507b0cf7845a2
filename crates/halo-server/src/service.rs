//! The `halo.worker.v1.Worker` handlers. Each generation call: read the deadline the guard
//! stamped, check the wire request, tokenize a text prompt off the async runtime, submit to the
//! engine (its admission checks limits, vocabulary and the queue cap before any state changes),
//! then turn the engine's events into responses. The engine request lives in a
//! [`halo_engine::RequestHandle`] owned by the call: when a client cancels or disconnects, tonic
//! drops the call, the handle drops, and the engine frees the blocks within one step.

use crate::admit::Admission;
use crate::convert::{self, WireError};
use crate::guard::Deadline;
use crate::metrics::Metrics;
use crate::status;
use crate::stream;
use halo_engine::{Engine, Event, RequestHandle};
use halo_proto::worker::v1 as pb;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

/// The metadata key echoing the request id on generation responses.
pub const REQUEST_ID_KEY: &str = "halo-request-id";

pub(crate) const RPC_UNARY: &str = "generate";
pub(crate) const RPC_STREAM: &str = "generate_stream";

/// Generation calls in flight; shutdown waits for it to reach zero.
#[derive(Default)]
pub struct ActiveCalls(AtomicUsize);

impl ActiveCalls {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }
}

/// Counts one call as active until dropped, however the call ends.
pub(crate) struct ActiveGuard(Arc<ActiveCalls>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct WorkerService {
    engine: Engine,
    metrics: Arc<Metrics>,
    active: Arc<ActiveCalls>,
    max_message_bytes: usize,
    admission: Admission,
    /// Callers carry a bearer token (checked by the guard): they form one identity.
    bearer_auth: bool,
}

/// Who is calling, for prefix-cache scoping: the client certificate when mutual TLS verified
/// one, else the bearer-token holder when auth is on, else nobody in particular.
fn identity<T>(request: &Request<T>, bearer_auth: bool) -> Option<String> {
    use sha2::{Digest, Sha256};
    if let Some(cert) = request.peer_certs().and_then(|c| c.first().cloned()) {
        let digest = Sha256::digest(cert.as_ref());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        return Some(format!("cert:{hex}"));
    }
    bearer_auth.then(|| "bearer".to_string())
}

impl WorkerService {
    pub fn new(
        engine: Engine,
        metrics: Arc<Metrics>,
        active: Arc<ActiveCalls>,
        max_message_bytes: usize,
    ) -> Self {
        WorkerService {
            admission: Admission::new(engine.clone(), metrics.clone()),
            engine,
            metrics,
            active,
            max_message_bytes,
            bearer_auth: false,
        }
    }

    /// Callers authenticate with a bearer token: scope the prefix cache under that identity.
    pub fn with_bearer_auth(mut self, on: bool) -> Self {
        self.bearer_auth = on;
        self
    }

    /// Everything up to and including `submit` (shared with the HTTP front).
    async fn admit(
        &self,
        req: pb::GenerateRequest,
        identity: Option<String>,
        deadline: Option<Instant>,
        rpc: &'static str,
    ) -> Result<(RequestHandle, String), Status> {
        self.admission.admit(req, identity, deadline, rpc).await
    }

    async fn render_chat(&self, chat: pb::ChatMessages) -> Result<(String, Vec<u32>), Status> {
        self.admission.render_chat(chat).await
    }

    async fn tokenize(&self, text: String, add_special_tokens: bool) -> Result<Vec<u32>, Status> {
        self.admission.tokenize(text, add_special_tokens).await
    }
}

/// The engine's live stats, with the pool size filled in before the scheduler's first
/// published snapshot: until a step has run, no block is allocated and the whole pool is free
/// (the engine's snapshot starts zeroed and is first written after a step).
pub fn live_stats(engine: &Engine) -> halo_engine::LiveStats {
    let mut stats = engine.stats();
    if stats.total_blocks == 0 {
        let total = engine.info().kv.num_blocks;
        stats.total_blocks = total;
        stats.free_blocks = total;
    }
    stats
}

fn with_request_id<T>(body: T, request_id: &str) -> Response<T> {
    let mut r = Response::new(body);
    if let Ok(v) = MetadataValue::try_from(request_id) {
        r.metadata_mut().insert(REQUEST_ID_KEY, v);
    }
    r
}

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let _active = self.active.enter();
        let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
        let who = identity(&request, self.bearer_auth);
        let (mut handle, request_id) = self
            .admit(request.into_inner(), who, deadline, RPC_UNARY)
            .await?;
        let mut out = pb::GenerateResponse {
            request_id: request_id.clone(),
            ..Default::default()
        };
        let mut itl = stream::TokenClock::default();
        let collect = async {
            loop {
                match handle.next().await {
                    Some(Event::Tokens {
                        token_ids,
                        text,
                        logprobs,
                        top,
                    }) => {
                        itl.tick(&self.metrics);
                        out.token_ids.extend(token_ids);
                        out.text.push_str(&text);
                        out.logprobs.extend(logprobs);
                        out.top_tokens.extend(convert::top_tokens(&top));
                    }
                    Some(Event::Finished(f)) => {
                        out.finish = Some(convert::finish(&f));
                        return Ok(f.reason.as_str());
                    }
                    Some(Event::Failed(f)) => return Err((f.kind.as_str(), status::failure(&f))),
                    None => {
                        return Err((
                            "internal",
                            Status::internal("the request ended without an outcome"),
                        ))
                    }
                }
            }
        };
        // The engine enforces the deadline; this timer only makes sure the answer is
        // DEADLINE_EXCEEDED even when tonic's own timer (same instant, started later) is close.
        let outcome = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), collect)
                .await
                .unwrap_or_else(|_| Err(("deadline_exceeded", stream::deadline_status()))),
            None => collect.await,
        };
        drop(handle);
        match outcome {
            Ok(reason) => {
                self.metrics.record_request(RPC_UNARY, reason, "OK");
                tracing::debug!(request_id = ?request_id, reason, tokens = out.token_ids.len(), "request finished");
                Ok(with_request_id(out, &request_id))
            }
            Err((label, s)) => {
                self.metrics
                    .record_request(RPC_UNARY, label, status::code_label(s.code()));
                tracing::info!(request_id = ?request_id, outcome = label, "request failed");
                Err(s)
            }
        }
    }

    type GenerateStreamStream = ReceiverStream<Result<pb::GenerateStreamResponse, Status>>;

    async fn generate_stream(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let active = self.active.enter();
        let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
        let who = identity(&request, self.bearer_auth);
        let (handle, request_id) = self
            .admit(request.into_inner(), who, deadline, RPC_STREAM)
            .await?;
        let rx = stream::spawn_pump(
            handle,
            request_id.clone(),
            deadline,
            self.metrics.clone(),
            active,
            RPC_STREAM,
        );
        Ok(with_request_id(ReceiverStream::new(rx), &request_id))
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let req = request.into_inner();
        let ids = self.tokenize(req.text, req.add_special_tokens).await?;
        Ok(Response::new(pb::TokenizeResponse { ids }))
    }

    async fn render_chat(
        &self,
        request: Request<pb::RenderChatRequest>,
    ) -> Result<Response<pb::RenderChatResponse>, Status> {
        let chat = request.into_inner().chat.unwrap_or_default();
        if chat.messages.is_empty() {
            return Err(Status::invalid_argument(WireError::EmptyPrompt.to_string()));
        }
        let (text, ids) = self.render_chat(chat).await?;
        Ok(Response::new(pb::RenderChatResponse { text, ids }))
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let req = request.into_inner();
        let vocab_size = self.engine.info().model.vocab_size;
        if let Some(index) = req.ids.iter().position(|&id| id as usize >= vocab_size) {
            return Err(Status::invalid_argument(format!(
                "id at index {index} is outside the vocabulary of {vocab_size}"
            )));
        }
        let engine = self.engine.clone();
        let text = tokio::task::spawn_blocking(move || {
            engine.tokenizer().decode(&req.ids, req.skip_special_tokens)
        })
        .await
        .map_err(|_| Status::internal("the tokenizer task failed"))?
        .map_err(|_| Status::new(Code::Internal, "the ids could not be decoded"))?;
        Ok(Response::new(pb::DetokenizeResponse { text }))
    }

    async fn get_info(
        &self,
        _request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        let info = self.engine.info();
        let stats = live_stats(&self.engine);
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let l = &info.limits;
        Ok(Response::new(pb::GetInfoResponse {
            model: Some(pb::ModelInfo {
                name: info.model.name.clone(),
                architecture: info.model.architecture.clone(),
                dtype: info.model.dtype.as_str().to_string(),
                vocab_size: n(info.model.vocab_size),
                context_length: n(info.model.context_length),
                num_layers: n(info.model.num_layers),
            }),
            device: Some(pb::DeviceInfo {
                kind: info.device.kind.as_str().to_string(),
                name: info.device.name.clone(),
                memory_bytes: info.device.memory_bytes,
                peak_bandwidth_bytes_per_s: info.device.peak_bandwidth_bytes_per_s,
                peak_flops: info.device.peak_flops,
            }),
            limits: Some(pb::Limits {
                max_input_tokens: n(l.max_input_tokens),
                max_total_tokens: n(l.max_total_tokens),
                max_new_tokens: n(l.max_new_tokens),
                max_concurrent_requests: n(l.max_concurrent_requests),
                max_stop_sequences: n(l.max_stop_sequences),
                max_top_n: l.max_top_n,
                max_message_bytes: self.max_message_bytes as u64,
                max_stop_sequence_bytes: n(l.max_stop_sequence_bytes),
            }),
            kv: Some(pb::KvInfo {
                block_size: n(info.kv.block_size),
                total_blocks: n(stats.total_blocks),
                free_blocks: n(stats.free_blocks),
                waiting_requests: n(stats.waiting),
                running_requests: n(stats.running),
            }),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
