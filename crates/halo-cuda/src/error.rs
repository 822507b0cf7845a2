//! The backend's error type and its mapping onto [`DeviceError`]: out of memory and a lost
//! context are different outcomes upstream (the engine fails in-flight work differently), so the
//! CUDA result codes are classified here, once.

use cudarc::cublas::result::CublasError;
use cudarc::cublas::sys::cublasStatus_t;
use cudarc::driver::sys::CUresult;
use cudarc::driver::DriverError;
use halo_hal::DeviceError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("no CUDA driver found: libcuda could not be loaded (is the NVIDIA driver installed and on the library path?)")]
    NoDriver,
    #[error("no CUDA device found: the driver reports no GPU")]
    NoDevice,
    #[error("NVRTC not found: libnvrtc could not be loaded (install the CUDA toolkit's NVRTC or set LD_LIBRARY_PATH)")]
    NoNvrtc,
    #[error("cuBLAS not found: libcublas could not be loaded (install the CUDA toolkit's cuBLAS or set LD_LIBRARY_PATH)")]
    NoCublas,
    #[error("GPU architecture {0} is older than sm_80, the oldest halo's kernels support")]
    UnsupportedArch(String),
    #[error("kernel source {file} failed to compile for {arch}:\n{log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
    },
    // The code's name, not cudarc's Display: that asks libcuda for a string and panics
    // where no driver is loaded.
    #[error("CUDA driver: {:?}", .0 .0)]
    Driver(#[from] DriverError),
    #[error("cuBLAS: {:?}", .0 .0)]
    Cublas(CublasError),
    #[error("{0}")]
    OutOfMemory(String),
    /// The model needs something the CUDA forward pass does not implement: refused at load,
    /// never run wrong.
    #[error("the CUDA backend does not support this model: {0}")]
    Unsupported(String),
}

impl From<CublasError> for CudaError {
    fn from(e: CublasError) -> Self {
        CudaError::Cublas(e)
    }
}

/// How the engine must treat a CUDA failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    OutOfMemory,
    /// The context is unusable: every later call fails the same way.
    ContextLost,
    Other,
}

/// Classifies a driver result code. Sticky errors (a kernel fault, an ECC error, a destroyed
/// context) poison the context, so the device must be rebuilt: that is [`ErrorClass::ContextLost`].
pub fn classify(code: CUresult) -> ErrorClass {
    use CUresult::*;
    match code {
        CUDA_ERROR_OUT_OF_MEMORY => ErrorClass::OutOfMemory,
        CUDA_ERROR_ILLEGAL_ADDRESS
        | CUDA_ERROR_LAUNCH_FAILED
        | CUDA_ERROR_LAUNCH_TIMEOUT
        | CUDA_ERROR_ECC_UNCORRECTABLE
        | CUDA_ERROR_HARDWARE_STACK_ERROR
        | CUDA_ERROR_ILLEGAL_INSTRUCTION
        | CUDA_ERROR_MISALIGNED_ADDRESS
        | CUDA_ERROR_INVALID_ADDRESS_SPACE
        | CUDA_ERROR_INVALID_PC
        | CUDA_ERROR_NVLINK_UNCORRECTABLE
        | CUDA_ERROR_CONTEXT_IS_DESTROYED
        | CUDA_ERROR_DEINITIALIZED
        | CUDA_ERROR_DEVICE_UNAVAILABLE
        | CUDA_ERROR_ASSERT
        | CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => ErrorClass::ContextLost,
        _ => ErrorClass::Other,
    }
}

impl From<CudaError> for DeviceError {
    fn from(e: CudaError) -> Self {
        let msg = e.to_string();
        match e {
            CudaError::NoDriver
            | CudaError::NoDevice
            | CudaError::NoNvrtc
            | CudaError::NoCublas
            | CudaError::UnsupportedArch(_) => DeviceError::Unavailable(msg),
            CudaError::Compile { .. } | CudaError::Unsupported(_) => DeviceError::Load(msg),
            CudaError::OutOfMemory(_) => DeviceError::OutOfMemory(msg),
            CudaError::Driver(DriverError(code)) => match classify(code) {
                ErrorClass::OutOfMemory => DeviceError::OutOfMemory(msg),
                ErrorClass::ContextLost => DeviceError::Lost(msg),
                ErrorClass::Other => DeviceError::Backend(msg),
            },
            CudaError::Cublas(CublasError(status)) => match status {
                cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED => DeviceError::OutOfMemory(msg),
                cublasStatus_t::CUBLAS_STATUS_EXECUTION_FAILED
                | cublasStatus_t::CUBLAS_STATUS_INTERNAL_ERROR => DeviceError::Lost(msg),
                _ => DeviceError::Backend(msg),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_map_to_engine_outcomes() {
        let oom: DeviceError =
            CudaError::Driver(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)).into();
        assert!(matches!(oom, DeviceError::OutOfMemory(_)));
        let lost: DeviceError =
            CudaError::Driver(DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS)).into();
        assert!(matches!(lost, DeviceError::Lost(_)) && lost.is_fatal());
        let other: DeviceError =
            CudaError::Driver(DriverError(CUresult::CUDA_ERROR_INVALID_VALUE)).into();
        assert!(matches!(other, DeviceError::Backend(_)));
        let none: DeviceError = CudaError::NoDriver.into();
        assert!(matches!(none, DeviceError::Unavailable(ref m) if m.contains("no CUDA driver")));
        let blas: DeviceError =
            CudaError::Cublas(CublasError(cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED)).into();
        assert!(matches!(blas, DeviceError::OutOfMemory(_)));
        let moe: DeviceError = CudaError::Unsupported("mixture of experts".into()).into();
        assert!(matches!(moe, DeviceError::Load(ref m) if m.contains("does not support")));
    }
}
