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
