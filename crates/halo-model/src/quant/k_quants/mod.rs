//! The K-quants: 256-value super-blocks split into sub-blocks that each have their own
//! quantized scale (and, for Q4_K/Q5_K, a quantized min), the sub-block scales themselves scaled
//! by an f16 per super-block. Layouts are in each type's module.
//!
//! The quantizers follow the ideas of ggml's reference code: a per-sub-block least-squares fit of
//! scale (and min) over a small sweep of candidate step sizes, then the sub-block scales are
//! quantized against the super-block maximum and every value is re-quantized with the scales the
//! decoder will actually see.

pub mod q4_k;
pub mod q5_k;
pub mod q6_k;

/// Values per super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// Round to nearest, ties to even (ggml's `nearest_int`, whose float trick rounds that way),
/// saturating instead of asserting on out-of-range or NaN input.
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// The 6-bit scale and 6-bit min of sub-block `j` (0..8) of Q4_K/Q5_K, from the 12 packed bytes
/// `s`:
///
/// - sub-blocks 0..4: scale = `s[j] & 63`, min = `s[j + 4] & 63`;
/// - sub-blocks 4..8: scale = `(s[j + 4] & 15) | (s[j − 4] >> 6) << 4`,
///   min = `(s[j + 4] >> 4) | (s[j] >> 6) << 4`
///
/// (the top two bits of bytes 0..8 carry the high bits of the last four scales and mins).
#[inline]
pub fn scale_min(s: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// The inverse of [`scale_min`] for all eight sub-blocks (each input below 64).
pub(crate) fn pack_scale_mins(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
    }
    s
}

/// Levels and f16 super-block scales of a Q4_K/Q5_K super-block: `levels[i]` in `0..=nmax`,
/// value `i` decodes as `d · sc[i / 32] · levels[i] − dmin · m[i / 32]`.
pub(crate) struct AffineBlock {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub levels: [u8; QK_K],
}

/// How the affine sub-block fit sweeps candidate step sizes: `nmax + rmin + rdelta · k` levels
/// across the sub-block's range, for `k` in `0..=steps`.
pub(crate) struct Sweep {
    pub nmax: u8,
    pub rmin: f32,
    pub rdelta: f32,
    pub steps: u32,
}

