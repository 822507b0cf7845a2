//! Reference (scalar) dequantization and quantization of the block types in
//! [`crate::dtype::StoredDType`], bit-exact with ggml's reference code. Backends use these to
//! widen rows they need in f32 (embedding lookups, backends without integer kernels) and to
//! quantize safetensors weights at load; the CPU backend's fast kernels are tested against them.

use crate::dtype::StoredDType;
use half::{bf16, f16};

/// Widens `bytes` (a whole number of blocks of `dtype`) into `out`, which must hold exactly the
/// number of values those blocks encode.
///
/// # Panics
/// When `bytes` is not a whole number of blocks or `out` has the wrong length (callers size
/// both from checked tensor shapes).
pub fn dequantize(dtype: StoredDType, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes.len() / dtype.block_bytes();
    assert!(
        bytes.len() == blocks * dtype.block_bytes() && out.len() == blocks * dtype.block_elems(),
        "dequantize {dtype}: {} bytes into {} values",
        bytes.len(),
        out.len()
    );
    match dtype {
        StoredDType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        StoredDType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        StoredDType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        other => unimplemented!("dequantize {other}: being written"),
    }
}
