//! Per-step sampling on the engine thread: 64 sequences × a 128k vocabulary, one row each, with
//! top-k, top-p (no top-k: the whole row is a candidate), min-p and penalties over a 512-token
//! history. The logits are a fixed pseudo-random row per sequence (a spread like a real model's
//! head: most mass in a few hundred tokens, a long tail).

use criterion::{criterion_group, criterion_main, Criterion};
use halo_hal::rng::uniform;
use halo_hal::sampling::sample;
use halo_hal::{PenaltyContext, SampleRequest, SamplingParams};
use std::hint::black_box;
use std::sync::Arc;

const SEQS: usize = 64;
const VOCAB: usize = 128 * 1024;

fn rows() -> Vec<Vec<f32>> {
    (0..SEQS as u64)
        .map(|s| {
            (0..VOCAB as u64)
                .map(|i| {
                    // Sum of uniforms ~ normal, std ~2.5; a few hundred boosted "likely" tokens.
                    let n: f64 = (0..4).map(|j| uniform(s, i * 4 + j)).sum::<f64>() - 2.0;
                    let boost = if uniform(s + 1000, i) < 0.002 {
                        8.0
                    } else {
                        0.0
                    };
                    (n * 4.3 + boost) as f32
                })
                .collect()
        })
        .collect()
}

fn requests(params: SamplingParams, penalties: bool) -> Vec<SampleRequest> {
    let prompt: Arc<[u32]> = (0..512u32).map(|i| i * 97 % VOCAB as u32).collect();
    (0..SEQS as u64)
        .map(|s| SampleRequest {
            params: SamplingParams {
                seed: s,
                ..params.clone()
            },
            rng_offset: s * 7,
            logprobs: true,
            top_n: 0,
            penalties: penalties.then(|| PenaltyContext {
                prompt: prompt.clone(),
                generated: (0..512u32)
                    .map(|i| (i * 131 + s as u32) % VOCAB as u32)
                    .collect(),
            }),
        })
        .collect()
}

fn step(c: &mut Criterion) {
    let rows = rows();
    let base = SamplingParams {
        temperature: 0.8,
        seed: 0,
        ..Default::default()
    };
    let cases = [
        (
            "top_k_50",
            SamplingParams {
                top_k: 50,
                ..base.clone()
            },
            false,
        ),
        (
            "top_p_0.9",
            SamplingParams {
                top_p: 0.9,
                ..base.clone()
            },
            false,
        ),
        (
            "top_k_50_top_p_0.95_min_p_0.05",
            SamplingParams {
                top_k: 50,
                top_p: 0.95,
                min_p: 0.05,
                ..base.clone()
            },
            false,
        ),
        (
            "top_p_0.9_penalties",
            SamplingParams {
                top_p: 0.9,
                repetition_penalty: 1.1,
                frequency_penalty: 0.3,
                presence_penalty: 0.2,
                ..base.clone()
            },
            true,
        ),
        ("full_distribution", base.clone(), false),
    ];
    let mut g = c.benchmark_group("sample_step_64x128k");
    g.sample_size(10);
    for (name, params, penalties) in cases {
        let reqs = requests(params, penalties);
        g.bench_function(name, |b| {
            b.iter(|| {
                for (row, req) in rows.iter().zip(&reqs) {
                    black_box(sample(black_box(row), req).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
