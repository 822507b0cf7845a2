//! The CPU device: Llama, Mistral and Qwen2 in f32, with a paged KV cache and attention that
//! reads through each sequence's block table.
//!
//! Projections use our own matmul ([`matmul`]) rather than candle-core's: measured on this
//! project's 2-core CI machine (benches/matmul.rs keeps candle as the baseline) it is 2.3x faster
//! at 4 rows and as fast at 1, and every output element is computed the same way whatever else
//! is in the batch, so a greedy sequence gives the same tokens alone and in any batch (candle's
//! gemm takes a different path, and rounding, at 1 row than at many).
//!
//! One step runs every token of the batch (prefill chunks and decode tokens together) through
//! each projection as a single matmul, so weights are read once per step and throughput grows
//! with the batch; attention then runs per sequence and head. The whole step executes inside the
//! device's own rayon pool, so the many small parallel sections do not pay a cross-thread
//! injection each.

mod activation;
pub mod attention;
mod device;
mod exp;
mod ffn;
mod heap;
mod hugepages;
pub mod isa_cap;
pub mod kv_cache;
mod linear;
pub mod matmul;
mod model;
mod moe;
mod ops;
mod qkv;
pub mod qmatmul;
mod rope;
mod ubatch;

pub use device::CpuDevice;
