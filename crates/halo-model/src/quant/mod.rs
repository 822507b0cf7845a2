//! Reference (scalar) dequantization and quantization of the element types in
//! [`crate::dtype::StoredDType`]. Backends use these to widen the rows they need to f32
//! (embedding lookups, backends without integer kernels) and to quantize safetensors weights at
//! load; the CPU backend's fast kernels are tested against them.
//!
//! Dequantization is bit-exact with ggml's reference code (and gguf-py's `gguf.quants`, which
//! matches it): the same f32 operations in the same order, no fused multiply-adds. The Q8_0 and
//! Q4_0 quantizers are bit-exact with ggml's `quantize_row_*_ref` (tested against gguf-py). The
//! K-quant quantizers follow the same ideas (per-sub-block least-squares fits of scale and min
//! over a sweep of step sizes, then 6- or 8-bit quantized sub-block scales); their contract is
//! ggml's accuracy, but as they do the same f32 operations in the same order they also make
//! ggml's bytes on the tested blocks, so a file halo quantizes matches `llama-quantize`'s without
//! an importance matrix.
//!
//! Every product in these formulas is exact in f32 (an f16 scale has 11 significant bits, a
//! sub-block scale at most 8 and a quant at most 6, so no product needs more than 24), so the
//! order of the multiplications does not matter; the one rounding is Q4_K/Q5_K's final
//! subtraction, so fast kernels get identical values as long as they compute `(d·sc)·q` exactly
//! and subtract `dmin·m` once (an FMA is fine too: the product it fuses is exact).
//!
//! # Block layouts
//!
//! A row of `cols` values is `cols / block_elems` blocks laid end to end, with no padding and
//! no alignment (f16 fields may be at odd addresses). All multi-byte fields are little-endian;
//! f16 is IEEE binary16, widened to f32 exactly. Each type's module documents its block:
//!
//! - [`q4_0`]: 32 values, 18 bytes: `d: f16`, 16 bytes of nibbles; `d · (q − 8)`.
//! - [`q8_0`]: 32 values, 34 bytes: `d: f16`, 32 × i8; `d · q`.
//! - [`q4_k`]: 256 values, 144 bytes: `d, dmin: f16`, 12 bytes of 6-bit scales/mins, 128 bytes
//!   of nibbles; `(d·sc)·q − (dmin·m)` per 32-value sub-block.
//! - [`q5_k`]: 256 values, 176 bytes: Q4_K plus 32 bytes of fifth bits (before the nibbles).
//! - [`q6_k`]: 256 values, 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit highs,
//!   16 × i8 scales, `d: f16` last; `(d·sc)·(q − 32)` per 16-value sub-block.
//!
//! # Preconditions
//!
//! The functions here take whole blocks and an output of exactly the matching length; callers
//! size both from checked tensor shapes, so a mismatch is a bug and panics. Nothing else panics:
//! any bytes decode to some f32 values (non-finite only if a scale field is), and any f32 input
//! quantizes to some valid block (NaN or huge inputs give meaningless but valid blocks).

mod float;
pub mod k_quants;
pub mod q4_0;
pub mod q8_0;

pub use k_quants::{q4_k, q5_k, q6_k};

use crate::dtype::StoredDType;

/// Widens `bytes` (a whole number of blocks of `dtype`) into `out`, which must hold exactly the
/// number of values those blocks encode.
///
/// # Panics
/// When `bytes` is not a whole number of blocks or `out` has the wrong length.
pub fn dequantize(dtype: StoredDType, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes.len() / dtype.block_bytes();
    assert!(
        bytes.len() == blocks * dtype.block_bytes() && out.len() == blocks * dtype.block_elems(),
        "dequantize {dtype}: {} bytes into {} values",
        bytes.len(),
        out.len()
    );
    match dtype {
        StoredDType::F32 => float::dequantize_f32(bytes, out),
        StoredDType::F16 => float::dequantize_f16(bytes, out),
        StoredDType::BF16 => float::dequantize_bf16(bytes, out),
        StoredDType::Q4_0 => each_block(bytes, out, q4_0::dequantize_block),
        StoredDType::Q8_0 => each_block(bytes, out, q8_0::dequantize_block),
        StoredDType::Q4_K => each_block(bytes, out, q4_k::dequantize_block),
        StoredDType::Q5_K => each_block(bytes, out, q5_k::dequantize_block),
        StoredDType::Q6_K => each_block(bytes, out, q6_k::dequantize_block),
    }
}

