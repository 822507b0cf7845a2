//! Sliding-window models (issue 13 item 6): blocks wholly older than the window of a sequence's
//! next position are released as it grows, so a sequence holds about `window` tokens of KV.
//!
//! The scheduler tests run a scripted device that, like sliding-window attention, reads only the
//! last `window` positions and fails the step if a position a new token can see sits in a freed
//! block; its samples hash what it read, so any wrong or missing KV changes the output. The CPU
//! test runs the real model on tiny-mistral-swa (window 8) against transformers' golden ids.

mod common;

use common::{drain, ignore_eos, prompt, Setup, Streams, VOCAB};
use halo_engine::testing::ScriptedDevice;
use halo_engine::{GenerateRequest, Scheduler, StepOutcome};
use halo_hal::SampleRequest;
use std::time::Instant;

const WINDOW: usize = 8;

/// What the windowed scripted device samples for `prompt`, alone: each token hashes the last
/// `WINDOW` tokens before it.
fn expected(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut hist = prompt.to_vec();
    for _ in 0..n {
        let from = hist.len().saturating_sub(WINDOW);
        let t = ScriptedDevice::expected_next(VOCAB, &hist[from..], &SampleRequest::greedy());
        hist.push(t);
    }
    hist[prompt.len()..].to_vec()
}

fn windowed(setup: &Setup) -> (Scheduler, ScriptedDevice) {
    let (s, dev) = setup.build();
    (s.with_kv_window(Some(WINDOW)), dev.with_window(WINDOW))
}

/// Steps until drained like `common::drain`, also recording the most blocks in use at once.
fn drain_recording_use(s: &mut Scheduler, dev: &mut ScriptedDevice, st: &mut Streams) -> usize {
    let mut out = Vec::new();
    let mut most = 0;
    let mut steps = 0;
    while s.has_work() {
        assert!(steps < 10_000, "no progress");
        if let StepOutcome::DeviceFailed(e) = s.step(dev, &mut out) {
            panic!("step failed: {e}");
        }
        st.take(&mut out);
        s.check_invariants().unwrap();
        most = most.max(s.block_manager().num_used());
        steps += 1;
    }
    assert_eq!(s.block_manager().num_free(), s.block_manager().total());
    most
}

#[test]
fn a_long_generation_holds_about_a_window_of_blocks() {
    for caching in [false, true] {
        let setup = Setup {
            blocks: 128,
            block_size: 4,
            caching,
            ..Setup::default()
        };
        let (mut s, mut dev) = windowed(&setup);
        let p = prompt(1, 10);
        s.submit(
            1,
            ignore_eos(GenerateRequest::greedy(p.clone(), 400)),
            Instant::now(),
        )
        .unwrap();
        let mut st = Streams::default();
        let most = drain_recording_use(&mut s, &mut dev, &mut st);
        assert_eq!(st.tokens(1), expected(&p, 400), "caching {caching}");
        // 410 tokens would be 103 blocks; the window needs 2 blocks plus the one being
        // written, plus (with caching) one kept until its successor is registered.
        assert!(most <= 4, "caching {caching}: {most} blocks held at once");
    }
}

#[test]
fn blocks_are_released_exactly_when_the_window_has_passed_them() {
    let (mut s, mut dev) = windowed(&Setup {
        caching: false,
        ..Setup::default()
    });
    s.submit(1, GenerateRequest::greedy(prompt(2, 9), 30), Instant::now())
        .unwrap();
    let mut out = Vec::new();
    for step in 1..=25usize {
        s.step(&mut dev, &mut out);
        s.check_invariants().unwrap();
        // the prompt in one step, then one token a step: `c` positions have KV, the next query
        // (position c) sees c + 1 - WINDOW..=c, so the blocks wholly before that are gone
        let c = 9 + step - 1;
        let freed = (c + 1).saturating_sub(WINDOW) / 4;
        assert_eq!(
            s.block_manager().num_used(),
            c.div_ceil(4) - freed,
            "step {step}"
        );
    }
}

#[test]
fn preemption_prefix_hits_and_many_sequences_keep_their_ids() {
    // A pool far smaller than the requests' combined history: without releasing blocks this
    // preempts constantly; every output must still be the windowed reference.
    for caching in [false, true] {
        let setup = Setup {
            blocks: 20,
            block_size: 4,
            budget: 24,
            max_seqs: 8,
            caching,
            ..Setup::default()
        };
        let (mut s, mut dev) = windowed(&setup);
        let shared = prompt(3, 13);
        let mut want = Vec::new();
        for id in 0..12u64 {
            // half share a prefix (prefix-cache hits), half are their own
            let mut p = if id % 2 == 0 {
                shared.clone()
            } else {
                prompt(100 + id, 5)
            };
            p.extend(prompt(200 + id, (id as usize * 7) % 11));
            let n = 10 + (id as usize * 13) % 45;
            want.push(expected(&p, n));
            s.submit(
                id,
                ignore_eos(GenerateRequest::greedy(p, n)),
                Instant::now(),
            )
            .unwrap();
        }
        let mut st = Streams::default();
        drain(&mut s, &mut dev, &mut st, 20_000);
        assert!(s.stats().preemptions > 0, "the pool was meant to run short");
        for (id, w) in want.iter().enumerate() {
            assert_eq!(&st.tokens(id as u64), w, "request {id}, caching {caching}");
        }
    }
}

#[test]
fn without_a_window_every_block_is_kept() {
    let setup = Setup {
        caching: false,
        ..Setup::default()
    };
    let (mut s, mut dev) = setup.build();
    s.submit(
        1,
        GenerateRequest::greedy(prompt(4, 10), 30),
        Instant::now(),
    )
    .unwrap();
    let mut out = Vec::new();
    for _ in 0..25 {
        s.step(&mut dev, &mut out);
        s.check_invariants().unwrap();
    }
    // 10 + 24 positions have KV, every block of them still held
    assert_eq!(s.block_manager().num_used(), 34usize.div_ceil(4));
}

#[test]
fn cancel_and_deadline_mid_generation_free_every_live_block() {
    let (mut s, mut dev) = windowed(&Setup::default());
    s.submit(
        1,
        GenerateRequest::greedy(prompt(5, 10), 100),
        Instant::now(),
    )
    .unwrap();
    let mut late = GenerateRequest::greedy(prompt(6, 10), 100);
    late.deadline = Some(Instant::now() + std::time::Duration::from_millis(30));
    s.submit(2, late, Instant::now()).unwrap();
    let mut out = Vec::new();
    for _ in 0..40 {
        s.step(&mut dev, &mut out);
        s.check_invariants().unwrap();
    }
    assert!(s.cancel(1, &mut out));
    std::thread::sleep(std::time::Duration::from_millis(40));
    s.step(&mut dev, &mut out);
    s.check_invariants().unwrap();
    assert!(!s.has_work());
    assert_eq!(s.block_manager().num_free(), s.block_manager().total());
}
