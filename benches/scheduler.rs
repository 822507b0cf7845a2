//! Scheduling overhead per iteration: 256 running sequences in decode over a device that does
//! nothing, so the time measured is the engine's own (plan, batch build, apply, stop rules).

use criterion::{criterion_group, criterion_main, Criterion};
use halo_engine::testing::{Mode, ScriptedDevice};
use halo_engine::{EngineConfig, GenerateRequest, Scheduler, SchedulerConfig};
use std::time::{Duration, Instant};

const SEQS: usize = 256;
const PROMPT: usize = 128;
const MAX_NEW: usize = 1024;

fn fresh() -> (Scheduler, ScriptedDevice) {
    let block_size = 16;
    let blocks = SEQS * (PROMPT + MAX_NEW).div_ceil(block_size);
    let config = EngineConfig {
        max_batch_tokens: 8192,
        max_batch_seqs: SEQS,
        max_concurrent_requests: SEQS,
        ..Default::default()
    };
    let cfg = SchedulerConfig {
        max_batch_tokens: config.max_batch_tokens,
        max_batch_seqs: SEQS,
        enable_prefix_caching: true,
        limits: config.limits(8192, blocks * block_size),
        vocab_size: 512,
        eos_token_ids: vec![1],
    };
    let mut dev = ScriptedDevice::new(Mode::NoOp, 512, 8192).ready(block_size, blocks, 8192);
    let mut s = Scheduler::new(cfg, blocks, block_size, None, None);
    for i in 0..SEQS as u64 {
        let prompt = (0..PROMPT as u32)
            .map(|t| 2 + (t * 7 + i as u32 * 13) % 500)
            .collect();
        let mut r = GenerateRequest::greedy(prompt, MAX_NEW);
        r.stop.ignore_eos = true;
        s.submit(i, r, Instant::now()).unwrap();
    }
    // Prefill everything so the measured steps are steady-state decode.
    let mut out = Vec::new();
    while s.num_running() < SEQS || s.num_waiting() > 0 {
        s.step(&mut dev, &mut out);
        out.clear();
    }
    s.step(&mut dev, &mut out);
    (s, dev)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("step_256_decoding_seqs_noop_device", |b| {
        let (mut s, mut dev) = fresh();
        let mut out = Vec::new();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Sequences finish after MAX_NEW tokens: start over (untimed) before they do.
                if s.num_running() < SEQS {
                    (s, dev) = fresh();
                }
                let t = Instant::now();
                s.step(&mut dev, &mut out);
                total += t.elapsed();
                assert!(out.len() >= SEQS, "every sequence emits a token each step");
                out.clear();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
