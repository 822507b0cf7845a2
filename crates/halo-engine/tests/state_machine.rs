//! Scheduler + block manager as a state machine (RELIABILITY.md): random submits, steps,
//! cancellations in every state, expiries, forced preemption (a pool too small for the load),
//! non-finite logits and device failures. After every operation: free + used = total, reference
//! counts equal holders, every request is in exactly one of waiting / running / ended, no request
//! gets two terminal events, and every token received is the reference token. At the end every
//! request has exactly one terminal event and free = total. Half the runs model a sliding window
//! (blocks behind it released, the device reading only the window).

mod common;

use common::*;
use halo_engine::{Event, FinishReason, GenerateRequest, SubmitError};
use halo_hal::{DeviceError, SampleRequest, SamplingParams};
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
enum Op {
    Submit {
        family: u64,
        len: usize,
        max_new: usize,
        expired: bool,
        sampled: bool,
    },
    Step,
    Cancel(usize),
    FailNext {
        fatal: bool,
    },
    NonFinite(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..3, 1usize..20, 1usize..12, prop::bool::weighted(0.1), any::<bool>())
            .prop_map(|(family, len, max_new, expired, sampled)| Op::Submit { family, len, max_new, expired, sampled }),
        8 => Just(Op::Step),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => prop::bool::weighted(0.3).prop_map(|fatal| Op::FailNext { fatal }),
        1 => any::<usize>().prop_map(Op::NonFinite),
    ]
}

struct Expect {
    tokens: Vec<u32>,
    max_new: usize,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]
    #[test]
    fn invariants_hold_under_random_operations(
        ops in prop::collection::vec(op(), 1..80),
        caching in any::<bool>(),
        budget in 4usize..24,
        // a sliding-window model: blocks behind the window are released as sequences grow
        window in prop_oneof![Just(None), (1usize..10).prop_map(Some)],
    ) {
        let setup = Setup { blocks: 10, block_size: 4, budget, max_seqs: 4, caching, eos: vec![] };
        let (s, dev) = setup.build();
        let (mut s, mut dev) = match window {
            Some(w) => (s.with_kv_window(Some(w)), dev.with_window(w)),
            None => (s, dev),
        };
        let control = dev.control();
        let mut st = Streams::default();
        let mut out = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        let mut expect: HashMap<u64, Expect> = HashMap::new();
        let mut next_id = 0u64;
        let params = SamplingParams { temperature: 1.0, top_k: 50, seed: 5, ..Default::default() };

        let check = |s: &halo_engine::Scheduler, st: &Streams, ids: &[u64], expect: &HashMap<u64, Expect>| -> Result<(), TestCaseError> {
            prop_assert_eq!(s.check_invariants(), Ok(()));
            for &id in ids {
                let terminals = st.terminals(id);
                prop_assert!(terminals <= 1, "request {} got {} terminal events", id, terminals);
                prop_assert_eq!(terminals == 0, s.contains(id), "request {} is both ended and live, or neither", id);
                let got = if st.events.contains_key(&id) { st.tokens(id) } else { vec![] };
                let e = &expect[&id];
                prop_assert!(e.tokens.starts_with(&got), "request {} streamed wrong tokens", id);
                if let Some(Event::Finished(f)) = st.terminal(id) {
                    prop_assert_eq!(f.reason, FinishReason::Length);
                    prop_assert_eq!(got.len(), e.max_new);
                }
            }
            Ok(())
        };

        for op in ops {
            match op {
                Op::Submit { family, len, max_new, expired, sampled } => {
                    let p = prompt(family, 20)[..len].to_vec();
                    let mut r = ignore_eos(GenerateRequest::greedy(p.clone(), max_new));
                    let mut base = SampleRequest::greedy();
                    if sampled {
                        r.sampling = params.clone();
                        base.params = params.clone();
                    }
                    if expired {
                        r.deadline = Some(Instant::now() - Duration::from_millis(1));
                    }
                    let before = s.stats();
                    match s.submit(next_id, r, Instant::now()) {
                        Ok(()) => {
                            expect.insert(next_id, Expect { tokens: expected_windowed(&p, max_new, &base, window), max_new });
                            ids.push(next_id);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, SubmitError::DeviceLost);
                            prop_assert!(s.is_lost());
                            prop_assert_eq!(s.stats(), before);
                        }
                    }
                    next_id += 1;
                }
                Op::Step => {
                    s.step(&mut dev, &mut out);
                    st.take(&mut out);
                }
                Op::Cancel(i) => {
                    if !ids.is_empty() {
                        let id = ids[i % ids.len()];
                        let live = s.contains(id);
                        prop_assert_eq!(s.cancel(id, &mut out), live);
                        st.take(&mut out);
                    }
                }
                Op::FailNext { fatal } => {
                    control.lock().unwrap().fail_next_step = Some(if fatal {
                        DeviceError::Lost("injected".into())
                    } else {
                        DeviceError::Backend("injected".into())
                    });
                }
                Op::NonFinite(i) => {
                    if !ids.is_empty() {
                        control.lock().unwrap().non_finite.insert(ids[i % ids.len()]);
                    }
                }
            }
            check(&s, &st, &ids, &expect)?;
        }
        control.lock().unwrap().fail_next_step = None;
        drain(&mut s, &mut dev, &mut st, 2000);
        check(&s, &st, &ids, &expect)?;
        for &id in &ids {
            prop_assert_eq!(st.terminals(id), 1, "request {} must end exactly once", id);
        }
    }
}
