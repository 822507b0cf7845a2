//! Activations quantized for the integer kernels, each row on its own (so a row's codes never
//! depend on the rest of the batch): blocks of 32 (for Q4_0/Q8_0 weights) or 256 (K-quants)
//! int8 codes in [-127, 127] with an f32 scale `d = amax / 127`, and, for the K-quants, the sum
//! of every 16 consecutive codes.

use halo_model::dtype::StoredDType;

pub(crate) struct Acts {
    /// Values per row.
    pub k: usize,
    /// Values per block (32 or 256).
    pub block: usize,
    /// `[m, k]` codes.
    pub q: Vec<i8>,
    /// `[m, k / block]` scales.
    pub d: Vec<f32>,
    /// `[m, k / 16]` sums of 16 codes (K-quant activations only; empty otherwise).
    pub bsums: Vec<i16>,
    /// `[m, k / 32]` sums of each block's codes (32-value blocks only; empty otherwise): the
    /// packed Q8_0 kernel's unsigned-code offset is taken off with them.
    pub sum32: Vec<i32>,
}

impl Acts {
    /// Quantizes the `m` rows of `x` (each `k` long, `k` a whole number of `dtype`'s blocks) for
    /// weights of `dtype`.
    pub fn quantize(dtype: StoredDType, x: &[f32], m: usize, k: usize) -> Acts {
        let block = if dtype.block_elems() == 256 { 256 } else { 32 };
        debug_assert!(k.is_multiple_of(block) && x.len() == m * k);
        let mut q = vec![0i8; m * k];
        let mut d = vec![0.0f32; m * k / block];
        for ((xb, qb), db) in x
            .chunks_exact(block)
            .zip(q.chunks_exact_mut(block))
            .zip(d.iter_mut())
        {
            *db = quantize_block(xb, qb);
        }
        let bsums = if block == 256 {
            q.chunks_exact(16)
                .map(|c| c.iter().map(|&v| v as i16).sum())
                .collect()
        } else {
            Vec::new()
        };
        let sum32 = if block == 32 {
            q.chunks_exact(32)
                .map(|c| c.iter().map(|&v| v as i32).sum())
                .collect()
        } else {
            Vec::new()
        };
        Acts {
            k,
            block,
            q,
            d,
            bsums,
            sum32,
        }
    }

    /// Row `i`'s codes.
    #[inline]
    pub fn row(&self, i: usize) -> &[i8] {
        &self.q[i * self.k..][..self.k]
    }

    /// Row `i`'s block scales.
    #[inline]
    pub fn scales(&self, i: usize) -> &[f32] {
        let nb = self.k / self.block;
        &self.d[i * nb..][..nb]
    }

    /// Row `i`'s sums of 16.
    #[inline]
    pub fn sums16(&self, i: usize) -> &[i16] {
        &self.bsums[i * (self.k / 16)..][..self.k / 16]
    }
}

/// Symmetric int8 codes for one block; returns the scale.
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    if !amax.is_finite() || x.iter().any(|v| v.is_nan()) {
        // A NaN or infinity poisons the block's outputs rather than vanishing into the codes.
        q.fill(0);
        return f32::NAN;
    }
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (qv, &v) in q.iter_mut().zip(x) {
        *qv = (v * id).round().clamp(-127.0, 127.0) as i8;
    }
    d
}
