//! The engine on the real CPU device with tiny-mha: transformers' greedy ids (golden.json,
//! generated with EOS not stopping) alone, inside batches of mixed lengths at random positions,
//! under a pool so small that preemption happens, and with prefix-cache hits.

mod golden;

use golden::Case;
use halo_cpu::CpuDevice;
use halo_engine::testing::tiny_mha_dir;
use halo_engine::{Completion, Engine, EngineConfig, GenerateRequest};
use halo_hal::rng::mix64;
use halo_hal::LoadOptions;

fn engine(config: EngineConfig) -> Engine {
    let dev = CpuDevice::new().unwrap();
    Engine::start(
        Box::new(dev),
        &tiny_mha_dir(),
        LoadOptions::default(),
        config,
    )
    .unwrap()
}

fn golden_request(c: &Case) -> GenerateRequest {
    golden::greedy(&c.prompt, c.greedy.len())
}

/// A filler prompt of pseudo-random ids (BOS first, like the golden prompts).
fn filler(seed: u64, len: usize, max_new: usize) -> GenerateRequest {
    let mut p = vec![0];
    p.extend((1..len as u64).map(|i| 2 + (mix64(seed * 977 + i) % 510) as u32));
    let mut r = GenerateRequest::greedy(p, max_new);
    r.stop.ignore_eos = true;
    r
}

/// Runs every golden case mixed with fillers at pseudo-random positions, `trials` times, and
/// checks each golden case's ids.
fn mixed_batches(e: &Engine, trials: u64, fillers: usize) {
    let cases = golden::cases(&tiny_mha_dir());
    for trial in 0..trials {
        let mut reqs: Vec<(Option<usize>, GenerateRequest)> = (0..fillers)
            .map(|i| {
                let s = trial * 100 + i as u64;
                (
                    None,
                    filler(
                        s,
                        1 + (mix64(s) % 90) as usize,
                        1 + (mix64(s + 1) % 40) as usize,
                    ),
                )
            })
            .collect();
        for (i, c) in cases.iter().enumerate() {
            let at = (mix64(trial * 31 + i as u64) % (reqs.len() as u64 + 1)) as usize;
            reqs.insert(at, (Some(i), golden_request(c)));
        }
        let results = e.run_blocking(reqs.iter().map(|(_, r)| r.clone()).collect());
        for ((which, _), r) in reqs.iter().zip(results) {
            let done: Completion = r.unwrap();
            if let Some(i) = which {
                assert_eq!(
                    done.token_ids, cases[*i].greedy,
                    "trial {trial}: golden case {i}"
                );
            }
        }
    }
}

#[test]
fn golden_alone() {
    let e = engine(EngineConfig::default());
    for (i, c) in golden::cases(&tiny_mha_dir()).iter().enumerate() {
        let done = e.generate_blocking(golden_request(c)).unwrap();
        assert_eq!(done.token_ids, c.greedy, "case {i}");
    }
}

#[test]
fn golden_inside_mixed_batches_with_chunked_prefill() {
    // A small token budget splits the long prompts into chunks next to running decodes.
    let e = engine(EngineConfig {
        max_batch_tokens: 32,
        max_batch_seqs: 16,
        enable_prefix_caching: false,
        ..Default::default()
    });
    mixed_batches(&e, 3, 6);
    let s = e.stats();
    assert_eq!(s.free_blocks, s.total_blocks);
}

#[test]
fn golden_under_preemption() {
    // 10 blocks of 16 hold the longest case (67 + 48 tokens) alone, never all at once.
    let e = engine(EngineConfig {
        num_blocks: Some(10),
        max_batch_tokens: 64,
        max_batch_seqs: 8,
        enable_prefix_caching: false,
        ..Default::default()
    });
    mixed_batches(&e, 2, 4);
    let s = e.stats();
    assert!(
        s.preemptions > 0,
        "the pool was meant to force preemption: {s:?}"
    );
    assert_eq!(s.free_blocks, s.total_blocks);
}

#[test]
fn golden_with_prefix_cache_hits() {
    let e = engine(EngineConfig {
        block_size: 4,
        num_blocks: Some(256),
        ..Default::default()
    });
    let cases = golden::cases(&tiny_mha_dir());
    // Warm the cache, then run each case again, alone and all together.
    for c in &cases {
        e.generate_blocking(golden_request(c)).unwrap();
    }
    let before = e.stats().prefix_cache_hit_tokens;
    let results = e.run_blocking(cases.iter().map(golden_request).collect());
    for (i, (c, r)) in cases.iter().zip(results).enumerate() {
        let done = r.unwrap();
        assert_eq!(done.token_ids, c.greedy, "case {i}");
        let full_blocks = (c.prompt.len() - 1) / 4 * 4;
        assert_eq!(
            done.finish.usage.cached_prompt_tokens as usize, full_blocks,
            "case {i}"
        );
    }
    assert!(e.stats().prefix_cache_hit_tokens > before);
    mixed_batches(&e, 2, 5);
}
