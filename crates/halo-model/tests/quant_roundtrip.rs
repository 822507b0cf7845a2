//! Properties of the reference quantizers: `dequantize(quantize(x))` stays within each type's
//! error bound on random data, values already on a type's grid come back exactly, and no input
//! (zeros, NaN, infinities, huge values) makes a quantizer panic.

use halo_model::dtype::StoredDType;
use halo_model::quant::{dequantize, quantize, quantize_to_vec, row_slice};

/// splitmix64: a deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn gauss(&mut self) -> f64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn round_trip(dtype: StoredDType, x: &[f32]) -> Vec<f32> {
    let q = quantize_to_vec(dtype, x).expect("whole blocks");
    let mut y = vec![0.0f32; x.len()];
    dequantize(dtype, &q, &mut y);
    y
}

fn f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Random rows: Gaussian, uniform and heavy-tailed blocks, each at its own scale (f16-normal
/// scales, so the f16 rounding of a block scale is relative).
fn random_rows(rng: &mut Rng, blocks: usize, block: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(blocks * block);
    for b in 0..blocks {
        let scale = (rng.unit() * 8.0 - 5.0).exp(); // e^-5 .. e^3
        for _ in 0..block {
            let v = match b % 3 {
                0 => rng.gauss(),
                1 => rng.unit() * 2.0 - 1.0,
                _ => rng.gauss() * rng.gauss().abs().powi(2),
            };
            x.push((v * scale) as f32);
        }
    }
    x
}

/// Q8_0: |error| ≤ d/2 from rounding plus 127·|d − f16(d)| from storing d as f16, d = amax/127.
#[test]
fn q8_0_error_is_half_a_step() {
    let mut rng = Rng(1);
    let x = random_rows(&mut rng, 300, 32);
    let y = round_trip(StoredDType::Q8_0, &x);
    for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
        let d = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        let bound = d * 0.5 * (1.0 + 1e-5) + 127.0 * (d - f16(d)).abs();
        for (i, (a, b2)) in xb.iter().zip(yb).enumerate() {
            assert!(
                (a - b2).abs() <= bound,
                "block {b} value {i}: {a} -> {b2}, bound {bound}"
            );
        }
    }
}

/// Q4_0: the grid −8..=7 puts the largest magnitude at −8, so values near +8·|d| on the other
/// side can be a whole step off (clamped to 7); elsewhere half a step. Plus f16 rounding of d.
#[test]
fn q4_0_error_is_within_one_step() {
    let mut rng = Rng(2);
    let x = random_rows(&mut rng, 300, 32);
    let y = round_trip(StoredDType::Q4_0, &x);
    let mut sum_sq = 0.0f64;
    let mut sum_step_sq = 0.0f64;
    for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 8.0;
        let f16_err = 8.0 * (d - f16(d)).abs();
        for (i, (a, b2)) in xb.iter().zip(yb).enumerate() {
            let err = (a - b2).abs();
            // Half a step unless the value is in the clamped last half step above 7·d.
            let bound = if a.abs() > 7.5 * d * (1.0 - 1e-5) {
                d
            } else {
                d * 0.5
            };
            assert!(
                err <= bound * (1.0 + 1e-5) + f16_err,
                "block {b} value {i}: {a} -> {b2}, bound {bound}"
            );
            sum_sq += f64::from(err).powi(2);
            sum_step_sq += f64::from(d).powi(2);
        }
    }
    // Uniform rounding error has RMS step/√12 ≈ 0.29 step.
    let rms = (sum_sq / sum_step_sq).sqrt();
    assert!(rms < 0.32, "Q4_0 RMS error {rms} steps");
}

/// Relative RMS error of a K-quant on Gaussian super-blocks, against the bits it spends.
fn k_quant_rms(dtype: StoredDType, seed: u64) -> (f64, f64) {
    let mut rng = Rng(seed);
    let x: Vec<f32> = (0..256 * 64).map(|_| rng.gauss() as f32).collect();
    let y = round_trip(dtype, &x);
    let mut worst_block = 0.0f64;
    let mut total = 0.0f64;
    for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
        let e: f64 = xb
            .iter()
            .zip(yb)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let s: f64 = xb.iter().map(|a| f64::from(*a).powi(2)).sum();
        worst_block = worst_block.max((e / s).sqrt());
        total += e;
    }
    ((total / x.len() as f64).sqrt(), worst_block)
}

