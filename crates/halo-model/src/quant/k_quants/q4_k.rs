//! Q4_K: 256 values in 144 bytes, eight sub-blocks of 32 with a 6-bit scale and 6-bit min each.
//!
//! | bytes    | field           | meaning                                             |
//! |----------|-----------------|-----------------------------------------------------|
//! | 0..2     | `d`: f16        | scale of the sub-block scales                       |
//! | 2..4     | `dmin`: f16     | scale of the sub-block mins                         |
//! | 4..16    | `scales`: u8 ×12 | eight 6-bit scales and eight 6-bit mins, packed as [`super::scale_min`] reads them |
//! | 16..144  | `qs`: u8 ×128   | 4-bit quants                                        |
//!
//! Value `i` (0..256) lies in sub-block `s = i / 32`. Its quant is in byte
//! `16 + 32·(i / 64) + i % 32`: the low nibble when `s` is even, the high nibble when odd (each
//! 32-byte run of `qs` holds two consecutive sub-blocks). With `(sc, m) = scale_min(scales, s)`:
//!
//! `value = (d·sc) · q − (dmin·m)`, where `d·sc` and `dmin·m` are each rounded to f32 first
//! (ggml computes them once per sub-block), then the product, then the difference (no FMA).

use super::{quantize_affine, scale_min, Sweep};
use crate::quant::float::f16_at;

pub const BLOCK_ELEMS: usize = super::QK_K;
pub const BLOCK_BYTES: usize = 144;

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(&[block[0], block[1]]);
    let dmin = f16_at(&[block[2], block[3]]);
    let scales: &[u8; 12] = block[4..16].try_into().expect("12 bytes");
    let (runs, _) = block[16..].as_chunks::<32>();
    let (pairs, _) = out.as_chunks_mut::<64>();
    for (c, (qs, y)) in runs.iter().zip(pairs).enumerate() {
        let (sc1, m1) = scale_min(scales, 2 * c);
        let (sc2, m2) = scale_min(scales, 2 * c + 1);
        let (d1, o1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, o2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = y.split_at_mut(32);
        for l in 0..32 {
            lo[l] = d1 * f32::from(qs[l] & 0x0f) - o1;
            hi[l] = d2 * f32::from(qs[l] >> 4) - o2;
        }
    }
}

/// Fits each sub-block's scale and min over a sweep of 21 step sizes (15 − 1 … 15 + 1 levels
/// across its range), quantizes scales and mins to 6 bits, then re-quantizes every value.
pub fn quantize_block(x: &[f32; BLOCK_ELEMS], out: &mut [u8; BLOCK_BYTES]) {
    let sweep = Sweep {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        steps: 20,
    };
    let b = quantize_affine(x, &sweep);
    out[0..2].copy_from_slice(&b.d);
    out[2..4].copy_from_slice(&b.dmin);
    out[4..16].copy_from_slice(&b.scales);
    let (runs, _) = out[16..].as_chunks_mut::<32>();
    let (pairs, _) = b.levels.as_chunks::<64>();
    for (qs, l) in runs.iter_mut().zip(pairs) {
        for i in 0..32 {
            qs[i] = l[i] | (l[i + 32] << 4);
        }
    }
}
