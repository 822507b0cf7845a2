//! LongRoPE through the engine on the CPU device, against transformers' `generate()`
//! (tests/fixtures/families/tiny-phi3/golden.json, original length 32): a prompt longer than 32
//! runs in the long regime from its first chunk, and a generation that crosses 32 is recomputed
//! once in the long regime (crate halo_engine::rope_regime), so every case's ids are exactly
//! transformers', alone, in mixed batches with chunked prefill, and with the prefix cache on.
//! The prefix cache never hands a long-regime sequence blocks computed in the short regime.

mod golden;

use golden::{greedy as request, Case};
use halo_cpu::CpuDevice;
use halo_engine::{Engine, EngineConfig};
use halo_hal::LoadOptions;
use std::path::PathBuf;

fn phi3_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families/tiny-phi3")
}

fn engine(config: EngineConfig) -> Engine {
    let dev = CpuDevice::with_threads(2).unwrap();
    Engine::start(Box::new(dev), &phi3_dir(), LoadOptions::default(), config).unwrap()
}

/// How many cases cross 32 during generation (each is recomputed once), and the fixture's
/// shape this file relies on: some cases cross, one starts long.
fn crossing_cases(cases: &[Case]) -> u64 {
    let crossing = cases
        .iter()
        .filter(|c| c.prompt.len() <= 32 && c.prompt.len() + c.greedy.len() > 32)
        .count();
    assert!(crossing > 0 && cases.iter().any(|c| c.prompt.len() > 32));
    crossing as u64
}

#[test]
fn golden_alone_with_one_recompute_per_crossing() {
    let e = engine(EngineConfig {
        enable_prefix_caching: false,
        ..Default::default()
    });
    let cases = golden::cases(&phi3_dir());
    for (i, c) in cases.iter().enumerate() {
        let done = e
            .generate_blocking(request(&c.prompt, c.greedy.len()))
            .unwrap();
        assert_eq!(done.token_ids, c.greedy, "case {i}");
    }
    let s = e.stats();
    assert_eq!(s.rope_recomputes, crossing_cases(&cases));
    assert_eq!(s.preemptions, 0);
    assert_eq!(s.free_blocks, s.total_blocks);
}

#[test]
fn golden_in_mixed_batches_with_chunked_prefill() {
    let cases = golden::cases(&phi3_dir());
    // 8 tokens a step: the 67-token prompt runs in 9 chunks (the first ones already long), the
    // recomputes of crossing sequences in several, next to other sequences' decodes
    for (budget, caching) in [(8, false), (5, true)] {
        let e = engine(EngineConfig {
            block_size: 4,
            num_blocks: Some(256),
            max_batch_tokens: budget,
            max_batch_seqs: budget,
            enable_prefix_caching: caching,
            ..Default::default()
        });
        // every case twice, in two orders, so each shares steps with every other
        let order: Vec<usize> = (0..cases.len()).chain((0..cases.len()).rev()).collect();
        let reqs = order
            .iter()
            .map(|&i| request(&cases[i].prompt, cases[i].greedy.len()))
            .collect();
        for (&i, r) in order.iter().zip(e.run_blocking(reqs)) {
            assert_eq!(
                r.unwrap().token_ids,
                cases[i].greedy,
                "case {i}, budget {budget}, caching {caching}"
            );
        }
        let s = e.stats();
        assert_eq!(s.rope_recomputes, 2 * crossing_cases(&cases));
        assert_eq!(s.free_blocks, s.total_blocks);
    }
}

#[test]
fn golden_under_preemption() {
    // 30 blocks of 4 hold the longest case (67 + 48) alone but not every case at once
    let cases = golden::cases(&phi3_dir());
    let e = engine(EngineConfig {
        block_size: 4,
        num_blocks: Some(30),
        max_batch_tokens: 16,
        max_batch_seqs: 8,
        enable_prefix_caching: false,
        ..Default::default()
    });
    let reqs = cases
        .iter()
        .map(|c| request(&c.prompt, c.greedy.len()))
        .collect();
    for (i, r) in e.run_blocking(reqs).into_iter().enumerate() {
        assert_eq!(r.unwrap().token_ids, cases[i].greedy, "case {i}");
    }
    let s = e.stats();
    assert!(
        s.preemptions > 0,
        "the pool was meant to force preemption: {s:?}"
    );
    assert_eq!(s.free_blocks, s.total_blocks);
}

#[test]
fn prefix_cache_never_shares_blocks_across_regimes() {
    let cases = golden::cases(&phi3_dir());
    let long = cases.iter().find(|c| c.prompt.len() > 32).unwrap();
    // a short-regime sequence on the first 20 tokens of the long prompt (20 + 4 <= 32)
    let short = request(&long.prompt[..20], 4);
    let config = || EngineConfig {
        block_size: 4,
        num_blocks: Some(256),
        ..Default::default()
    };

    let e = engine(config());
    let first_short = e.generate_blocking(short.clone()).unwrap();
    assert_eq!(first_short.finish.usage.cached_prompt_tokens, 0);
    // its 4 full blocks are cached, but in the short regime: the long prompt may not use them
    let done = e
        .generate_blocking(request(&long.prompt, long.greedy.len()))
        .unwrap();
    assert_eq!(done.finish.usage.cached_prompt_tokens, 0);
    assert_eq!(done.token_ids, long.greedy);
    // the long prompt's own blocks serve it again, and the short sequence its own
    let again = e
        .generate_blocking(request(&long.prompt, long.greedy.len()))
        .unwrap();
    let full = (long.prompt.len() - 1) / 4 * 4;
    assert_eq!(again.finish.usage.cached_prompt_tokens as usize, full);
    assert_eq!(again.token_ids, long.greedy);
    let short_again = e.generate_blocking(short.clone()).unwrap();
    assert_eq!(short_again.finish.usage.cached_prompt_tokens, 16);
    assert_eq!(short_again.token_ids, first_short.token_ids);

    // the other way round: long-regime blocks are not reused by a short sequence
    let e = engine(config());
    e.generate_blocking(request(&long.prompt, 1)).unwrap();
    let done = e.generate_blocking(short).unwrap();
    assert_eq!(done.finish.usage.cached_prompt_tokens, 0);
    assert_eq!(done.token_ids, first_short.token_ids);
}

#[test]
fn a_recomputed_sequence_reuses_long_blocks_of_its_own_prefix() {
    // a case that crosses, run twice: the second run's recompute at the crossing finds the
    // first run's long-regime blocks of prompt + generated tokens and still gives the ids
    let cases = golden::cases(&phi3_dir());
    let c = cases
        .iter()
        .find(|c| c.prompt.len() <= 32 && c.prompt.len() + c.greedy.len() > 32)
        .unwrap();
    let e = engine(EngineConfig {
        block_size: 4,
        num_blocks: Some(256),
        ..Default::default()
    });
    let first = e
        .generate_blocking(request(&c.prompt, c.greedy.len()))
        .unwrap();
    assert_eq!(first.token_ids, c.greedy);
    let hits = e.stats().prefix_cache_hit_tokens;
    let second = e
        .generate_blocking(request(&c.prompt, c.greedy.len()))
        .unwrap();
    assert_eq!(second.token_ids, c.greedy);
    // more than the short prompt's own blocks: the recompute hit the long blocks
    let prompt_hit = ((c.prompt.len() - 1) / 4 * 4) as u64;
    assert!(e.stats().prefix_cache_hit_tokens - hits > prompt_hit);
    assert_eq!(e.stats().rope_recomputes, 2);
}
