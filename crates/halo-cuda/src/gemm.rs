//! Linear layers through cuBLAS `gemmEx`: y[n, out] = x[n, in] · W[out, in]^T with row-major
//! activations and HF-layout weights, f32 accumulation for every dtype (true f32 for f32: the
//! default math mode never uses TF32). The handle gets a fixed workspace so GEMMs can be
//! captured into CUDA graphs without allocating.

use crate::error::CudaError;
use cudarc::cublas::result as blas;
use cudarc::cublas::sys::{
    self as bsys, cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType,
};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use halo_hal::DType;
use std::sync::Arc;

const WORKSPACE_BYTES: usize = 32 << 20;

pub(crate) struct Gemm {
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
}

pub(crate) fn cuda_type(d: DType) -> cudaDataType {
    match d {
        DType::F32 => cudaDataType::CUDA_R_32F,
        DType::F16 => cudaDataType::CUDA_R_16F,
        DType::BF16 => cudaDataType::CUDA_R_16BF,
    }
}

impl Gemm {
    pub(crate) fn new(stream: &Arc<CudaStream>) -> Result<Gemm, CudaError> {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { bsys::is_culib_present() } {
            return Err(CudaError::NoCublas);
        }
        let blas = CudaBlas::new(stream.clone())?;
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES)?;
        let ptr = workspace.device_ptr(stream).0;
        // SAFETY: the workspace outlives the handle (both live in `Gemm`).
        unsafe { bsys::cublasSetWorkspace_v2(*blas.handle(), ptr as *mut _, WORKSPACE_BYTES) }
            .result()?;
        Ok(Gemm {
            blas,
            _workspace: workspace,
        })
    }

    /// y = x · Wᵀ; `x` is [n, k] in `in_type`, `w` is [m, k] in `in_type`, `y` is [n, m] in
    /// `out_type`. Raw device pointers: the caller owns the buffers and their sizes.
    ///
    /// # Safety
    /// The pointers must address live device buffers of at least the stated sizes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn linear(
        &self,
        x: u64,
        w: u64,
        y: u64,
        n: usize,
        k: usize,
        m: usize,
        in_type: DType,
        out_type: DType,
    ) -> Result<(), CudaError> {
        let alpha = 1.0f32;
        let beta = 0.0f32;
        // Column-major view: Yᵀ[m, n] = W[m, k] · Xᵀ[k, n], i.e. A = W transposed from its
        // column-major [k, m] storage, B = X as column-major [k, n].
        blas::gemm_ex(
            *self.blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            m as i32,
            n as i32,
            k as i32,
            &alpha as *const f32 as *const _,
            w as *const _,
            cuda_type(in_type),
            k as i32,
            x as *const _,
            cuda_type(in_type),
            k as i32,
            &beta as *const f32 as *const _,
            y as *mut _,
            cuda_type(out_type),
            m as i32,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )?;
        Ok(())
    }
}
