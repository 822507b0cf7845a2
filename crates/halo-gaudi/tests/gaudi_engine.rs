//! The Gaudi device under the real engine: transformers' greedy ids for every golden prompt
//! inside a batch with fillers, under a KV pool so small that the engine preempts and
//! recomputes sequences on the sidecar.

mod common;

use common::*;
use halo_engine::{Engine, EngineConfig, GenerateRequest};
use halo_hal::rng::mix64;
use halo_hal::{DType, LoadOptions};

#[test]
fn golden_ids_through_the_engine_under_preemption() {
    let dev = halo_gaudi::GaudiDevice::new(options()).expect("sidecar starts");
    // 10 blocks of 16 hold the longest case (67 + 48 tokens) alone, never everything at once.
    let config = EngineConfig {
        num_blocks: Some(10),
        max_batch_tokens: 64,
        max_batch_seqs: 8,
        enable_prefix_caching: false,
        ..Default::default()
    };
    let load = LoadOptions {
        dtype: Some(DType::F32),
        ..Default::default()
    };
    let engine = Engine::start(Box::new(dev), &model_dir(), load, config).expect("engine starts");
    let cases = golden();
    let mut reqs: Vec<(Option<usize>, GenerateRequest)> = (0..4u64)
        .map(|i| {
            let mut p = vec![0];
            p.extend((1..(10 + mix64(i) % 50)).map(|j| 2 + (mix64(i * 977 + j) % 510) as u32));
            let mut r = GenerateRequest::greedy(p, 1 + (mix64(i + 7) % 40) as usize);
            r.stop.ignore_eos = true;
            (None, r)
        })
        .collect();
    for (i, c) in cases.iter().enumerate() {
        let mut r = GenerateRequest::greedy(c.prompt_ids.clone(), c.greedy_ids.len());
        r.stop.ignore_eos = true;
        reqs.insert(i * 2, (Some(i), r));
    }
    let results = engine.run_blocking(reqs.iter().map(|(_, r)| r.clone()).collect());
    for ((which, _), r) in reqs.iter().zip(results) {
        let done = r.expect("request completes");
        if let Some(i) = which {
            assert_eq!(done.token_ids, cases[*i].greedy_ids, "golden case {i}");
        }
    }
    let s = engine.stats();
    assert!(
        s.preemptions > 0,
        "the pool was meant to force preemption: {s:?}"
    );
    // The engine thread frees the last blocks after it sent the final events: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while engine.stats().free_blocks != s.total_blocks && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = engine.stats();
    assert_eq!(s.free_blocks, s.total_blocks, "{s:?}");
}
