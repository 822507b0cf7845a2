//! One decode step's projections for bench-110m (hidden 768, 12 layers, intermediate 2048,
//! vocab 32000, f32; q/k/v and gate/up fused as the CPU model fuses them), random weights:
//! the hand kernel against candle-core's `x.matmul(w.t())`, at 1, 4, 16, 32 and 64 rows, each
//! step run inside a rayon pool as the device runs it. The hand kernel also runs prefill-sized
//! steps (128 and 512 rows), and the same step with the weights stored as f16 and bf16
//! (`qmatmul_t`, which follows the f32 kernel's chain on widened weights).
//!
//! Throughput is multiply-adds (criterion's elem/s is MAC/s). `HALO_BENCH_THREADS` sets the
//! pool size (default: every core).

mod common;

use candle_core::{Device, Tensor};
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

/// (out, in) of every projection of one step, in execution order.
fn shapes() -> Vec<(usize, usize)> {
    let mut s = Vec::new();
    for _ in 0..LAYERS {
        s.extend([
            (3 * HIDDEN, HIDDEN),
            (HIDDEN, HIDDEN),
            (2 * INTER, HIDDEN),
            (HIDDEN, INTER),
        ]);
    }
    s.push((VOCAB, HIDDEN));
    s
}

/// Cheap deterministic fill: an LCG mapped to [-0.05, 0.05).
fn fill(seed: u32, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 0.1 - 0.05
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pool = common::bench_pool();
    let shapes = shapes();
    let weights: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| fill(i as u32, n * k))
        .collect();
    let macs: usize = shapes.iter().map(|(n, k)| n * k).sum();
    // Halves of the same values (f16 and bf16 rounding of the f32 weights).
    let halves = |dtype: StoredDType| -> Vec<QMatrix> {
        shapes
            .iter()
            .zip(&weights)
            .map(|(&(n, k), w)| {
                let data = w
                    .iter()
                    .flat_map(|&v| match dtype {
                        StoredDType::F16 => half::f16::from_f32(v).to_le_bytes(),
                        _ => half::bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect();
                QMatrix::new(dtype, n, k, data).unwrap()
            })
            .collect()
    };
    let half_weights = [
        ("f16", halves(StoredDType::F16)),
        ("bf16", halves(StoredDType::BF16)),
    ];

    let mut group = c.benchmark_group("bench110m_step_projections");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for m in [1usize, 4, 16, 32, 64, 128, 512] {
        group.throughput(Throughput::Elements((m * macs) as u64));
        let inputs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|&(_, k)| fill(99 + k as u32, m * k))
            .collect();
        let mut outputs: Vec<Vec<f32>> = shapes.iter().map(|&(n, _)| vec![0.0; m * n]).collect();
        group.bench_function(BenchmarkId::new("hand", m), |b| {
            b.iter(|| {
                pool.install(|| {
                    for (((&(n, k), w), x), y) in shapes
                        .iter()
                        .zip(&weights)
                        .zip(&inputs)
                        .zip(outputs.iter_mut())
                    {
                        matmul_t(x, m, k, w, n, y);
                    }
                });
                black_box(&outputs);
            })
        });
        for (name, ws) in &half_weights {
            group.bench_function(BenchmarkId::new(*name, m), |b| {
                b.iter(|| {
                    pool.install(|| {
                        for ((w, x), y) in ws.iter().zip(&inputs).zip(outputs.iter_mut()) {
                            qmatmul_t(x, m, w, y);
                        }
                    });
                    black_box(&outputs);
                })
            });
        }
    }
    drop(half_weights);
    // candle's copy of the weights only lives for its own runs.
    let tensors: Vec<Tensor> = shapes
        .iter()
        .zip(&weights)
        .map(|(&(n, k), w)| Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap())
        .collect();
    drop(weights);
    for m in [1usize, 4, 16, 32, 64] {
        group.throughput(Throughput::Elements((m * macs) as u64));
        let inputs: Vec<Tensor> = shapes
            .iter()
            .map(|&(_, k)| {
                Tensor::from_vec(fill(99 + k as u32, m * k), (m, k), &Device::Cpu).unwrap()
            })
            .collect();
        group.bench_function(BenchmarkId::new("candle", m), |b| {
            b.iter(|| {
                pool.install(|| {
                    for (w, x) in tensors.iter().zip(&inputs) {
                        black_box(x.matmul(&w.t().unwrap()).unwrap());
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
