//! BF16 weights against activations rounded to bf16, on CPUs with AVX-512 BF16
//! (`vdpbf16ps`): what llama.cpp does with a BF16 GGUF and torch with a bf16 model, at twice
//! the multiply rate of widening the weights into the f32 chain ([`super::half`]) — one
//! instruction takes 32 pairs where an f32 FMA takes 16, and the weights meet the core as
//! stored, with no widening pass.
//!
//! Numerics: each activation row is rounded to bf16 on its own (nearest, ties to even), once
//! per call. A product of two bf16 values is exact in f32, so the only rounding after that is
//! in the f32 accumulation, which is one fixed chain per output element:
//! - one 16-lane f32 accumulator per (row, output) starts at +0; chunk `c` (values
//!   `32c .. 32c + 32`, the last one zero-padded in both x and W) adds the pairs
//!   `(32c + 2l, 32c + 2l + 1)` into lane `l` through one `vdpbf16ps`, chunks in K order;
//! - the 16 lanes are then reduced by the tree of [`crate::matmul`]'s `hsum512`, bit for bit.
//!
//! Tiles only decide how many chains run side by side (up to 4 rows × 6 outputs), and rows
//! of a partial tile are computed on real rows and discarded, so an output's bits do not
//! depend on M or on where its row sits in the batch: a prefill and the decode steps after it
//! see the same numbers as the lone sequence. Only rows marked for bf16 activations come here
//! (`--activation-dtype bf16`); on CPUs without AVX-512 BF16 those round x the same way and run
//! the f32 chain instead (`super::bf16_activations_matmul_t`).

#![cfg(target_arch = "x86_64")]

use super::QMatrix;
use crate::matmul::gemm::{reduce512x2, with_buf, OutPtr, Prefetch, WSrc};
use halo_model::dtype::StoredDType;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Values per chunk: one 512-bit vector of bf16.
const CHUNK: usize = 32;
/// Activation rows per tile.
const MR: usize = 4;
/// Weight rows per tile: 4 × 6 accumulators + 4 x vectors + 1 W vector of 32 registers.
const NR: usize = 6;
/// Tiles of W rows per block: the block (48 rows, 192 KiB at k = 2048) stays in L2 while
/// every 4-row panel of x meets it, and the next block is prefetched meanwhile.
const NC_UNITS: usize = 8;
/// Below this many multiply-adds a call runs on the calling thread.
const SERIAL_WORK: usize = 1 << 18;

