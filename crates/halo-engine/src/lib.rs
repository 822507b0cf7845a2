//! halo's engine: continuous batching over a paged KV cache.
//!
//! One scheduler loop per device runs on its own OS thread and owns the [`halo_hal::Device`];
//! async callers talk to it through channels and receive a stream of [`Event`]s per request:
//! token events with text deltas, then exactly one terminal outcome.
//!
//! The core is the synchronous [`Scheduler`] (queues, admission, chunked prefill, preemption,
//! stop rules) over the [`BlockManager`] (reference-counted KV blocks with prefix caching);
//! the engine thread only drives it, which is what lets the tests check every invariant after
//! every operation with a scripted device.

pub mod block_manager;
mod complete;
pub mod config;
pub mod detok;
mod engine;
pub mod error;
pub mod event;
mod handle;
pub mod health;
pub mod observer;
pub mod request;
pub mod rope_regime;
pub mod scheduler;
pub mod sequence;
pub mod stop;
pub mod testing;
pub mod timing;
pub mod validate;

pub use block_manager::BlockManager;
pub use complete::{Completion, RunError};
pub use config::{EngineConfig, Limits};
pub use detok::IncrementalDetokenizer;
pub use engine::{kv_window, Engine, EngineInfo};
pub use error::{EngineError, SubmitError};
pub use event::{Event, Failure, FailureKind, Finish, FinishReason, Timings, Usage};
pub use halo_hal::{SamplingParams, TopToken};
pub use halo_model::chat_template::{ChatMessage, ChatTemplateError};
pub use handle::RequestHandle;
pub use health::Health;
pub use observer::{EngineObserver, LiveStats, Outcome, StepReport};
pub use request::{GenerateRequest, StopCriteria};
pub use rope_regime::RopeRegime;
pub use scheduler::{Output, Scheduler, SchedulerConfig, StepOutcome};
