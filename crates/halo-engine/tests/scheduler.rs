//! The scheduler against the scripted device: preemption, budgets, prefix caching, stop rules,
//! failures. Every step is followed by the invariant check.

mod common;

use common::*;
use halo_engine::testing::Mode;
use halo_engine::{Event, FailureKind, FinishReason, GenerateRequest, StepOutcome, SubmitError};
use halo_hal::{DeviceError, SampleRequest, SamplingParams};
use std::time::{Duration, Instant};

fn finish_reason(st: &Streams, id: u64) -> FinishReason {
    match st.terminal(id) {
        Some(Event::Finished(f)) => f.reason,
        other => panic!("request {id} ended with {other:?}"),
    }
}

fn failure(st: &Streams, id: u64) -> FailureKind {
    match st.terminal(id) {
        Some(Event::Failed(f)) => f.kind,
        other => panic!("request {id} ended with {other:?}"),
    }
}

#[test]
fn single_request_matches_the_reference() {
    let (mut s, mut dev) = Setup::default().build();
    let p = prompt(1, 10);
    s.submit(1, GenerateRequest::greedy(p.clone(), 12), Instant::now())
        .unwrap();
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 100);
    assert_eq!(st.tokens(1), expected(&p, 12));
    assert_eq!(finish_reason(&st, 1), FinishReason::Length);
}

#[test]
fn tiny_pool_forces_preemption_and_output_is_unchanged() {
    // 12 blocks of 4 = 48 slots; 6 requests of 8 + 16 = 24 tokens each cannot all be resident.
    let setup = Setup {
        blocks: 12,
        block_size: 4,
        budget: 32,
        max_seqs: 8,
        ..Default::default()
    };
    let (mut s, mut dev) = setup.build();
    let prompts: Vec<Vec<u32>> = (0..6).map(|i| prompt(10 + i, 8)).collect();
    for (i, p) in prompts.iter().enumerate() {
        s.submit(
            i as u64,
            GenerateRequest::greedy(p.clone(), 16),
            Instant::now(),
        )
        .unwrap();
    }
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 1000);
    assert!(
        s.stats().preemptions > 0,
        "the pool was meant to force preemption"
    );
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(st.tokens(i as u64), expected(p, 16), "request {i}");
        assert_eq!(st.terminals(i as u64), 1);
    }
    let preempted: u32 = (0..6)
        .map(|i| match st.terminal(i) {
            Some(Event::Finished(f)) => f.timings.preemptions,
            _ => 0,
        })
        .sum();
    assert_eq!(preempted as u64, s.stats().preemptions);
}

#[test]
fn seeded_sampling_survives_preemption() {
    let setup = Setup {
        blocks: 10,
        block_size: 4,
        budget: 32,
        max_seqs: 8,
        ..Default::default()
    };
    let (mut s, mut dev) = setup.build();
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.9,
        seed: 77,
        ..Default::default()
    };
    let prompts: Vec<Vec<u32>> = (0..5).map(|i| prompt(30 + i, 6)).collect();
    for (i, p) in prompts.iter().enumerate() {
        let mut r = GenerateRequest::greedy(p.clone(), 14);
        r.sampling = params.clone();
        s.submit(i as u64, r, Instant::now()).unwrap();
    }
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 1000);
    assert!(s.stats().preemptions > 0);
    let mut base = SampleRequest::greedy();
    base.params = params;
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(st.tokens(i as u64), expected_with(p, 14, &base));
    }
}

#[test]
fn decode_first_and_chunked_prefill_respect_the_budget() {
    let setup = Setup {
        blocks: 200,
        block_size: 4,
        budget: 16,
        max_seqs: 8,
        ..Default::default()
    };
    let (mut s, mut dev) = setup.build();
    dev.control().lock().unwrap().record = true;
    let mut st = Streams::default();
    let mut out = Vec::new();
    // Three short requests reach decode...
    for i in 0..3 {
        s.submit(i, GenerateRequest::greedy(prompt(i, 4), 40), Instant::now())
            .unwrap();
    }
    for _ in 0..3 {
        s.step(&mut dev, &mut out);
        s.check_invariants().unwrap();
    }
    // ...then a 100-token prompt arrives: it must be chunked around the three decodes.
    let long = prompt(99, 100);
    s.submit(9, GenerateRequest::greedy(long.clone(), 5), Instant::now())
        .unwrap();
    dev.control().lock().unwrap().batches.clear();
    for _ in 0..10 {
        s.step(&mut dev, &mut out);
        s.check_invariants().unwrap();
    }
    let batches = dev.control().lock().unwrap().batches.clone();
    for b in &batches[..7] {
        assert!(b.num_tokens <= 16, "{b:?}");
        assert_eq!(
            b.decode_seqs, 3,
            "every decoding sequence runs in every step: {b:?}"
        );
        assert_eq!(b.num_seqs, 4, "{b:?}");
        assert_eq!(
            b.num_tokens, 16,
            "prefill takes the rest of the budget: {b:?}"
        );
    }
    st.take(&mut out);
    drain(&mut s, &mut dev, &mut st, 1000);
    assert_eq!(st.tokens(9), expected(&long, 5));
    for i in 0..3 {
        assert_eq!(st.tokens(i), expected(&prompt(i, 4), 40));
    }
}

