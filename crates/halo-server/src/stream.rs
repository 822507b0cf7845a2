//! GenerateStream's pump: one task per stream moves engine events into the response channel.
//! It watches the client side too: when the client cancels or disconnects, tonic drops the
//! receiver, `closed()` fires, and dropping the [`RequestHandle`] cancels the engine request so
//! its KV blocks are freed within one step, even if no token is due for a while.

use crate::convert;
use crate::metrics::Metrics;
use crate::service::ActiveGuard;
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

/// `rpc` labels the stream's outcome in the metrics.
pub(crate) fn spawn_pump(
    handle: RequestHandle,
    request_id: String,
    deadline: Option<Instant>,
    metrics: Arc<Metrics>,
    active: ActiveGuard,
    rpc: &'static str,
) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let (outcome, code, last) = pump(handle, &tx, deadline, &metrics).await;
        // The engine request is already released (the handle was dropped inside `pump`); a
        // client that is not reading holds only this one status until it reads or leaves.
        if let Some(status) = last {
            let _ = tx.send(Err(status)).await;
        }
        metrics.record_request(rpc, outcome, code);
        tracing::debug!(request_id = ?request_id, outcome, code, "stream ended");
        // The call counts as active until its last message is queued.
        drop(active);
    });
    rx
}

/// Labels for the metrics and the status to end the stream with, if any.
type Ended = (&'static str, &'static str, Option<Status>);

/// Runs one stream until its end, and drops the engine request. Waiting for room in the
/// response channel (a client that reads slowly or not at all) still watches the client leave
/// and the deadline pass, so cancel and deadline fire however slowly the client reads.
async fn pump(
    mut handle: RequestHandle,
    tx: &mpsc::Sender<Item>,
    deadline: Option<Instant>,
    metrics: &Metrics,
) -> Ended {
    let mut clock = TokenClock::default();
    // Sleep can be polled again after it fired; without a deadline it never fires.
    let far = Instant::now() + std::time::Duration::from_secs(100 * 365 * 86_400);
    let expired = tokio::time::sleep_until(deadline.unwrap_or(far).into());
    tokio::pin!(expired);
    let cancelled: Ended = ("cancelled", "CANCELLED", None);
    let timed_out = || -> Ended {
        (
            "deadline_exceeded",
            "DEADLINE_EXCEEDED",
            Some(deadline_status()),
        )
    };
    loop {
        let event = tokio::select! {
            biased;
            _ = tx.closed() => return cancelled,
            // Backstop: the scheduler enforces the deadline; this only guarantees the stream
            // ends on time even if the engine's terminal event is late.
            _ = &mut expired => return timed_out(),
            e = handle.next() => e,
        };
        let (item, end): (Item, Option<Ended>) = match event {
            Some(e @ Event::Tokens { .. }) => {
                clock.tick(metrics);
                match convert::stream_chunk(&e) {
                    Some(chunk) => (Ok(chunk), None),
                    None => continue,
                }
            }
            Some(Event::Finished(f)) => {
                let last = pb::GenerateStreamResponse {
                    finish: Some(convert::finish(&f)),
                    ..Default::default()
                };
                (Ok(last), Some((f.reason.as_str(), "OK", None)))
            }
            Some(Event::Failed(f)) => {
                let s = status::failure(&f);
                let code = status::code_label(s.code());
                return (f.kind.as_str(), code, Some(s));
            }
            None => {
                return (
                    "internal",
                    "INTERNAL",
                    Some(Status::internal("the request ended without an outcome")),
                )
            }
        };
        tokio::select! {
            biased;
            permit = tx.reserve() => match permit {
                Ok(p) => p.send(item),
                Err(_) => return cancelled,
            },
            _ = &mut expired => return timed_out(),
        }
        if let Some(end) = end {
            return end;
        }
    }
}
