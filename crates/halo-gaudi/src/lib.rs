//! The Gaudi backend: [`GaudiDevice`] implements [`halo_hal::Device`] by forwarding each call to
//! a PyTorch sidecar process (crates/halo-gaudi/sidecar) over gRPC on a private Unix socket, and
//! supervises that process.
//!
//! Gaudi is programmed through PyTorch (`habana_frameworks`), so the model runs in Python; the
//! engine's scheduling, KV block allocation and stop rules stay in Rust for every backend. The
//! sidecar is untrusted input: every reply is validated before the engine sees it, and a dead,
//! hung or incoherent sidecar becomes [`halo_hal::DeviceError::Lost`] for the step in flight
//! while the device restarts, re-loads and re-warms it in the background.
//!
//! Without an HPU the same sidecar runs on torch CUDA or CPU, which is how this crate is tested.

mod convert;
mod device;
mod options;
mod process;

/// The generated protocol types (package `halo.sidecar.v1`).
pub mod proto {
    tonic::include_proto!("halo.sidecar.v1");
}

pub use convert::{validate_step_reply, ReplyError};
pub use device::GaudiDevice;
pub use options::GaudiOptions;
