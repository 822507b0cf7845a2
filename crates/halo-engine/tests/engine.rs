//! The engine thread and handles, over the scripted device (tiny-mha's tokenizer for text):
//! the abort storm, text streaming with stop sequences, admission, health and shutdown.

mod common;

use common::{expected, prompt, VOCAB};
use halo_engine::testing::{tiny_mha_dir, Control, Mode, ScriptedDevice};
use halo_engine::{
    Engine, EngineConfig, Event, FailureKind, FinishReason, GenerateRequest, Health, RunError,
    SubmitError,
};
use halo_hal::{DeviceError, LoadOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn start(config: EngineConfig) -> (Engine, Arc<Mutex<Control>>) {
    let dev = ScriptedDevice::new(Mode::Echo, VOCAB, 4096);
    let control = dev.control();
    let engine = Engine::start(
        Box::new(dev),
        &tiny_mha_dir(),
        LoadOptions::default(),
        config,
    )
    .unwrap();
    (engine, control)
}

fn small() -> EngineConfig {
    EngineConfig {
        block_size: 4,
        num_blocks: Some(256),
        max_batch_tokens: 128,
        max_batch_seqs: 32,
        ..Default::default()
    }
}

fn greedy(p: Vec<u32>, n: usize) -> GenerateRequest {
    let mut r = GenerateRequest::greedy(p, n);
    r.stop.ignore_eos = true;
    r
}

/// Polls until the engine reports every block free and nothing queued.
fn wait_drained(engine: &Engine) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = engine.stats();
        if s.free_blocks == s.total_blocks && s.running == 0 && s.waiting == 0 {
            return;
        }
        assert!(Instant::now() < until, "engine did not drain: {s:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_storm() {
    let (engine, _) = start(EngineConfig {
        max_concurrent_requests: 200,
        ..small()
    });
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let p = prompt(i, 3 + (i as usize * 7) % 20);
            let n = 10 + (i as usize * 13) % 30;
            let mut h = engine.submit(greedy(p.clone(), n)).unwrap();
            // Every 10th request is dropped after a pseudo-random number of events (0 = while
            // still queued), as a disconnecting client would.
            let cut = (i % 10 == 0).then_some((i as usize * 31) % (n + 1));
            let mut tokens = Vec::new();
            let mut seen = 0;
            loop {
                if cut == Some(seen) {
                    return (i, None);
                }
                match h.next().await {
                    Some(Event::Tokens { token_ids, .. }) => tokens.extend(token_ids),
                    Some(Event::Finished(f)) => {
                        assert_eq!(f.reason, FinishReason::Length);
                        break;
                    }
                    other => panic!("request {i}: {other:?}"),
                }
                seen += 1;
            }
            (i, Some((tokens, expected(&p, n))))
        }));
    }
    let mut completed = 0;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if let Some((got, want)) = r {
            assert_eq!(got, want, "request {i}");
            completed += 1;
        }
    }
    assert_eq!(completed, 90);
    wait_drained(&engine);
    let s = engine.stats();
    assert_eq!(s.requests_finished + s.requests_cancelled, 100, "{s:?}");
    assert!(s.requests_cancelled >= 1);
    // The engine is still fully usable.
    let e = engine.clone();
    let done = tokio::task::spawn_blocking(move || e.generate_blocking(greedy(prompt(7, 5), 4)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.token_ids, expected(&prompt(7, 5), 4));
}

#[test]
fn text_deltas_concatenate_to_the_decode_and_stop_sequences_cut() {
    let (engine, _) = start(small());
    let tok = engine.tokenizer().inner().clone();
    let p = prompt(42, 6);
    let all = expected(&p, 40);
    let full = tok.decode(&all, true).unwrap();
    let done = engine.generate_blocking(greedy(p.clone(), 40)).unwrap();
    assert_eq!(done.token_ids, all);
    assert_eq!(done.text, full);

    // A stop sequence taken from the middle of the text (at character boundaries).
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    let (a, b) = (chars.len() / 3, chars.len() / 3 + 3);
    let stop = full[chars[a].0..chars[b].0].to_string();
    let at = full.find(&stop).unwrap();
    let mut r = greedy(p, 40);
    r.stop.stop_sequences = vec![stop.clone()];
    let done = engine.generate_blocking(r).unwrap();
    assert_eq!(done.finish.reason, FinishReason::StopSequence);
    assert_eq!(done.finish.matched_stop.as_deref(), Some(stop.as_str()));
    assert_eq!(done.text, full[..at]);
    assert!(done.token_ids.len() < 40 && all.starts_with(&done.token_ids));
}

