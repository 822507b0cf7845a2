//! Blocking conveniences for callers without an async runtime (the CLI's `generate`, tests):
//! run requests to completion and collect their output.

use crate::engine::Engine;
use crate::error::SubmitError;
use crate::event::{Event, Failure, Finish};
use crate::request::GenerateRequest;
use crate::TopToken;
use std::collections::VecDeque;
use thiserror::Error;

/// Everything a finished request produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Generated ids only.
    pub token_ids: Vec<u32>,
    pub text: String,
    pub logprobs: Vec<f32>,
    pub top: Vec<Vec<TopToken>>,
    pub finish: Finish,
}

#[derive(Clone, Debug, Error, PartialEq)]
pub enum RunError {
    #[error("rejected: {0}")]
    Rejected(#[from] SubmitError),
    #[error("failed ({}): {}", .0.kind.as_str(), .0.message)]
    Failed(Failure),
}

/// Collects a stream into a [`Completion`].
#[derive(Default)]
struct Collector {
    token_ids: Vec<u32>,
    text: String,
    logprobs: Vec<f32>,
    top: Vec<Vec<TopToken>>,
}

impl Collector {
    /// Returns the outcome once the event is terminal.
    fn push(&mut self, e: Event) -> Option<Result<Completion, RunError>> {
        match e {
            Event::Tokens {
                token_ids,
                text,
                logprobs,
                top,
            } => {
                self.token_ids.extend(token_ids);
                self.text.push_str(&text);
                self.logprobs.extend(logprobs);
                self.top.extend(top);
                None
            }
            Event::Finished(finish) => Some(Ok(Completion {
                token_ids: std::mem::take(&mut self.token_ids),
                text: std::mem::take(&mut self.text),
                logprobs: std::mem::take(&mut self.logprobs),
                top: std::mem::take(&mut self.top),
                finish,
            })),
            Event::Failed(f) => Some(Err(RunError::Failed(f))),
        }
    }
}

impl Engine {
    /// Runs `requests` through the engine concurrently and returns their outcomes in order.
    /// Requests beyond the concurrency cap are submitted as earlier ones finish. Blocks the
    /// calling thread: do not call it from inside an async runtime.
    pub fn run_blocking(
        &self,
        requests: Vec<GenerateRequest>,
    ) -> Vec<Result<Completion, RunError>> {
        let n = requests.len();
        let mut results: Vec<Option<Result<Completion, RunError>>> = (0..n).map(|_| None).collect();
        let mut pending: VecDeque<(usize, GenerateRequest)> =
            requests.into_iter().enumerate().collect();
        let mut active = VecDeque::new();
        while !pending.is_empty() || !active.is_empty() {
            while let Some((i, req)) = pending.pop_front() {
                match self.submit(req.clone()) {
                    Ok(h) => active.push_back((i, h, Collector::default())),
                    Err(SubmitError::QueueFull { .. }) if !active.is_empty() => {
                        pending.push_front((i, req));
                        break;
                    }
                    Err(e) => results[i] = Some(Err(RunError::Rejected(e))),
                }
            }
            // Drain the oldest request; the others keep running inside the engine meanwhile.
            if let Some((i, mut h, mut c)) = active.pop_front() {
                while let Some(e) = h.blocking_next() {
                    if let Some(r) = c.push(e) {
                        results[i] = Some(r);
                        break;
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every request got an outcome"))
            .collect()
    }

    /// Runs one request to completion, blocking the calling thread.
    pub fn generate_blocking(&self, request: GenerateRequest) -> Result<Completion, RunError> {
        let mut h = self.submit(request)?;
        let mut c = Collector::default();
        while let Some(e) = h.blocking_next() {
            if let Some(r) = c.push(e) {
                return r;
            }
        }
        unreachable!("a handle's stream always ends with a terminal event")
    }
}
