//! The halo worker target: `GenerateStream` over gRPC, timing every streamed message, and the
//! server's own `Finish.usage` and `Finish.timings` kept beside the client's view.

use crate::record::{Chunk, Outcome, ServerTimings};
use crate::target::{Attempt, ClientOptions, TargetSpec};
use crate::workload::RequestSpec;
use crate::BenchError;
use halo_proto::worker::v1::{
    generate_request::Prompt, worker_client::WorkerClient, FinishReason, GenerateRequest,
    GetInfoRequest, GetInfoResponse, StopCriteria,
};
use std::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct GrpcClient {
    client: WorkerClient<Channel>,
    auth: Option<MetadataValue<Ascii>>,
    request_timeout: std::time::Duration,
}

/// The canonical upper-case name of a gRPC code, as reports group failures by it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn failed_status(t: f64, chunks: Vec<Chunk>, s: &tonic::Status) -> Attempt {
    // Server messages are written never to contain prompt text (RELIABILITY.md).
    Attempt::failed(
        t,
        chunks,
        format!("grpc:{}", code_name(s.code())),
        s.message().to_string(),
    )
}

/// GetInfo as JSON for the reports (the proto types do not derive serde).
pub fn info_json(i: &GetInfoResponse) -> serde_json::Value {
    let model = i.model.as_ref().map(|m| {
        serde_json::json!({
            "name": m.name, "architecture": m.architecture, "dtype": m.dtype,
            "vocab_size": m.vocab_size, "context_length": m.context_length, "num_layers": m.num_layers,
        })
    });
    let device = i.device.as_ref().map(|d| {
        serde_json::json!({
            "kind": d.kind, "name": d.name, "memory_bytes": d.memory_bytes,
            "peak_bandwidth_bytes_per_s": d.peak_bandwidth_bytes_per_s, "peak_flops": d.peak_flops,
        })
    });
    let limits = i.limits.as_ref().map(|l| {
        serde_json::json!({
            "max_input_tokens": l.max_input_tokens, "max_total_tokens": l.max_total_tokens,
            "max_new_tokens": l.max_new_tokens, "max_concurrent_requests": l.max_concurrent_requests,
            "max_stop_sequences": l.max_stop_sequences, "max_top_n": l.max_top_n,
            "max_message_bytes": l.max_message_bytes,
        })
    });
    let kv = i.kv.as_ref().map(|k| {
        serde_json::json!({
            "block_size": k.block_size, "total_blocks": k.total_blocks, "free_blocks": k.free_blocks,
            "waiting_requests": k.waiting_requests, "running_requests": k.running_requests,
        })
    });
    serde_json::json!({
        "api": "halo-worker-v1", "version": i.version,
        "model": model, "device": device, "limits": limits, "kv": kv,
    })
}

