//! Helpers shared by the scheduler tests: a scheduler over a scripted device, a driver that
//! checks the invariants after every step, and the expected output of the scripted device.
#![allow(dead_code)]

use halo_engine::testing::{Mode, ScriptedDevice};
use halo_engine::{
    EngineConfig, Event, GenerateRequest, Output, Scheduler, SchedulerConfig, StepOutcome,
};
use halo_hal::SampleRequest;
use std::collections::HashMap;

pub const VOCAB: usize = 512;

pub struct Setup {
    pub blocks: usize,
    pub block_size: usize,
    pub budget: usize,
    pub max_seqs: usize,
    pub caching: bool,
    pub eos: Vec<u32>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            blocks: 64,
            block_size: 4,
            budget: 64,
            max_seqs: 16,
            caching: true,
            eos: vec![],
        }
    }
}

impl Setup {
    pub fn build(&self) -> (Scheduler, ScriptedDevice) {
        self.build_with(None)
    }

    pub fn build_with(
        &self,
        tokenizer: Option<std::sync::Arc<tokenizers::Tokenizer>>,
    ) -> (Scheduler, ScriptedDevice) {
        let ec = EngineConfig {
            max_concurrent_requests: 1000,
            ..Default::default()
        };
        let limits = ec.limits(4096, self.blocks * self.block_size);
        let cfg = SchedulerConfig {
            max_batch_tokens: self.budget,
            max_batch_seqs: self.max_seqs,
            enable_prefix_caching: self.caching,
            limits,
            vocab_size: VOCAB,
            eos_token_ids: self.eos.clone(),
        };
        let dev =
            ScriptedDevice::new(Mode::Echo, VOCAB, 4096).ready(self.block_size, self.blocks, 4096);
        (
            Scheduler::new(cfg, self.blocks, self.block_size, tokenizer, None),
            dev,
        )
    }
}

/// The greedy tokens the scripted device produces for `prompt`, alone and unpreempted.
pub fn expected(prompt: &[u32], n: usize) -> Vec<u32> {
    expected_with(prompt, n, &SampleRequest::greedy())
}

pub fn expected_with(prompt: &[u32], n: usize, base: &SampleRequest) -> Vec<u32> {
    expected_windowed(prompt, n, base, None)
}

/// As [`expected_with`] for a device that attends only the last `window` positions
/// ([`ScriptedDevice::with_window`]).
pub fn expected_windowed(
    prompt: &[u32],
    n: usize,
    base: &SampleRequest,
    window: Option<usize>,
) -> Vec<u32> {
    let mut hist = prompt.to_vec();
    let mut out = Vec::new();
    for i in 0..n {
        let mut req = base.clone();
        req.rng_offset = i as u64;
        let from = window.map_or(0, |w| hist.len().saturating_sub(w));
        let t = ScriptedDevice::expected_next(VOCAB, &hist[from..], &req);
        hist.push(t);
        out.push(t);
    }
    out
}

/// Everything each request received.
#[derive(Default, Debug)]
pub struct Streams {
    pub events: HashMap<u64, Vec<Event>>,
}

impl Streams {
    pub fn take(&mut self, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            let evs = self.events.entry(o.id).or_default();
            assert!(
                !evs.last().is_some_and(|e| e.is_terminal()),
                "request {} got an event after its terminal one",
                o.id
            );
            evs.push(o.event);
        }
    }

    pub fn tokens(&self, id: u64) -> Vec<u32> {
        self.events[&id]
            .iter()
            .flat_map(|e| match e {
                Event::Tokens { token_ids, .. } => token_ids.clone(),
                _ => vec![],
            })
            .collect()
    }

    pub fn text(&self, id: u64) -> String {
        self.events[&id]
            .iter()
            .map(|e| match e {
                Event::Tokens { text, .. } => text.as_str(),
                _ => "",
            })
            .collect()
    }

    pub fn terminal(&self, id: u64) -> Option<&Event> {
        self.events.get(&id)?.last().filter(|e| e.is_terminal())
    }

    pub fn terminals(&self, id: u64) -> usize {
        self.events
            .get(&id)
            .map_or(0, |v| v.iter().filter(|e| e.is_terminal()).count())
    }
}

/// Steps until no work is left (at most `max_steps`), checking the invariants after each step.
pub fn drain(
    s: &mut Scheduler,
    dev: &mut ScriptedDevice,
    streams: &mut Streams,
    max_steps: usize,
) -> usize {
    let mut out = Vec::new();
    let mut steps = 0;
    while s.has_work() {
        assert!(steps < max_steps, "no progress after {max_steps} steps");
        let outcome = s.step(dev, &mut out);
        if let StepOutcome::DeviceFailed(e) = &outcome {
            assert!(
                !matches!(e, halo_hal::DeviceError::BadBatch(_)),
                "scheduler built a bad batch: {e}"
            );
        }
        streams.take(&mut out);
        s.check_invariants().unwrap();
        steps += 1;
    }
    let free = s.block_manager().num_free();
    assert_eq!(
        free,
        s.block_manager().total(),
        "blocks leaked after draining"
    );
    steps
}

pub fn prompt(seed: u64, len: usize) -> Vec<u32> {
    (0..len as u64)
        .map(|i| {
            2 + (halo_hal::rng::mix64(seed.wrapping_mul(1000).wrapping_add(i)) % (VOCAB as u64 - 2))
                as u32
        })
        .collect()
}

pub fn ignore_eos(mut r: GenerateRequest) -> GenerateRequest {
    r.stop.ignore_eos = true;
    r
}
