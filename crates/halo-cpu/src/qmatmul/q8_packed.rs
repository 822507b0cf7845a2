//! Q8_0 weights repacked for AVX-512 VNNI so that one vector lane is one output.
//!
//! In ggml's row layout a `vpdpbusd` lane holds a partial sum of one row's block, so every
//! (weight row, activation row, block) pays an int→float conversion, a scale and a share of a
//! horizontal reduction, and the activation block is reloaded for every weight row. Here 16
//! weight rows are interleaved four codes at a time: eight `vpdpbusd`, each against one
//! broadcast group of four activation codes, finish a block's exact integer dot for 16 outputs
//! at once, and the float step runs once per 16 outputs. A tile keeps one group's eight code
//! vectors in registers and meets up to [`TILE_M`] activation rows with them; decode streams
//! the groups contiguously.
//!
//! Layout: rows in groups of [`GROUP`] (the last one padded with zero rows whose scale is 0);
//! group `g`'s block `b` (values `32b..32b + 32` of its rows) is [`BLOCK_BYTES`] bytes at
//! `(g·nb + b)·BLOCK_BYTES`: the 16 rows' f16 scales, then 8 chunks of 64 bytes, chunk `t`
//! holding values `32b + 4t .. 32b + 4t + 4` of row `r` at bytes `4r .. 4r + 4`, each code
//! stored plus 128 (`code ^ 0x80`): `vpdpbusd` wants its first operand unsigned, and the
//! `128·Σa` this adds is taken off by starting the sum at `−128·Σa` (computed with the codes,
//! [`Acts::offset32`]). Same size as the rows when their count is a multiple
//! of 16.
//!
//! Chain per output, the portable path's exactly (so both give the same bits): `acc = 0`, then
//! per block in K order `acc = acc + (dw·dx)·(isum as f32)`, unfused. The integer sum is exact
//! (|isum| ≤ 32·127·128 < 2²⁴, so its conversion is exact too), whatever order the lanes add in.

use super::groups::{self, GROUP};
use super::Acts;
use crate::hugepages::Aligned;

/// One group's block: 16 f16 scales and 16 × 32 codes.
pub(crate) const BLOCK_BYTES: usize = 2 * GROUP + 32 * GROUP;

/// Activation rows one tile meets with a group's codes held in registers (8 code vectors,
/// 8 accumulators and the scales fit in the 32 vector registers).
pub(crate) const TILE_M: usize = 8;

/// Bytes of `rows × cols` Q8_0 values in this layout.
pub(crate) fn packed_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(GROUP) * (cols / 32) * BLOCK_BYTES
}

/// Repacks `rows` Q8_0 rows of `cols` values (ggml's layout, 34 bytes a block).
pub(crate) fn pack(rows: usize, cols: usize, plain: &[u8]) -> Aligned {
    let nb = cols / 32;
    debug_assert_eq!(plain.len(), rows * nb * 34);
    let mut out = Aligned::zeroed(packed_len(rows, cols));
    for (gb, dst) in out.chunks_exact_mut(BLOCK_BYTES).enumerate() {
        let (g, b) = (gb / nb, gb % nb);
        // Padding rows: code 0 (stored 0x80), scale 0.
        dst[2 * GROUP..].fill(0x80);
        for r in 0..GROUP.min(rows - g * GROUP) {
            let src = &plain[((g * GROUP + r) * nb + b) * 34..][..34];
            dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
            for t in 0..8 {
                for u in 0..4 {
                    dst[2 * GROUP + 64 * t + 4 * r + u] = src[2 + 4 * t + u] ^ 0x80;
                }
            }
        }
    }
    out
}

/// Row `row` of a packed matrix back in ggml's layout.
pub(crate) fn unpack_row(packed: &[u8], cols: usize, row: usize) -> Vec<u8> {
    let nb = cols / 32;
    let (g, r) = (row / GROUP, row % GROUP);
    let mut out = vec![0u8; nb * 34];
    for (b, dst) in out.chunks_exact_mut(34).enumerate() {
        let src = &packed[(g * nb + b) * BLOCK_BYTES..][..BLOCK_BYTES];
        dst[..2].copy_from_slice(&src[2 * r..2 * r + 2]);
        for t in 0..8 {
            for u in 0..4 {
                dst[2 + 4 * t + u] = src[2 * GROUP + 64 * t + 4 * r + u] ^ 0x80;
            }
        }
    }
    out
}

/// Every row of a packed matrix back in ggml's layout.
pub(crate) fn unpack(packed: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    (0..rows)
        .flat_map(|r| unpack_row(packed, cols, r))
        .collect()
}

