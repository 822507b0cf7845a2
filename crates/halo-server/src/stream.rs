//! GenerateStream's pump: one task per stream moves engine events into the response channel.
//! It watches the client side too: when the client cancels or disconnects, tonic drops the
//! receiver, `closed()` fires, and dropping the [`RequestHandle`] cancels the engine request so
//! its KV blocks are freed within one step, even if no token is due for a while.

use crate::convert;
use crate::metrics::Metrics;
use crate::service::{ActiveGuard, RPC_STREAM};
use crate::status;
use halo_engine::{Event, RequestHandle};
use halo_proto::worker::v1 as pb;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tonic::Status;

/// Messages buffered between the pump and the HTTP/2 stream.
const STREAM_BUFFER: usize = 32;

type Item = Result<pb::GenerateStreamResponse, Status>;

/// Measures the gap between consecutive token deliveries for the inter-token histogram.
#[derive(Default)]
pub(crate) struct TokenClock(Option<Instant>);

impl TokenClock {
    pub(crate) fn tick(&mut self, metrics: &Metrics) {
        let now = Instant::now();
        if let Some(prev) = self.0.replace(now) {
            metrics.inter_token.observe(now - prev);
        }
    }
}

pub(crate) fn deadline_status() -> Status {
    Status::deadline_exceeded("the request's deadline (grpc-timeout) passed")
}

pub(crate) fn spawn_pump(
    handle: RequestHandle,
    request_id: String,
    deadline: Option<Instant>,
    metrics: Arc<Metrics>,
    active: ActiveGuard,
) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let (outcome, code) = pump(handle, &tx, deadline, &metrics).await;
        metrics.record_request(RPC_STREAM, outcome, code);
        tracing::debug!(request_id = ?request_id, outcome, code, "stream ended");
        // The call counts as active until its last message is queued.
        drop(active);
    });
    rx
}

/// Runs one stream to its end; returns the outcome and status labels for the metrics.
async fn pump(
    mut handle: RequestHandle,
    tx: &mpsc::Sender<Item>,
    deadline: Option<Instant>,
    metrics: &Metrics,
) -> (&'static str, &'static str) {
    let mut clock = TokenClock::default();
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    loop {
        let event = tokio::select! {
            biased;
            _ = tx.closed() => return ("cancelled", "CANCELLED"),
            // Backstop: the scheduler enforces the deadline; this only guarantees the stream
            // ends on time even if the engine's terminal event is late.
            _ = &mut expired => {
                let _ = tx.send(Err(deadline_status())).await;
                return ("deadline_exceeded", "DEADLINE_EXCEEDED");
            }
            e = handle.next() => e,
        };
        let item = match event {
            Some(e @ Event::Tokens { .. }) => {
                clock.tick(metrics);
                match convert::stream_chunk(&e) {
                    Some(chunk) => chunk,
                    None => continue,
                }
            }
            Some(Event::Finished(f)) => {
                let last = pb::GenerateStreamResponse {
                    finish: Some(convert::finish(&f)),
                    ..Default::default()
                };
                if tx.send(Ok(last)).await.is_err() {
                    return ("cancelled", "CANCELLED");
                }
                return (f.reason.as_str(), "OK");
            }
            Some(Event::Failed(f)) => {
                let s = status::failure(&f);
                let code = status::code_label(s.code());
                let _ = tx.send(Err(s)).await;
                return (f.kind.as_str(), code);
            }
            None => {
                let _ = tx
                    .send(Err(Status::internal(
                        "the request ended without an outcome",
                    )))
                    .await;
                return ("internal", "INTERNAL");
            }
        };
        if tx.send(Ok(item)).await.is_err() {
            return ("cancelled", "CANCELLED");
        }
    }
}
