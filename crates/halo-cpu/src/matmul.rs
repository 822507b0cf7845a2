//! The f32 projection kernel `y[M,N] = x[M,K] · W[N,K]^T`, with W row-major as checkpoints
//! store it, written for the decode shapes of a step (small M, weights far larger than cache).
//!
//! Why not a general GEMM: at M = 1..4 the step is bound by streaming the weights, so the
//! kernel reads each block of W rows once, while it is cache-hot applies every activation tile
//! to it, and splits N across the rayon pool the caller already runs in. From
//! [`GEMM_MIN_M`] rows on (prefill, batched decode) the step is bound by FMAs instead, and x86
//! runs [`gemm`]: x and W packed into register-tile panels, 4×6 accumulator vectors on
//! AVX-512, the same chains.
//!
//! Batch invariance: every output element `y[m,n]` is the same fixed sequence of floating-point
//! operations whatever M is and whichever tile row `m` lands in: one accumulator vector per
//! (m, n), fused multiply-adds in K order, the last partial chunk zero-padded, then one fixed
//! horizontal reduction. Tiles only decide how many of these independent chains run side by
//! side, never how one chain is computed, so a sequence's logits do not depend on its batch.
//! The ISA (AVX-512, AVX2+FMA, portable) is picked once per process, so all calls of a run use
//! the same chain.

#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::isa_cap::IsaCap;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Which instruction set computes the chains; each has its own (fixed) lane width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2Fma,
    Portable,
}

impl Isa {
    /// The best one this CPU supports within `HALO_CPU_ISA` ([`crate::isa_cap`]), detected
    /// once.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = crate::isa_cap::cap();
            [(Isa::Avx512, IsaCap::Avx512), (Isa::Avx2Fma, IsaCap::Avx2)]
                .into_iter()
                .find(|&(isa, needs)| needs <= cap && isa.supported())
                .map_or(Isa::Portable, |(isa, _)| isa)
        })
    }

    /// Whether this CPU can run it.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every ISA this CPU can run (tests exercise them all).
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2Fma, Isa::Avx512]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }

    /// How many W rows one tile holds for `m` activation rows: enough independent chains to
    /// hide FMA latency, few enough that accumulators, activations and weights stay in
    /// registers (16 on AVX2: 4×2 accumulators + 4 + 2; 32 on AVX-512: 4×4 + 4 + 4). Up to 4
    /// activation rows the step streams weights from memory, and one W row at a time keeps that a
    /// single sequential stream, which the prefetcher follows best (measured: 2 rows cost 40%).
    fn rows_per_tile(self, m: usize) -> usize {
        match (self, m) {
            (_, 1..=4) => 1,
            (Isa::Avx512, _) => 4,
            _ => 2,
        }
    }
}

/// Activation rows per tile: each loaded chunk of W feeds this many chains.
const MR: usize = 4;

/// From this many activation rows on, x86 runs the packed register-blocked path
/// ([`gemm`]): the step is then bound by FMAs rather than by streaming W. At 5-7 rows it
/// measured level with the 4×4 tiles or ahead (up to 15% for bf16 at 7); 1-4 rows keep the
/// single-stream decode tiles.
pub(crate) const GEMM_MIN_M: usize = 5;

/// Below this many multiply-adds a call runs on the calling thread: splitting costs more.
const SERIAL_WORK: usize = 1 << 18;

/// `y = x · wᵀ` with the ISA detected for this CPU. `x` is `[m, k]`, `w` is `[n, k]`, `y` is
/// `[m, n]`, all row-major. Runs on the current rayon pool.
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    matmul_t_with(Isa::detect(), x, m, k, w, n, y);
}

/// [`matmul_t`] on a chosen ISA, which must be [`Isa::supported`].
pub fn matmul_t_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    assert!(
        x.len() == m * k && w.len() == n * k && y.len() == m * n,
        "matmul_t: shape mismatch"
    );
    assert!(
        isa.supported(),
        "matmul_t: {isa:?} is not supported by this CPU"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if m >= GEMM_MIN_M && gemm::usable(isa) {
        gemm::gemm(isa, x, m, k, gemm::WSrc::F32(w), n, y);
        return;
    }
    // Tasks own disjoint rows of W, so they write disjoint columns of y; computing yᵀ keeps
    // each task's output contiguous. At m = 1 the two layouts coincide.
    let mut transposed = Vec::new();
    let yt: &mut [f32] = if m == 1 {
        y
    } else {
        transposed.resize(n * m, 0.0);
        &mut transposed
    };
    let nr = isa.rows_per_tile(m);
    let work = m * n * k;
    let tasks = if work < SERIAL_WORK {
        1
    } else {
        rayon::current_num_threads() * 4
    };
    // Whole tiles per task so remainder tiles only appear at the very end of N.
    let chunk = n.div_ceil(tasks).div_ceil(nr) * nr;
    if tasks == 1 {
        block(isa, x, m, k, w, n, yt);
    } else {
        yt.par_chunks_mut(chunk * m)
            .enumerate()
            .for_each(|(c, out)| {
                let rows = out.len() / m;
                block(isa, x, m, k, &w[c * chunk * k..][..rows * k], rows, out);
            });
    }
    if m > 1 {
        // Back to [m, n]: each output row gathers its column of yᵀ, rows split over the pool so
        // every write is contiguous (a serial strided scatter here showed at prefill sizes).
        let gather = |(i, row): (usize, &mut [f32])| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = transposed[j * m + i];
            }
        };
        if tasks == 1 {
            y.chunks_exact_mut(n).enumerate().for_each(gather);
        } else {
            y.par_chunks_exact_mut(n).enumerate().for_each(gather);
        }
    }
}