thread_local! {
    static XBUF: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU runs the path (and `HALO_CPU_ISA` allows AVX-512).
pub(crate) fn usable() -> bool {
    crate::isa_cap::cap() >= crate::isa_cap::IsaCap::Avx512
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
}

/// `y = bf16(x) · wᵀ` for BF16 `w`, on a CPU that is [`usable`].
pub(crate) fn matmul_t(x: &[f32], m: usize, w: &QMatrix, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    assert!(
        usable() && w.dtype == StoredDType::BF16 && w.layout == super::Layout::Rows,
        "bf16_dot: needs AVX-512 BF16 and BF16 rows"
    );
    assert!(
        x.len() == m * k && y.len() == m * n && w.data.len() == 2 * n * k,
        "bf16_dot: shape mismatch"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let chunks = k.div_ceil(CHUNK);
    let ldx = chunks * CHUNK;
    let parallel = m * n * k >= SERIAL_WORK;
    with_buf(&XBUF, m * ldx, |xb| {
        let round = |(row, dst): (usize, &mut [u16])| {
            // SAFETY: `usable` checked the features; `dst` is `ldx` long, the row `k`.
            unsafe { round_row(&x[row * k..][..k], dst) }
        };
        if parallel {
            xb.par_chunks_exact_mut(ldx).enumerate().for_each(round);
        } else {
            xb.chunks_exact_mut(ldx).enumerate().for_each(round);
        }
        let xb: &[u16] = xb;
        let out = OutPtr(y.as_mut_ptr());
        let units = n.div_ceil(NR);
        let tasks = if parallel {
            (rayon::current_num_threads() * 4).min(units)
        } else {
            1
        };
        let per_task = units.div_ceil(tasks);
        let task = |t: usize| {
            let (u0, u1) = (t * per_task, ((t + 1) * per_task).min(units));
            for b0 in (u0..u1).step_by(NC_UNITS) {
                let b1 = (b0 + NC_UNITS).min(u1);
                let mut ahead = Prefetch::new(
                    WSrc::Bf16(&w.data),
                    k,
                    b1 * NR,
                    ((b1 + NC_UNITS) * NR).min(n),
                );
                ahead.spread_over(m.div_ceil(MR) * (b1 - b0));
                for m0 in (0..m).step_by(MR) {
                    let mt = MR.min(m - m0);
                    for u in b0..b1 {
                        let n0 = u * NR;
                        // SAFETY: rows m0..m0+mt of xb and n0.. of w exist (clamped inside);
                        // this task alone writes columns n0..n0+NR of y.
                        unsafe {
                            tile(
                                mt,
                                &xb[m0 * ldx..],
                                ldx,
                                &w.data,
                                (n0, n),
                                k,
                                out.at(m0 * n + n0),
                            );
                        }
                        ahead.step();
                    }
                }
            }
        };
        if tasks == 1 {
            task(0);
        } else {
            (0..tasks).into_par_iter().for_each(task);
        }
    });
}

/// `src` rounded to bf16 (nearest, ties to even) into `dst`, zero-padded to `dst.len()` (a
/// whole number of chunks).
///
/// # Safety
/// AVX-512 F/BW/BF16; `dst.len()` is `src.len()` rounded up to a chunk.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
    debug_assert_eq!(dst.len(), src.len().div_ceil(CHUNK) * CHUNK);
    // Sixteen values from `at`, those past the end of `src` zero (never read).
    let half = |at: usize| {
        let len = src.len().saturating_sub(at).min(16);
        let mask: __mmask16 = if len == 16 { !0 } else { (1 << len) - 1 };
        _mm512_maskz_loadu_ps(mask, src.as_ptr().wrapping_add(at))
    };
    for (c, d) in dst.chunks_exact_mut(CHUNK).enumerate() {
        let (lo, hi) = (half(c * CHUNK), half(c * CHUNK + 16));
        let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(d.as_mut_ptr().cast(), bf);
    }
}

/// Outputs `n0 .. n0 + NR` (those below `n`) of the `mt` rounded rows at `x` (stride `ldx`),
/// written at `y` (row stride `n`). Weight rows past `n` are replaced by row `n - 1`, so every
/// tile runs the full kernel; their sums are not stored.
///
/// # Safety
/// AVX-512 F/BW/BF16; `x` holds `mt` rows of `ldx` values; `w` is `n` BF16 rows of `k`; `y`
/// points at row 0, column `n0` of an `[.., n]` output with `mt` rows left.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile(
    mt: usize,
    x: &[u16],
    ldx: usize,
    w: &[u8],
    (n0, n): (usize, usize),
    k: usize,
    y: *mut f32,
) {
    debug_assert!(x.len() >= (mt - 1) * ldx + ldx && w.len() == 2 * n * k);
    let rows: [*const u8; NR] =
        std::array::from_fn(|j| w.as_ptr().add(2 * (n0 + j).min(n - 1) * k));
    let cols = NR.min(n - n0);
    match mt {
        1 => kernel::<1>(x.as_ptr(), ldx, rows, k, y, n, cols),
        2 => kernel::<2>(x.as_ptr(), ldx, rows, k, y, n, cols),
        3 => kernel::<3>(x.as_ptr(), ldx, rows, k, y, n, cols),
        4 => kernel::<4>(x.as_ptr(), ldx, rows, k, y, n, cols),
        _ => unreachable!("tiles have at most {MR} rows"),
    }
}