/// On N(0, 1) data a 32-value sub-block spans about ±2σ; with 15 (Q4_K), 31 (Q5_K) or
/// 63 (Q6_K, 16 values, ±2.5σ at 64 levels) levels the uniform-rounding RMS is about
/// range/levels/√12, i.e. ≈ 0.077σ, 0.037σ, 0.020σ, less what the least-squares fits win.
#[test]
fn k_quant_errors_on_gaussian_data() {
    for (dtype, rms_max) in [
        (StoredDType::Q4_K, 0.080),
        (StoredDType::Q5_K, 0.040),
        (StoredDType::Q6_K, 0.020),
    ] {
        let (rms, worst) = k_quant_rms(dtype, 3);
        eprintln!("{dtype}: rms {rms:.4}, worst block relative {worst:.4}");
        assert!(rms < rms_max, "{dtype}: RMS error {rms} ≥ {rms_max}");
        assert!(worst < rms_max * 1.25, "{dtype}: worst block {worst}");
    }
}

/// Given the scales a K-quant block stores, every value is quantized to the nearest value the
/// block can represent: the scale choice is the fits' business (measured above), but the final
/// re-quantization against the stored scales must be optimal, clamping included.
#[test]
fn k_quant_values_go_to_the_nearest_representable_value() {
    let mut rng = Rng(4);
    let x = random_rows(&mut rng, 60, 256);
    for dtype in [StoredDType::Q4_K, StoredDType::Q5_K, StoredDType::Q6_K] {
        let q = quantize_to_vec(dtype, &x).unwrap();
        let mut y = vec![0.0f32; x.len()];
        dequantize(dtype, &q, &mut y);
        let mut clamped = 0;
        for (b, blk) in q.chunks(dtype.block_bytes()).enumerate() {
            let grids = sub_block_grids(dtype, blk);
            let sub = 256 / grids.len();
            for i in 0..256 {
                let (v, got) = (x[b * 256 + i], y[b * 256 + i]);
                let grid = &grids[i / sub];
                let best = grid
                    .iter()
                    .map(|g| (v - g).abs())
                    .fold(f32::INFINITY, f32::min);
                let step = (grid[1] - grid[0]).abs();
                let err = (v - got).abs();
                assert!(
                    err <= best + step * 1e-4 + v.abs() * 1e-6,
                    "{dtype} block {b} value {i}: {v} -> {got}, nearest is {best} away"
                );
                clamped += usize::from(best > step * 0.5 * (1.0 + 1e-4));
            }
        }
        eprintln!(
            "{dtype}: {clamped} of {} values outside their sub-block's range",
            x.len()
        );
    }
}

/// Every value each sub-block of a K-quant block can decode to, computed as the decoder does.
fn sub_block_grids(dtype: StoredDType, blk: &[u8]) -> Vec<Vec<f32>> {
    let h = |o: usize| half::f16::from_le_bytes([blk[o], blk[o + 1]]).to_f32();
    match dtype {
        StoredDType::Q6_K => (0..16)
            .map(|j| {
                let step = h(208) * f32::from(blk[192 + j] as i8);
                (-32..32).map(|l| step * l as f32).collect()
            })
            .collect(),
        _ => {
            let nmax = if dtype == StoredDType::Q4_K { 15 } else { 31 };
            let s: &[u8; 12] = blk[4..16].try_into().unwrap();
            (0..8)
                .map(|j| {
                    let (sc, m) = halo_model::quant::k_quants::scale_min(s, j);
                    let (step, off) = (h(0) * f32::from(sc), h(2) * f32::from(m));
                    (0..=nmax).map(|l| step * l as f32 - off).collect()
                })
                .collect()
        }
    }
}

/// A random normal f16 of magnitude in [e^lo, e^hi), widened.
fn f16_scale(rng: &mut Rng, lo: f64, hi: f64) -> f32 {
    f16((lo + rng.unit() * (hi - lo)).exp() as f32)
}

/// `n` random levels in `lo..=hi`, with `lo` and `hi` each at some position (so the block spans
/// its whole grid, which is what makes the grid recoverable from the values).
fn spanning_levels(rng: &mut Rng, n: usize, lo: i32, hi: i32) -> Vec<i32> {
    let mut l: Vec<i32> = (0..n)
        .map(|_| lo + rng.below((hi - lo + 1) as u64) as i32)
        .collect();
    let a = rng.below(n as u64) as usize;
    let b = (a + 1 + rng.below(n as u64 - 1) as usize) % n;
    l[a] = lo;
    l[b] = hi;
    l
}

fn assert_exact(dtype: StoredDType, x: &[f32]) {
    let y = round_trip(dtype, x);
    for (i, (a, b)) in x.iter().zip(&y).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{dtype} value {i}: {a} -> {b}");
    }
}