/// Widens row `row` of a `[rows, cols]` tensor stored in `data` into `out` (`cols` values),
/// touching only that row's bytes: what an embedding lookup needs.
///
/// # Panics
/// When `cols` is not a whole number of blocks, `out.len() != cols`, or the row lies past the
/// end of `data`.
pub fn dequantize_row(dtype: StoredDType, data: &[u8], cols: usize, row: usize, out: &mut [f32]) {
    let bytes = row_slice(dtype, data, cols, row);
    assert_eq!(out.len(), cols, "dequantize_row {dtype}: output length");
    dequantize(dtype, bytes, out);
}

/// The bytes of row `row` of a `[rows, cols]` tensor of `dtype` stored in `data`.
///
/// # Panics
/// When `cols` is not a whole number of blocks or the row lies past the end of `data`.
pub fn row_slice(dtype: StoredDType, data: &[u8], cols: usize, row: usize) -> &[u8] {
    let row_bytes = dtype
        .row_bytes(cols)
        .unwrap_or_else(|| panic!("{dtype}: a row of {cols} values is not whole blocks"));
    let start = row
        .checked_mul(row_bytes)
        .filter(|s| s.checked_add(row_bytes).is_some_and(|e| e <= data.len()))
        .unwrap_or_else(|| panic!("{dtype}: row {row} of {cols} values is past the data"));
    &data[start..start + row_bytes]
}

/// Quantizes `src` (a whole number of blocks of `dtype`) into `out`, which must be exactly the
/// blocks' size. The float types round to nearest, ties to even.
///
/// # Panics
/// When `src` is not a whole number of blocks or `out` has the wrong length.
pub fn quantize(dtype: StoredDType, src: &[f32], out: &mut [u8]) {
    let blocks = src.len() / dtype.block_elems();
    assert!(
        src.len() == blocks * dtype.block_elems() && out.len() == blocks * dtype.block_bytes(),
        "quantize {dtype}: {} values into {} bytes",
        src.len(),
        out.len()
    );
    match dtype {
        StoredDType::F32 => float::quantize_f32(src, out),
        StoredDType::F16 => float::quantize_f16(src, out),
        StoredDType::BF16 => float::quantize_bf16(src, out),
        StoredDType::Q4_0 => each_src_block(src, out, q4_0::quantize_block),
        StoredDType::Q8_0 => each_src_block(src, out, q8_0::quantize_block),
        StoredDType::Q4_K => each_src_block(src, out, q4_k::quantize_block),
        StoredDType::Q5_K => each_src_block(src, out, q5_k::quantize_block),
        StoredDType::Q6_K => each_src_block(src, out, q6_k::quantize_block),
    }
}

/// [`quantize`] into a new buffer; `None` when `src` is not a whole number of blocks.
pub fn quantize_to_vec(dtype: StoredDType, src: &[f32]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; dtype.row_bytes(src.len())?];
    quantize(dtype, src, &mut out);
    Some(out)
}

fn each_block<const B: usize, const E: usize>(
    bytes: &[u8],
    out: &mut [f32],
    f: fn(&[u8; B], &mut [f32; E]),
) {
    let (blocks, _) = bytes.as_chunks::<B>();
    let (outs, _) = out.as_chunks_mut::<E>();
    for (b, o) in blocks.iter().zip(outs) {
        f(b, o);
    }
}

fn each_src_block<const B: usize, const E: usize>(
    src: &[f32],
    out: &mut [u8],
    f: fn(&[f32; E], &mut [u8; B]),
) {
    let (blocks, _) = src.as_chunks::<E>();
    let (outs, _) = out.as_chunks_mut::<B>();
    for (x, o) in blocks.iter().zip(outs) {
        f(x, o);
    }
}