/// W rows per cache block when several activation tiles share it: each activation tile stays
/// in L1 while it meets all of them, and the block itself (a few tens of KiB) stays in L2.
const ROWS_PER_BLOCK: usize = 16;

/// One task: W rows `[rows, k]` into `out` laid out `[rows, m]` (transposed).
fn block(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], rows: usize, out: &mut [f32]) {
    let nr = isa.rows_per_tile(m);
    let nb = if m > MR {
        ROWS_PER_BLOCK.div_ceil(nr) * nr
    } else {
        nr
    };
    let mut sums = [[0.0f32; 4]; MR];
    for b0 in (0..rows).step_by(nb) {
        let b1 = (b0 + nb).min(rows);
        for m0 in (0..m).step_by(MR) {
            let mt = MR.min(m - m0);
            let xt = &x[m0 * k..(m0 + mt) * k];
            for n0 in (b0..b1).step_by(nr) {
                let nt = nr.min(b1 - n0);
                tile(isa, xt, mt, &w[n0 * k..(n0 + nt) * k], nt, k, &mut sums);
                for (j, dst) in out[n0 * m..(n0 + nt) * m].chunks_exact_mut(m).enumerate() {
                    for (i, s) in sums[..mt].iter().enumerate() {
                        dst[m0 + i] = s[j];
                    }
                }
            }
        }
    }
}

/// Runs the `mt × nt` tile (each at most 4) on `isa`, leaving `sums[i][j] = x_i · w_j`.
fn tile(isa: Isa, x: &[f32], mt: usize, w: &[f32], nt: usize, k: usize, sums: &mut [[f32; 4]; MR]) {
    macro_rules! dispatch {
        ($($f:ident)::+) => {
            match (mt, nt) {
                (1, 1) => $($f)::+::<1, 1>(x, w, k, sums),
                (1, 2) => $($f)::+::<1, 2>(x, w, k, sums),
                (1, 3) => $($f)::+::<1, 3>(x, w, k, sums),
                (1, 4) => $($f)::+::<1, 4>(x, w, k, sums),
                (2, 1) => $($f)::+::<2, 1>(x, w, k, sums),
                (2, 2) => $($f)::+::<2, 2>(x, w, k, sums),
                (2, 3) => $($f)::+::<2, 3>(x, w, k, sums),
                (2, 4) => $($f)::+::<2, 4>(x, w, k, sums),
                (3, 1) => $($f)::+::<3, 1>(x, w, k, sums),
                (3, 2) => $($f)::+::<3, 2>(x, w, k, sums),
                (3, 3) => $($f)::+::<3, 3>(x, w, k, sums),
                (3, 4) => $($f)::+::<3, 4>(x, w, k, sums),
                (4, 1) => $($f)::+::<4, 1>(x, w, k, sums),
                (4, 2) => $($f)::+::<4, 2>(x, w, k, sums),
                (4, 3) => $($f)::+::<4, 3>(x, w, k, sums),
                (4, 4) => $($f)::+::<4, 4>(x, w, k, sums),
                _ => unreachable!("tile dimensions are capped at 4"),
            }
        };
    }
    match isa {
        // SAFETY: `matmul_t_with` only accepts an x86 ISA the running CPU reports.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { dispatch!(x86::tile_avx512) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { dispatch!(x86::tile_avx2) },
        _ => dispatch!(tile_portable),
    }
}

/// Lanes of the portable chain: plain (unfused) multiply then add, vectorizable by the compiler.
const PORTABLE_LANES: usize = 8;

fn tile_portable<const M: usize, const N: usize>(
    x: &[f32],
    w: &[f32],
    k: usize,
    sums: &mut [[f32; 4]; MR],
) {
    let mut acc = [[[0.0f32; PORTABLE_LANES]; N]; M];
    let full = k / PORTABLE_LANES * PORTABLE_LANES;
    let step = |acc: &mut [[[f32; PORTABLE_LANES]; N]; M], xs: [&[f32]; M], ws: [&[f32]; N]| {
        for i in 0..M {
            for j in 0..N {
                for l in 0..PORTABLE_LANES {
                    acc[i][j][l] += xs[i][l] * ws[j][l];
                }
            }
        }
    };
    let mut off = 0;
    while off < full {
        let xs: [&[f32]; M] = std::array::from_fn(|i| &x[i * k + off..][..PORTABLE_LANES]);
        let ws: [&[f32]; N] = std::array::from_fn(|j| &w[j * k + off..][..PORTABLE_LANES]);
        step(&mut acc, xs, ws);
        off += PORTABLE_LANES;
    }
    if full < k {
        let pad = |row: &[f32]| {
            let mut p = [0.0f32; PORTABLE_LANES];
            p[..k - full].copy_from_slice(&row[full..k]);
            p
        };
        let xp: [[f32; PORTABLE_LANES]; M] = std::array::from_fn(|i| pad(&x[i * k..][..k]));
        let wp: [[f32; PORTABLE_LANES]; N] = std::array::from_fn(|j| pad(&w[j * k..][..k]));
        step(
            &mut acc,
            std::array::from_fn(|i| &xp[i][..]),
            std::array::from_fn(|j| &wp[j][..]),
        );
    }
    for i in 0..M {
        for j in 0..N {
            let a = &acc[i][j];
            // Same tree as the AVX2 reduction: halves, then pairs, then the last two.
            let q = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
            let p = [q[0] + q[2], q[1] + q[3]];
            sums[i][j] = p[0] + p[1];
        }
    }
}

#[cfg(test)]
mod tests;
