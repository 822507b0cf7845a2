//! Accuracy against an f64 reference, and bitwise batch invariance, on every ISA this CPU has.

use super::*;

/// Deterministic values in [-1, 1) from a seed (splitmix64), no RNG crate needed.
fn values(seed: u64, len: usize) -> Vec<f32> {
    (0..len as u64)
        .map(|i| {
            let mut z = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn matches_f64_reference_on_every_isa_and_remainder() {
    for isa in Isa::available() {
        for &k in &[1usize, 5, 8, 16, 17, 31, 100, 768, 2051] {
            for &(m, n) in &[
                (1usize, 1usize),
                (1, 67),
                (2, 9),
                (3, 13),
                (4, 4),
                (5, 37),
                (9, 70),
                (32, 96),
            ] {
                let x = values(k as u64 * 31 + m as u64, m * k);
                let w = values(k as u64 * 17 + n as u64 + 1000, n * k);
                let mut y = vec![f32::NAN; m * n];
                in_pool(2, || matmul_t_with(isa, &x, m, k, &w, n, &mut y));
                for i in 0..m {
                    for j in 0..n {
                        let (xr, wr) = (&x[i * k..][..k], &w[j * k..][..k]);
                        let exact: f64 =
                            xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let scale: f64 = xr
                            .iter()
                            .zip(wr)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum();
                        // The worst case of any f32 summation order is about k·ε·Σ|xᵢwᵢ|.
                        let bound = (k as f64 * f32::EPSILON as f64 * scale).max(1e-30);
                        let err = (y[i * n + j] as f64 - exact).abs();
                        assert!(
                            err <= bound,
                            "{isa:?} m={m} n={n} k={k} y[{i},{j}]: err {err} > {bound}"
                        );
                        assert!(
                            err <= 1e-5 * scale.max(1.0),
                            "{isa:?} m={m} n={n} k={k}: err {err}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn each_row_is_bitwise_the_same_at_every_batch_position_and_size() {
    for isa in Isa::available() {
        // n = 37 leaves a remainder after tiles of 2 and of 4 rows; k = 100 a partial chunk.
        for &(k, n) in &[(768usize, 37usize), (100, 37), (13, 5), (2048, 70)] {
            let probe = values(7, k);
            let w = values(11 + k as u64, n * k);
            let mut alone = vec![0.0f32; n];
            in_pool(2, || matmul_t_with(isa, &probe, 1, k, &w, n, &mut alone));
            for &m in &[2usize, 3, 4, 5, 6, 7, 8, 9, 16, 31, 32, 33] {
                for pos in 0..m {
                    let mut x = values(1000 + (m * 64 + pos) as u64, m * k);
                    x[pos * k..(pos + 1) * k].copy_from_slice(&probe);
                    let mut y = vec![0.0f32; m * n];
                    in_pool(2, || matmul_t_with(isa, &x, m, k, &w, n, &mut y));
                    let got = &y[pos * n..(pos + 1) * n];
                    let same = got
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{isa:?} k={k} n={n}: row at {pos} of {m} differs from the lone row"
                    );
                }
            }
            // The serial path (one thread) computes the same bits as the split one.
            let mut serial = vec![0.0f32; n];
            in_pool(1, || matmul_t_with(isa, &probe, 1, k, &w, n, &mut serial));
            assert!(serial
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}

#[test]
fn degenerate_shapes() {
    let mut y = vec![1.0f32; 6];
    matmul_t(&[], 2, 0, &[], 3, &mut y);
    assert_eq!(y, vec![0.0; 6]);
    let mut empty: Vec<f32> = Vec::new();
    matmul_t(&[], 0, 4, &[1.0; 8], 2, &mut empty);
    matmul_t(&[1.0; 4], 1, 4, &[], 0, &mut empty);
}

#[test]
fn detected_isa_is_supported() {
    assert!(Isa::detect().supported());
    assert!(Isa::available().contains(&Isa::detect()));
}

/// Halves of `values`, as f16 or bf16 bytes (round to nearest).
fn half_bytes(bf: bool, v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| {
            if bf {
                half::bf16::from_f32(x).to_le_bytes()
            } else {
                half::f16::from_f32(x).to_le_bytes()
            }
        })
        .collect()
}

#[test]
fn many_row_path_gives_the_lone_rows_bits_for_every_weight_type() {
    use crate::qmatmul::{qmatmul_t_with, QIsa, QMatrix};
    use halo_model::dtype::StoredDType;
    // From GEMM_MIN_M rows on x86 runs the packed path (gemm.rs): panels of activation rows
    // with a ragged last one (m = 9, 63, 130), micro-panels of W rows with a ragged last one
    // (n = 37, 11), several K slices with a zero-padded last chunk (k = 4100), one slice
    // (k = 768) and a lone partial chunk (k = 13). Every row must carry the bits of the row
    // computed alone (the 1-row path), whatever its position, for f32, f16 and bf16 weights.
    for qisa in QIsa::available() {
        let isa = qisa.float_isa();
        for &(k, n) in &[(4100usize, 37usize), (768, 70), (13, 11)] {
            let probe = values(3, k);
            let wf = values(21 + k as u64, n * k);
            let weights = [
                (StoredDType::F32, None),
                (StoredDType::F16, Some(half_bytes(false, &wf))),
                (StoredDType::BF16, Some(half_bytes(true, &wf))),
            ];
            for (dtype, bytes) in weights {
                let q = bytes.map(|b| QMatrix::new(dtype, n, k, b).unwrap());
                let run = |x: &[f32], m: usize, y: &mut [f32]| match &q {
                    None => matmul_t_with(isa, x, m, k, &wf, n, y),
                    Some(q) => qmatmul_t_with(qisa, x, m, q, y),
                };
                let mut alone = vec![0.0f32; n];
                in_pool(2, || run(&probe, 1, &mut alone));
                for &m in &[GEMM_MIN_M, 9, 63, 130] {
                    for pos in [0, m / 2, m - 1] {
                        let mut x = values(5000 + (m * 64 + pos) as u64, m * k);
                        x[pos * k..(pos + 1) * k].copy_from_slice(&probe);
                        let mut y = vec![f32::NAN; m * n];
                        in_pool(2, || run(&x, m, &mut y));
                        let got = &y[pos * n..(pos + 1) * n];
                        assert!(
                            got.iter()
                                .zip(&alone)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{isa:?} {dtype} k={k} n={n}: row at {pos} of {m} differs"
                        );
                        assert!(y.iter().all(|v| v.is_finite()), "every output written");
                    }
                }
            }
        }
    }
}