#[test]
fn rejections_change_nothing_and_the_queue_cap_holds() {
    let (engine, control) = start(EngineConfig {
        max_concurrent_requests: 3,
        ..small()
    });
    let before = engine.stats();
    let e = engine.submit(greedy(vec![], 4)).unwrap_err();
    assert_eq!(e, SubmitError::EmptyPrompt);
    let e = engine.submit(greedy(vec![VOCAB as u32], 4)).unwrap_err();
    assert!(e.is_invalid_argument());
    let e = engine.submit(greedy(vec![2; 2000], 4)).unwrap_err();
    assert!(
        matches!(e, SubmitError::PromptTooLong { max: 1023, .. }),
        "{e}"
    );
    assert_eq!(engine.stats(), before);

    control.lock().unwrap().step_delay = Duration::from_millis(20);
    let held: Vec<_> = (0..3)
        .map(|i| engine.submit(greedy(prompt(i, 4), 50)).unwrap())
        .collect();
    assert_eq!(
        engine.submit(greedy(prompt(9, 4), 5)).unwrap_err(),
        SubmitError::QueueFull { max: 3 }
    );
    drop(held);
    control.lock().unwrap().step_delay = Duration::ZERO;
    wait_drained(&engine);
    engine.submit(greedy(prompt(9, 4), 5)).unwrap();
}

#[test]
fn run_blocking_submits_past_the_cap_as_requests_finish() {
    let (engine, _) = start(EngineConfig {
        max_concurrent_requests: 4,
        ..small()
    });
    let reqs: Vec<_> = (0..12)
        .map(|i| greedy(prompt(i, 2 + i as usize), 3 + i as usize))
        .collect();
    let results = engine.run_blocking(reqs);
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(
            r.unwrap().token_ids,
            expected(&prompt(i as u64, 2 + i), 3 + i)
        );
    }
    let bad = engine.run_blocking(vec![greedy(vec![], 1)]);
    assert!(matches!(
        bad[0],
        Err(RunError::Rejected(SubmitError::EmptyPrompt))
    ));
}

