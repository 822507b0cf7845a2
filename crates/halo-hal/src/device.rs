//! The Device trait: load a model, warm up (which sizes the KV pool), then run steps.

use crate::batch::{StepBatch, StepOutput};
use crate::error::DeviceError;
use crate::info::{DeviceInfo, KvCacheLayout, LoadOptions, ModelInfo, WarmupRequest};
use std::path::Path;
use std::time::Duration;

/// One accelerator driven at the granularity of a model step.
///
/// Call order: [`Device::load`], then [`Device::warmup`] once, then any number of
/// [`Device::step`]s. A device is owned by one engine thread, so methods take `&mut self` and the
/// trait only requires `Send`.
pub trait Device: Send {
    /// What the device is. Cheap; may be called at any time.
    fn info(&self) -> DeviceInfo;

    /// Loads the model directory (config.json, safetensors, tokenizer) onto the device.
    fn load(&mut self, model_dir: &Path, options: &LoadOptions) -> Result<ModelInfo, DeviceError>;

    /// Allocates the paged KV pool and runs the shapes the scheduler will use.
    fn warmup(&mut self, request: &WarmupRequest) -> Result<KvCacheLayout, DeviceError>;

    /// One forward pass over a mixed batch. Writes each sequence's new K/V into the slots its
    /// block table names and returns one result per sequence that asked for a sample, in batch
    /// order.
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, DeviceError>;

    /// After a fatal error ([`DeviceError::Lost`]), brings the device back to where warmup left
    /// it: the same model and KV layout, the cache contents discarded. Waits at most `limit`; an
    /// error other than `Unavailable` means "not yet, try again later". Devices that cannot
    /// restart in place keep this default, and the engine then refuses work until the process
    /// is restarted.
    fn recover(&mut self, limit: Duration) -> Result<(), DeviceError> {
        let _ = limit;
        Err(DeviceError::Unavailable(
            "this device cannot recover in place; restart the worker".into(),
        ))
    }
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn info(&self) -> DeviceInfo {
        (**self).info()
    }
    fn load(&mut self, model_dir: &Path, options: &LoadOptions) -> Result<ModelInfo, DeviceError> {
        (**self).load(model_dir, options)
    }
    fn warmup(&mut self, request: &WarmupRequest) -> Result<KvCacheLayout, DeviceError> {
        (**self).warmup(request)
    }
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, DeviceError> {
        (**self).step(batch)
    }
    fn recover(&mut self, limit: Duration) -> Result<(), DeviceError> {
        (**self).recover(limit)
    }
}
