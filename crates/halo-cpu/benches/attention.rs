//! One decode step's attention for bench-110m (12 layers, 12 heads of 64, MHA) at 32 sequences:
//! every sequence's query against its whole context, through the paged f16 (and f32) KV pool,
//! as the 32-sequence runs against llama.cpp spend it. The sequences' blocks are scattered over
//! the pool the way interleaved decoding leaves them, and the 12 layers' pools (~450 MB in f16
//! at 192 positions) are far larger than the caches, so rows come from memory as they do in a
//! real step.
//!
//! `HALO_BENCH_THREADS` sets the pool size (default: every core). Throughput is KV bytes read
//! per step.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use halo_cpu::attention::{paged_attention, AttentionShape, TokenSite};
use halo_cpu::kv_cache::KvCache;
use halo_hal::DType;
use std::hint::black_box;
use std::time::Duration;

const LAYERS: usize = 12;
const HEADS: usize = 12;
const HEAD_DIM: usize = 64;
const BLOCK: usize = 16;
const SEQS: usize = 32;

/// Cheap deterministic values in [-1, 1) (an LCG).
fn fill(seed: u32, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Block ids 0..n in a fixed scattered order (a multiplicative permutation).
fn scattered(n: usize) -> Vec<u32> {
    let step = (0..n).map(|i| 2 * i + 7).find(|s| gcd(*s, n) == 1).unwrap();
    (0..n).map(|i| ((i * step) % n) as u32).collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn bench(c: &mut Criterion) {
    let pool = common::bench_pool();
    let row = HEADS * HEAD_DIM;
    let shape = AttentionShape {
        num_heads: HEADS,
        num_kv_heads: HEADS,
        head_dim: HEAD_DIM,
        block_size: BLOCK,
        window: None,
        scale: 1.0 / (HEAD_DIM as f32).sqrt(),
        softcap: None,
    };
    let mut group = c.benchmark_group("bench110m_decode_attention_32seq");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, dtype) in [("f16", DType::F16), ("f32", DType::F32)] {
        for context in [192usize, 512] {
            let per_seq = context.div_ceil(BLOCK);
            let blocks = scattered(SEQS * per_seq);
            let mut kv = KvCache::new(LAYERS, BLOCK, blocks.len(), row, HEADS, dtype).unwrap();
            let tables: Vec<&[u32]> = blocks.chunks_exact(per_seq).collect();
            let k = fill(1, row);
            let v = fill(2, row);
            for layer in 0..LAYERS {
                for table in &tables {
                    for pos in 0..context {
                        let slot = table[pos / BLOCK] as usize * BLOCK + pos % BLOCK;
                        kv.write(layer, slot, &k, &v);
                    }
                }
            }
            let q = fill(3, SEQS * row);
            let sites: Vec<TokenSite<'_>> = tables
                .iter()
                .map(|t| TokenSite {
                    block_table: t,
                    pos: context - 1,
                })
                .collect();
            let bytes = (LAYERS * SEQS * context * row * 2 * dtype.size_in_bytes()) as u64;
            group.throughput(Throughput::Bytes(bytes));
            group.bench_function(BenchmarkId::new(name, context), |b| {
                b.iter(|| {
                    pool.install(|| {
                        for layer in 0..LAYERS {
                            black_box(paged_attention(&q, &sites, kv.layer(layer), &shape));
                        }
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
