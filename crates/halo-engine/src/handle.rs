//! The caller's side of one request: a stream of events that always ends with exactly one
//! terminal event, and cancellation by `cancel()` or by dropping the handle.

use crate::event::{Event, Failure, FailureKind, Timings, Usage};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::mpsc::Receiver;

use crate::engine::{Command, Shared};

/// A submitted request. Dropping it before its terminal event cancels the request.
pub struct RequestHandle {
    /// The engine's id for this request.
    pub id: u64,
    events: Receiver<Event>,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    tokens_sent: u32,
    done: bool,
}

impl RequestHandle {
    pub(crate) fn new(
        id: u64,
        events: Receiver<Event>,
        commands: mpsc::Sender<Command>,
        shared: Arc<Shared>,
    ) -> Self {
        RequestHandle {
            id,
            events,
            commands,
            shared,
            tokens_sent: 0,
            done: false,
        }
    }

    /// The next event; `None` after the terminal one.
    pub async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let e = self.events.recv().await;
        Some(self.observe(e))
    }

    /// As [`Self::next`], blocking the thread. Must not be called from inside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let e = self.events.blocking_recv();
        Some(self.observe(e))
    }

    /// Asks the scheduler to cancel; the stream then ends with `Failed(Cancelled)` (or with the
    /// outcome that was already on its way).
    pub fn cancel(&self) {
        if !self.done {
            // A closed channel means the engine is gone; the stream reports that itself.
            let _ = self.commands.send(Command::Cancel(self.id));
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn observe(&mut self, e: Option<Event>) -> Event {
        let event = e.unwrap_or_else(|| {
            // The engine thread ended without a terminal event for us (it panicked, or the
            // device was lost between admission and scheduling): never leave the caller hanging.
            let kind = if self.shared.lost.load(Ordering::Acquire) {
                FailureKind::DeviceLost {
                    tokens_sent: self.tokens_sent,
                }
            } else {
                FailureKind::Internal
            };
            Event::Failed(Failure {
                kind,
                message: "the engine stopped".into(),
                usage: Usage::default(),
                timings: Timings::default(),
            })
        });
        match &event {
            Event::Tokens { token_ids, .. } => self.tokens_sent += token_ids.len() as u32,
            _ => self.done = true,
        }
        event
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl std::fmt::Debug for RequestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHandle")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}
