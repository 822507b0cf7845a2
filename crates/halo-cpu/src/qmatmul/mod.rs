//! Projections with weights kept in their stored form: `y[M,N] = x[M,K] · W[N,K]^T` where W is
//! F32, F16, BF16 or one of GGUF's block-quantized types (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K), its rows
//! laid out exactly as ggml lays them out.
//!
//! - F32 weights go to [`crate::matmul`]. F16 and BF16 weights are widened in registers, a
//!   vector at a time, into the very chain the f32 kernel runs (same lanes, same FMA order, same
//!   zero padding, same horizontal reduction), so an f16 model gives the bits of its widened-f32
//!   twin; so does a bf16 model, unless its rows are marked to meet bf16 activations
//!   (`--activation-dtype bf16`: llama.cpp's and torch's arithmetic for bf16 models, through
//!   `vdpbf16ps` on CPUs with AVX-512 BF16, see `bf16_dot`).
//! - Quantized weights meet activations quantized once per call, each row on its own: blocks of
//!   32 int8 values with an f32 scale for Q4_0/Q8_0 weights, blocks of 256 with per-16 sums for
//!   the K-quants. Each block's dot product is an exact integer (no saturation is possible with
//!   the value ranges involved), so the only rounding is in how the integer sums meet the scales,
//!   and that is one fixed sequence per output element:
//!   - K-quants: per 256-value super-block, in K order, `acc = acc + (d·dx)·(isum as f32)` and
//!     for Q4_K/Q5_K `acc = acc - (dmin·dx)·(msum as f32)`, unfused. The integer sums are exact,
//!     so every ISA gives the same bits.
//!   - Q4_0/Q8_0: the per-block integer partial sums of each vector lane are scaled by `dw·dx`
//!     and fused into one f32 accumulator vector per output, reduced at the end in a fixed tree;
//!     the lane layout is the ISA's (8 lanes per block on AVX2, 16 lanes over two blocks for
//!     Q4_0 on AVX-512); the portable path runs `acc = acc + (dw·dx)·(isum as f32)` per block.
//!   - Q8_0, Q4_K and Q6_K on AVX-512 VNNI: the weights are repacked at construction, 16 rows
//!     interleaved ([`q8_packed`], [`k_packed`]), so a lane is one output and each output runs
//!     the portable chain: AVX-512 and the portable path give the same bits for these types.
//!     Likewise on AVX2: Q8_0 and Q4_0 8 rows interleaved ([`q8_packed_avx2`],
//!     [`q4_0_packed_avx2`]: for Q4_0, AVX2 and the portable path give the same bits, AVX-512's
//!     row kernel its own), Q4_K and Q6_K in
//!     [`k_packed`]'s layout read as two halves of 8 rows ([`k_packed_avx2`]).
//!
//!   Tiles only decide how many of these independent chains run side by side, so an output does
//!   not depend on M or on where its row sits in the batch.
//!
//! The structure is the f32 kernel's: activations are quantized once, N is split over the
//! caller's rayon pool, each task computes a contiguous block of yᵀ, and each group of weight
//! rows is read once and met by every activation tile while it is cache-hot. Up to 4 activation
//! rows the kernel streams one weight row at a time. The packed layouts write `y` directly
//! ([`groups`]).

mod acts;
#[cfg(target_arch = "x86_64")]
mod bf16_dot;
mod groups;
mod half;
mod interleave8;
mod k_packed;
#[cfg(target_arch = "x86_64")]
mod k_packed_avx2;
mod portable;
mod q4_0_packed_avx2;
mod q8_packed;
mod q8_packed_avx2;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::hugepages::Aligned;
use crate::isa_cap::IsaCap;
use crate::matmul::{self, Isa};
use halo_hal::error::DeviceError;
use halo_model::dtype::StoredDType;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::OnceLock;

pub(crate) use acts::Acts;

/// A weight matrix of `rows × cols` in its stored form: `rows` rows of `dtype.row_bytes(cols)`
/// bytes, each row a run of ggml blocks (or plain little-endian floats). On a CPU with AVX-512
/// VNNI, Q8_0, Q4_K and Q6_K rows are held repacked for its kernels ([`q8_packed`],
/// [`k_packed`]), on one with AVX2 those and Q4_0 ([`q8_packed_avx2`], [`q4_0_packed_avx2`],
/// [`k_packed`]);
/// [`QMatrix::row`] gives ggml's bytes either way.
#[derive(Clone, Debug)]
pub struct QMatrix {
    dtype: StoredDType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// How `data` is laid out.
    layout: Layout,
    /// BF16 rows that meet activations rounded to bf16 ([`QMatrix::meeting_bf16_activations`]).
    bf16_activations: bool,
    data: Aligned,
}

