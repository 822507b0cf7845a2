//! The many-rows path of [`super::matmul_t`] (prefill and batched decode, `m >= GEMM_MIN_M`),
//! shared with the f16/bf16 weights of [`crate::qmatmul`]: same chains as the tiles in
//! [`super::x86`], arranged for the FMA pipe instead of for the weight stream.
//!
//! Why a second path: with many activation rows the step is bound by arithmetic, not by
//! streaming W, and the 4×4 tile reading x and W rows where they lie spends its time waiting on
//! L2 (a 4-row tile of x at k = 2048 is all of L1). Here, as in a BLIS-style GEMM:
//! - x is packed once per call into panels of `MR` rows, chunk-interleaved (chunk `c` of the
//!   panel's rows side by side), the partial last chunk zero-padded;
//! - each task packs a block of `NC_UNITS` micro-panels of `NR` W rows the same way, widening
//!   f16/bf16 as it copies (once per block instead of once per tile);
//! - the micro-kernel keeps `MR × NR` accumulators in registers (4 × 6 on AVX-512, 4 × 3 on
//!   AVX2) over a slice of at most `KC` chunks, the x panel staying in L1 while the block's W
//!   micro-panels stream past from L2; between slices (only when k is longer than `KC`
//!   chunks) the accumulators wait in a small buffer, exactly as stored;
//! - after the last slice the accumulators are reduced sixteen (eight on AVX2) at a time by a
//!   transpose-and-add network whose per-lane adds are the single-vector reduction's adds in
//!   its order, and written straight to `y`.
//!
//! Batch invariance: each (m, n) still has one accumulator vector that starts at +0, meets
//! the chunks of x row m and W row n in K order through one FMA each (the last chunk
//! zero-padded in both), is only ever stored and reloaded whole between K slices, and is then
//! reduced by the same tree of adds as `hsum512` / `hsum256`. Padding rows of a panel or
//! micro-panel compute chains that are thrown away. So the bits are those of the 1-row path.

#![cfg(target_arch = "x86_64")]

use super::Isa;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::thread::LocalKey;

