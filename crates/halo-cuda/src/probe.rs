//! What CUDA GPU is there, without creating a context: `halo info --device cuda` calls
//! [`probe`], which says plainly when no driver or no GPU is found.

use crate::error::CudaError;
use cudarc::driver::result;
use cudarc::driver::sys::CUdevice_attribute as Attr;
use halo_hal::{DeviceError, DeviceInfo, DeviceKind};

/// Describes GPU 0. `Err(DeviceError::Unavailable)` when no driver or no GPU is found.
pub fn probe() -> Result<DeviceInfo, DeviceError> {
    probe_ordinal(0).map_err(DeviceError::from)
}

/// Whether libcuda can be loaded at all (cudarc panics on first use when it cannot).
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

pub(crate) fn probe_ordinal(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    if !driver_available() {
        return Err(CudaError::NoDriver);
    }
    result::init()?;
    if result::device::get_count()? as usize <= ordinal {
        return Err(CudaError::NoDevice);
    }
    let dev = result::device::get(ordinal as i32)?;
    let name = result::device::get_name(dev)?;
    // SAFETY: `dev` is a valid device handle from the driver.
    let (memory, attr) = unsafe {
        let memory = result::device::total_mem(dev)? as u64;
        let attr = |a: Attr| result::device::get_attribute(dev, a).unwrap_or(0).max(0) as f64;
        (
            memory,
            [
                attr(Attr::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
                attr(Attr::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
                attr(Attr::CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
                attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
                attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            ],
        )
    };
    let [mem_khz, bus_bits, sm_khz, sms, major, minor] = attr;
    Ok(DeviceInfo {
        kind: DeviceKind::Cuda,
        name: format!("{name} (sm_{}{})", major as u32, minor as u32),
        memory_bytes: memory,
        peak_bandwidth_bytes_per_s: peak_bandwidth(mem_khz, bus_bits),
        peak_flops: peak_dense_flops(major as u32, minor as u32, sms, sm_khz),
    })
}

/// Declared DRAM bandwidth: double data rate × bus width. 0 when the driver does not say
/// (benchmarks then measure it).
pub fn peak_bandwidth(mem_clock_khz: f64, bus_width_bits: f64) -> f64 {
    2.0 * mem_clock_khz * 1e3 * bus_width_bits / 8.0
}

/// Declared dense 16-bit tensor-core FLOP/s: FLOPs per SM per clock by architecture × SMs ×
/// clock. Known for data-center Ampere (sm_80) and Hopper (sm_90); 0 (unknown) otherwise.
pub fn peak_dense_flops(major: u32, minor: u32, sms: f64, sm_clock_khz: f64) -> f64 {
    let per_sm_per_clock = match (major, minor) {
        (8, 0) => 2048.0,
        (9, 0) => 4096.0,
        _ => return 0.0,
    };
    per_sm_per_clock * sms * sm_clock_khz * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_driver_is_a_clear_unavailable_error() {
        if driver_available() {
            return; // a machine with a driver answers with its GPU instead
        }
        let e = probe().unwrap_err();
        assert!(
            matches!(e, DeviceError::Unavailable(ref m) if m.contains("no CUDA driver found")),
            "{e}"
        );
    }

    #[test]
    fn declared_peaks() {
        // H100 SXM: 132 SMs at 1.98 GHz boost → ~1070 TFLOP/s dense bf16 declared ceiling.
        let f = peak_dense_flops(9, 0, 132.0, 1_980_000.0);
        assert!((f / 1e12 - 1070.5).abs() < 1.0, "{f}");
        assert_eq!(peak_dense_flops(7, 5, 40.0, 1e6), 0.0);
        // A100 40GB: 1215 MHz HBM2, 5120-bit bus → 1.555 TB/s.
        assert!((peak_bandwidth(1_215_000.0, 5120.0) / 1e12 - 1.555).abs() < 0.01);
    }
}
