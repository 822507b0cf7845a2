//! halo's CUDA backend (being assembled).
pub mod error;
pub mod kernels;
pub mod plan;
pub mod sampling;
pub mod sizing;
pub use error::CudaError;