impl GrpcClient {
    pub async fn connect(
        spec: &TargetSpec,
        token: Option<String>,
        opts: &ClientOptions,
    ) -> Result<GrpcClient, BenchError> {
        let err = |m: String| BenchError::Target(spec.label.clone(), m);
        let hostport = spec.url.trim_start_matches("grpc://");
        let endpoint = Endpoint::from_shared(format!("http://{hostport}"))
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| err(format!("cannot connect to {hostport}: {e}")))?;
        let auth = match token {
            None => None,
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| err("the bearer token is not valid header text".into()))?,
            ),
        };
        // Streams of many tokens at high concurrency exceed tonic's 4 MiB default only for
        // enormous outputs; lift the cap so the benchmark never fails where the server did not.
        let client = WorkerClient::new(channel).max_decoding_message_size(usize::MAX);
        Ok(GrpcClient {
            client,
            auth,
            request_timeout: opts.request_timeout,
        })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }

    pub async fn get_info(&self) -> Result<GetInfoResponse, tonic::Status> {
        let mut c = self.client.clone();
        Ok(c.get_info(self.request(GetInfoRequest {}))
            .await?
            .into_inner())
    }

    pub async fn info(&self) -> Result<serde_json::Value, BenchError> {
        self.get_info().await.map(|i| info_json(&i)).map_err(|s| {
            BenchError::Arg(format!("GetInfo: {}: {}", code_name(s.code()), s.message()))
        })
    }

    /// The request every target receives, in halo's terms: greedy (no sampling message), the
    /// length forced with `ignore_eos` when the workload asks.
    pub fn generate_request(req: &RequestSpec) -> GenerateRequest {
        GenerateRequest {
            request_id: format!("bench-{}", req.index),
            prompt: Some(Prompt::Text(req.prompt.clone())),
            max_new_tokens: req.max_tokens,
            sampling: None,
            stop: Some(StopCriteria {
                ignore_eos: req.ignore_eos,
                ..Default::default()
            }),
            logprobs: false,
            top_n: 0,
            cache_salt: String::new(),
        }
    }

    /// Sends one request; one that has not ended after the request timeout fails as `timeout`
    /// (dropping the stream cancels it on the server).
    pub async fn send(&self, req: &RequestSpec) -> Attempt {
        let t0 = Instant::now();
        match tokio::time::timeout(self.request_timeout, self.send_inner(req)).await {
            Ok(a) => a,
            Err(_) => Attempt::failed(
                t0.elapsed().as_secs_f64(),
                vec![],
                "timeout",
                format!(
                    "no finish within {:.0} s",
                    self.request_timeout.as_secs_f64()
                ),
            ),
        }
    }

    async fn send_inner(&self, req: &RequestSpec) -> Attempt {
        let msg = Self::generate_request(req);
        let mut client = self.client.clone();
        let request = self.request(msg);
        let t0 = Instant::now();
        let mut stream = match client.generate_stream(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => return failed_status(t0.elapsed().as_secs_f64(), vec![], &s),
        };
        let mut chunks = Vec::new();
        loop {
            let next = stream.message().await;
            let t = t0.elapsed().as_secs_f64();
            match next {
                Ok(Some(m)) => {
                    if !m.token_ids.is_empty() {
                        chunks.push(Chunk {
                            t,
                            tokens: m.token_ids.len() as u32,
                        });
                    }
                    if let Some(f) = m.finish {
                        let usage = f.usage.unwrap_or_default();
                        let server = f.timings.map(|x| ServerTimings {
                            queue_ms: x.queue_us as f64 / 1e3,
                            ttft_ms: x.ttft_us as f64 / 1e3,
                            e2e_ms: x.e2e_us as f64 / 1e3,
                            decode_ms: x.decode_us as f64 / 1e3,
                            preemptions: x.preemptions,
                            itl_p50_ms: x.itl_us_p50 as f64 / 1e3,
                            itl_max_ms: x.itl_us_max as f64 / 1e3,
                        });
                        // The stream's end is the finish message; anything after it is not timed.
                        if chunks.is_empty() {
                            return Attempt::failed(
                                t,
                                chunks,
                                "protocol",
                                "stream carried no tokens",
                            );
                        }
                        return Attempt {
                            chunks,
                            end: t,
                            outcome: Outcome::Ok,
                            usage_output_tokens: Some(usage.generated_tokens),
                            prompt_tokens: Some(usage.prompt_tokens),
                            finish_reason: Some(FinishReason::try_from(f.reason).map_or_else(
                                |_| format!("UNKNOWN_{}", f.reason),
                                |r| r.as_str_name().to_string(),
                            )),
                            server,
                            cached_prompt_tokens: Some(usage.cached_prompt_tokens),
                            retries: 0,
                        };
                    }
                }
                Ok(None) => {
                    return Attempt::failed(
                        t,
                        chunks,
                        "protocol",
                        "stream ended without a finish message",
                    )
                }
                Err(s) => return failed_status(t, chunks, &s),
            }
        }
    }
}
