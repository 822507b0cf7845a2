//! halo's CUDA kernels: the sources in `kernels/*.cu`, embedded at build time, and their NVRTC
//! compilation for the device's architecture at load time.
//!
//! Sources are compiled, never shipped as PTX: NVRTC targets the exact architecture of the GPU
//! the worker runs on, and CI checks that every source compiles (tests/nvrtc_compile.rs) without
//! a GPU. Typed entry points are instantiated per storage dtype in the sources
//! (`rms_norm_bf16`, ...); [`KernelId::symbol`] names them.

use crate::error::CudaError;
use cudarc::nvrtc::{CompileOptions, Ptx};
use halo_hal::DType;

const COMMON_HEADER: &str = include_str!("../../../kernels/halo_common.cuh");
const INCLUDE_LINE: &str = "#include \"halo_common.cuh\"";

/// One `kernels/*.cu` file: a compilation unit, loaded as one CUDA module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelSource {
    Embed,
    RmsNorm,
    Rope,
    KvCache,
    Activation,
    Attention,
    Sampling,
    Moe,
}

impl KernelSource {
    pub const ALL: [KernelSource; 8] = [
        KernelSource::Embed,
        KernelSource::RmsNorm,
        KernelSource::Rope,
        KernelSource::KvCache,
        KernelSource::Activation,
        KernelSource::Attention,
        KernelSource::Sampling,
        KernelSource::Moe,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            KernelSource::Embed => "embed.cu",
            KernelSource::RmsNorm => "rmsnorm.cu",
            KernelSource::Rope => "rope.cu",
            KernelSource::KvCache => "kv_cache.cu",
            KernelSource::Activation => "activation.cu",
            KernelSource::Attention => "attention.cu",
            KernelSource::Sampling => "sampling.cu",
            KernelSource::Moe => "moe.cu",
        }
    }

    /// The file as written, with its `#include` of the common header.
    pub fn raw(self) -> &'static str {
        match self {
            KernelSource::Embed => include_str!("../../../kernels/embed.cu"),
            KernelSource::RmsNorm => include_str!("../../../kernels/rmsnorm.cu"),
            KernelSource::Rope => include_str!("../../../kernels/rope.cu"),
            KernelSource::KvCache => include_str!("../../../kernels/kv_cache.cu"),
            KernelSource::Activation => include_str!("../../../kernels/activation.cu"),
            KernelSource::Attention => include_str!("../../../kernels/attention.cu"),
            KernelSource::Sampling => include_str!("../../../kernels/sampling.cu"),
            KernelSource::Moe => include_str!("../../../kernels/moe.cu"),
        }
    }

    /// The self-contained translation unit handed to NVRTC: the common header is spliced in
    /// where the file includes it, since embedded sources have no directory to search.
    pub fn translation_unit(self) -> String {
        let raw = self.raw();
        let header = COMMON_HEADER.replace("#pragma once", "");
        raw.replacen(INCLUDE_LINE, &header, 1)
    }

    /// The kernels this file defines.
    pub fn kernels(self) -> impl Iterator<Item = KernelId> {
        KernelId::ALL
            .into_iter()
            .filter(move |k| k.source() == self)
    }
}

/// One kernel entry point (per dtype where [`KernelId::is_typed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelId {
    Embed,
    GatherRows,
    AddRmsNorm,
    RmsNormHeads,
    Rope,
    KvWrite,
    SiluMul,
    GeluTanhMul,
    AddBias,
    LogitSoftcap,
    PagedAttention,
    SampleTokens,
    MoeRoute,
    MoeGroup,
    MoeLinear,
    MoeCombine,
}

impl KernelId {
    pub const ALL: [KernelId; 16] = [
        KernelId::Embed,
        KernelId::GatherRows,
        KernelId::AddRmsNorm,
        KernelId::RmsNormHeads,
        KernelId::Rope,
        KernelId::KvWrite,
        KernelId::SiluMul,
        KernelId::GeluTanhMul,
        KernelId::AddBias,
        KernelId::LogitSoftcap,
        KernelId::PagedAttention,
        KernelId::SampleTokens,
        KernelId::MoeRoute,
        KernelId::MoeGroup,
        KernelId::MoeLinear,
        KernelId::MoeCombine,
    ];

    pub fn source(self) -> KernelSource {
        match self {
            KernelId::Embed | KernelId::GatherRows => KernelSource::Embed,
            KernelId::AddRmsNorm | KernelId::RmsNormHeads => KernelSource::RmsNorm,
            KernelId::Rope => KernelSource::Rope,
            KernelId::KvWrite => KernelSource::KvCache,
            KernelId::SiluMul
            | KernelId::GeluTanhMul
            | KernelId::AddBias
            | KernelId::LogitSoftcap => KernelSource::Activation,
            KernelId::PagedAttention => KernelSource::Attention,
            KernelId::SampleTokens => KernelSource::Sampling,
            KernelId::MoeRoute
            | KernelId::MoeGroup
            | KernelId::MoeLinear
            | KernelId::MoeCombine => KernelSource::Moe,
        }
    }