/// Quantizes one super-block to `x ≈ d·sc·l − dmin·m` with 6-bit `sc`, `m` per 32 values.
pub(crate) fn quantize_affine(x: &[f32; QK_K], sweep: &Sweep) -> AffineBlock {
    let (subs, _) = x.as_chunks::<32>();
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (fit_levels, _) = levels.as_chunks_mut::<32>();
    for (j, sub) in subs.iter().enumerate() {
        // Weight each value by the sub-block's RMS plus its own size: large values matter more
        // (they carry more of the dot products), but small ones are not ignored.
        let rms = (sub.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        let weights = sub.map(|v| rms + v.abs());
        let (scale, min) = fit_affine(sub, &weights, sweep, &mut fit_levels[j]);
        scales[j] = scale;
        mins[j] = min;
    }
    // Both scales and mins are ≥ 0 (the min is stored as a positive offset), so each is
    // quantized to 6 bits against its maximum over the super-block.
    // Plain comparisons rather than f32::max, so that the sign of a zero is ggml's.
    let largest = |v: &[f32; 8]| v.iter().fold(0.0f32, |a, &b| if b > a { b } else { a });
    let (max_scale, max_min) = (largest(&scales), largest(&mins));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = scales.map(|s| nearest_int(inv_scale * s).clamp(0, 63) as u8);
    let m = mins.map(|s| nearest_int(inv_min * s).clamp(0, 63) as u8);
    let (d, d_f) = super::float::to_f16(max_scale / 63.0);
    let (dmin, dmin_f) = super::float::to_f16(max_min / 63.0);

    // Re-quantize against the scales as stored: the fit's levels were chosen for the exact
    // scale and min, which the 6-bit and f16 rounding moved.
    let nmax = i32::from(sweep.nmax);
    let (lv, _) = levels.as_chunks_mut::<32>();
    for (j, (sub, l)) in subs.iter().zip(lv).enumerate() {
        let step = d_f * f32::from(sc[j]);
        let offset = dmin_f * f32::from(m[j]);
        if step == 0.0 {
            // Every value of the sub-block decodes to −offset whatever its level; the fit's
            // levels stay (so the bytes match ggml's).
            continue;
        }
        for (li, &v) in l.iter_mut().zip(sub) {
            *li = nearest_int((v + offset) / step).clamp(0, nmax) as u8;
        }
    }
    AffineBlock {
        d,
        dmin,
        scales: pack_scale_mins(&sc, &m),
        levels,
    }
}

/// Weighted least-squares fit of `x ≈ scale · l + lo` with integer `l` in `0..=nmax` and
/// `lo ≤ 0` (the format stores the min as a non-negative offset subtracted). Returns
/// `(scale, −lo)` and writes the levels of the chosen line to `levels`.
///
/// The levels depend on the step, and the best step on the levels, so the fit tries a sweep of
/// step sizes around `range / nmax`, assigns levels for each, solves the 2×2 normal equations
/// for that assignment and keeps the line of least weighted squared error.
fn fit_affine(x: &[f32; 32], w: &[f32; 32], sweep: &Sweep, levels: &mut [u8; 32]) -> (f32, f32) {
    let nmax = f32::from(sweep.nmax);
    // Plain comparisons rather than f32::min/max, so that the sign of a zero is ggml's.
    let lo = x.iter().fold(x[0], |a, &b| if b < a { b } else { a });
    let lo = if lo > 0.0 { 0.0 } else { lo };
    let hi = x.iter().fold(x[0], |a, &b| if b > a { b } else { a });
    if hi == lo {
        // Constant (non-positive) or all zero: the offset alone represents it.
        levels.fill(0);
        return (0.0, -lo);
    }
    let sum_w: f32 = w.iter().sum();
    let sum_wx: f32 = w.iter().zip(x).map(|(w, x)| w * x).sum();
    let assign = |inv_step: f32, lo: f32| -> [f32; 32] {
        x.map(|v| nearest_int(inv_step * (v - lo)).clamp(0, i32::from(sweep.nmax)) as f32)
    };
    let error = |l: &[f32; 32], scale: f32, lo: f32| -> f32 {
        let mut e = 0.0f32;
        for i in 0..32 {
            let diff = scale * l[i] + lo - x[i];
            e += w[i] * (diff * diff);
        }
        e
    };

    // The plain min/max mapping is the starting point.
    let inv_step = nmax / (hi - lo);
    let mut best_scale = 1.0 / inv_step;
    let mut best_lo = lo;
    let first = assign(inv_step, lo);
    let mut best_err = error(&first, best_scale, best_lo);
    let mut best_levels = first;

    for k in 0..=sweep.steps {
        // Each candidate grid starts at the best offset found so far (not the raw minimum), so
        // the sweep refines the line as it goes.
        let inv_step = (sweep.rmin + sweep.rdelta * k as f32 + nmax) / (hi - best_lo);
        let l = assign(inv_step, best_lo);
        let (mut sl, mut sl2, mut sxl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..32 {
            sl += w[i] * l[i];
            sl2 += w[i] * l[i] * l[i];
            sxl += w[i] * l[i] * x[i];
        }
        let det = sum_w * sl2 - sl * sl;
        if det <= 0.0 {
            continue; // all levels equal: no unique line through them
        }
        let mut scale = (sum_w * sxl - sum_wx * sl) / det;
        let mut off = (sl2 * sum_wx - sl * sxl) / det;
        if off > 0.0 {
            // The format cannot add a positive offset: refit the scale through the origin.
            off = 0.0;
            scale = sxl / sl2;
        }
        let err = error(&l, scale, off);
        if err < best_err {
            best_err = err;
            best_scale = scale;
            best_lo = off;
            best_levels = l;
        }
    }
    *levels = best_levels.map(|l| l as u8);
    (best_scale, -best_lo)
}

/// Weighted least-squares fit of `x ≈ scale · l` with integer `l` in `−nmax..nmax` (one more
/// level below zero than above, as Q6_K stores them), weighting each value by `x²`. Returns the
/// scale, negative when the largest-magnitude value is positive (it goes to the −nmax end, which
/// is the longer side), and writes the chosen levels, offset by `nmax`, to `levels` (all 0 for
/// an all-zero input).
pub(crate) fn fit_symmetric(x: &[f32; 16], nmax: i32, levels: &mut [u8; 16]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    levels.fill(0);
    if amax < 1e-15 {
        return 0.0;
    }
    let level = |inv_step: f32, v: f32| nearest_int(inv_step * v).clamp(-nmax, nmax - 1);
    // Σ w·x·l and Σ w·l² for the levels a given inverse step assigns.
    let sums = |inv_step: f32| -> (f32, f32) {
        let (mut sxl, mut sl2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = level(inv_step, v) as f32;
            let w = v * v;
            sxl += w * v * l;
            sl2 += w * l * l;
        }
        (sxl, sl2)
    };
    let nmax_f = nmax as f32;
    let mut best_inv = -nmax_f / max;
    let (sxl, sl2) = sums(best_inv);
    let mut scale = if sl2 != 0.0 { sxl / sl2 } else { 0.0 };
    // With the least-squares scale, the error is Σw·x² − sxl²/sl2: maximize sxl²/sl2.
    let mut best = scale * sxl;
    for k in (-9..=9).filter(|&k| k != 0) {
        let inv = -(nmax_f + 0.1 * k as f32) / max;
        let (sxl, sl2) = sums(inv);
        if sl2 > 0.0 && sxl * sxl > best * sl2 {
            scale = sxl / sl2;
            best = scale * sxl;
            best_inv = inv;
        }
    }
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = (level(best_inv, v) + nmax) as u8;
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_packing_round_trips() {
        let sc = [0, 1, 17, 63, 62, 33, 16, 48];
        let m = [63, 0, 5, 40, 1, 63, 47, 15];
        let s = pack_scale_mins(&sc, &m);
        for j in 0..8 {
            assert_eq!(scale_min(&s, j), (sc[j], m[j]), "sub-block {j}");
        }
    }

    #[test]
    fn nearest_int_ties_to_even_and_saturates() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_eq!(nearest_int(1e30), i32::MAX);
    }
}
