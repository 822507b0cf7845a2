//! Q6_K: 256 values in 210 bytes, sixteen sub-blocks of 16 with a signed 8-bit scale each.
//!
//! | bytes    | field             | meaning                                |
//! |----------|-------------------|----------------------------------------|
//! | 0..128   | `ql`: u8 ×128     | low 4 bits of the quants               |
//! | 128..192 | `qh`: u8 ×64      | high 2 bits of the quants              |
//! | 192..208 | `scales`: i8 ×16  | sub-block scales                       |
//! | 208..210 | `d`: f16          | scale of the sub-block scales          |
//!
//! Value `i` (0..256): let `h = i / 128` (which half), `p = (i % 128) / 32` (which quarter of
//! the half), `l = i % 32`. Its low 4 bits are in `ql[64·h + 32·(p % 2) + l]`, the low nibble
//! for `p < 2`, the high nibble otherwise; its high 2 bits are bits `2p, 2p+1` of
//! `qh[32·h + l]`. So `q = low | high << 4` (0..=63), and with `sc = scales[i / 16]`:
//!
//! `value = (d · sc) · (q − 32)`, rounded to f32 after each product, in that order.

use super::{fit_symmetric, nearest_int, QK_K};
use crate::quant::float::{f16_at, to_f16};

pub const BLOCK_ELEMS: usize = QK_K;
pub const BLOCK_BYTES: usize = 210;

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(&[block[208], block[209]]);
    let scales = &block[192..208];
    for (i, y) in out.iter_mut().enumerate() {
        let (h, p, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = block[64 * h + 32 * (p % 2) + l] >> (4 * (p / 2)) & 0x0f;
        let high = (block[128 + 32 * h + l] >> (2 * p)) & 3;
        let q = i32::from(low | (high << 4)) - 32;
        *y = d * f32::from(scales[i / 16] as i8) * q as f32;
    }
}

/// Fits each sub-block's scale by weighted least squares (weights `x²`, a sweep of 19 step
/// sizes), quantizes the scales to 8 bits against the largest, then re-quantizes every value.
pub fn quantize_block(x: &[f32; BLOCK_ELEMS], out: &mut [u8; BLOCK_BYTES]) {
    let (subs, _) = x.as_chunks::<16>();
    // The fit's levels are kept where a sub-block's scale rounds to 0 (they decode to 0 anyway,
    // but the bytes then match ggml's).
    let mut levels = [0u8; QK_K];
    let (fit_levels, _) = levels.as_chunks_mut::<16>();
    let scales: [f32; 16] =
        std::array::from_fn(|j| fit_symmetric(&subs[j], 32, &mut fit_levels[j]));
    let mut max_abs = 0.0f32;
    let mut max = 0.0f32;
    for &s in &scales {
        if s.abs() > max_abs {
            max_abs = s.abs();
            max = s;
        }
    }
    out.fill(0);
    if max_abs < 1e-15 {
        // All (near) zero: d = 0 decodes every value to 0 whatever the quants.
        return;
    }
    // The signed range is −128..=127: put the largest scale on the −128 end, as fit_symmetric
    // does with the values.
    let inv = -128.0 / max;
    let (dh, d) = to_f16(1.0 / inv);
    out[208..210].copy_from_slice(&dh);
    for (j, sub) in subs.iter().enumerate() {
        let sc = nearest_int(inv * scales[j]).clamp(-128, 127) as i8;
        out[192 + j] = sc as u8;
        let step = d * f32::from(sc);
        if step == 0.0 {
            continue;
        }
        for (k, &v) in sub.iter().enumerate() {
            levels[16 * j + k] = (nearest_int(v / step).clamp(-32, 31) + 32) as u8;
        }
    }
    for (i, &q) in levels.iter().enumerate() {
        let (h, p, l) = (i / 128, (i % 128) / 32, i % 32);
        out[64 * h + 32 * (p % 2) + l] |= (q & 0x0f) << (4 * (p / 2));
        out[128 + 32 * h + l] |= (q >> 4) << (2 * p);
    }
}
