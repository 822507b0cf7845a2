//! The float types: F32 (4 bytes), F16 and BF16 (2 bytes), little-endian, one value per "block".
//! Widening is exact; narrowing rounds to nearest, ties to even, as ggml and gguf-py do (NaN
//! stays NaN, quieted).

use half::{bf16, f16};

/// The f16 at the start of `b` (the scale fields of the block types are f16), widened exactly.
#[inline]
pub(crate) fn f16_at(b: &[u8; 2]) -> f32 {
    f16::from_le_bytes(*b).to_f32()
}

/// `v` rounded to f16 (nearest, ties to even) and its widened value, which is what a block
/// decoder will see.
#[inline]
pub(crate) fn to_f16(v: f32) -> ([u8; 2], f32) {
    let h = f16::from_f32(v);
    (h.to_le_bytes(), h.to_f32())
}

pub(crate) fn dequantize_f32(bytes: &[u8], out: &mut [f32]) {
    let (words, _) = bytes.as_chunks::<4>();
    for (o, w) in out.iter_mut().zip(words) {
        *o = f32::from_le_bytes(*w);
    }
}

pub(crate) fn dequantize_f16(bytes: &[u8], out: &mut [f32]) {
    let (halves, _) = bytes.as_chunks::<2>();
    for (o, h) in out.iter_mut().zip(halves) {
        *o = f16::from_le_bytes(*h).to_f32();
    }
}

pub(crate) fn dequantize_bf16(bytes: &[u8], out: &mut [f32]) {
    let (halves, _) = bytes.as_chunks::<2>();
    for (o, h) in out.iter_mut().zip(halves) {
        *o = bf16::from_le_bytes(*h).to_f32();
    }
}

pub(crate) fn quantize_f32(src: &[f32], out: &mut [u8]) {
    let (words, _) = out.as_chunks_mut::<4>();
    for (w, v) in words.iter_mut().zip(src) {
        *w = v.to_le_bytes();
    }
}

pub(crate) fn quantize_f16(src: &[f32], out: &mut [u8]) {
    let (halves, _) = out.as_chunks_mut::<2>();
    for (h, v) in halves.iter_mut().zip(src) {
        *h = f16::from_f32(*v).to_le_bytes();
    }
}

pub(crate) fn quantize_bf16(src: &[f32], out: &mut [u8]) {
    let (halves, _) = out.as_chunks_mut::<2>();
    for (h, v) in halves.iter_mut().zip(src) {
        *h = bf16::from_f32(*v).to_le_bytes();
    }
}
