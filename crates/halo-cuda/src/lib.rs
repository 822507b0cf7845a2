//! halo's CUDA backend: cudarc with dynamic loading (the crate builds and tests without CUDA),
//! halo's own kernels compiled by NVRTC for the GPU at hand, and cuBLAS for the GEMMs.
//!
//! Module map: [`kernels`] (sources and NVRTC), [`error`] (typed errors), [`probe`] (what GPU is
//! there, for `halo info --device cuda`), [`family`] (what the forward pass runs for a model's
//! config, and what it refuses), [`plan`] (a step batch as device arrays, pure host logic), [`sizing`] (KV pool from free memory, CUDA-graph buckets), [`sampling`] (the sampler's
//! host half and a host model of its kernel), and the device itself in [`device`].

pub mod device;
pub mod error;
pub mod family;
mod forward;
mod gemm;
pub mod kernels;
pub mod plan;
pub mod probe;
pub mod sampling;
pub mod sizing;
mod weights;

pub use device::CudaDevice;
pub use error::CudaError;
pub use probe::probe;
