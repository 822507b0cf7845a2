//! `--device cpu|cuda|gaudi` → a boxed [`Device`]: the one place the binary picks a backend.

use super::usage;
use halo_hal::{Device, DeviceInfo, DeviceKind};

/// Parses a `--device` value (exit 2 on an unknown name).
pub fn parse_kind(name: &str) -> anyhow::Result<DeviceKind> {
    name.parse::<DeviceKind>().map_err(usage)
}

/// Starts the backend for `kind`. A backend this machine cannot drive (no CUDA driver or GPU, no
/// sidecar environment) is not a bad argument but a missing capability of the machine: exit 1,
/// with the reason.
pub fn open(kind: DeviceKind) -> anyhow::Result<Box<dyn Device>> {
    if kind == DeviceKind::Cpu {
        // A HALO_CPU_ISA value the backend cannot read is the user's to fix: exit 2.
        halo_cpu::isa_cap::from_env().map_err(usage)?;
    }
    Ok(match kind {
        DeviceKind::Cpu => Box::new(halo_cpu::CpuDevice::new().map_err(unavailable(kind))?),
        DeviceKind::Cuda => Box::new(halo_cuda::CudaDevice::new(0).map_err(unavailable(kind))?),
        DeviceKind::Gaudi => Box::new(
            halo_gaudi::GaudiDevice::new(halo_gaudi::GaudiOptions::default())
                .map_err(unavailable(kind))?,
        ),
    })
}

/// What `halo info` reports of a device without loading a model.
pub fn probe(kind: DeviceKind) -> anyhow::Result<DeviceInfo> {
    match kind {
        DeviceKind::Cuda => halo_cuda::probe().map_err(unavailable(kind)),
        other => Ok(open(other)?.info()),
    }
}

fn unavailable(kind: DeviceKind) -> impl FnOnce(halo_hal::DeviceError) -> anyhow::Error {
    move |e| anyhow::Error::new(e).context(format!("cannot start the {kind} device"))
}
