//! One decode step's projections for bench-110m (hidden 768, 12 layers, intermediate 2048,
//! vocab 32000, f32; q/k/v and gate/up fused as the CPU model fuses them), random weights:
//! the hand kernel against candle-core's `x.matmul(w.t())`, at 1, 4, 16 and 32 rows, each
//! step run inside a rayon pool as the device runs it.
//!
//! `HALO_BENCH_THREADS` sets the pool size (default: every core).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use halo_cpu::matmul::matmul_t;
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
    let threads = std::env::var("HALO_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let shapes = shapes();
    let weights: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| fill(i as u32, n * k))
        .collect();
    let bytes: usize = shapes.iter().map(|(n, k)| n * k * 4).sum();

    let mut group = c.benchmark_group("bench110m_step_projections");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Bytes(bytes as u64));
    for m in [1usize, 4, 16, 32, 64] {
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
    }
    // candle's copy of the weights only lives for its own runs.
    let tensors: Vec<Tensor> = shapes
        .iter()
        .zip(&weights)
        .map(|(&(n, k), w)| Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap())
        .collect();
    drop(weights);
    for m in [1usize, 4, 16, 32, 64] {
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
