//! Q4_0: 32 values in 18 bytes.
//!
//! | bytes  | field        | meaning                                                   |
//! |--------|--------------|-----------------------------------------------------------|
//! | 0..2   | `d`: f16     | scale                                                     |
//! | 2..18  | `qs`: u8 ×16 | byte `2 + j` holds value `j` (low nibble) and `j + 16` (high nibble) |
//!
//! Value = `d · (q − 8)` with `q` the unsigned nibble (f32 product of the widened `d` and the
//! integer `q − 8` in −8..=7).

use super::float::{f16_at, to_f16};

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 18;

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(&[block[0], block[1]]);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &b) in block[2..].iter().enumerate() {
        lo[j] = (i32::from(b & 0x0f) - 8) as f32 * d;
        hi[j] = (i32::from(b >> 4) - 8) as f32 * d;
    }
}

/// ggml's reference rounding (gguf-py reproduces it bit for bit). The grid is asymmetric
/// (−8..=7), so the value of largest magnitude, sign included, is put on the −8 end:
/// `d = max / −8`, which uses the full range on the side that has it. The first of several
/// equally large values decides the sign. Quants are `trunc(x / d + 8.5)` capped at 15 (round
/// half up), computed with the f32 reciprocal of the unrounded `d`. An all-zero block stores
/// `d = −0.0` as ggml does (gguf-py stores +0.0 when the block's first value is −0.0; both
/// decode to zeros).
pub fn quantize_block(x: &[f32; BLOCK_ELEMS], out: &mut [u8; BLOCK_BYTES]) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (dh, _) = to_f16(d);
    out[..2].copy_from_slice(&dh);
    // `as` truncates toward zero and saturates; the clamp keeps garbage input in the nibble.
    let quant = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
    for j in 0..16 {
        out[2 + j] = quant(x[j]) | (quant(x[j + 16]) << 4);
    }
}