/// How a [`QMatrix`] holds its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// ggml's rows.
    Rows,
    /// 16 rows interleaved: [`q8_packed`] (Q8_0, AVX-512) or [`k_packed`] (Q4_K and Q6_K,
    /// AVX-512 and AVX2).
    Packed16,
    /// 8 rows interleaved: [`q8_packed_avx2`] (Q8_0, AVX2), [`q4_0_packed_avx2`] (Q4_0, AVX2).
    Packed8,
}

impl Layout {
    /// The layout whose kernels `isa` runs for `dtype`.
    fn for_isa(isa: QIsa, dtype: StoredDType) -> Layout {
        match isa {
            QIsa::Avx512Vnni if dtype == StoredDType::Q8_0 => Layout::Packed16,
            QIsa::Avx2 if matches!(dtype, StoredDType::Q8_0 | StoredDType::Q4_0) => Layout::Packed8,
            QIsa::Avx512Vnni if k_packed::packs(dtype) => Layout::Packed16,
            QIsa::Avx2 if k_packed::packs_avx2(dtype) => Layout::Packed16,
            _ => Layout::Rows,
        }
    }
}

impl QMatrix {
    /// Takes ownership of `data`, checking it holds exactly `rows` rows of `cols` values.
    /// `cols` must be a whole number of blocks of `dtype`.
    pub fn new(
        dtype: StoredDType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<QMatrix, DeviceError> {
        // The detected ISA is the one every later call on this CPU runs (another is only ever
        // asked for by tests, which get the rows unpacked unless they build for that ISA).
        QMatrix::for_isa(QIsa::detect(), dtype, rows, cols, data)
    }

    /// [`QMatrix::new`] with the rows held the way `isa`'s kernels want them (tests reach every
    /// ISA's layout through this; any ISA's layout gives the same results on every ISA, the
    /// others running on a copy in ggml's rows).
    pub(crate) fn for_isa(
        isa: QIsa,
        dtype: StoredDType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<QMatrix, DeviceError> {
        let row_bytes = dtype.row_bytes(cols).ok_or_else(|| {
            DeviceError::Load(format!(
                "{dtype} matrix of {rows}x{cols}: {cols} columns are not a whole number of \
                 {}-value blocks",
                dtype.block_elems()
            ))
        })?;
        let total = row_bytes.checked_mul(rows).ok_or_else(|| {
            DeviceError::Load(format!("{dtype} matrix of {rows}x{cols}: size overflows"))
        })?;
        if data.len() != total {
            return Err(DeviceError::Load(format!(
                "{dtype} matrix of {rows}x{cols}: expected {total} bytes, got {}",
                data.len()
            )));
        }
        let layout = Layout::for_isa(isa, dtype);
        let data = match (layout, dtype) {
            (Layout::Packed16, StoredDType::Q8_0) => q8_packed::pack(rows, cols, &data),
            (Layout::Packed16, _) => k_packed::pack(dtype, rows, cols, &data),
            (Layout::Packed8, StoredDType::Q4_0) => interleave8::Q4_0.pack(rows, cols, &data),
            (Layout::Packed8, _) => interleave8::Q8_0.pack(rows, cols, &data),
            // Plain rows stay where they are: the f16 llama-1b decoded no faster from a huge-page
            // copy (5.0-5.7 against 5.2-8.8 tok/s on the loaded machine) and the copy cost 4-7 s
            // of load and a transient 0.6 GB.
            (Layout::Rows, _) => Aligned::unaligned(data),
        };
        // The packed layouts are read as one sequential stream per task: on huge pages that
        // stream is about twice as fast per core (see `hugepages`).
        if layout != Layout::Rows {
            data.collapse();
        }
        Ok(QMatrix {
            dtype,
            rows,
            cols,
            row_bytes,
            layout,
            bf16_activations: false,
            data,
        })
    }

    /// When `yes` and the rows are BF16: every product with them rounds the activations to
    /// bf16 first, each row on its own (`--activation-dtype bf16`), which lets CPUs with
    /// AVX-512 BF16 run `vdpbf16ps` at twice the f32 rate (`bf16_dot.rs`). Other types are
    /// unchanged: quantized rows have their own activation blocks, f16/f32 rows keep f32.
    pub fn meeting_bf16_activations(mut self, yes: bool) -> QMatrix {
        self.bf16_activations = yes && self.dtype == StoredDType::BF16;
        self
    }

    /// The same matrix with ggml's row layout (a copy only when it is packed).
    fn rows_layout(&self) -> Cow<'_, QMatrix> {
        if self.layout != Layout::Rows {
            Cow::Owned(QMatrix {
                layout: Layout::Rows,
                data: Aligned::unaligned(self.data().into_owned()),
                ..*self
            })
        } else {
            Cow::Borrowed(self)
        }
    }

    pub fn dtype(&self) -> StoredDType {
        self.dtype
    }

    /// N: output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// K: input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (what one pass over the matrix streams; a packed matrix whose row count is
    /// not a multiple of its group, 16 or 8 rows, holds a few padding rows).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes of one row in ggml's layout.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// All rows in ggml's layout, row-major (a copy when the matrix is held repacked).
    pub fn data(&self) -> Cow<'_, [u8]> {
        let (rows, cols) = (self.rows, self.cols);
        match (self.layout, self.dtype) {
            (Layout::Rows, _) => Cow::Borrowed(&self.data),
            (Layout::Packed16, StoredDType::Q8_0) => {
                Cow::Owned(q8_packed::unpack(&self.data, rows, cols))
            }
            (Layout::Packed16, t) => Cow::Owned(k_packed::unpack(t, &self.data, rows, cols)),
            (Layout::Packed8, StoredDType::Q4_0) => {
                Cow::Owned(interleave8::Q4_0.unpack(&self.data, rows, cols))
            }
            (Layout::Packed8, _) => Cow::Owned(interleave8::Q8_0.unpack(&self.data, rows, cols)),
        }
    }