/// `y = x · wᵀ` for a packed matrix of `n` rows: `acts` are the `m` quantized activation rows,
/// `y` is `[m, n]` row-major. Splits the groups over the current rayon pool.
#[cfg(target_arch = "x86_64")]
pub(crate) fn matmul_avx512(acts: &Acts, m: usize, packed: &[u8], n: usize, y: &mut [f32]) {
    let k = acts.k;
    let nb = k / 32;
    assert!(
        acts.block == 32
            && k.is_multiple_of(32)
            && acts.q.len() >= m * k
            && acts.d.len() >= m * nb
            && acts.offset32.len() >= m * nb
            && packed.len() == n.div_ceil(GROUP) * nb * BLOCK_BYTES
            && y.len() == m * n
    );
    let groups = n.div_ceil(GROUP);
    let run_tile = |g: usize, i0: usize, c: usize, col: *mut f32, mask: u16| {
        let w = packed[g * nb * BLOCK_BYTES..].as_ptr();
        // With a full tile of rows or more, the step computes long enough per group to hide
        // the next group's fetch: the first tile of a group asks for the next group's weights,
        // block by block as it goes, so they arrive in L2 while this group's tiles compute.
        // Fewer rows stream the weights, which the hardware prefetcher follows on its own.
        let ahead = if m >= TILE_M && i0 == 0 && g + 1 < groups {
            packed[(g + 1) * nb * BLOCK_BYTES..].as_ptr()
        } else {
            std::ptr::null()
        };
        // SAFETY: the caller checked the CPU has AVX-512 F/BW/VL/VNNI and F16C; the assert
        // above bounds every read (group g's nb blocks, rows i0 .. i0 + c of the activations);
        // `groups::run` hands each tile its own in-bounds columns of `y`.
        unsafe {
            match c {
                8 => tile::<8>(acts, i0, (w, ahead), nb, col, n, mask),
                7 => tile::<7>(acts, i0, (w, ahead), nb, col, n, mask),
                6 => tile::<6>(acts, i0, (w, ahead), nb, col, n, mask),
                5 => tile::<5>(acts, i0, (w, ahead), nb, col, n, mask),
                4 => tile::<4>(acts, i0, (w, ahead), nb, col, n, mask),
                3 => tile::<3>(acts, i0, (w, ahead), nb, col, n, mask),
                2 => tile::<2>(acts, i0, (w, ahead), nb, col, n, mask),
                _ => tile::<1>(acts, i0, (w, ahead), nb, col, n, mask),
            }
        }
    };
    groups::run(m, n, k, (GROUP, TILE_M), y, &run_tile);
}

/// One group (`w`: its first block) against activation rows `i0 .. i0 + C`; lane `r` of row
/// `i`'s result goes to `y[i·n + r]` for the lanes in `mask`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // several arrays indexed by the same row
unsafe fn tile<const C: usize>(
    acts: &Acts,
    i0: usize,
    (w, ahead): (*const u8, *const u8),
    nb: usize,
    y: *mut f32,
    n: usize,
    mask: u16,
) {
    use std::arch::x86_64::*;
    let k = acts.k;
    let (aq, ad, aoff) = (acts.q.as_ptr(), acts.d.as_ptr(), acts.offset32.as_ptr());
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..nb {
        let blk = w.add(b * BLOCK_BYTES);
        if !ahead.is_null() {
            let next = ahead.add(b * BLOCK_BYTES).cast::<i8>();
            for line in (0..BLOCK_BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T1>(next.add(line));
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk.cast()));
        let mut wv = [_mm512_setzero_si512(); 8];
        for (t, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_si512(blk.add(2 * GROUP + 64 * t).cast());
        }
        // Code vector t against every row before the next vector: each row's sum is a short
        // loop body the compiler unrolls, so the sums and accumulators stay in registers (a
        // row-outer loop left the accumulators on the stack).
        let mut s0 = [_mm512_setzero_si512(); C];
        let mut s1 = [_mm512_setzero_si512(); C];
        for c in 0..C {
            s0[c] = _mm512_set1_epi32(*aoff.add((i0 + c) * nb + b));
        }
        for t in 0..8 {
            for c in 0..C {
                let a = aq.add((i0 + c) * k + 32 * b).cast::<i32>();
                let x = _mm512_set1_epi32(a.add(t).read_unaligned());
                // Few rows: two chains per row hide vpdpbusd's latency.
                if C < 4 && t % 2 == 1 {
                    s1[c] = _mm512_dpbusd_epi32(s1[c], wv[t], x);
                } else {
                    s0[c] = _mm512_dpbusd_epi32(s0[c], wv[t], x);
                }
            }
        }
        for c in 0..C {
            let isum = if C < 4 {
                _mm512_add_epi32(s0[c], s1[c])
            } else {
                s0[c]
            };
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*ad.add((i0 + c) * nb + b)));
            acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(scale, _mm512_cvtepi32_ps(isum)));
        }
    }
    for (c, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(y.add((i0 + c) * n), mask, *acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_rows(rows: usize, cols: usize) -> Vec<u8> {
        (0..rows * cols / 32 * 34)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect()
    }

    #[test]
    fn pack_then_unpack_gives_the_rows_back() {
        for (rows, cols) in [(1, 32), (16, 64), (17, 96), (37, 256), (48, 32)] {
            let plain = plain_rows(rows, cols);
            let packed = pack(rows, cols, &plain);
            assert_eq!(packed.len(), packed_len(rows, cols));
            assert_eq!(unpack(&packed, rows, cols), plain, "{rows}x{cols}");
        }
    }

    #[test]
    fn padding_rows_are_zero_codes_with_zero_scale() {
        let packed = pack(3, 32, &plain_rows(3, 32));
        for r in 3..GROUP {
            assert_eq!(&packed[2 * r..2 * r + 2], &[0, 0]);
            for t in 0..8 {
                assert_eq!(&packed[2 * GROUP + 64 * t + 4 * r..][..4], &[0x80; 4]);
            }
        }
    }
}
