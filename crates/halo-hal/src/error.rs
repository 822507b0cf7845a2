//! Typed device errors: each maps to a different outcome upstream (a bad batch is the engine's
//! bug, out of memory and device loss fail in-flight work with different statuses).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum DeviceError {
    /// The caller built a batch that breaks the contract (a bug above the device).
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// The device ran out of memory.
    #[error("device out of memory: {0}")]
    OutOfMemory(String),
    /// The device is gone: a sidecar died or hung, a CUDA context was lost.
    #[error("device lost: {0}")]
    Lost(String),
    /// The model could not be loaded onto this device.
    #[error("model load failed: {0}")]
    Load(String),
    /// The call came in the wrong order (step before warmup, warmup before load).
    #[error("device not ready: {0}")]
    NotReady(String),
    /// This build or this machine cannot drive the requested device.
    #[error("device unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reports.
    #[error("device error: {0}")]
    Backend(String),
}

impl DeviceError {
    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceError::BadBatch(_) => "bad_batch",
            DeviceError::OutOfMemory(_) => "out_of_memory",
            DeviceError::Lost(_) => "device_lost",
            DeviceError::Load(_) => "load",
            DeviceError::NotReady(_) => "not_ready",
            DeviceError::Unavailable(_) => "unavailable",
            DeviceError::Backend(_) => "backend",
        }
    }

    /// Whether the device can take further steps after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, DeviceError::Lost(_) | DeviceError::OutOfMemory(_))
    }
}