/// Where the weights come from: rows of `k` values, f32 or little-endian halves.
#[derive(Clone, Copy)]
pub(crate) enum WSrc<'a> {
    F32(&'a [f32]),
    F16(&'a [u8]),
    Bf16(&'a [u8]),
}

/// Most chunks (of the ISA's lanes) per K slice: up to k = 2048 on AVX-512 one slice, the
/// 4-row x panel (32 KiB) read from L1/L2 by every micro-panel of the block. Splitting K
/// there measured no faster: each slice costs an accumulator store and reload per tile.
const KC: usize = 128;

/// W rows per packed block: the block (`NC × k` floats, 384 KiB at k = 2048) stays in L2
/// while every x panel meets it; x is re-read once per block, ~1.3 bytes per FMA cycle.
const NC_UNITS: usize = 8;

/// Below this many multiply-adds a call runs on the calling thread.
const SERIAL_WORK: usize = 1 << 18;

/// Buffers kept per thread between calls up to this many elements (64 MiB of floats); larger
/// ones are allocated for the call.
const KEEP_ELEMS: usize = 1 << 24;

thread_local! {
    static XBUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static WBUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` elements of this thread's `key` buffer (contents unspecified), or on a
/// fresh one when that is in use further up this thread's stack (rayon may run another
/// call's task while this one waits) or too large to keep. Kept buffers spare each call the
/// page faults and zeroing of a fresh allocation.
pub(crate) fn with_buf<T: Copy + Default, R>(
    key: &'static LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) if len <= KEEP_ELEMS => {
            if v.len() < len {
                v.resize(len, T::default());
            }
            f(&mut v[..len])
        }
        _ => f(&mut vec![T::default(); len]),
    })
}

/// `y` shared by tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: tasks own disjoint W rows, so each writes a disjoint set of y's elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Element `off` of y (a method, so closures capture the whole Sync wrapper).
    ///
    /// # Safety
    /// `off` is inside y.
    pub(crate) unsafe fn at(self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// The tile shape and code of one ISA.
trait Arch: Sync {
    /// Lanes per accumulator vector.
    const L: usize;
    /// Activation rows per panel.
    const MR: usize;
    /// W rows per micro-panel.
    const NR: usize;

    /// Packs W rows `r0..r0 + rows` (`rows <= NR`, the rest zero) of `k` values into one
    /// micro-panel `dst` of `k.div_ceil(L)` chunks of `NR × L` floats.
    ///
    /// # Safety
    /// The CPU supports the ISA (and F16C for halves).
    unsafe fn pack_w(w: WSrc, k: usize, r0: usize, rows: usize, dst: &mut [f32]);

    /// Packs `mt <= MR` rows of x (`x` starts at the first) into one panel `dst`.
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn pack_x(x: &[f32], k: usize, mt: usize, dst: &mut [f32]);

    /// `mt` rows of the panel at `xp` against the micro-panel at `wp`, over `chunks` chunks.
    ///
    /// # Safety
    /// The CPU supports the ISA; `xp`/`wp` hold `chunks` chunks of their panels; `acc` holds
    /// `MR × NR × L` floats; `out`, when given, `mt` rows of stride `ldy` with `cols` columns.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        mt: usize,
        xp: *const f32,
        wp: *const f32,
        chunks: usize,
        acc: *mut f32,
        first: bool,
        out: Option<(*mut f32, usize, usize)>,
    );
}

/// Whether [`gemm`] can run `isa` here: its kernels also use AVX2, FMA and F16C, which every
/// AVX-512 CPU has, checked anyway.
pub(crate) fn usable(isa: Isa) -> bool {
    isa != Isa::Portable
        && isa.supported()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// `y = x · wᵀ` for `m` rows on an x86 `isa` that is [`usable`].
pub(crate) fn gemm(isa: Isa, x: &[f32], m: usize, k: usize, w: WSrc, n: usize, y: &mut [f32]) {
    assert!(usable(isa), "gemm: {isa:?} is not usable here");
    let wlen = match w {
        WSrc::F32(v) => v.len(),
        WSrc::F16(b) | WSrc::Bf16(b) => b.len() / 2,
    };
    assert!(
        x.len() == m * k && wlen == n * k && y.len() == m * n && k > 0,
        "gemm: shape mismatch"
    );
    match isa {
        Isa::Avx512 => run::<Avx512>(x, m, k, w, n, y),
        Isa::Avx2Fma => run::<Avx2>(x, m, k, w, n, y),
        Isa::Portable => unreachable!("the portable ISA has no GEMM path"),
    }
}

fn run<A: Arch>(x: &[f32], m: usize, k: usize, w: WSrc, n: usize, y: &mut [f32]) {
    let (l, mr, nr) = (A::L, A::MR, A::NR);
    let chunks = k.div_ceil(l);
    let panels = m.div_ceil(mr);
    let panel_len = chunks * mr * l;
    let micro_len = chunks * nr * l;
    let parallel = m * n * k >= SERIAL_WORK;
    // Equal K slices of at most KC chunks.
    let slices = chunks.div_ceil(KC);
    let kc = chunks.div_ceil(slices);
    with_buf(&XBUF, panels * panel_len, |xp| {
        let pack_x = |(p, dst): (usize, &mut [f32])| {
            let rows = mr.min(m - p * mr);
            // SAFETY: `gemm` only runs an ISA the CPU reports.
            unsafe { A::pack_x(&x[p * mr * k..], k, rows, dst) };
        };
        if parallel {
            xp.par_chunks_mut(panel_len).enumerate().for_each(pack_x);
        } else {
            xp.chunks_mut(panel_len).enumerate().for_each(pack_x);
        }
        let xp: &[f32] = xp;
        let out = OutPtr(y.as_mut_ptr());
        let units = n.div_ceil(nr);
        let tasks = if parallel {
            (rayon::current_num_threads() * 4).min(units)
        } else {
            1
        };
        let per_task = units.div_ceil(tasks);
        let task = |t: usize| {
            let u0 = t * per_task;
            let u1 = (u0 + per_task).min(units);
            if u0 >= u1 {
                return;
            }
            with_buf(&WBUF, NC_UNITS * micro_len, |wb| {
                let mut acc = vec![0.0f32; NC_UNITS * mr * nr * l];
                for b0 in (u0..u1).step_by(NC_UNITS) {
                    let b1 = (b0 + NC_UNITS).min(u1);
                    for u in b0..b1 {
                        let r0 = u * nr;
                        let rows = nr.min(n - r0);
                        let dst = &mut wb[(u - b0) * micro_len..][..micro_len];
                        // SAFETY: `gemm` only runs an ISA the CPU reports (half.rs checks F16C).
                        unsafe { A::pack_w(w, k, r0, rows, dst) };
                    }
                    // The next block's W rows (one contiguous range of the source) are
                    // prefetched into L2 a few lines per kernel call, so packing it finds them
                    // there instead of waiting on memory between blocks (at 32 rows that wait
                    // was a third of the time).
                    let mut ahead = Prefetch::new(w, k, b1 * nr, ((b1 + NC_UNITS) * nr).min(n));
                    ahead.spread_over(panels * slices * (b1 - b0));
                    for p in 0..panels {
                        let mt = mr.min(m - p * mr);
                        for s in 0..slices {
                            let c0 = s * kc;
                            let cn = kc.min(chunks - c0);
                            let last = s + 1 == slices;
                            for u in b0..b1 {
                                let r0 = u * nr;
                                let dst = last.then(|| {
                                    // SAFETY: row p·MR, column r0 of y, inside it.
                                    let ptr = unsafe { out.at(p * mr * n + r0) };
                                    (ptr, n, nr.min(n - r0))
                                });
                                // SAFETY: panel offsets stay inside xp / wb / acc (sizes above).
                                unsafe {
                                    A::kernel(
                                        mt,
                                        xp.as_ptr().add(p * panel_len + c0 * mr * l),
                                        wb.as_ptr().add((u - b0) * micro_len + c0 * nr * l),
                                        cn,
                                        acc.as_mut_ptr().add((u - b0) * mr * nr * l),
                                        s == 0,
                                        dst,
                                    );
                                }
                                ahead.step();
                            }
                        }
                    }
                }
            });
        };
        if tasks == 1 {
            task(0);
        } else {
            (0..tasks).into_par_iter().for_each(task);
        }
    });
}

/// Prefetches W rows `r0..r1` into L2 in even steps.
pub(crate) struct Prefetch {
    next: *const u8,
    end: *const u8,
    per_step: usize,
}

impl Prefetch {
    const LINE: usize = 64;

    pub(crate) fn new(w: WSrc, k: usize, r0: usize, r1: usize) -> Prefetch {
        let bytes: &[u8] = match w {
            WSrc::F32(v) => {
                let v = &v[(r0 * k).min(v.len())..(r1 * k).max(r0 * k).min(v.len())];
                // SAFETY: the f32s' own bytes, same lifetime.
                unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
            }
            WSrc::F16(b) | WSrc::Bf16(b) => {
                &b[(2 * r0 * k).min(b.len())..(2 * r1 * k).max(2 * r0 * k).min(b.len())]
            }
        };
        let range = bytes.as_ptr_range();
        Prefetch {
            next: range.start,
            end: range.end,
            per_step: 0,
        }
    }

    /// Spreads the range over `steps` calls of [`Prefetch::step`].
    pub(crate) fn spread_over(&mut self, steps: usize) {
        let lines = (self.end as usize - self.next as usize).div_ceil(Self::LINE);
        self.per_step = lines.div_ceil(steps.max(1));
    }

    pub(crate) fn step(&mut self) {
        for _ in 0..self.per_step {
            if self.next >= self.end {
                return;
            }
            // SAFETY: a hint on an address inside the weights; it never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(self.next.cast()) };
            self.next = self.next.wrapping_add(Self::LINE);
        }
    }
}

/// IEEE half → f32 of the tail values, as the 1-row path widens them.
fn widen_scalar(w: WSrc, e: usize) -> f32 {
    match w {
        WSrc::F32(v) => v[e],
        WSrc::F16(b) => crate::qmatmul::f16_to_f32(u16::from_le_bytes([b[2 * e], b[2 * e + 1]])),
        WSrc::Bf16(b) => {
            f32::from_bits((u16::from_le_bytes([b[2 * e], b[2 * e + 1]]) as u32) << 16)
        }
    }
}

/// The kernel body for one ISA; `$red` reduces `2 × $lanes` accumulators (or the first
/// `$lanes`) to their sums in order.
macro_rules! arch {
    ($ty:ident, $features:literal, $vec:ty, $lanes:literal, $mr:literal, $nr:literal,
     $zero:ident, $load:ident, $store:ident, $fma:ident, $red:ident,
     $widen_f16:ident, $widen_bf16:ident) => {
        struct $ty;

        impl $ty {
            #[target_feature(enable = $features)]
            unsafe fn pack_w_impl(w: WSrc, k: usize, r0: usize, rows: usize, dst: &mut [f32]) {
                const L: usize = $lanes;
                let chunks = k.div_ceil(L);
                let full = k / L;
                assert!(dst.len() >= chunks * $nr * L);
                for j in 0..$nr {
                    let d = dst.as_mut_ptr().add(j * L);
                    if j >= rows {
                        for c in 0..chunks {
                            $store(d.add(c * $nr * L), $zero());
                        }
                        continue;
                    }
                    let row = r0 + j;
                    match w {
                        WSrc::F32(v) => {
                            let src = &v[row * k..][..k];
                            for c in 0..full {
                                $store(d.add(c * $nr * L), $load(src.as_ptr().add(c * L)));
                            }
                        }
                        WSrc::F16(b) => {
                            let src = &b[2 * row * k..][..2 * k];
                            for c in 0..full {
                                $store(d.add(c * $nr * L), $widen_f16(src.as_ptr().add(2 * c * L)));
                            }
                        }
                        WSrc::Bf16(b) => {
                            let src = &b[2 * row * k..][..2 * k];
                            for c in 0..full {
                                $store(
                                    d.add(c * $nr * L),
                                    $widen_bf16(src.as_ptr().add(2 * c * L)),
                                );
                            }
                        }
                    }
                    if full < chunks {
                        let mut pad = [0.0f32; L];
                        for (e, v) in pad[..k - full * L].iter_mut().enumerate() {
                            *v = widen_scalar(w, row * k + full * L + e);
                        }
                        $store(d.add(full * $nr * L), $load(pad.as_ptr()));
                    }
                }
            }

            /// `mt` x rows (of a panel of `MR`) into `dst` as `k.div_ceil(L)` chunks of
            /// `MR × L` floats, rows `mt..MR` and the tail zero.
            #[target_feature(enable = $features)]
            unsafe fn pack_x_impl(x: &[f32], k: usize, mt: usize, dst: &mut [f32]) {
                const L: usize = $lanes;
                let chunks = k.div_ceil(L);
                let full = k / L;
                assert!(x.len() >= mt * k && dst.len() >= chunks * $mr * L);
                for i in 0..$mr {
                    let d = dst.as_mut_ptr().add(i * L);
                    if i >= mt {
                        for c in 0..chunks {
                            $store(d.add(c * $mr * L), $zero());
                        }
                        continue;
                    }
                    let src = x.as_ptr().add(i * k);
                    for c in 0..full {
                        $store(d.add(c * $mr * L), $load(src.add(c * L)));
                    }
                    if full < chunks {
                        let mut pad = [0.0f32; L];
                        pad[..k - full * L].copy_from_slice(&x[i * k + full * L..(i + 1) * k]);
                        $store(d.add(full * $mr * L), $load(pad.as_ptr()));
                    }
                }
            }

            /// The register-blocked loop over `chunks` chunks of the panel at `xp` and the
            /// micro-panel at `wp`. The accumulators start at +0 (`FIRST`) or from `accp`, and
            /// end in `accp` or (`LAST`) reduced into `y` (`MT` rows of stride `ldy`, `cols`
            /// columns). `FIRST`/`LAST` are constants so the loop has a single entry and exit:
            /// with a runtime branch around it LLVM spilled accumulators inside the loop.
            #[target_feature(enable = $features)]
            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn block<const MT: usize, const FIRST: bool, const LAST: bool>(
                xp: *const f32,
                wp: *const f32,
                chunks: usize,
                accp: *mut f32,
                y: *mut f32,
                ldy: usize,
                cols: usize,
            ) {
                const L: usize = $lanes;
                const NR: usize = $nr;
                let mut acc: [[$vec; NR]; MT] = [[$zero(); NR]; MT];
                if !FIRST {
                    for i in 0..MT {
                        for j in 0..NR {
                            acc[i][j] = $load(accp.add((i * NR + j) * L));
                        }
                    }
                }
                let (mut xq, mut wq) = (xp, wp);
                for _ in 0..chunks {
                    // The smaller side's vectors stay in registers while each of the other
                    // side's is loaded once and meets them all (24 + 4 + 1 live vectors of
                    // 32 on AVX-512).
                    if MT <= NR {
                        let mut xv = [$zero(); MT];
                        for i in 0..MT {
                            xv[i] = $load(xq.add(i * L));
                        }
                        for j in 0..NR {
                            let wv = $load(wq.add(j * L));
                            for i in 0..MT {
                                acc[i][j] = $fma(xv[i], wv, acc[i][j]);
                            }
                        }
                    } else {
                        let mut wv = [$zero(); NR];
                        for j in 0..NR {
                            wv[j] = $load(wq.add(j * L));
                        }
                        for i in 0..MT {
                            let xv = $load(xq.add(i * L));
                            for j in 0..NR {
                                acc[i][j] = $fma(xv, wv[j], acc[i][j]);
                            }
                        }
                    }
                    xq = xq.add($mr * L);
                    wq = wq.add(NR * L);
                }
                if !LAST {
                    for i in 0..MT {
                        for j in 0..NR {
                            $store(accp.add((i * NR + j) * L), acc[i][j]);
                        }
                    }
                    return;
                }
                // Reduce `L` chains at a time into `sums` in (i, j) order: at most two groups
                // (MR·NR <= 2L), the second padded with zero vectors, every index a constant
                // so the accumulators stay in registers (loops over groups spilled them).
                const { assert!($mr * $nr <= 2 * $lanes) };
                let mut flat = [$zero(); 2 * L];
                for i in 0..MT {
                    for j in 0..NR {
                        flat[i * NR + j] = acc[i][j];
                    }
                }
                let mut sums = [0.0f32; 2 * L];
                $red(&flat, sums.as_mut_ptr(), MT * NR > L);
                for i in 0..MT {
                    let (src, dst) = (sums.as_ptr().add(i * NR), y.add(i * ldy));
                    if cols == NR {
                        std::ptr::copy_nonoverlapping(src, dst, NR);
                    } else {
                        std::ptr::copy_nonoverlapping(src, dst, cols);
                    }
                }
            }
        }

        impl Arch for $ty {
            const L: usize = $lanes;
            const MR: usize = $mr;
            const NR: usize = $nr;

            unsafe fn pack_w(w: WSrc, k: usize, r0: usize, rows: usize, dst: &mut [f32]) {
                Self::pack_w_impl(w, k, r0, rows, dst)
            }

            unsafe fn kernel(
                mt: usize,
                xp: *const f32,
                wp: *const f32,
                chunks: usize,
                acc: *mut f32,
                first: bool,
                out: Option<(*mut f32, usize, usize)>,
            ) {
                let (y, ldy, cols) = out.unwrap_or((std::ptr::null_mut(), 0, 0));
                macro_rules! go {
                    ($m:literal) => {
                        match (first, out.is_some()) {
                            (true, true) => {
                                Self::block::<$m, true, true>(xp, wp, chunks, acc, y, ldy, cols)
                            }
                            (true, false) => {
                                Self::block::<$m, true, false>(xp, wp, chunks, acc, y, ldy, cols)
                            }
                            (false, true) => {
                                Self::block::<$m, false, true>(xp, wp, chunks, acc, y, ldy, cols)
                            }
                            (false, false) => {
                                Self::block::<$m, false, false>(xp, wp, chunks, acc, y, ldy, cols)
                            }
                        }
                    };
                }
                match mt {
                    1 => go!(1),
                    2 => go!(2),
                    3 => go!(3),
                    4 => go!(4),
                    5 if $mr >= 5 => go!(5),
                    6 if $mr >= 6 => go!(6),
                    _ => unreachable!("panel rows are capped at MR"),
                }
            }

            unsafe fn pack_x(x: &[f32], k: usize, mt: usize, dst: &mut [f32]) {
                Self::pack_x_impl(x, k, mt, dst)
            }
        }
    };
}

// ---- AVX-512: 16 lanes, 32 registers: 4 × 6 accumulators + 6 W vectors + 1 x vector.

/// 16 accumulators reduced at once: lane `(t % 4) * 4 + t / 4` of the result is
/// `hsum512(v[t])`, bitwise. Each level adds the same lanes in the same operand order as the one-vector
/// reduction (high half onto low, then pairs, then the last two), only packing the partial
/// sums of several vectors into one register.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn reduce512(v: &[__m512; 16]) -> __m512 {
    // 16 lanes → 8: [v0[l] + v0[l+8] | v1[l] + v1[l+8]] per pair.
    let mut b = [_mm512_setzero_ps(); 8];
    for p in 0..8 {
        let (x, y) = (v[2 * p], v[2 * p + 1]);
        b[p] = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(x, y),
            _mm512_shuffle_f32x4::<0xEE>(x, y),
        );
    }
    // 8 → 4: 128-bit block r of c[q] is v[4q + r]'s s[l] + s[l+4].
    let mut c = [_mm512_setzero_ps(); 4];
    for q in 0..4 {
        let (x, y) = (b[2 * q], b[2 * q + 1]);
        c[q] = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(x, y),
            _mm512_shuffle_f32x4::<0xDD>(x, y),
        );
    }
    // 4 → 2: [q0 + q2, q1 + q3] of two vectors per block.
    let mut d = [_mm512_setzero_ps(); 2];
    for r in 0..2 {
        let (x, y) = (c[2 * r], c[2 * r + 1]);
        d[r] = _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(x, y),
            _mm512_shuffle_ps::<0xEE>(x, y),
        );
    }
    // 2 → 1: p0 + p1.
    _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(d[0], d[1]),
        _mm512_shuffle_ps::<0xDD>(d[0], d[1]),
    )
}

/// `out[t] = hsum512(v[t])` for `t < 16`, and for `t < 32` when `both`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn reduce512x2(v: &[__m512; 32], out: *mut f32, both: bool) {
    // Lane t of the permuted result reads lane (t % 4) * 4 + t / 4 of the reduction.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let lo: &[__m512; 16] = v[..16].try_into().unwrap();
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, reduce512(lo)));
    if both {
        let hi: &[__m512; 16] = v[16..].try_into().unwrap();
        _mm512_storeu_ps(out.add(16), _mm512_permutexvar_ps(order, reduce512(hi)));
    }
}

#[inline]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn widen16_f16(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn widen16_bf16(p: *const u8) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
        _mm256_loadu_si256(p.cast()),
    )))
}

arch!(
    Avx512,
    "avx512f,avx2,fma,f16c",
    __m512,
    16,
    4,
    6,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    reduce512x2,
    widen16_f16,
    widen16_bf16
);

// ---- AVX2: 8 lanes, 16 registers: 4 × 3 accumulators + 3 W vectors + 1 x vector.

/// 8 accumulators reduced at once: lane `(t % 2) * 4 + t / 2` is `hsum256(v[t])`, bitwise (as
/// [`reduce512`]).
#[inline]
#[target_feature(enable = "avx")]
unsafe fn reduce256(v: &[__m256; 8]) -> __m256 {
    // 8 → 4: 128-bit half h of b[p] is v[2p + h]'s lo + hi.
    let mut b = [_mm256_setzero_ps(); 4];
    for p in 0..4 {
        let (x, y) = (v[2 * p], v[2 * p + 1]);
        b[p] = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(x, y),
            _mm256_permute2f128_ps::<0x31>(x, y),
        );
    }
    // 4 → 2: [q0 + q2, q1 + q3].
    let mut c = [_mm256_setzero_ps(); 2];
    for r in 0..2 {
        let (x, y) = (b[2 * r], b[2 * r + 1]);
        c[r] = _mm256_add_ps(
            _mm256_shuffle_ps::<0x44>(x, y),
            _mm256_shuffle_ps::<0xEE>(x, y),
        );
    }
    // 2 → 1: p0 + p1.
    _mm256_add_ps(
        _mm256_shuffle_ps::<0x88>(c[0], c[1]),
        _mm256_shuffle_ps::<0xDD>(c[0], c[1]),
    )
}

/// `out[t] = hsum256(v[t])` for `t < 8`, and for `t < 16` when `both`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn reduce256x2(v: &[__m256; 16], out: *mut f32, both: bool) {
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let lo: &[__m256; 8] = v[..8].try_into().unwrap();
    _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(reduce256(lo), order));
    if both {
        let hi: &[__m256; 8] = v[8..].try_into().unwrap();
        _mm256_storeu_ps(out.add(8), _mm256_permutevar8x32_ps(reduce256(hi), order));
    }
}

#[inline]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen8_f16(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen8_bf16(p: *const u8) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
        _mm_loadu_si128(p.cast()),
    )))
}

arch!(
    Avx2,
    "avx2,fma,f16c",
    __m256,
    8,
    4,
    3,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    reduce256x2,
    widen8_f16,
    widen8_bf16
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_reductions_match_the_single_vector_ones() {
        let vals: Vec<f32> = (0..512)
            .map(|i| ((i * 7919 % 1013) as f32 - 500.0) * 1.37e-3 * (1.0 + (i % 13) as f32))
            .collect();
        if Isa::Avx512.supported() {
            // SAFETY: checked supported.
            unsafe {
                let v: [__m512; 32] = std::array::from_fn(|t| _mm512_loadu_ps(&vals[16 * t]));
                let mut got = [0.0f32; 32];
                reduce512x2(&v, got.as_mut_ptr(), true);
                for (t, vt) in v.iter().enumerate() {
                    let want = super::super::x86::hsum512(*vt);
                    assert_eq!(got[t].to_bits(), want.to_bits(), "512 vector {t}");
                }
            }
        }
        if Isa::Avx2Fma.supported() {
            // SAFETY: checked supported.
            unsafe {
                let v: [__m256; 16] = std::array::from_fn(|t| _mm256_loadu_ps(&vals[8 * t]));
                let mut got = [0.0f32; 16];
                reduce256x2(&v, got.as_mut_ptr(), true);
                for (t, vt) in v.iter().enumerate() {
                    let want = super::super::x86::hsum256(*vt);
                    assert_eq!(got[t].to_bits(), want.to_bits(), "256 vector {t}");
                }
            }
        }
    }
}