#[test]
fn device_loss_fails_in_flight_and_refuses_new_work() {
    let (engine, control) = start(small());
    control.lock().unwrap().step_delay = Duration::from_millis(5);
    let mut h = engine.submit(greedy(prompt(1, 4), 1000)).unwrap();
    assert!(matches!(h.blocking_next(), Some(Event::Tokens { .. })));
    control.lock().unwrap().fail_next_step = Some(DeviceError::Lost("injected".into()));
    let mut sent = 1;
    let kind = loop {
        match h.blocking_next() {
            Some(Event::Tokens { .. }) => sent += 1,
            Some(Event::Failed(f)) => break f.kind,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(kind, FailureKind::DeviceLost { tokens_sent: sent });
    assert_eq!(engine.health(), Health::DeviceLost);
    assert_eq!(
        engine.submit(greedy(prompt(2, 4), 4)).unwrap_err(),
        SubmitError::DeviceLost
    );
}

#[test]
fn a_device_that_recovers_serves_again_with_every_block_back() {
    let (engine, control) = start(small());
    let total = engine.stats().total_blocks;
    assert!(total > 0, "stats show the pool before the first step");
    control.lock().unwrap().recover_after = Some(2);
    let mut h = engine.submit(greedy(prompt(1, 4), 1000)).unwrap();
    assert!(matches!(h.blocking_next(), Some(Event::Tokens { .. })));
    control.lock().unwrap().fail_next_step = Some(DeviceError::Lost("injected".into()));
    let kind = loop {
        match h.blocking_next() {
            Some(Event::Tokens { .. }) => {}
            Some(Event::Failed(f)) => break f.kind,
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(kind, FailureKind::DeviceLost { .. }));
    // Down until two recovery attempts have failed, then back.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while engine.health() != Health::Serving {
        assert!(
            std::time::Instant::now() < until,
            "never recovered: {:?}",
            engine.health()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = engine.generate_blocking(greedy(prompt(2, 4), 4)).unwrap();
    assert_eq!(done.token_ids.len(), 4);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while engine.stats().free_blocks != total {
        assert!(
            std::time::Instant::now() < until,
            "blocks leaked: {:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn health_tells_a_long_step_from_a_hung_one_and_shutdown_drains() {
    let (engine, control) = start(EngineConfig {
        stall_timeout: Duration::from_millis(100),
        ..small()
    });
    assert_eq!(engine.health(), Health::Serving);
    // A step longer than the stall timeout is running, not stalled.
    control.lock().unwrap().step_delay = Duration::from_millis(300);
    let mut h = engine.submit(greedy(prompt(1, 4), 40)).unwrap();
    std::thread::sleep(Duration::from_millis(180));
    assert_eq!(engine.health(), Health::Serving);
    // One past four stall timeouts is a hung device.
    control.lock().unwrap().step_delay = Duration::from_millis(1500);
    let until = Instant::now() + Duration::from_secs(4);
    while engine.health() != Health::Stalled {
        assert!(Instant::now() < until, "a hung step never reported Stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
    control.lock().unwrap().step_delay = Duration::ZERO;
    engine.shutdown();
    assert_eq!(engine.health(), Health::ShuttingDown);
    assert_eq!(
        engine.submit(greedy(prompt(2, 4), 2)).unwrap_err(),
        SubmitError::ShuttingDown
    );
    // The in-flight request still completes.
    let mut last = None;
    while let Some(e) = h.blocking_next() {
        last = Some(e);
    }
    assert!(matches!(last, Some(Event::Finished(_))), "{last:?}");
    assert!(engine.wait_stopped(Duration::from_secs(5)));
}

#[test]
fn warmup_sizes_the_step_budget_to_stay_inside_the_stall_timeout() {
    // 1 ms per token and a 400 ms stall timeout: a full 512-token step would take 512 ms; the
    // budget keeps a step near a quarter of the timeout (100 tokens).
    let dev = ScriptedDevice::new(Mode::Echo, VOCAB, 4096);
    let control = dev.control();
    control.lock().unwrap().per_token_delay = Duration::from_millis(1);
    let engine = Engine::start(
        Box::new(dev),
        &tiny_mha_dir(),
        LoadOptions::default(),
        EngineConfig {
            max_batch_tokens: 512,
            max_batch_seqs: 8,
            stall_timeout: Duration::from_millis(400),
            ..small()
        },
    )
    .unwrap();
    let budget = engine.info().step_token_budget;
    assert!((8..=100).contains(&budget), "budget {budget}");
    control.lock().unwrap().record = true;
    let p = prompt(9, 300);
    let mut h = engine.submit(greedy(p.clone(), 2)).unwrap();
    let mut tokens = Vec::new();
    loop {
        assert_eq!(engine.health(), Health::Serving);
        match h.blocking_next() {
            Some(Event::Tokens { token_ids, .. }) => tokens.extend(token_ids),
            Some(Event::Finished(_)) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(tokens, expected(&p, 2));
    let c = control.lock().unwrap();
    assert!(c.batches.len() >= 3, "the 300-token prompt ran in chunks");
    assert!(c.batches.iter().all(|b| b.num_tokens <= budget));
}

#[test]
fn a_panic_in_a_step_fails_its_requests_unavailable_and_the_engine_serves_again() {
    let (engine, control) = start(small());
    let total = engine.stats().total_blocks;
    control.lock().unwrap().step_delay = Duration::from_millis(2);
    let mut a = engine.submit(greedy(prompt(1, 8), 1000)).unwrap();
    let mut b = engine.submit(greedy(prompt(2, 8), 1000)).unwrap();
    assert!(matches!(a.blocking_next(), Some(Event::Tokens { .. })));
    control.lock().unwrap().panic_next_step = true;
    let mut sent = 1;
    let kind = loop {
        match a.blocking_next() {
            Some(Event::Tokens { .. }) => sent += 1,
            Some(Event::Failed(f)) => break f.kind,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(kind, FailureKind::DeviceLost { tokens_sent: sent });
    let kind_b = loop {
        match b.blocking_next() {
            Some(Event::Tokens { .. }) => {}
            Some(Event::Failed(f)) => break f.kind,
            other => panic!("{other:?}"),
        }
    };
    assert!(
        matches!(kind_b, FailureKind::DeviceLost { .. }),
        "{kind_b:?}"
    );
    // Serving again, every block back, the panic counted, and new work is correct.
    let until = Instant::now() + Duration::from_secs(5);
    while engine.health() != Health::Serving {
        assert!(Instant::now() < until, "{:?}", engine.health());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!engine.is_stopped());
    let p = prompt(3, 8);
    let done = engine.generate_blocking(greedy(p.clone(), 6)).unwrap();
    assert_eq!(done.token_ids, expected(&p, 6));
    wait_drained(&engine);
    let s = engine.stats();
    assert_eq!((s.step_panics, s.free_blocks), (1, total));
}

#[test]
fn a_caller_that_stops_reading_costs_bounded_memory_and_can_still_leave() {
    let (engine, control) = start(EngineConfig {
        num_blocks: Some(1024),
        ..small()
    });
    let total = engine.stats().total_blocks;
    // Reads nothing: the engine never blocks on it, coalesces, then drops it past the bound.
    let mut idle = engine.submit(greedy(prompt(1, 4), 3000)).unwrap();
    let other = engine
        .generate_blocking(greedy(prompt(2, 4), 8))
        .expect("others are served meanwhile");
    assert_eq!(other.token_ids, expected(&prompt(2, 4), 8));
    wait_drained(&engine);
    let (mut events, mut tokens) = (0, 0);
    let last = loop {
        match idle.blocking_next() {
            Some(Event::Tokens { token_ids, .. }) => {
                events += 1;
                tokens += token_ids.len();
            }
            Some(e) => break e,
            None => panic!("no terminal event"),
        }
    };
    assert!(
        matches!(&last, Event::Failed(f) if f.kind == FailureKind::SlowReader),
        "{last:?}"
    );
    assert!(
        events <= 64 && tokens < 3000,
        "{events} events, {tokens} tokens"
    );
    // A slow reader that leaves is cancelled and its blocks come back.
    control.lock().unwrap().step_delay = Duration::from_millis(2);
    let h = engine.submit(greedy(prompt(3, 4), 3000)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(engine.stats().running, 1);
    drop(h);
    wait_drained(&engine);
    assert_eq!(engine.stats().free_blocks, total);
}
