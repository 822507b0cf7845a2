//! Sliding-window KV release on the real CPU model: tiny-mistral-swa (every layer windowed, 8
//! tokens) gives transformers' golden ids while its sequences hold a bounded number of blocks,
//! in chunked prefill, batched, with prefix-cache hits, and through the whole engine.

mod golden;

use halo_cpu::CpuDevice;
use halo_engine::{
    kv_window, Completion, Engine, EngineConfig, Event, GenerateRequest, Scheduler,
    SchedulerConfig, StepOutcome,
};
use halo_hal::{Device, LoadOptions, WarmupRequest};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn golden() -> Vec<(Vec<u32>, Vec<u32>)> {
    golden::cases(&fixture("tiny-mistral-swa"))
        .into_iter()
        .map(|c| (c.prompt, c.greedy))
        .collect()
}

#[test]
fn the_window_comes_from_the_config_only_when_every_layer_slides() {
    let window = |name: &str| {
        let (config, _) = halo_model::open_config_and_tokenizer(&fixture(name)).unwrap();
        kv_window(&config)
    };
    assert_eq!(window("tiny-mistral-swa"), Some(8));
    assert_eq!(window("tiny-qwen2"), None);
}

#[test]
fn golden_ids_with_a_bounded_number_of_blocks() {
    const BS: usize = 4;
    let dir = fixture("tiny-mistral-swa");
    let (config, _) = halo_model::open_config_and_tokenizer(&dir).unwrap();
    let window = kv_window(&config).unwrap();
    let cases = golden();
    for caching in [false, true] {
        let mut dev = CpuDevice::new().unwrap();
        let info = dev.load(&dir, &LoadOptions::default()).unwrap();
        let kv = dev
            .warmup(&WarmupRequest {
                block_size: BS,
                max_batch_tokens: 12,
                max_batch_seqs: 8,
                max_seq_len: 256,
                num_blocks: Some(128),
                kv_cache_bytes: None,
                resident_kv_pool: false,
            })
            .unwrap();
        let limits = EngineConfig::default().limits(info.context_length, kv.capacity_tokens());
        let cfg = SchedulerConfig {
            max_batch_tokens: 12,
            max_batch_seqs: 8,
            enable_prefix_caching: caching,
            limits,
            vocab_size: info.vocab_size,
            eos_token_ids: vec![],
        };
        let mut s = Scheduler::new(cfg, kv.num_blocks, BS, None, None).with_kv_window(Some(window));
        // every case, and each again (the second copy hits the first one's prefix blocks)
        let mut want = HashMap::new();
        for (i, (prompt, greedy)) in cases.iter().chain(cases.iter()).enumerate() {
            let mut r = GenerateRequest::greedy(prompt.clone(), greedy.len());
            r.stop.ignore_eos = true;
            s.submit(i as u64, r, Instant::now()).unwrap();
            want.insert(i as u64, greedy.clone());
        }
        let mut got: HashMap<u64, Vec<u32>> = HashMap::new();
        let (mut out, mut most) = (Vec::new(), 0);
        while s.has_work() {
            if let StepOutcome::DeviceFailed(e) = s.step(&mut dev, &mut out) {
                panic!("step failed: {e}");
            }
            s.check_invariants().unwrap();
            most = most.max(s.block_manager().num_used());
            for o in out.drain(..) {
                if let Event::Tokens { token_ids, .. } = o.event {
                    got.entry(o.id).or_default().extend(token_ids);
                }
            }
        }
        eprintln!("caching {caching}: at most {most} blocks held");
        assert_eq!(got, want, "caching {caching}");
        assert_eq!(s.block_manager().num_free(), s.block_manager().total());
        // Without release the 8 sequences (up to 115 tokens) would hold 120 blocks at the end.
        // With it each holds the window (2 blocks), the block being written, at most one more
        // until its successor is registered, and what a 12-token prefill chunk adds.
        assert!(
            most <= 8 * 4 + 12 / BS,
            "caching {caching}: {most} blocks held at once"
        );
    }
}

#[test]
fn the_engine_releases_blocks_and_keeps_the_golden_ids() {
    let e = Engine::start(
        Box::new(CpuDevice::new().unwrap()),
        &fixture("tiny-mistral-swa"),
        LoadOptions::default(),
        EngineConfig {
            block_size: 4,
            num_blocks: Some(64),
            ..EngineConfig::default()
        },
    )
    .unwrap();
    for (prompt, greedy) in golden() {
        let mut r = GenerateRequest::greedy(prompt, greedy.len());
        r.stop.ignore_eos = true;
        let done: Completion = e.generate_blocking(r).unwrap();
        assert_eq!(done.token_ids, greedy);
    }
    let stats = e.stats();
    assert_eq!(stats.free_blocks, stats.total_blocks, "no block leaked");
    e.shutdown();
}
