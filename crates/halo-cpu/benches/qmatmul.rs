//! One decode step's projections for bench-110m (hidden 768, 12 layers, intermediate 2048,
//! vocab 32000; q/k/v and gate/up fused as the CPU model fuses them) with the weights in each
//! stored type, through `qmatmul_t`, next to the f32 kernel on the same shapes, at 1, 4, 16, 32,
//! 64 and 256 activation rows (32: a decode step of 32 sequences), each step inside a rayon pool
//! as the device runs it. The weights are random blocks with sane scales (speed does not depend
//! on the values).
//!
//! `q4_k_m` mixes types the way llama.cpp's Q4_K_M does: Q6_K for the classifier and for
//! `ffn_down` in the first and last eighth of the layers and every third layer between, Q4_K
//! elsewhere.
//!
//! `HALO_BENCH_THREADS` sets the pool size (default: every core). Throughput is weight bytes
//! streamed per step.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use halo_cpu::matmul::matmul_t;
use halo_cpu::qmatmul::{qmatmul_t, QMatrix};
use halo_model::dtype::StoredDType;
use std::hint::black_box;
use std::time::Duration;

const HIDDEN: usize = 768;
const INTER: usize = 2048;
const LAYERS: usize = 12;
const VOCAB: usize = 32000;

/// (out, in, uses more bits under Q4_K_M) of every projection of one step, in execution order.
fn shapes() -> Vec<(usize, usize, bool)> {
    let mut s = Vec::new();
    for l in 0..LAYERS {
        let more = !(LAYERS / 8..LAYERS * 7 / 8).contains(&l) || (l - LAYERS / 8) % 3 == 2;
        s.extend([
            (3 * HIDDEN, HIDDEN, false),
            (HIDDEN, HIDDEN, false),
            (2 * INTER, HIDDEN, false),
            (HIDDEN, INTER, more),
        ]);
    }
    s.push((VOCAB, HIDDEN, true));
    s
}

/// Cheap deterministic bytes (an LCG).
fn bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

fn fill(seed: u32, len: usize) -> Vec<f32> {
    bytes(seed, len)
        .into_iter()
        .map(|b| (b as f32 - 127.5) / 2550.0)
        .collect()
}

/// A random matrix of `dtype` whose scales are small normal halves.
fn matrix(dtype: StoredDType, n: usize, k: usize, seed: u32) -> QMatrix {
    let len = dtype.row_bytes(k).unwrap() * n;
    let mut data = bytes(seed, len);
    let half = 0x1c00u16.to_le_bytes(); // 2^-8
    let scale_at: &[usize] = match dtype {
        StoredDType::Q4_0 | StoredDType::Q8_0 => &[0],
        StoredDType::Q4_K | StoredDType::Q5_K => &[0, 2],
        StoredDType::Q6_K => &[208],
        StoredDType::F16 | StoredDType::BF16 => {
            for h in data.chunks_exact_mut(2) {
                h[1] &= 0x3b; // small finite values of either type
            }
            &[]
        }
        _ => &[],
    };
    if dtype.is_quantized() {
        for blk in data.chunks_exact_mut(dtype.block_bytes()) {
            for &o in scale_at {
                blk[o..o + 2].copy_from_slice(&half);
            }
        }
    }
    if dtype == StoredDType::F32 {
        data = fill(seed, n * k)
            .into_iter()
            .flat_map(f32::to_le_bytes)
            .collect();
    }
    QMatrix::new(dtype, n, k, data).unwrap()
}

fn bench(c: &mut Criterion) {
    let pool = common::bench_pool();
    let shapes = shapes();
    let ms = [1usize, 4, 16, 32, 64, 256];
    let inputs: Vec<Vec<Vec<f32>>> = ms
        .iter()
        .map(|&m| {
            shapes
                .iter()
                .map(|&(_, k, _)| fill(99 + k as u32, m * k))
                .collect()
        })
        .collect();

    let types: [(&str, StoredDType, Option<StoredDType>); 9] = [
        ("f32", StoredDType::F32, None),
        ("bf16", StoredDType::BF16, None),
        ("f16", StoredDType::F16, None),
        ("q8_0", StoredDType::Q8_0, None),
        ("q4_0", StoredDType::Q4_0, None),
        ("q4_k_m", StoredDType::Q4_K, Some(StoredDType::Q6_K)),
        ("q4_k", StoredDType::Q4_K, None),
        ("q5_k", StoredDType::Q5_K, None),
        ("q6_k", StoredDType::Q6_K, None),
    ];
    let mut group = c.benchmark_group("bench110m_step_qmatmul");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, dtype, more) in types {
        let weights: Vec<QMatrix> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(n, k, m))| {
                let t = if m { more.unwrap_or(dtype) } else { dtype };
                matrix(t, n, k, i as u32)
            })
            .collect();
        let bytes: usize = weights.iter().map(QMatrix::bytes).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        for (&m, inputs) in ms.iter().zip(&inputs) {
            let mut outputs: Vec<Vec<f32>> =
                shapes.iter().map(|&(n, _, _)| vec![0.0; m * n]).collect();
            if name == "f32" {
                // The f32 kernel itself, on the same weights (the baseline).
                let wf: Vec<Vec<f32>> = weights
                    .iter()
                    .map(|w| {
                        w.data()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect()
                    })
                    .collect();
                group.bench_function(BenchmarkId::new("f32_matmul_t", m), |b| {
                    b.iter(|| {
                        pool.install(|| {
                            for (((&(n, k, _), w), x), y) in
                                shapes.iter().zip(&wf).zip(inputs).zip(outputs.iter_mut())
                            {
                                matmul_t(x, m, k, w, n, y);
                            }
                        });
                        black_box(&outputs);
                    })
                });
                continue;
            }
            group.bench_function(BenchmarkId::new(name, m), |b| {
                b.iter(|| {
                    pool.install(|| {
                        for ((w, x), y) in weights.iter().zip(inputs).zip(outputs.iter_mut()) {
                            qmatmul_t(x, m, w, y);
                        }
                    });
                    black_box(&outputs);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