    fn base_name(self) -> &'static str {
        match self {
            KernelId::Embed => "embed",
            KernelId::GatherRows => "gather_rows",
            KernelId::AddRmsNorm => "add_rmsnorm",
            KernelId::RmsNormHeads => "rmsnorm_heads",
            KernelId::Rope => "rope",
            KernelId::KvWrite => "kv_write",
            KernelId::SiluMul => "silu_mul",
            KernelId::GeluTanhMul => "gelu_tanh_mul",
            KernelId::AddBias => "add_bias",
            KernelId::LogitSoftcap => "logit_softcap",
            KernelId::PagedAttention => "paged_attention",
            KernelId::SampleTokens => "sample_tokens",
            KernelId::MoeRoute => "moe_route",
            KernelId::MoeGroup => "moe_group",
            KernelId::MoeLinear => "moe_linear",
            KernelId::MoeCombine => "moe_combine",
        }
    }

    /// Whether the kernel exists once per storage dtype (sampling and the logit cap read f32
    /// logits only; MoE grouping reads expert ids only).
    pub fn is_typed(self) -> bool {
        !matches!(
            self,
            KernelId::SampleTokens | KernelId::LogitSoftcap | KernelId::MoeGroup
        )
    }

    /// The exported symbol for activations stored in `dtype`.
    pub fn symbol(self, dtype: DType) -> String {
        if self.is_typed() {
            format!("{}_{}", self.base_name(), dtype.as_str())
        } else {
            self.base_name().to_string()
        }
    }

    /// Every symbol of this kernel, for every dtype.
    pub fn all_symbols(self) -> Vec<String> {
        if self.is_typed() {
            [DType::F32, DType::F16, DType::BF16]
                .iter()
                .map(|&d| self.symbol(d))
                .collect()
        } else {
            vec![self.base_name().to_string()]
        }
    }
}

/// A GPU architecture as NVRTC names it (`sm_90`), from a compute capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
}

impl Arch {
    /// The oldest architecture the kernels support (bf16 conversions are sm_80 instructions).
    pub const MIN: Arch = Arch { major: 8, minor: 0 };

    pub fn supported(self) -> bool {
        (self.major, self.minor) >= (Self::MIN.major, Self::MIN.minor)
    }

    pub fn nvrtc_name(self) -> String {
        format!("sm_{}{}", self.major, self.minor)
    }
}

/// NVRTC options: C++17, full-precision division and sqrt (the sampler mirrors host f64/f32
/// arithmetic), and the exact target architecture.
fn options(arch: Arch, name: &str) -> CompileOptions {
    CompileOptions {
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        options: vec![
            format!("--gpu-architecture={}", arch.nvrtc_name()),
            "-std=c++17".into(),
        ],
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// Whether NVRTC's library can be opened (cudarc panics on use when it cannot).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one source file for `arch`.
pub fn compile(source: KernelSource, arch: Arch) -> Result<Ptx, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    if !arch.supported() {
        return Err(CudaError::UnsupportedArch(arch.nvrtc_name()));
    }
    cudarc::nvrtc::compile_ptx_with_opts(
        source.translation_unit(),
        options(arch, source.file_name()),
    )
    .map_err(|e| CudaError::Compile {
        file: source.file_name(),
        arch: arch.nvrtc_name(),
        log: compile_log(&e),
    })
}

fn compile_log(e: &cudarc::nvrtc::CompileError) -> String {
    match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_has_a_source_that_defines_its_symbols() {
        for k in KernelId::ALL {
            let src = k.source().raw();
            let base = k.base_name();
            if k.is_typed() {
                // Typed kernels are instantiated by a macro that pastes `base_##NAME`.
                assert!(
                    src.contains(&format!("{base}_##NAME")),
                    "{base} in {}",
                    k.source().file_name()
                );
            } else {
                assert!(src.contains(&format!("{base}(")), "{base}");
            }
        }
        for s in KernelSource::ALL {
            assert!(
                s.kernels().count() > 0,
                "{} defines no kernel",
                s.file_name()
            );
            let tu = s.translation_unit();
            assert!(
                !tu.contains(INCLUDE_LINE),
                "header not spliced into {}",
                s.file_name()
            );
            assert!(
                !tu.contains("#include <"),
                "{} includes a system header",
                s.file_name()
            );
        }
    }

    #[test]
    fn symbols_and_arch_names() {
        assert_eq!(KernelId::AddRmsNorm.symbol(DType::BF16), "add_rmsnorm_bf16");
        assert_eq!(KernelId::SampleTokens.symbol(DType::F16), "sample_tokens");
        assert_eq!(KernelId::Rope.all_symbols().len(), 3);
        assert_eq!(Arch { major: 9, minor: 0 }.nvrtc_name(), "sm_90");
        assert!(!Arch { major: 7, minor: 5 }.supported());
        assert!(Arch { major: 8, minor: 9 }.supported());
    }
}