/// Values a block can represent come back bit for bit, as long as the block uses its grid's
/// extremes (otherwise a finer grid fits them just as exactly and is equally valid):
/// Q8_0 with a ±127, Q4_0 with a −8, the K-quants with the largest 6-bit (8-bit) sub-block scale
/// and min and each sub-block spanning its levels.
#[test]
fn values_on_the_grid_round_trip_exactly() {
    let mut rng = Rng(5);
    for _ in 0..50 {
        // Q8_0: d · q.
        let d = f16_scale(&mut rng, -8.0, 2.0);
        let mut q = spanning_levels(&mut rng, 32, -127, 127);
        q[0] = if rng.below(2) == 0 { 127 } else { -127 };
        let x: Vec<f32> = q.iter().map(|&q| q as f32 * d).collect();
        assert_exact(StoredDType::Q8_0, &x);

        // Q4_0: d · (q − 8), d of either sign, one value at −8·d.
        let d = f16_scale(&mut rng, -8.0, 2.0) * if rng.below(2) == 0 { 1.0 } else { -1.0 };
        let q = spanning_levels(&mut rng, 32, -8, 7);
        let x: Vec<f32> = q.iter().map(|&q| q as f32 * d).collect();
        assert_exact(StoredDType::Q4_0, &x);

        // Q4_K / Q5_K: (d·sc)·q − (dmin·m), with some sub-block at sc = 63 and some at m = 63.
        for (dtype, nmax) in [(StoredDType::Q4_K, 15), (StoredDType::Q5_K, 31)] {
            let d = f16_scale(&mut rng, -7.0, 0.0);
            let dmin = f16_scale(&mut rng, -7.0, 0.0);
            let mut sc: Vec<u32> = (0..8).map(|_| 1 + rng.below(63) as u32).collect();
            let mut m: Vec<u32> = (0..8).map(|_| rng.below(64) as u32).collect();
            sc[rng.below(8) as usize] = 63;
            m[rng.below(8) as usize] = 63;
            let mut x = Vec::with_capacity(256);
            for j in 0..8 {
                let (step, off) = (d * sc[j] as f32, dmin * m[j] as f32);
                for l in spanning_levels(&mut rng, 32, 0, nmax) {
                    x.push(step * l as f32 - off);
                }
            }
            assert_exact(dtype, &x);
        }

        // Q6_K: (d·sc)·(q − 32), some sub-block at sc = −128, every sub-block with a −32.
        let d = f16_scale(&mut rng, -9.0, -2.0);
        let mut sc: Vec<i32> = (0..16)
            .map(|_| {
                let s = 1 + rng.below(127) as i32;
                if rng.below(2) == 0 {
                    s
                } else {
                    -s
                }
            })
            .collect();
        sc[rng.below(16) as usize] = -128;
        let mut x = Vec::with_capacity(256);
        for &s in &sc {
            let step = d * s as f32;
            for l in spanning_levels(&mut rng, 16, -32, 31) {
                x.push(step * l as f32);
            }
        }
        assert_exact(StoredDType::Q6_K, &x);
    }
}

const ALL: [StoredDType; 8] = halo_model::dtype::SUPPORTED_DTYPES;

#[test]
fn zeros_quantize_to_zeros() {
    for dtype in ALL {
        let x = vec![0.0f32; 512];
        let y = round_trip(dtype, &x);
        assert!(y.iter().all(|v| *v == 0.0), "{dtype}");
    }
}

/// Garbage in (NaN, infinities, values past f16's range, subnormals) gives some block, never a
/// panic.
#[test]
fn non_finite_input_does_not_panic() {
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        1e-40,
        -1e-45,
        0.0,
        -0.0,
        1.0,
    ];
    let mut rng = Rng(6);
    for dtype in ALL {
        for k in 0..40 {
            let x: Vec<f32> = (0..512)
                .map(|i| {
                    if (i + k) % 7 == 0 {
                        specials[rng.below(specials.len() as u64) as usize]
                    } else {
                        rng.gauss() as f32
                    }
                })
                .collect();
            let _ = round_trip(dtype, &x);
        }
    }
}

#[test]
fn rows_and_lengths() {
    assert!(quantize_to_vec(StoredDType::Q4_K, &[0.0; 255]).is_none());
    assert!(quantize_to_vec(StoredDType::Q8_0, &[0.0; 33]).is_none());
    let x: Vec<f32> = (0..3 * 64).map(|i| i as f32 / 10.0).collect();
    let q = quantize_to_vec(StoredDType::Q8_0, &x).unwrap();
    assert_eq!(q.len(), 3 * 2 * 34);
    assert_eq!(row_slice(StoredDType::Q8_0, &q, 64, 2), &q[136..204]);
}

#[test]
#[should_panic(expected = "quantize Q8_0: 32 values into 33 bytes")]
fn quantize_refuses_a_wrong_output_length() {
    quantize(StoredDType::Q8_0, &[0.0; 32], &mut [0u8; 33]);
}

#[test]
#[should_panic(expected = "past the data")]
fn row_slice_refuses_a_row_past_the_end() {
    row_slice(StoredDType::Q4_0, &[0u8; 36], 32, 2);
}