    /// Row `r`'s bytes in ggml's layout (for embedding lookups; a copy when packed).
    pub fn row(&self, r: usize) -> Cow<'_, [u8]> {
        let cols = self.cols;
        match (self.layout, self.dtype) {
            (Layout::Rows, _) => Cow::Borrowed(&self.data[r * self.row_bytes..][..self.row_bytes]),
            (Layout::Packed16, StoredDType::Q8_0) => {
                Cow::Owned(q8_packed::unpack_row(&self.data, cols, r))
            }
            (Layout::Packed16, t) => Cow::Owned(k_packed::unpack_row(t, &self.data, cols, r)),
            (Layout::Packed8, StoredDType::Q4_0) => {
                Cow::Owned(interleave8::Q4_0.unpack_row(&self.data, cols, r))
            }
            (Layout::Packed8, _) => Cow::Owned(interleave8::Q8_0.unpack_row(&self.data, cols, r)),
        }
    }
}

/// Which instruction set runs the integer dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QIsa {
    /// AVX-512 F/BW/VL with VNNI (`vpdpbusd`, `vpdpwssd`), F16C.
    Avx512Vnni,
    /// AVX2 + FMA + F16C (`vpmaddubsw` + `vpmaddwd`).
    Avx2,
    Portable,
}

impl QIsa {
    /// The best one this CPU supports within `HALO_CPU_ISA` ([`crate::isa_cap`]), detected
    /// once.
    pub fn detect() -> QIsa {
        static ISA: OnceLock<QIsa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = crate::isa_cap::cap();
            [
                (QIsa::Avx512Vnni, IsaCap::Avx512),
                (QIsa::Avx2, IsaCap::Avx2),
            ]
            .into_iter()
            .find(|&(isa, needs)| needs <= cap && isa.supported())
            .map_or(QIsa::Portable, |(isa, _)| isa)
        })
    }

    /// Whether this CPU can run it.
    pub fn supported(self) -> bool {
        match self {
            QIsa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every ISA this CPU can run (tests exercise them all).
    pub fn available() -> Vec<QIsa> {
        [QIsa::Portable, QIsa::Avx2, QIsa::Avx512Vnni]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }

    /// The f32 kernel's ISA whose chain the F16/BF16 path reproduces.
    pub fn float_isa(self) -> Isa {
        match self {
            QIsa::Avx512Vnni => Isa::Avx512,
            QIsa::Avx2 => Isa::Avx2Fma,
            QIsa::Portable => Isa::Portable,
        }
    }

    /// W rows per tile for `m` activation rows (see [`crate::matmul`]: one row at a time while
    /// the call streams weights from memory, more when each weight row meets many activations).
    fn rows_per_tile(self, m: usize) -> usize {
        match (self, m) {
            (_, 1..=4) => 1,
            (QIsa::Avx512Vnni, _) => 4,
            _ => 2,
        }
    }
}

/// Activation rows per tile.
pub(crate) const MR: usize = 4;

/// One tile's results: `sums[i][j] = x_i · w_j`.
pub(crate) type Sums = [[f32; 4]; MR];

/// Below this many multiply-adds a call runs on the calling thread.
const SERIAL_WORK: usize = 1 << 18;

/// W rows per cache block when several activation tiles share it.
const ROWS_PER_BLOCK: usize = 16;

/// `y = x · wᵀ` on the ISA detected for this CPU. `x` is `[m, w.cols()]`, `y` is
/// `[m, w.rows()]`, both row-major. Runs on the current rayon pool.
pub fn qmatmul_t(x: &[f32], m: usize, w: &QMatrix, y: &mut [f32]) {
    match w.dtype {
        StoredDType::BF16 if w.bf16_activations => bf16_activations_matmul_t(x, m, w, y),
        // The half types follow the f32 kernel's own ISA choice so their bits match it.
        StoredDType::F16 | StoredDType::BF16 => half::matmul_t(Isa::detect(), x, m, w, y),
        _ => qmatmul_t_with(QIsa::detect(), x, m, w, y),
    }
}

/// `y = bf16(x) · wᵀ` for BF16 rows marked [`QMatrix::meeting_bf16_activations`]: `vdpbf16ps`
/// where the CPU has it; elsewhere the same rounding of x, then the f32 chain on the widened
/// weights (a product of two bf16 values is exact in f32 either way; only the summation order
/// is the ISA's, as for every float chain here).
fn bf16_activations_matmul_t(x: &[f32], m: usize, w: &QMatrix, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if bf16_dot::usable() {
        return bf16_dot::matmul_t(x, m, w, y);
    }
    let rounded: Vec<f32> = x
        .iter()
        .map(|&v| ::half::bf16::from_f32(v).to_f32())
        .collect();
    half::matmul_t(Isa::detect(), &rounded, m, w, y)
}

/// [`qmatmul_t`] on a chosen ISA, which must be [`QIsa::supported`]. F16/BF16 weights run the
/// f32 chain of [`QIsa::float_isa`], with f32 activations whatever the matrix is marked.
pub fn qmatmul_t_with(isa: QIsa, x: &[f32], m: usize, w: &QMatrix, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    assert!(
        x.len() == m * k && y.len() == m * n,
        "qmatmul_t: shape mismatch (x {} for {m}x{k}, y {} for {m}x{n})",
        x.len(),
        y.len()
    );
    assert!(
        isa.supported(),
        "qmatmul_t: {isa:?} is not supported by this CPU"
    );
    if w.layout != Layout::Rows {
        #[cfg(target_arch = "x86_64")]
        if Layout::for_isa(isa, w.dtype) == w.layout {
            if k == 0 {
                y.fill(0.0);
            } else if m > 0 && n > 0 {
                use q4_0_packed_avx2::Q4_0Avx2;
                use q8_packed_avx2::Q8_0Avx2;
                let acts = Acts::quantize(w.dtype, x, m, k);
                match (isa, w.dtype) {
                    (QIsa::Avx512Vnni, StoredDType::Q8_0) => {
                        q8_packed::matmul_avx512(&acts, m, &w.data, n, y)
                    }
                    (QIsa::Avx512Vnni, t) => k_packed::matmul_avx512(t, &acts, m, &w.data, n, y),
                    (_, StoredDType::Q8_0) => {
                        interleave8::matmul_avx2::<Q8_0Avx2>(&acts, m, &w.data, n, y)
                    }
                    (_, StoredDType::Q4_0) => {
                        interleave8::matmul_avx2::<Q4_0Avx2>(&acts, m, &w.data, n, y)
                    }
                    (_, t) => k_packed_avx2::matmul_avx2(t, &acts, m, &w.data, n, y),
                }
            }
            return;
        }
        return quantized(isa, x, m, &w.rows_layout(), y);
    }
    match w.dtype {
        StoredDType::F32 => {
            let mut wf = Vec::new();
            let wf = f32_view(&w.data, &mut wf);
            matmul::matmul_t_with(isa.float_isa(), x, m, k, wf, n, y);
        }
        StoredDType::F16 | StoredDType::BF16 => half::matmul_t(isa.float_isa(), x, m, w, y),
        _ => quantized(isa, x, m, w, y),
    }
}

/// The bytes as f32s: borrowed when aligned (a `Vec<u8>` from the global allocator is), copied
/// otherwise.
fn f32_view<'a>(bytes: &'a [u8], copy: &'a mut Vec<f32>) -> &'a [f32] {
    // SAFETY: every bit pattern is a valid f32; align_to only yields the aligned middle.
    let (pre, mid, post) = unsafe { bytes.align_to::<f32>() };
    if pre.is_empty() && post.is_empty() {
        mid
    } else {
        *copy = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        copy
    }
}

fn quantized(isa: QIsa, x: &[f32], m: usize, w: &QMatrix, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let acts = Acts::quantize(w.dtype, x, m, k);
    let nr = isa.rows_per_tile(m);
    #[cfg(target_arch = "x86_64")]
    if isa == QIsa::Avx512Vnni && m > MR && matches!(w.dtype, StoredDType::Q8_0 | StoredDType::Q4_0)
    {
        // Each cache block of weight rows unpacked once for all the activation tiles.
        let rb = w.row_bytes;
        drive_blocks(m, n, k, nr, y, &|n0, rows, out| {
            let wb = &w.data[n0 * rb..(n0 + rows) * rb];
            x86::q8_block_avx512(w.dtype, &acts, m, wb, rows, out, ROWS_PER_BLOCK);
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == QIsa::Avx512Vnni
        && m > MR
        && matches!(
            w.dtype,
            StoredDType::Q4_K | StoredDType::Q5_K | StoredDType::Q6_K
        )
    {
        let rb = w.row_bytes;
        drive_blocks(m, n, k, nr, y, &|n0, rows, out| {
            let wb = &w.data[n0 * rb..(n0 + rows) * rb];
            x86::k_block_avx512(w.dtype, &acts, m, wb, rows, out, ROWS_PER_BLOCK);
        });
        return;
    }
    drive(m, n, k, nr, y, &|m0, mt, n0, nt, sums| {
        let wb = &w.data[n0 * w.row_bytes..(n0 + nt) * w.row_bytes];
        match isa {
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx512Vnni => x86::tile_avx512(w.dtype, &acts, m0, mt, wb, nt, sums),
            #[cfg(target_arch = "x86_64")]
            QIsa::Avx2 => x86::tile_avx2(w.dtype, &acts, m0, mt, wb, nt, sums),
            _ => portable::tile(w.dtype, &acts, m0, mt, wb, nt, sums),
        }
    });
}

/// Splits N over the pool and runs `tile(m0, mt, n0, nt, sums)` over every tile, each task
/// writing a contiguous block of yᵀ, then transposes into `y` (as [`crate::matmul`] does).
pub(crate) fn drive(
    m: usize,
    n: usize,
    k: usize,
    nr: usize,
    y: &mut [f32],
    tile: &(dyn Fn(usize, usize, usize, usize, &mut Sums) + Sync),
) {
    drive_blocks(m, n, k, nr, y, &|base, rows, out| {
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
                for n0 in (b0..b1).step_by(nr) {
                    let nt = nr.min(b1 - n0);
                    tile(m0, mt, base + n0, nt, &mut sums);
                    for (j, dst) in out[n0 * m..(n0 + nt) * m].chunks_exact_mut(m).enumerate() {
                        for (i, s) in sums[..mt].iter().enumerate() {
                            dst[m0 + i] = s[j];
                        }
                    }
                }
            }
        }
    });
}

/// Splits N over the pool in chunks of whole `nr`-row tiles and runs `block(n0, rows, out)`
/// for each, `out` being rows `n0..n0 + rows` of yᵀ (`rows × m`), then transposes into `y`.
pub(crate) fn drive_blocks(
    m: usize,
    n: usize,
    k: usize,
    nr: usize,
    y: &mut [f32],
    block: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) {
    let mut transposed = Vec::new();
    let yt: &mut [f32] = if m == 1 {
        y
    } else {
        transposed.resize(n * m, 0.0);
        &mut transposed
    };
    let tasks = if m * n * k < SERIAL_WORK {
        1
    } else {
        rayon::current_num_threads() * 4
    };
    let chunk = n.div_ceil(tasks).div_ceil(nr) * nr;
    let block = |c: usize, out: &mut [f32]| block(c * chunk, out.len() / m, out);
    if tasks == 1 {
        block(0, yt);
    } else {
        yt.par_chunks_mut(chunk * m)
            .enumerate()
            .for_each(|(c, out)| block(c, out));
    }
    if m > 1 {
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

/// IEEE half → f32 (exact), for scales.
#[inline]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => sign | (man as f32 * (1.0 / 16_777_216.0)).to_bits(),
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// The little-endian half at `b[off..off + 2]`.
#[inline]
pub(crate) fn half_at(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Q4_K / Q5_K: the 8 six-bit scales and 8 six-bit mins packed in 12 bytes.
#[inline]
pub(crate) fn kscales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xF) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

#[cfg(test)]
mod tests;