#[test]
fn prefix_cache_hits_for_a_shared_prefix_and_output_is_unchanged() {
    let (mut s, mut dev) = Setup::default().build();
    let base = prompt(5, 21);
    let mut other = base[..17].to_vec();
    other.extend(prompt(6, 3));
    s.submit(1, GenerateRequest::greedy(base.clone(), 6), Instant::now())
        .unwrap();
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 100);
    // Finished: its blocks are free but cached.
    assert!(s.block_manager().num_evictable() > 0);
    s.submit(2, GenerateRequest::greedy(other.clone(), 6), Instant::now())
        .unwrap();
    s.submit(3, GenerateRequest::greedy(base.clone(), 6), Instant::now())
        .unwrap();
    drain(&mut s, &mut dev, &mut st, 100);
    let cached = |id| match st.terminal(id) {
        Some(Event::Finished(f)) => f.usage.cached_prompt_tokens,
        e => panic!("{e:?}"),
    };
    assert_eq!(cached(1), 0);
    assert_eq!(cached(2), 16, "four full blocks of the 17 shared tokens");
    assert_eq!(
        cached(3),
        20,
        "all full blocks but the one holding the last prompt token"
    );
    assert_eq!(st.tokens(2), expected(&other, 6));
    assert_eq!(st.tokens(3), expected(&base, 6));
    assert_eq!(s.stats().prefix_cache_hit_tokens, 36);
}

#[test]
fn cache_salts_keep_tenants_apart() {
    let (mut s, mut dev) = Setup::default().build();
    let p = prompt(7, 21);
    let req = || GenerateRequest::greedy(p.clone(), 4);
    let mut st = Streams::default();
    s.submit_salted(1, req(), Instant::now(), "tenant-a".into())
        .unwrap();
    drain(&mut s, &mut dev, &mut st, 100);
    // Another tenant sending the same prompt learns nothing and gets its own KV ...
    s.submit_salted(2, req(), Instant::now(), "tenant-b".into())
        .unwrap();
    drain(&mut s, &mut dev, &mut st, 100);
    // ... and neither does the shared (unsalted) scope; the first tenant hits its own cache.
    s.submit(3, req(), Instant::now()).unwrap();
    drain(&mut s, &mut dev, &mut st, 100);
    s.submit_salted(4, req(), Instant::now(), "tenant-a".into())
        .unwrap();
    drain(&mut s, &mut dev, &mut st, 100);
    let cached = |id| match st.terminal(id) {
        Some(Event::Finished(f)) => f.usage.cached_prompt_tokens,
        e => panic!("{e:?}"),
    };
    assert_eq!([cached(1), cached(2), cached(3), cached(4)], [0, 0, 0, 20]);
    for id in 1..=4 {
        assert_eq!(st.tokens(id), expected(&p, 4));
    }
}

#[test]
fn infeasible_requests_are_rejected_without_changing_state() {
    let setup = Setup {
        blocks: 4,
        block_size: 4,
        ..Default::default()
    };
    let (mut s, _dev) = setup.build();
    let before = s.stats();
    let e = s
        .submit(1, GenerateRequest::greedy(prompt(1, 10), 7), Instant::now())
        .unwrap_err();
    assert!(
        matches!(e, SubmitError::TotalTooLong { max_total: 16, .. }),
        "{e}"
    );
    assert_eq!(s.stats(), before);
    assert!(!s.has_work());
}

#[test]
fn eos_stop_token_and_ignore_eos() {
    let p = prompt(3, 5);
    let exp = expected(&p, 10);
    let setup = Setup {
        eos: vec![exp[3]],
        ..Default::default()
    };
    let (mut s, mut dev) = setup.build();
    s.submit(1, GenerateRequest::greedy(p.clone(), 10), Instant::now())
        .unwrap();
    s.submit(
        2,
        ignore_eos(GenerateRequest::greedy(p.clone(), 10)),
        Instant::now(),
    )
    .unwrap();
    let mut stop = ignore_eos(GenerateRequest::greedy(p.clone(), 10));
    stop.stop.stop_token_ids = vec![exp[6]];
    s.submit(3, stop, Instant::now()).unwrap();
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 100);
    assert_eq!(finish_reason(&st, 1), FinishReason::Eos);
    assert_eq!(st.tokens(1), exp[..4].to_vec(), "the EOS id is returned");
    assert_eq!(finish_reason(&st, 2), FinishReason::Length);
    assert_eq!(st.tokens(2), exp);
    assert_eq!(finish_reason(&st, 3), FinishReason::StopToken);
    assert_eq!(st.tokens(3), exp[..7].to_vec());
}

