//! Q5_K: 256 values in 176 bytes; Q4_K's layout with a fifth bit per quant.
//!
//! | bytes    | field            | meaning                                            |
//! |----------|------------------|----------------------------------------------------|
//! | 0..2     | `d`: f16         | scale of the sub-block scales                      |
//! | 2..4     | `dmin`: f16      | scale of the sub-block mins                        |
//! | 4..16    | `scales`: u8 ×12 | eight 6-bit scales and mins, as in Q4_K ([`super::scale_min`]) |
//! | 16..48   | `qh`: u8 ×32     | high (fifth) bits                                  |
//! | 48..176  | `qs`: u8 ×128    | low 4 bits                                         |
//!
//! Value `i` (0..256) lies in sub-block `s = i / 32`. Its low 4 bits are where Q4_K keeps its
//! quant, shifted by the 32 `qh` bytes: byte `48 + 32·(i / 64) + i % 32`, low nibble for even
//! `s`, high for odd. Its fifth bit is bit `s` of `qh[i % 32]`. So `q = nibble + 16·bit`
//! (0..=31), and with `(sc, m) = scale_min(scales, s)`:
//!
//! `value = (d·sc) · q − (dmin·m)`, each product rounded to f32 in that order (no FMA).

use super::{quantize_affine, scale_min, Sweep};
use crate::quant::float::f16_at;

pub const BLOCK_ELEMS: usize = super::QK_K;
pub const BLOCK_BYTES: usize = 176;

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(&[block[0], block[1]]);
    let dmin = f16_at(&[block[2], block[3]]);
    let scales: &[u8; 12] = block[4..16].try_into().expect("12 bytes");
    let qh = &block[16..48];
    let (runs, _) = block[48..].as_chunks::<32>();
    let (pairs, _) = out.as_chunks_mut::<64>();
    for (c, (qs, y)) in runs.iter().zip(pairs).enumerate() {
        let (sc1, m1) = scale_min(scales, 2 * c);
        let (sc2, m2) = scale_min(scales, 2 * c + 1);
        let (d1, o1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, o2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = y.split_at_mut(32);
        for l in 0..32 {
            let h1 = ((qh[l] >> (2 * c)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
            lo[l] = d1 * f32::from((qs[l] & 0x0f) | h1) - o1;
            hi[l] = d2 * f32::from((qs[l] >> 4) | h2) - o2;
        }
    }
}

/// As Q4_K's quantizer with 32 levels and a narrower sweep (31 − 0.5 … 31 + 1 levels across
/// each sub-block's range, 16 steps).
pub fn quantize_block(x: &[f32; BLOCK_ELEMS], out: &mut [u8; BLOCK_BYTES]) {
    let sweep = Sweep {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        steps: 15,
    };
    let b = quantize_affine(x, &sweep);
    out[0..2].copy_from_slice(&b.d);
    out[2..4].copy_from_slice(&b.dmin);
    out[4..16].copy_from_slice(&b.scales);
    let (qh, qs) = out[16..].split_at_mut(32);
    qh.fill(0);
    let (runs, _) = qs.as_chunks_mut::<32>();
    let (pairs, _) = b.levels.as_chunks::<64>();
    for (c, (run, l)) in runs.iter_mut().zip(pairs).enumerate() {
        for i in 0..32 {
            let (a, b) = (l[i], l[i + 32]);
            run[i] = (a & 0x0f) | ((b & 0x0f) << 4);
            qh[i] |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1));
        }
    }
}
