//! Per-step sampling on the engine thread: 64 sequences × a 128k vocabulary, one row each, with
//! top-k, top-p (no top-k: the whole row is a candidate), min-p and penalties over a 512-token
//! history. The logits are a fixed pseudo-random row per sequence (a spread like a real model's
//! head: most mass in a few hundred tokens, a long tail).

use criterion::{criterion_group, criterion_main, Criterion};
use halo_hal::rng::uniform;
use halo_hal::sampling::sample;
use halo_hal::{PenaltyContext, SampleRequest, SamplingParams};
use std::hint::black_box;

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

fn prompt() -> Vec<u32> {
    (0..512u32).map(|i| i * 97 % VOCAB as u32).collect()
}

/// Sequence `s`'s first `n` output tokens (a spread of ids with repeats).
fn generated(s: u64, n: u32) -> Vec<u32> {
    (0..n)
        .map(|i| (i * 131 + s as u32) % (VOCAB as u32 / 4))
        .collect()
}

fn requests(params: SamplingParams, penalties: bool) -> Vec<SampleRequest> {
    let prompt = prompt();
    (0..SEQS as u64)
        .map(|s| SampleRequest {
            params: SamplingParams {
                seed: s,
                ..params.clone()
            },
            rng_offset: s * 7,
            logprobs: true,
            top_n: 0,
            penalties: penalties.then(|| PenaltyContext::from_history(&prompt, &generated(s, 512))),
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

/// What a step costs the engine thread per penalized sequence as the output grows: hand the
/// history to the sampler (the engine's `sample_request`), sample with top_k 50, and record the
/// new token. Before the counts were incremental this copied and sorted the whole history every
/// step, so the cost grew with the length; now it grows with the distinct tokens only.
fn penalty_history(c: &mut Criterion) {
    let rows = rows();
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 50,
        repetition_penalty: 1.1,
        frequency_penalty: 0.3,
        presence_penalty: 0.2,
        ..Default::default()
    };
    let mut g = c.benchmark_group("penalized_step_64x128k");
    g.sample_size(10);
    for len in [512u32, 8192, 32768] {
        let mut seqs: Vec<PenaltyContext> = (0..SEQS as u64)
            .map(|s| PenaltyContext::from_history(&prompt(), &generated(s, len)))
            .collect();
        g.bench_function(format!("top_k_50_penalties_output_{len}"), |b| {
            b.iter(|| {
                for (s, (row, ctx)) in rows.iter().zip(seqs.iter_mut()).enumerate() {
                    let req = SampleRequest {
                        params: SamplingParams {
                            seed: s as u64,
                            ..params.clone()
                        },
                        rng_offset: len as u64,
                        logprobs: true,
                        top_n: 0,
                        penalties: Some(ctx.clone()),
                    };
                    let t = sample(black_box(row), &req).unwrap().token;
                    drop(req);
                    ctx.record_output(t);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, step, penalty_history);
criterion_main!(benches);
