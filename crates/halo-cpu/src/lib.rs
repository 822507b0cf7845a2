//! The CPU device: Llama, Mistral and Qwen2 in f32 on candle-core's matmul, with a paged KV
//! cache and attention that reads through each sequence's block table.
//!
//! One step runs every token of the batch (prefill chunks and decode tokens together) through
//! each projection as a single matmul, so weights are read once per step and throughput grows
//! with the batch; attention then runs per sequence and head. The whole step executes inside the
//! device's own rayon pool, so the many small parallel sections do not pay a cross-thread
//! injection each.

mod attention;
mod device;
mod kv_cache;
pub mod matmul;
mod model;
mod ops;

pub use device::CpuDevice;
