//! The AVX2 layout of 32-value blocks ([`super::q8_packed_avx2`] for Q8_0,
//! [`super::q4_0_packed_avx2`] for Q4_0): rows in groups of [`GROUP`], one per lane of a 256-bit
//! vector, their code bytes interleaved four at a time so that one load holds four bytes of each
//! of the 8 rows, and each block's 8 f16 scales kept after all the codes.
//!
//! Group `g` is `nb·(codes + SCALES)` bytes: first the codes of its `nb` blocks, block `b` at
//! `b·codes` (`codes` = 8 × the block's code bytes), its byte `i` of row `r` at
//! `32·(i / 4) + 4r + i % 4`; then block `b`'s scales at `nb·codes + b·SCALES`, row `r`'s at
//! `2r`. Keeping the scales apart keeps every code vector on a 32-byte boundary (whenever `nb`
//! is a multiple of 4, as in every model shape), so no load splits a cache line. Padding rows of
//! the last group are zero codes with scale 0. Same size as ggml's rows when the row count is a
//! multiple of 8.

use super::{groups, Acts};
use crate::hugepages::Aligned;

/// Weight rows interleaved per group: one per lane of a 256-bit vector of i32/f32.
pub(crate) const GROUP: usize = 8;

/// One block's scales of one group.
pub(crate) const SCALES: usize = 2 * GROUP;

/// A 32-value block type held this way: its bytes of codes per row (ggml's block is an f16 scale
/// and then those).
#[derive(Clone, Copy)]
pub(crate) struct Interleave8 {
    code_bytes: usize,
}

/// Q8_0: 32 one-byte codes a block.
pub(crate) const Q8_0: Interleave8 = Interleave8 { code_bytes: 32 };

/// Q4_0: 16 bytes of two nibbles a block.
pub(crate) const Q4_0: Interleave8 = Interleave8 { code_bytes: 16 };

impl Interleave8 {
    /// One block's codes of one group, in bytes.
    pub(crate) const fn codes(self) -> usize {
        self.code_bytes * GROUP
    }

    /// Bytes of one ggml block.
    fn block_bytes(self) -> usize {
        2 + self.code_bytes
    }

    /// Bytes of one group of `nb` blocks.
    pub(crate) fn group_bytes(self, nb: usize) -> usize {
        nb * (self.codes() + SCALES)
    }

    /// Bytes of `rows × cols` values in this layout.
    pub(crate) fn packed_len(self, rows: usize, cols: usize) -> usize {
        rows.div_ceil(GROUP) * self.group_bytes(cols / 32)
    }

    /// Where code byte `i` of block `b` of row `r` of a group lives, from the group's start.
    fn code_at(self, b: usize, r: usize, i: usize) -> usize {
        b * self.codes() + 32 * (i / 4) + 4 * r + i % 4
    }

    /// Where block `b`'s f16 scale of row `r` of a group lives, from the group's start.
    fn scale_at(self, nb: usize, b: usize, r: usize) -> usize {
        nb * self.codes() + b * SCALES + 2 * r
    }

    /// Repacks `rows` rows of `cols` values held in ggml's layout.
    pub(crate) fn pack(self, rows: usize, cols: usize, plain: &[u8]) -> Aligned {
        let (nb, bb) = (cols / 32, self.block_bytes());
        debug_assert_eq!(plain.len(), rows * nb * bb);
        let mut out = Aligned::zeroed(self.packed_len(rows, cols));
        if nb == 0 {
            return out;
        }
        for (g, dst) in out.chunks_exact_mut(self.group_bytes(nb)).enumerate() {
            for r in 0..GROUP.min(rows - g * GROUP) {
                let row = &plain[(g * GROUP + r) * nb * bb..][..nb * bb];
                for (b, src) in row.chunks_exact(bb).enumerate() {
                    let s = self.scale_at(nb, b, r);
                    dst[s..s + 2].copy_from_slice(&src[..2]);
                    for (i, &q) in src[2..].iter().enumerate() {
                        dst[self.code_at(b, r, i)] = q;
                    }
                }
            }
        }
        out
    }

    /// Row `row` of a packed matrix back in ggml's layout.
    pub(crate) fn unpack_row(self, packed: &[u8], cols: usize, row: usize) -> Vec<u8> {
        let (nb, bb) = (cols / 32, self.block_bytes());
        let (g, r) = (row / GROUP, row % GROUP);
        let src = &packed[g * self.group_bytes(nb)..][..self.group_bytes(nb)];
        let mut out = vec![0u8; nb * bb];
        for (b, dst) in out.chunks_exact_mut(bb).enumerate() {
            let s = self.scale_at(nb, b, r);
            dst[..2].copy_from_slice(&src[s..s + 2]);
            for (i, q) in dst[2..].iter_mut().enumerate() {
                *q = src[self.code_at(b, r, i)];
            }
        }
        out
    }

    /// Every row of a packed matrix back in ggml's layout.
    pub(crate) fn unpack(self, packed: &[u8], rows: usize, cols: usize) -> Vec<u8> {
        (0..rows)
            .flat_map(|r| self.unpack_row(packed, cols, r))
            .collect()
    }
}

/// Activation rows one tile meets with a group's codes. AVX2 has 16 vector registers: a row
/// holds its block's integer sums and an f32 accumulator; the codes, what each kernel derives
/// from them (`|w|`, or the two nibble halves), constants and temporaries take the rest.
pub(crate) const TILE_M: usize = 4;

