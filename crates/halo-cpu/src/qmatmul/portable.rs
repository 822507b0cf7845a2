//! The portable integer kernels: one scalar chain per output, the reference the SIMD paths are
//! checked against (bit for bit for the K-quants, whose float chain every ISA shares).

// Kernels index several parallel arrays by the same tile coordinates.
#![allow(clippy::needless_range_loop)]

use super::{half_at, kscales, Acts, Sums};
use halo_model::dtype::StoredDType;

/// `sums[i][j]` = activation row `m0 + i` · weight row `j` of `w` (`nt` rows of the same length).
pub(crate) fn tile(
    dtype: StoredDType,
    acts: &Acts,
    m0: usize,
    mt: usize,
    w: &[u8],
    nt: usize,
    sums: &mut Sums,
) {
    let rb = w.len() / nt;
    for (j, wr) in w.chunks_exact(rb).enumerate() {
        for (i, s) in sums[..mt].iter_mut().enumerate() {
            s[j] = dot(dtype, acts, m0 + i, wr);
        }
    }
}

fn dot(dtype: StoredDType, acts: &Acts, i: usize, w: &[u8]) -> f32 {
    let (a, ad) = (acts.row(i), acts.scales(i));
    match dtype {
        StoredDType::Q8_0 | StoredDType::Q4_0 => {
            let bb = dtype.block_bytes();
            let mut acc = 0.0f32;
            for ((wb, ab), &dx) in w.chunks_exact(bb).zip(a.chunks_exact(32)).zip(ad) {
                let isum = if dtype == StoredDType::Q8_0 {
                    q8_0_block(wb, ab)
                } else {
                    q4_0_block(wb, ab)
                };
                acc += (half_at(wb, 0) * dx) * isum as f32;
            }
            acc
        }
        StoredDType::Q4_K | StoredDType::Q5_K | StoredDType::Q6_K => {
            let bb = dtype.block_bytes();
            let bs = acts.sums16(i);
            let mut acc = 0.0f32;
            for (((wb, ab), &dx), bs) in w
                .chunks_exact(bb)
                .zip(a.chunks_exact(256))
                .zip(ad)
                .zip(bs.chunks_exact(16))
            {
                let (isum, msum, d, dmin) = kquant_block(dtype, wb, ab, bs);
                acc = k_step(acc, d, dmin, dx, isum, msum);
            }
            acc
        }
        other => unreachable!("no integer kernel for {other}"),
    }
}

/// The K-quants' float step per super-block, shared by every ISA (unfused on purpose).
#[inline(always)]
pub(crate) fn k_step(acc: f32, d: f32, dmin: f32, dx: f32, isum: i32, msum: i32) -> f32 {
    let acc = acc + (d * dx) * isum as f32;
    acc - (dmin * dx) * msum as f32
}

/// Σ w·a over a Q8_0 block.
pub(crate) fn q8_0_block(wb: &[u8], a: &[i8]) -> i32 {
    wb[2..34]
        .iter()
        .zip(a)
        .map(|(&q, &v)| q as i8 as i32 * v as i32)
        .sum()
}

/// Σ (q − 8)·a over a Q4_0 block.
pub(crate) fn q4_0_block(wb: &[u8], a: &[i8]) -> i32 {
    let qs = &wb[2..18];
    let mut s = 0i32;
    for l in 0..16 {
        s += ((qs[l] & 0xF) as i32 - 8) * a[l] as i32;
        s += ((qs[l] >> 4) as i32 - 8) * a[l + 16] as i32;
    }
    s
}

/// One K-quant super-block against 256 activation codes: `(isum, msum, d, dmin)` with the
/// block's dot `= d·dx·isum − dmin·dx·msum` (msum = 0 and dmin = 0 for Q6_K).
pub(crate) fn kquant_block(
    dtype: StoredDType,
    wb: &[u8],
    a: &[i8],
    bs: &[i16],
) -> (i32, i32, f32, f32) {
    match dtype {
        StoredDType::Q4_K | StoredDType::Q5_K => {
            let (sc, mn) = kscales(&wb[4..16]);
            let (qh, qs) = if dtype == StoredDType::Q5_K {
                (Some(&wb[16..48]), &wb[48..176])
            } else {
                (None, &wb[16..144])
            };
            let mut isum = 0i32;
            for c in 0..4 {
                let (mut lo, mut hi) = (0i32, 0i32);
                for l in 0..32 {
                    let b = qs[32 * c + l];
                    let (mut ql, mut qu) = ((b & 0xF) as i32, (b >> 4) as i32);
                    if let Some(qh) = qh {
                        ql |= (((qh[l] >> (2 * c)) & 1) as i32) << 4;
                        qu |= (((qh[l] >> (2 * c + 1)) & 1) as i32) << 4;
                    }
                    lo += ql * a[64 * c + l] as i32;
                    hi += qu * a[64 * c + 32 + l] as i32;
                }
                isum += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
            }
            let msum = (0..8)
                .map(|s| mn[s] as i32 * (bs[2 * s] as i32 + bs[2 * s + 1] as i32))
                .sum();
            (isum, msum, half_at(wb, 0), half_at(wb, 2))
        }
        StoredDType::Q6_K => {
            let (ql, qh, sc) = (&wb[0..128], &wb[128..192], &wb[192..208]);
            let mut isum = 0i32;
            for s in 0..16 {
                let mut dot = 0i32;
                for e in 16 * s..16 * s + 16 {
                    let (n, t, l) = (e / 128, (e % 128) / 32, e % 32);
                    let byte = ql[64 * n + l + 32 * (t & 1)];
                    let nib = if t < 2 { byte & 0xF } else { byte >> 4 };
                    let q = nib | (((qh[32 * n + l] >> (2 * t)) & 3) << 4);
                    dot += q as i32 * a[e] as i32;
                }
                isum += sc[s] as i8 as i32 * (dot - 32 * bs[s] as i32);
            }
            (isum, 0, half_at(wb, 208), 0.0)
        }
        other => unreachable!("{other} is not a K-quant"),
    }
}
