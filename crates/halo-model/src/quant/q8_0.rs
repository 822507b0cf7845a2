//! Q8_0: 32 values in 34 bytes.
//!
//! | bytes  | field      | meaning                                  |
//! |--------|------------|------------------------------------------|
//! | 0..2   | `d`: f16   | scale                                    |
//! | 2..34  | `qs`: i8 ×32 | quant of value `j` at byte `2 + j`     |
//!
//! Value `j` = `d · qs[j]` (f32 product of the widened `d` and the integer).

use super::float::{f16_at, to_f16};

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 34;

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(&[block[0], block[1]]);
    for (o, &q) in out.iter_mut().zip(&block[2..]) {
        *o = f32::from(q as i8) * d;
    }
}

/// ggml's reference rounding, which gguf-py reproduces bit for bit: `d = amax / 127`, the
/// quants are `round(x / d)` (ties away from zero) computed with the f32 reciprocal of the
/// *unrounded* `d`; only then is `d` stored as f16. Values with |x| > 127 · 65504 overflow `d`
/// to infinity, as in ggml.
pub fn quantize_block(x: &[f32; BLOCK_ELEMS], out: &mut [u8; BLOCK_BYTES]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (dh, _) = to_f16(d);
    out[..2].copy_from_slice(&dh);
    for (q, v) in out[2..].iter_mut().zip(x) {
        // `as` saturates (and maps NaN to 0), so a non-finite input cannot wrap around.
        *q = ((v * id).round() as i8) as u8;
    }
}
