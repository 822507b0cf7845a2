//! halo's hardware abstraction: the [`Device`] trait at the level of one model step, and the
//! plain data types that cross it.
//!
//! The contract is step-level (not tensor-level) so that the same trait works in-process (CPU,
//! CUDA) and across a process boundary (the Gaudi sidecar). The engine owns scheduling and KV
//! block *allocation*; a device owns KV *storage*, runs one forward pass over a mixed batch of
//! prefill chunks and decode tokens, and samples where the logits are: logits never cross.
//!
//! [`sampling`] is the reference definition of the sampling semantics (filter order, the
//! counter-based RNG, tie-breaking) that every backend implements, so the same seed gives the
//! same tokens on every backend and in any batch.

pub mod batch;
pub mod device;
pub mod error;
pub mod info;
pub mod penalty;
pub mod rng;
pub mod sampling;

pub use batch::{
    BlockId, PenaltyContext, SampleRequest, SampledToken, SamplingParams, SeqFailure, SeqId,
    SeqResult, SeqStep, StepBatch, StepOutput, StepTimings, TopToken, FREED_BLOCK,
};
pub use device::Device;
pub use error::DeviceError;
pub use info::{
    DType, DeviceInfo, DeviceKind, KvCacheLayout, LoadOptions, ModelInfo, WarmupRequest,
};
pub use penalty::HistoryToken;
