//! Accuracy against an f64 product of the dequantized weights and activations, bitwise batch
//! invariance, bitwise agreement of the half types with the f32 kernel, and checked
//! construction, on every ISA this CPU has.

use super::*;

/// splitmix64 stream.
fn bits(seed: u64, len: usize) -> Vec<u64> {
    (0..len as u64)
        .map(|i| {
            let mut z = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

/// Values in [-1, 1).
fn values(seed: u64, len: usize) -> Vec<f32> {
    bits(seed, len)
        .into_iter()
        .map(|z| (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// A random f16 scale of moderate size, either sign when `signed`.
fn scale_bits(z: u64, signed: bool) -> [u8; 2] {
    let exp = 5 + (z % 8) as u16; // 2^-10 .. 2^-3
    let man = ((z >> 8) & 0x3ff) as u16;
    let sign = if signed && (z >> 20) & 1 == 1 {
        0x8000
    } else {
        0
    };
    (sign | exp << 10 | man).to_le_bytes()
}

/// Random rows of `dtype` with sane scales, held as this CPU's kernels want them.
fn random_matrix(dtype: StoredDType, n: usize, k: usize, seed: u64) -> QMatrix {
    random_matrix_for(QIsa::detect(), dtype, n, k, seed)
}

/// The layouts to test `isa` on: the one built for it (its packed kernels, where it has them)
/// and ggml's rows (its row kernels).
fn layouts_for(isa: QIsa) -> Vec<QIsa> {
    if isa == QIsa::Portable {
        vec![isa]
    } else {
        vec![isa, QIsa::Portable]
    }
}

/// [`random_matrix`] held the way `isa`'s kernels want it.
fn random_matrix_for(isa: QIsa, dtype: StoredDType, n: usize, k: usize, seed: u64) -> QMatrix {
    let len = dtype.row_bytes(k).unwrap() * n;
    let mut data: Vec<u8> = bits(seed, len).into_iter().map(|z| z as u8).collect();
    let bb = dtype.block_bytes();
    let zs = bits(seed ^ 0x5555, len / bb * 2 + 2);
    match dtype {
        StoredDType::F16 => {
            for (h, z) in data.chunks_exact_mut(2).zip(bits(seed ^ 7, len / 2)) {
                let v = (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                // Round toward zero to f16 (normal range): sign, exponent, top mantissa bits.
                let b = v.to_bits();
                let e = ((b >> 23) & 0xff) as i32 - 127 + 15;
                let hv = if e <= 0 {
                    (b >> 16) as u16 & 0x8000
                } else {
                    ((b >> 16) as u16 & 0x8000) | ((e as u16) << 10) | ((b >> 13) as u16 & 0x3ff)
                };
                h.copy_from_slice(&hv.to_le_bytes());
            }
        }
        StoredDType::BF16 => {
            for (h, v) in data.chunks_exact_mut(2).zip(values(seed ^ 9, len / 2)) {
                h.copy_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            }
        }
        StoredDType::F32 => {
            for (h, v) in data.chunks_exact_mut(4).zip(values(seed ^ 11, len / 4)) {
                h.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            for (b, blk) in data.chunks_exact_mut(bb).enumerate() {
                let (z0, z1) = (zs[2 * b], zs[2 * b + 1]);
                match dtype {
                    StoredDType::Q8_0 | StoredDType::Q4_0 => {
                        blk[0..2].copy_from_slice(&scale_bits(z0, true))
                    }
                    StoredDType::Q4_K | StoredDType::Q5_K => {
                        blk[0..2].copy_from_slice(&scale_bits(z0, false));
                        blk[2..4].copy_from_slice(&scale_bits(z1, false));
                    }
                    StoredDType::Q6_K => blk[208..210].copy_from_slice(&scale_bits(z0, true)),
                    _ => unreachable!(),
                }
            }
        }
    }
    QMatrix::for_isa(isa, dtype, n, k, data).unwrap()
}

/// Test-only scalar dequantizer (ggml's formulas in f64): per value, the part scaled by `d`
/// and the part scaled by `dmin`, the value being their difference.
fn dequant_row(dtype: StoredDType, row: &[u8]) -> Vec<(f64, f64)> {
    let h = |b: &[u8], o: usize| f16_to_f32(u16::from_le_bytes([b[o], b[o + 1]])) as f64;
    let mut out = Vec::new();
    match dtype {
        StoredDType::F32 | StoredDType::F16 | StoredDType::BF16 => {
            let mut v = vec![0.0f32; row.len() / dtype.block_bytes()];
            halo_model::quant::dequantize(dtype, row, &mut v);
            out.extend(v.into_iter().map(|x| (x as f64, 0.0)));
        }
        StoredDType::Q8_0 => {
            for b in row.chunks_exact(34) {
                out.extend(b[2..].iter().map(|&q| (h(b, 0) * q as i8 as f64, 0.0)));
            }
        }
        StoredDType::Q4_0 => {
            for b in row.chunks_exact(18) {
                let d = h(b, 0);
                out.extend(b[2..].iter().map(|&q| (d * ((q & 0xF) as f64 - 8.0), 0.0)));
                out.extend(b[2..].iter().map(|&q| (d * ((q >> 4) as f64 - 8.0), 0.0)));
            }
        }
        StoredDType::Q4_K | StoredDType::Q5_K => {
            let five = dtype == StoredDType::Q5_K;
            for b in row.chunks_exact(dtype.block_bytes()) {
                let (d, dmin) = (h(b, 0), h(b, 2));
                let (sc, mn) = kscales(&b[4..16]);
                let (qh, qs) = if five {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[16..16], &b[16..144])
                };
                for c in 0..4 {
                    for half in 0..2 {
                        let s = 2 * c + half;
                        for l in 0..32 {
                            let mut q = (qs[32 * c + l] >> (4 * half)) & 0xF;
                            if five {
                                q |= ((qh[l] >> s) & 1) << 4;
                            }
                            out.push((d * sc[s] as f64 * q as f64, dmin * mn[s] as f64));
                        }
                    }
                }
            }
        }
        StoredDType::Q6_K => {
            for b in row.chunks_exact(210) {
                let d = h(b, 208);
                let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                let mut y = [0.0f64; 256];
                for n in 0..2 {
                    for l in 0..32 {
                        let is = l / 16;
                        let q = |byte: u8, shift: u32, hs: u32| {
                            (((byte >> shift) & 0xF) | (((qh[32 * n + l] >> hs) & 3) << 4)) as f64
                                - 32.0
                        };
                        let scl = |t: usize| d * sc[8 * n + is + 2 * t] as i8 as f64;
                        y[128 * n + l] = scl(0) * q(ql[64 * n + l], 0, 0);
                        y[128 * n + l + 32] = scl(1) * q(ql[64 * n + l + 32], 0, 2);
                        y[128 * n + l + 64] = scl(2) * q(ql[64 * n + l], 4, 4);
                        y[128 * n + l + 96] = scl(3) * q(ql[64 * n + l + 32], 4, 6);
                    }
                }
                out.extend(y.iter().map(|&v| (v, 0.0)));
            }
        }
    }
    out
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

const QUANTS: [StoredDType; 5] = [
    StoredDType::Q4_0,
    StoredDType::Q8_0,
    StoredDType::Q4_K,
    StoredDType::Q5_K,
    StoredDType::Q6_K,
];

fn shapes(dtype: StoredDType) -> Vec<(usize, usize)> {
    let b = dtype.block_elems();
    // n: remainders after tiles of 2 and 4 rows and after the 16-row cache block; 29 leaves
    // 13 rows in a last group of 16 (both of its 8-row halves, the second partial) and 5 in
    // one of 8.
    vec![(37, 2 * b), (5, 3 * b), (70, b), (19, 8 * b), (29, 2 * b)]
}

#[test]
fn quantized_matches_f64_reference_on_every_isa() {
    for (isa, built_for) in QIsa::available()
        .into_iter()
        .flat_map(|i| layouts_for(i).into_iter().map(move |l| (i, l)))
    {
        for dtype in QUANTS {
            for (n, k) in shapes(dtype) {
                let w = random_matrix_for(built_for, dtype, n, k, (n * 1000 + k) as u64);
                let wd: Vec<Vec<(f64, f64)>> =
                    (0..n).map(|j| dequant_row(dtype, &w.row(j))).collect();
                for m in [1usize, 4, 16, 64] {
                    let x = values((m * 7 + k) as u64, m * k);
                    let mut y = vec![f32::NAN; m * n];
                    in_pool(2, || qmatmul_t_with(isa, &x, m, &w, &mut y));
                    let acts = Acts::quantize(dtype, &x, m, k);
                    let nb = k / acts.block;
                    for i in 0..m {
                        let a: Vec<f64> = (0..k)
                            .map(|e| acts.row(i)[e] as f64 * acts.scales(i)[e / acts.block] as f64)
                            .collect();
                        for (j, wr) in wd.iter().enumerate() {
                            let exact: f64 = wr.iter().zip(&a).map(|((p, q), a)| (p - q) * a).sum();
                            let scale: f64 = wr
                                .iter()
                                .zip(&a)
                                .map(|((p, q), a)| (p.abs() + q.abs()) * a.abs())
                                .sum();
                            let bound = (nb + 8) as f64 * f32::EPSILON as f64 * scale + 1e-30;
                            let err = (y[i * n + j] as f64 - exact).abs();
                            assert!(
                                err <= bound,
                                "{isa:?} ({:?}) {dtype} m={m} n={n} k={k} y[{i},{j}]={} exact \
                                 {exact}: err {err} > {bound}",
                                w.layout,
                                y[i * n + j]
                            );
                        }
                        // And the activation quantization itself is close to x.
                        let xr = &x[i * k..][..k];
                        for (e, (&xv, av)) in xr.iter().zip(&a).enumerate() {
                            let d = acts.scales(i)[e / acts.block] as f64;
                            assert!((xv as f64 - av).abs() <= 0.5 * d + 1e-4 * d);
                        }
                    }
                }
            }
        }
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn each_row_is_bitwise_the_same_at_every_batch_position_and_size() {
    for (isa, built_for) in QIsa::available()
        .into_iter()
        .flat_map(|i| layouts_for(i).into_iter().map(move |l| (i, l)))
    {
        for dtype in QUANTS
            .into_iter()
            .chain([StoredDType::F16, StoredDType::BF16])
        {
            let b = dtype.block_elems().max(32);
            for (n, k) in [(37usize, 2 * b), (9, 3 * b), (29, b)] {
                let k = if dtype.is_quantized() { k } else { k + 5 };
                let w = random_matrix_for(built_for, dtype, n, k, 77 + n as u64);
                let probe = values(5, k);
                let mut alone = vec![0.0f32; n];
                in_pool(2, || qmatmul_t_with(isa, &probe, 1, &w, &mut alone));
                for m in [2usize, 3, 4, 5, 7, 8, 9, 16, 33] {
                    for pos in [0, m / 2, m - 1] {
                        let mut x = values(1000 + (m * 64 + pos) as u64, m * k);
                        x[pos * k..(pos + 1) * k].copy_from_slice(&probe);
                        let mut y = vec![0.0f32; m * n];
                        in_pool(2, || qmatmul_t_with(isa, &x, m, &w, &mut y));
                        assert!(
                            same_bits(&y[pos * n..(pos + 1) * n], &alone),
                            "{isa:?} ({:?}) {dtype} k={k} n={n}: row at {pos} of {m} differs",
                            w.layout
                        );
                    }
                }
                let mut serial = vec![0.0f32; n];
                in_pool(1, || qmatmul_t_with(isa, &probe, 1, &w, &mut serial));
                assert!(
                    same_bits(&serial, &alone),
                    "{isa:?} {dtype}: serial differs"
                );
            }
        }
    }
}

#[test]
fn k_quants_give_the_same_bits_on_every_isa() {
    for dtype in [StoredDType::Q4_K, StoredDType::Q5_K, StoredDType::Q6_K] {
        let (n, k, m) = (21, 512, 6);
        let w = random_matrix(dtype, n, k, 3);
        // AVX-512 and AVX2 hold Q4_K and Q6_K repacked (k_packed.rs) when they are the
        // process's choice (HALO_CPU_ISA may cap it), AVX2 also Q5_K; AVX-512 keeps Q5_K in
        // ggml's rows.
        assert_eq!(
            w.layout == Layout::Packed16,
            match QIsa::detect() {
                QIsa::Portable => false,
                QIsa::Avx512Vnni => dtype != StoredDType::Q5_K,
                QIsa::Avx2 => true,
            }
        );
        let x = values(4, m * k);
        let mut want = vec![0.0f32; m * n];
        qmatmul_t_with(QIsa::Portable, &x, m, &w, &mut want);
        for isa in QIsa::available() {
            for built_for in layouts_for(isa) {
                let w = random_matrix_for(built_for, dtype, n, k, 3);
                let mut y = vec![0.0f32; m * n];
                qmatmul_t_with(isa, &x, m, &w, &mut y);
                assert!(same_bits(&y, &want), "{isa:?} ({:?}) {dtype}", w.layout);
            }
        }
    }
}

#[test]
fn packed_k_quants_give_the_portable_bits_at_extreme_codes() {
    // The packed kernels meet Q4_K's mins and Q6_K's −32 offset as i16 products with the
    // activation sums of 16, and sum the codes' dots in i32 lanes (k_packed.rs): largest and
    // smallest codes, scales and mins against full-scale activations of one sign put those at
    // their bounds. AVX2 (k_packed_avx2.rs) multiplies the codes' pair sums by the scales in
    // `vpmaddwd`, which these bound too.
    let (n, k) = (19, 512);
    let cases = QIsa::available().into_iter().flat_map(|i| {
        [StoredDType::Q4_K, StoredDType::Q5_K, StoredDType::Q6_K]
            .into_iter()
            .filter(move |&t| Layout::for_isa(i, t) == Layout::Packed16)
            .map(move |t| (i, t))
    });
    for (isa, dtype) in cases {
        for (code, scale) in [(0xFFu8, 0xFFu8), (0x00, 0x80), (0xFF, 0x80), (0x00, 0x7F)] {
            let bb = dtype.block_bytes();
            let mut data = vec![code; n * (k / 256) * bb];
            for blk in data.chunks_exact_mut(bb) {
                if dtype != StoredDType::Q6_K {
                    // d, dmin = 2^-8; every 6-bit scale and min 63 (or the low pattern); for
                    // Q5_K the fifth bits (qh) are the code byte too: all set or all clear.
                    blk[0..4].copy_from_slice(&[0, 0x1c, 0, 0x1c]);
                    blk[4..16].fill(scale);
                } else {
                    blk[192..208].fill(scale);
                    blk[208..210].copy_from_slice(&[0, 0x1c]);
                }
            }
            let w = QMatrix::for_isa(isa, dtype, n, k, data).unwrap();
            assert_eq!(w.layout, Layout::Packed16);
            for (m, sign) in [(1usize, 1.0f32), (9, -1.0), (3, 1.0)] {
                let x: Vec<f32> = (0..m * k)
                    .map(|e| if m == 3 && e % 2 == 1 { -sign } else { sign })
                    .collect();
                let mut want = vec![0.0f32; m * n];
                qmatmul_t_with(QIsa::Portable, &x, m, &w, &mut want);
                let mut y = vec![0.0f32; m * n];
                in_pool(2, || qmatmul_t_with(isa, &x, m, &w, &mut y));
                // One-signed activations make every sum nonzero (alternating ones may cancel).
                assert!(want.iter().all(|v| v.is_finite() && (m == 3 || *v != 0.0)));
                assert!(
                    same_bits(&y, &want),
                    "{isa:?} {dtype} code {code:#x} scale {scale:#x} m={m}"
                );
            }
        }
    }
}

/// The ISAs with a packed `dtype` layout that this CPU runs.
fn packing_isas(dtype: StoredDType) -> Vec<QIsa> {
    QIsa::available()
        .into_iter()
        .filter(|&i| Layout::for_isa(i, dtype) != Layout::Rows)
        .collect()
}

#[test]
fn packed_32_value_blocks_give_the_portable_bits() {
    // AVX-512 and AVX2 hold Q8_0 repacked, AVX2 also Q4_0, and each output runs the portable
    // chain (q8_packed.rs, q8_packed_avx2.rs, q4_0_packed_avx2.rs).
    for dtype in [StoredDType::Q8_0, StoredDType::Q4_0] {
        for isa in packing_isas(dtype) {
            // n: a partial last group of 16 and of 8, exact groups, one row.
            for (n, k) in [(37usize, 96usize), (16, 32), (70, 256), (8, 64), (1, 32)] {
                let w = random_matrix_for(isa, dtype, n, k, 11 + n as u64);
                assert_ne!(w.layout, Layout::Rows, "{dtype} is held packed on {isa:?}");
                for m in [1usize, 3, 4, 5, 9, 70] {
                    let x = values(6 + m as u64, m * k);
                    let mut want = vec![0.0f32; m * n];
                    qmatmul_t_with(QIsa::Portable, &x, m, &w, &mut want);
                    let mut y = vec![0.0f32; m * n];
                    in_pool(2, || qmatmul_t_with(isa, &x, m, &w, &mut y));
                    assert!(same_bits(&y, &want), "{isa:?} {dtype} n={n} k={k} m={m}");
                }
            }
        }
    }
}

#[test]
fn packed_q4_0_gives_the_portable_bits_at_extreme_codes() {
    // AVX2 sums a block's eight `vpmaddubsw` products in i16 before widening: codes 15 (both
    // nibbles) against full-scale activations put every lane at 8·15·127·2 = 30480, the
    // largest it can be; codes 0 are the value −8, the other extreme.
    let (n, k) = (13, 256);
    for isa in packing_isas(StoredDType::Q4_0) {
        for code in [0xFFu8, 0x00, 0x0F, 0xF0] {
            let mut data = vec![code; n * (k / 32) * 18];
            for blk in data.chunks_exact_mut(18) {
                blk[0..2].copy_from_slice(&[0, 0x1c]); // 2^-8
            }
            let w = QMatrix::for_isa(isa, StoredDType::Q4_0, n, k, data).unwrap();
            for (m, sign) in [(1usize, 1.0f32), (5, -1.0), (3, 1.0)] {
                let x: Vec<f32> = (0..m * k)
                    .map(|e| if m == 3 && e % 2 == 1 { -sign } else { sign })
                    .collect();
                let mut want = vec![0.0f32; m * n];
                qmatmul_t_with(QIsa::Portable, &x, m, &w, &mut want);
                let mut y = vec![0.0f32; m * n];
                in_pool(2, || qmatmul_t_with(isa, &x, m, &w, &mut y));
                assert!(want.iter().all(|v| v.is_finite() && (m == 3 || *v != 0.0)));
                assert!(same_bits(&y, &want), "{isa:?} code {code:#x} m={m}");
            }
        }
    }
}

#[test]
fn packed_q8_0_gives_the_portable_bits_at_extreme_codes() {
    // AVX2 multiplies |w| (up to 128 for code −128) by sign(a, w) in `vpmaddubsw`, whose pair
    // sums saturate at i16: full-scale codes of both signs against full-scale activations put
    // every pair at ±128·127·2, the largest it can be.
    let (n, k) = (13, 256);
    for isa in packing_isas(StoredDType::Q8_0) {
        for code in [0x80u8, 0x7F, 0x81] {
            let mut data = vec![code; n * (k / 32) * 34];
            for blk in data.chunks_exact_mut(34) {
                blk[0..2].copy_from_slice(&[0, 0x1c]); // 2^-8
            }
            // Alternate the sign of every other row's codes (−128 ↔ 127 is not a negation, so
            // both extremes appear against both activation signs).
            for (r, row) in data.chunks_exact_mut(k / 32 * 34).enumerate() {
                if r % 2 == 1 {
                    for blk in row.chunks_exact_mut(34) {
                        blk[2..]
                            .iter_mut()
                            .for_each(|q| *q = (*q as i8).wrapping_neg() as u8);
                    }
                }
            }
            let w = QMatrix::for_isa(isa, StoredDType::Q8_0, n, k, data).unwrap();
            for (m, sign) in [(1usize, 1.0f32), (5, -1.0), (3, 1.0)] {
                let x: Vec<f32> = (0..m * k)
                    .map(|e| if m == 3 && e % 2 == 1 { -sign } else { sign })
                    .collect();
                let mut want = vec![0.0f32; m * n];
                qmatmul_t_with(QIsa::Portable, &x, m, &w, &mut want);
                let mut y = vec![0.0f32; m * n];
                in_pool(2, || qmatmul_t_with(isa, &x, m, &w, &mut y));
                assert!(want.iter().all(|v| v.is_finite() && (m == 3 || *v != 0.0)));
                assert!(same_bits(&y, &want), "{isa:?} code {code:#x} m={m}");
            }
        }
    }
}

#[test]
fn packed_layouts_give_the_rows_back() {
    for isa in QIsa::available() {
        for dtype in QUANTS {
            let k = 2 * dtype.block_elems();
            for n in [1usize, 7, 8, 9, 16, 17, 37] {
                let w = random_matrix_for(isa, dtype, n, k, n as u64);
                let rows = random_matrix_for(QIsa::Portable, dtype, n, k, n as u64);
                assert_eq!(w.layout, Layout::for_isa(isa, dtype));
                assert_eq!(w.data(), rows.data(), "{isa:?} {dtype} n={n}");
                for r in 0..n {
                    assert_eq!(w.row(r), rows.row(r), "{isa:?} {dtype} n={n} row {r}");
                }
            }
        }
    }
}

fn bf16_dot_runs() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::bf16_dot::usable()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[test]
fn half_types_give_the_f32_kernels_bits_on_widened_weights() {
    for isa in QIsa::available() {
        for dtype in [StoredDType::F16, StoredDType::BF16, StoredDType::F32] {
            for &(n, k) in &[(37usize, 768usize), (9, 100), (5, 13), (70, 2048), (3, 7)] {
                let w = random_matrix(dtype, n, k, (n + k) as u64);
                let mut wf = vec![0.0f32; n * k];
                halo_model::quant::dequantize(dtype, &w.data(), &mut wf);
                for m in [1usize, 3, 4, 5, 16, 33] {
                    let x = values((m + k) as u64, m * k);
                    let mut want = vec![0.0f32; m * n];
                    let mut got = vec![0.0f32; m * n];
                    in_pool(2, || {
                        matmul::matmul_t_with(isa.float_isa(), &x, m, k, &wf, n, &mut want);
                        qmatmul_t_with(isa, &x, m, &w, &mut got);
                    });
                    assert!(same_bits(&got, &want), "{isa:?} {dtype} m={m} n={n} k={k}");
                    // On AVX-512 BF16 the automatic choice for BF16 is bf16_dot's own chain.
                    if isa == QIsa::detect() && !(dtype == StoredDType::BF16 && bf16_dot_runs()) {
                        let mut auto = vec![0.0f32; m * n];
                        let mut f32_auto = vec![0.0f32; m * n];
                        qmatmul_t(&x, m, &w, &mut auto);
                        matmul::matmul_t(&x, m, k, &wf, n, &mut f32_auto);
                        assert!(same_bits(&auto, &f32_auto), "auto {dtype} m={m}");
                    }
                }
            }
        }
    }
}

#[test]
fn malformed_matrices_are_errors() {
    // k not a whole number of blocks.
    assert!(QMatrix::new(StoredDType::Q4_K, 2, 300, vec![0; 2 * 144 * 2]).is_err());
    assert!(QMatrix::new(StoredDType::Q8_0, 1, 33, vec![0; 68]).is_err());
    // Wrong byte length, both ways.
    assert!(QMatrix::new(StoredDType::Q8_0, 2, 64, vec![0; 135]).is_err());
    assert!(QMatrix::new(StoredDType::Q6_K, 1, 256, vec![0; 211]).is_err());
    assert!(QMatrix::new(StoredDType::BF16, 3, 5, vec![0; 29]).is_err());
    // Sizes that overflow.
    assert!(QMatrix::new(StoredDType::Q4_0, usize::MAX / 2, 64, vec![]).is_err());
    assert!(QMatrix::new(StoredDType::F32, 2, usize::MAX / 2, vec![]).is_err());
    let ok = QMatrix::new(StoredDType::Q5_K, 3, 512, vec![0; 3 * 352]).unwrap();
    assert_eq!(
        (ok.rows(), ok.cols(), ok.data().len(), ok.dtype()),
        (3, 512, 1056, StoredDType::Q5_K)
    );
    // Held as ggml's rows, or packed with its padding rows (AVX2: a group of 16).
    assert!(ok.bytes() >= 1056);
}

#[test]
fn degenerate_shapes() {
    let w = QMatrix::new(StoredDType::Q8_0, 3, 0, vec![]).unwrap();
    let mut y = vec![1.0f32; 6];
    qmatmul_t(&[], 2, &w, &mut y);
    assert_eq!(y, vec![0.0; 6]);
    let w = random_matrix(StoredDType::Q4_K, 2, 256, 1);
    let mut empty: Vec<f32> = Vec::new();
    qmatmul_t(&[], 0, &w, &mut empty);
    // Zero activations give zeros (scale 0, no NaN).
    let mut y = vec![1.0f32; 2];
    qmatmul_t(&[0.0; 256], 1, &w, &mut y);
    assert_eq!(y, vec![0.0; 2]);
}

#[test]
fn non_finite_activations_give_nan_not_silence() {
    for isa in QIsa::available() {
        for dtype in QUANTS {
            let k = dtype.block_elems() * 2;
            let w = random_matrix_for(isa, dtype, 3, k, 9);
            let mut x = values(1, 2 * k);
            x[k + 5] = f32::NAN;
            let mut y = vec![0.0f32; 6];
            qmatmul_t_with(isa, &x, 2, &w, &mut y);
            assert!(y[..3].iter().all(|v| v.is_finite()), "{isa:?} {dtype}");
            assert!(y[3..].iter().all(|v| v.is_nan()), "{isa:?} {dtype}");
        }
    }
}

#[test]
fn detected_isa_is_supported() {
    assert!(QIsa::detect().supported());
    assert!(QIsa::available().contains(&QIsa::detect()));
}