#[test]
fn non_finite_logits_fail_one_request_only() {
    let (mut s, mut dev) = Setup::default().build();
    for i in 0..3 {
        s.submit(i, GenerateRequest::greedy(prompt(i, 6), 8), Instant::now())
            .unwrap();
    }
    dev.control().lock().unwrap().non_finite.insert(1);
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 100);
    assert_eq!(failure(&st, 1), FailureKind::Internal);
    for i in [0, 2] {
        assert_eq!(st.tokens(i), expected(&prompt(i, 6), 8));
    }
}

#[test]
fn fatal_device_error_fails_everything_and_refuses_new_work() {
    let setup = Setup {
        budget: 8,
        ..Default::default()
    };
    let (mut s, mut dev) = setup.build();
    for i in 0..4 {
        s.submit(i, GenerateRequest::greedy(prompt(i, 6), 8), Instant::now())
            .unwrap();
    }
    let mut out = Vec::new();
    let mut st = Streams::default();
    for _ in 0..3 {
        s.step(&mut dev, &mut out);
    }
    st.take(&mut out);
    dev.control().lock().unwrap().fail_next_step = Some(DeviceError::Lost("gone".into()));
    assert!(matches!(
        s.step(&mut dev, &mut out),
        StepOutcome::DeviceFailed(DeviceError::Lost(_))
    ));
    st.take(&mut out);
    s.check_invariants().unwrap();
    for i in 0..4 {
        let sent = st.tokens(i).len() as u32;
        assert_eq!(
            failure(&st, i),
            FailureKind::DeviceLost { tokens_sent: sent }
        );
    }
    assert!(!s.has_work());
    assert_eq!(s.block_manager().num_free(), s.block_manager().total());
    assert_eq!(
        s.submit(9, GenerateRequest::greedy(vec![2], 1), Instant::now()),
        Err(SubmitError::DeviceLost)
    );
}

#[test]
fn non_fatal_device_error_fails_the_batch_and_the_engine_goes_on() {
    let (mut s, mut dev) = Setup::default().build();
    s.submit(1, GenerateRequest::greedy(prompt(1, 6), 4), Instant::now())
        .unwrap();
    dev.control().lock().unwrap().fail_next_step = Some(DeviceError::Backend("flaky".into()));
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 100);
    assert_eq!(failure(&st, 1), FailureKind::Internal);
    s.submit(2, GenerateRequest::greedy(prompt(2, 6), 4), Instant::now())
        .unwrap();
    drain(&mut s, &mut dev, &mut st, 100);
    assert_eq!(st.tokens(2), expected(&prompt(2, 6), 4));
}

#[test]
fn deadlines_and_cancellation_free_blocks_at_once() {
    let (mut s, mut dev) = Setup::default().build();
    let mut r = GenerateRequest::greedy(prompt(1, 6), 50);
    r.deadline = Some(Instant::now() + Duration::from_millis(30));
    s.submit(1, r, Instant::now()).unwrap();
    s.submit(2, GenerateRequest::greedy(prompt(2, 6), 50), Instant::now())
        .unwrap();
    let mut out = Vec::new();
    let mut st = Streams::default();
    s.step(&mut dev, &mut out);
    s.step(&mut dev, &mut out);
    let used = s.block_manager().num_used();
    assert!(s.cancel(2, &mut out));
    assert!(
        s.block_manager().num_used() < used,
        "cancel frees blocks immediately"
    );
    assert!(!s.cancel(2, &mut out), "a second cancel is a no-op");
    std::thread::sleep(Duration::from_millis(40));
    st.take(&mut out);
    drain(&mut s, &mut dev, &mut st, 100);
    assert_eq!(failure(&st, 1), FailureKind::DeadlineExceeded);
    assert_eq!(failure(&st, 2), FailureKind::Cancelled);
}

#[test]
fn noop_mode_runs_without_kv() {
    let setup = Setup::default();
    let (mut s, _) = setup.build();
    let mut dev =
        halo_engine::testing::ScriptedDevice::new(Mode::NoOp, VOCAB, 4096).ready(4, 64, 4096);
    s.submit(1, GenerateRequest::greedy(prompt(1, 6), 3), Instant::now())
        .unwrap();
    let mut st = Streams::default();
    drain(&mut s, &mut dev, &mut st, 100);
    assert_eq!(st.tokens(1), vec![7, 7, 7]);
}