/// How far ahead of the block being read a group's first tile asks for the weights, in bytes
/// of the stream: the hardware prefetcher alone left a one-thread decode step at ~11 GB/s;
/// with this, 6-8 ms against 11 for bench-110m's Q8_0 step, and 4-row tiles 10 ms against 20
/// (min of 10, loaded machine). A prefetch never faults, so the address may lie past the
/// weights.
pub(crate) const PREFETCH_AHEAD: usize = 8192;

/// A kernel for one block type held in this layout: its tile of one group against up to
/// [`TILE_M`] activation rows.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Tile8 {
    /// The layout its weights are packed in.
    const LAYOUT: Interleave8;

    /// Group `w.0` (its start) of a matrix of `nb` blocks a row against activation rows
    /// `i0 .. i0 + C`; lane `r` of row `i`'s result goes to `y[i·n + r]` for the lanes in
    /// `mask`. With `w.1`, asks for the weights [`PREFETCH_AHEAD`] bytes on as it reads.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; the group's `nb` blocks and scales, activation rows
    /// `i0 .. i0 + C` (codes, scales, block sums) and the masked lanes of `y`'s rows are in
    /// bounds.
    unsafe fn tile<const C: usize>(
        acts: &Acts,
        i0: usize,
        w: (*const u8, bool),
        nb: usize,
        y: *mut f32,
        n: usize,
        mask: u16,
    );
}

/// `y = x · wᵀ` for a matrix of `n` rows packed for `K`: `acts` are the `m` quantized
/// activation rows (32-value blocks), `y` is `[m, n]` row-major. Splits the groups over the
/// current rayon pool. The caller checked the CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
pub(crate) fn matmul_avx2<K: Tile8>(acts: &Acts, m: usize, packed: &[u8], n: usize, y: &mut [f32]) {
    let k = acts.k;
    let nb = k / 32;
    assert!(
        acts.block == 32
            && k.is_multiple_of(32)
            && acts.q.len() >= m * k
            && acts.d.len() >= m * nb
            && acts.offset32.len() >= m * nb
            && packed.len() == K::LAYOUT.packed_len(n, k)
            && y.len() == m * n
    );
    let run_tile = |g: usize, i0: usize, c: usize, col: *mut f32, mask: u16| {
        let w = packed[g * K::LAYOUT.group_bytes(nb)..].as_ptr();
        // The group's first tile (the first rows of `groups::run`'s pass) fetches ahead for
        // the rest.
        let w = (w, i0.is_multiple_of(groups::ROWS_PER_PASS));
        // SAFETY: the caller checked the CPU has AVX2, FMA and F16C; the assert above bounds
        // every read (group g's nb blocks and scales, rows i0 .. i0 + c of the activations and
        // their block sums); `groups::run` hands each tile its own in-bounds columns of `y`.
        unsafe {
            match c {
                4 => K::tile::<4>(acts, i0, w, nb, col, n, mask),
                3 => K::tile::<3>(acts, i0, w, nb, col, n, mask),
                2 => K::tile::<2>(acts, i0, w, nb, col, n, mask),
                _ => K::tile::<1>(acts, i0, w, nb, col, n, mask),
            }
        }
    };
    groups::run(m, n, k, (GROUP, TILE_M), y, &run_tile);
}

/// Writes the lanes of `acc` set in `mask` to `out` (lane `r` to `out[r]`).
///
/// # Safety
/// The CPU has AVX; `out[r]` is writable for every lane `r` in `mask`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn store_lanes(out: *mut f32, acc: std::arch::x86_64::__m256, mask: u16) {
    use std::arch::x86_64::_mm256_storeu_ps;
    if mask == 0xFF {
        _mm256_storeu_ps(out, acc);
    } else {
        let mut lanes = [0.0f32; GROUP];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        for (r, v) in lanes.iter().enumerate() {
            if mask >> r & 1 == 1 {
                *out.add(r) = *v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_rows(layout: Interleave8, rows: usize, cols: usize) -> Vec<u8> {
        (0..rows * cols / 32 * layout.block_bytes())
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect()
    }

    #[test]
    fn pack_then_unpack_gives_the_rows_back() {
        for layout in [Q8_0, Q4_0] {
            for (rows, cols) in [(1, 32), (8, 64), (9, 96), (37, 256), (48, 32), (3, 0)] {
                let plain = plain_rows(layout, rows, cols);
                let packed = layout.pack(rows, cols, &plain);
                assert_eq!(packed.len(), layout.packed_len(rows, cols));
                assert_eq!(layout.unpack(&packed, rows, cols), plain, "{rows}x{cols}");
            }
        }
    }

    #[test]
    fn padding_rows_are_zero_codes_with_zero_scale() {
        for layout in [Q8_0, Q4_0] {
            let (rows, cols) = (11, 64);
            let packed = layout.pack(rows, cols, &plain_rows(layout, rows, cols));
            let nb = cols / 32;
            let last = &packed[layout.group_bytes(nb)..];
            for r in rows % GROUP..GROUP {
                for b in 0..nb {
                    let s = layout.scale_at(nb, b, r);
                    assert_eq!(&last[s..s + 2], &[0, 0]);
                    assert!((0..layout.code_bytes).all(|i| last[layout.code_at(b, r, i)] == 0));
                }
            }
        }
    }

    #[test]
    fn every_byte_of_a_group_has_one_place() {
        for layout in [Q8_0, Q4_0] {
            let nb = 3;
            let mut seen = vec![0u8; layout.group_bytes(nb)];
            for b in 0..nb {
                for r in 0..GROUP {
                    for i in 0..layout.code_bytes {
                        seen[layout.code_at(b, r, i)] += 1;
                    }
                    seen[layout.scale_at(nb, b, r)] += 1;
                    seen[layout.scale_at(nb, b, r) + 1] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1));
        }
    }
}