/// The register-blocked chains of `MT` rows × `NR` weight rows over all of K, reduced and
/// stored (`cols` columns of `MT` rows of stride `ldy`).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline(never)]
unsafe fn kernel<const MT: usize>(
    x: *const u16,
    ldx: usize,
    w: [*const u8; NR],
    k: usize,
    y: *mut f32,
    ldy: usize,
    cols: usize,
) {
    let full = k / CHUNK;
    let tail = k % CHUNK;
    let mut acc = [[_mm512_setzero_ps(); NR]; MT];
    // Chunk `$c` of every chain, the W vectors read by `$load(row pointer, offset)`.
    macro_rules! chunk {
        ($c:expr, $load:expr) => {{
            let c = $c;
            let xv: [__m512bh; MT] = std::array::from_fn(|i| {
                std::mem::transmute(_mm512_loadu_si512(x.add(i * ldx + c * CHUNK).cast()))
            });
            for j in 0..NR {
                let wj: __m512bh = std::mem::transmute($load(w[j].add(2 * c * CHUNK)));
                for i in 0..MT {
                    acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv[i], wj);
                }
            }
        }};
    }
    for c in 0..full {
        chunk!(c, |p: *const u8| _mm512_loadu_si512(p.cast()));
    }
    if tail > 0 {
        // Only the row's own values: the rest of the chunk is zero, as x's padding is.
        let mask: __mmask32 = (1 << tail) - 1;
        chunk!(full, |p: *const u8| _mm512_maskz_loadu_epi16(
            mask,
            p.cast()
        ));
    }
    // Reduce 16 chains at a time in (i, j) order; MT · NR <= 24 fits two groups.
    let mut flat = [_mm512_setzero_ps(); 2 * 16];
    for i in 0..MT {
        for j in 0..NR {
            flat[i * NR + j] = acc[i][j];
        }
    }
    let mut sums = [0.0f32; 32];
    reduce512x2(&flat, sums.as_mut_ptr(), MT * NR > 16);
    for i in 0..MT {
        std::ptr::copy_nonoverlapping(sums.as_ptr().add(i * NR), y.add(i * ldy), cols);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// Deterministic values of mixed sign and magnitude (an LCG).
    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * if s & 3 == 0 { 8.0 } else { 1.0 }
            })
            .collect()
    }

    fn matrix(n: usize, k: usize, seed: u64) -> (QMatrix, Vec<f32>) {
        let wf: Vec<f32> = values(seed, n * k)
            .into_iter()
            .map(|v| bf16::from_f32(v).to_f32())
            .collect();
        let bytes = wf
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        (QMatrix::new(StoredDType::BF16, n, k, bytes).unwrap(), wf)
    }

    fn run(x: &[f32], m: usize, w: &QMatrix, threads: usize) -> Vec<f32> {
        let mut y = vec![f32::NAN; m * w.rows];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| matmul_t(x, m, w, &mut y));
        y
    }

    #[test]
    fn rows_round_to_nearest_even_bf16() {
        if !usable() {
            return;
        }
        let mut src = values(3, 77);
        // Ties both ways and values that round across a binade.
        src[0] = f32::from_bits(0x3f80_8000);
        src[1] = f32::from_bits(0x3f81_8000);
        src[2] = f32::from_bits(0x3fff_ffff);
        let mut dst = vec![0xffffu16; 96];
        // SAFETY: checked usable; 96 is 77 rounded up to a chunk.
        unsafe { round_row(&src, &mut dst) };
        for (i, v) in src.iter().enumerate() {
            assert_eq!(dst[i], bf16::from_f32(*v).to_bits(), "value {i}");
        }
        assert!(dst[77..].iter().all(|&b| b == 0), "padding is zero");
    }

    #[test]
    fn every_row_gets_its_lone_bits_and_the_rounded_product() {
        if !usable() {
            return;
        }
        for &(n, k) in &[
            (1usize, 32usize),
            (5, 13),
            (6, 64),
            (13, 100),
            (37, 768),
            (70, 2048),
        ] {
            let (w, wf) = matrix(n, k, (n * 31 + k) as u64);
            for m in [1usize, 2, 3, 4, 5, 7, 16, 33] {
                let x = values((m * 7 + k) as u64, m * k);
                let got = run(&x, m, &w, 2);
                for i in 0..m {
                    let row = &x[i * k..(i + 1) * k];
                    let alone = run(row, 1, &w, 1);
                    let mine = &got[i * n..(i + 1) * n];
                    assert!(
                        mine.iter()
                            .zip(&alone)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "m={m} n={n} k={k} row {i}: a batch changed bits"
                    );
                    for (j, &g) in mine.iter().enumerate() {
                        let (mut exact, mut size) = (0.0f64, 0.0f64);
                        for (a, b) in row.iter().zip(&wf[j * k..(j + 1) * k]) {
                            let p = f64::from(bf16::from_f32(*a).to_f32()) * f64::from(*b);
                            exact += p;
                            size += p.abs();
                        }
                        // f32 accumulation: at most ~(k / 16 + 8) roundings per chain.
                        let bound = size * (k as f64 / 16.0 + 8.0) * f64::from(f32::EPSILON);
                        assert!(
                            (f64::from(g) - exact).abs() <= bound,
                            "m={m} n={n} k={k} [{i},{j}]: {g} vs {exact} (bound {bound})"
                        );
                    }
                }
            }
        }
    }
}
