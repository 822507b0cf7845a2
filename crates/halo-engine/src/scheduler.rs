//! The synchronous core of the engine: queues, admission, the per-step plan, and applying what
//! the device returned. No threads and no clocks other than `Instant::now()`, so tests drive it
//! step by step with a scripted device and check the invariants after every operation.
//!
//! Each step:
//! 1. fail requests whose deadline passed (cancellations are applied the moment they arrive);
//! 2. decode first: every running sequence that is decoding gets one token, oldest first; when
//!    blocks run out, the most recently admitted sequence is preempted (blocks freed, requeued at
//!    the front of the queue for recomputation of prompt + generated tokens, rng offsets kept);
//! 3. prefill chunks for running sequences still prefilling, under the token budget (chunked
//!    prefill keeps decode latency flat); a chunk shrinks to the blocks available, and only
//!    newer, unscheduled sequences are preempted for it;
//! 4. admit waiting requests in order (prefix-cache lookup first) while the budget, the sequence
//!    cap and the blocks allow, unless this step preempted (admitting now would only thrash);
//! 5. run the batch, then apply results: extend KV, register full blocks in the prefix cache,
//!    append sampled tokens, apply stop rules, finish and free.
//!
//! Progress: admission guarantees every request fits the pool alone, and the oldest running
//! sequence may preempt every newer one, so the oldest always advances.
//!
//! Sliding windows ([`Scheduler::with_kv_window`]): when every layer of the model attends
//! through a window, a block wholly older than the window of a sequence's next position can
//! never be read again, so step 5 releases it and leaves [`FREED_BLOCK`] in its table entry.
//! A sequence then holds about `window` tokens of KV however long it grows. Released blocks
//! that were registered stay in the prefix cache (evictable), so a later request, or this one
//! recomputed after preemption, can still hit them.

use crate::block_manager::BlockManager;
use crate::config::Limits;
use crate::error::SubmitError;
use crate::event::{Event, Failure, FailureKind};
use crate::observer::{EngineObserver, LiveStats, Outcome, StepReport};
use crate::request::GenerateRequest;
use crate::rope_regime::RopeRegime;
use crate::sequence::{SeqState, Sequence};
use crate::validate::validate_request;
use halo_hal::{Device, DeviceError, SeqFailure, SeqStep, StepBatch, FREED_BLOCK};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokenizers::Tokenizer;

#[path = "scheduler_invariants.rs"]
mod invariants;

/// What the scheduler needs to know beyond the KV layout.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub max_batch_tokens: usize,
    pub max_batch_seqs: usize,
    pub enable_prefix_caching: bool,
    pub limits: Limits,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
}

/// An event for the request with engine id `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub id: u64,
    pub event: Event,
}

/// What one call to [`Scheduler::step`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    /// Nothing to run.
    Idle,
    Ran(StepReport),
    /// The device failed this step; the batch's requests failed (every request when fatal).
    DeviceFailed(DeviceError),
}

struct Planned {
    id: u64,
    len: usize,
    sample: bool,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    blocks: BlockManager,
    seqs: HashMap<u64, Sequence>,
    waiting: VecDeque<u64>,
    /// In admission order: the last one is the preemption victim.
    running: Vec<u64>,
    tokenizer: Option<Arc<Tokenizer>>,
    observer: Option<Arc<dyn EngineObserver>>,
    stats: LiveStats,
    lost: bool,
    /// The attention window of every layer (the widest when they differ); `None` when any
    /// layer attends to the whole history.
    kv_window: Option<usize>,
    /// When sequences switch to the long RoPE regime (crate::rope_regime).
    rope_regime: RopeRegime,
}

impl Scheduler {
    /// `tokenizer` produces text deltas and stop-sequence matching; without one, events carry
    /// token ids only (scheduler tests).
    pub fn new(
        cfg: SchedulerConfig,
        num_blocks: usize,
        block_size: usize,
        tokenizer: Option<Arc<Tokenizer>>,
        observer: Option<Arc<dyn EngineObserver>>,
    ) -> Self {
        let blocks = BlockManager::new(num_blocks, block_size, cfg.enable_prefix_caching);
        Scheduler {
            cfg,
            blocks,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            tokenizer,
            observer,
            stats: LiveStats::default(),
            lost: false,
            kv_window: None,
            rope_regime: RopeRegime::single(),
        }
    }

    /// For a model whose RoPE has a long regime: each sequence runs in the regime of its
    /// length, and one that crosses into the long regime is recomputed (crate::rope_regime).
    pub fn with_rope_regime(mut self, regime: RopeRegime) -> Self {
        self.rope_regime = regime;
        self
    }

    /// For a model whose every layer attends through a sliding window of at most `window`
    /// tokens: release blocks outside the window as sequences grow (see the module comment).
    /// `None` (or 0) keeps every block.
    pub fn with_kv_window(mut self, window: Option<usize>) -> Self {
        self.kv_window = window.filter(|&w| w > 0);
        self
    }

    pub fn kv_window(&self) -> Option<usize> {
        self.kv_window
    }

    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }

    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.seqs.contains_key(&id)
    }

    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    /// Live state plus the counters since start.
    pub fn stats(&self) -> LiveStats {
        LiveStats {
            free_blocks: self.blocks.num_free(),
            total_blocks: self.blocks.total(),
            cached_blocks: self.blocks.num_evictable(),
            waiting: self.waiting.len(),
            running: self.running.len(),
            ..self.stats.clone()
        }
    }

    /// Queues a request under engine id `id` (unique while in flight). Checks everything first;
    /// on error nothing changed.
    pub fn submit(
        &mut self,
        id: u64,
        req: GenerateRequest,
        arrival: Instant,
    ) -> Result<(), SubmitError> {
        self.submit_salted(id, req, arrival, Arc::from(""))
    }

    /// As [`Self::submit`], with a prefix-cache salt: only requests with the same salt share
    /// cached blocks (the empty salt is one shared scope).
    pub fn submit_salted(
        &mut self,
        id: u64,
        req: GenerateRequest,
        arrival: Instant,
        cache_salt: Arc<str>,
    ) -> Result<(), SubmitError> {
        if self.lost {
            return Err(SubmitError::DeviceLost);
        }
        validate_request(&req, &self.cfg.limits, self.cfg.vocab_size)?;
        if self.seqs.len() >= self.cfg.limits.max_concurrent_requests {
            return Err(SubmitError::QueueFull {
                max: self.cfg.limits.max_concurrent_requests,
            });
        }
        let mut seq = Sequence::new(id, req, arrival, self.tokenizer.is_some());
        seq.cache_salt = cache_salt;
        self.seqs.insert(id, seq);
        self.waiting.push_back(id);
        Ok(())
    }

    /// Cancels a request wherever it is; its blocks are free when this returns. False when the
    /// request already ended (its terminal event was already produced).
    pub fn cancel(&mut self, id: u64, out: &mut Vec<Output>) -> bool {
        let tokenizer = self.tokenizer.clone();
        let Some(s) = self.seqs.get_mut(&id) else {
            return false;
        };
        // text held back (an unfinished byte run, a partial stop match) goes out before the end
        let text = s.flush_text(tokenizer.as_deref());
        if !text.is_empty() {
            out.push(Output {
                id,
                event: Event::Tokens {
                    token_ids: Vec::new(),
                    text,
                    logprobs: Vec::new(),
                    top: Vec::new(),
                },
            });
        }
        self.fail(id, FailureKind::Cancelled, "cancelled by the caller", out);
        true
    }

    /// Fails a request wherever it is with `kind` (the engine drops a caller that stopped
    /// reading). False when the request already ended.
    pub fn abort(
        &mut self,
        id: u64,
        kind: FailureKind,
        message: &str,
        out: &mut Vec<Output>,
    ) -> bool {
        if !self.seqs.contains_key(&id) {
            return false;
        }
        self.fail(id, kind, message, out);
        true
    }

    /// The device came back after a loss (its KV contents are gone): forget cached prefixes and
    /// accept submits again. Every request was failed by [`Self::fail_all_lost`] before.
    pub fn recovered(&mut self) {
        self.blocks.forget_cached();
        self.lost = false;
    }

    /// After a panic escaped a step (a kernel's assert, an `expect` in bookkeeping): the block
    /// pool and the running set can no longer be trusted. Fails every request that held KV or
    /// was mid-step (the batch, and any other running sequence) with DeviceLost and the tokens
    /// it was sent, rebuilds an empty pool (cached prefixes forgotten, as after a device loss),
    /// and keeps queued requests that held nothing. Never touches the old reference counts.
    pub fn recover_from_panic(&mut self, out: &mut Vec<Output>) {
        self.stats.step_panics += 1;
        let now = Instant::now();
        let queued: std::collections::HashSet<u64> = self.waiting.iter().copied().collect();
        let mut doomed: Vec<u64> = self
            .seqs
            .values()
            .filter(|s| !(queued.contains(&s.id) && s.blocks.is_empty() && s.num_computed == 0))
            .map(|s| s.id)
            .collect();
        doomed.sort_unstable();
        for id in doomed {
            let sent = self.seqs[&id].tokens_sent;
            let event = self.failure_event(
                id,
                FailureKind::DeviceLost { tokens_sent: sent },
                "a device step failed (panicked); the worker recovered",
                now,
            );
            self.seqs.remove(&id);
            self.stats.requests_failed += 1;
            if let (Some(o), Event::Failed(f)) = (&self.observer, &event) {
                o.on_request_finished(Outcome::Failed(f.kind), &f.usage, &f.timings);
            }
            out.push(Output { id, event });
        }
        self.blocks = self.blocks.rebuilt();
        self.running.clear();
        let seqs = &mut self.seqs;
        self.waiting.retain(|id| seqs.contains_key(id));
        for s in seqs.values_mut() {
            s.block_hashes.clear();
            s.state = SeqState::Waiting;
        }
    }

    /// Fails every request in flight with DeviceLost and refuses all further submits.
    pub fn fail_all_lost(&mut self, out: &mut Vec<Output>) {
        self.lost = true;
        let ids: Vec<u64> = self
            .running
            .iter()
            .chain(self.waiting.iter())
            .copied()
            .collect();
        for id in ids {
            let sent = self.seqs[&id].tokens_sent;
            self.fail(
                id,
                FailureKind::DeviceLost { tokens_sent: sent },
                "the device was lost",
                out,
            );
        }
    }

    /// One scheduler iteration: plan, run on `device`, apply. Events go to `out`.
    pub fn step<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
        out: &mut Vec<Output>,
    ) -> StepOutcome {
        let now = Instant::now();
        self.reap_expired(now, out);
        let plan = self.plan(now);
        if plan.is_empty() {
            return StepOutcome::Idle;
        }
        let batch = self.build_batch(&plan);
        let started = Instant::now();
        let result = device
            .step(&batch)
            .and_then(|o| o.validate_against(&batch, self.cfg.vocab_size).map(|_| o));
        let duration = started.elapsed();
        match result {
            Ok(output) => {
                let report = StepReport {
                    duration,
                    num_tokens: batch.num_tokens(),
                    num_prefill_tokens: plan
                        .iter()
                        .filter(|p| !self.seqs[&p.id].is_decoding())
                        .map(|p| p.len)
                        .sum(),
                    num_decode_tokens: plan
                        .iter()
                        .filter(|p| self.seqs[&p.id].is_decoding())
                        .count(),
                    num_seqs: plan.len(),
                    device: output.timings.clone(),
                };
                // The batch shares each sequence's penalty counts; dropping it first lets
                // `apply` update them in place instead of copying them.
                drop(batch);
                self.apply(plan, output.results, out);
                self.stats.steps += 1;
                if let Some(o) = &self.observer {
                    o.on_step(&report);
                }
                StepOutcome::Ran(report)
            }
            Err(e) => {
                if e.is_fatal() {
                    tracing::error!(error = %e, "device failed fatally; failing every request");
                    self.fail_all_lost(out);
                } else {
                    tracing::error!(error = %e, seqs = plan.len(), "device step failed; failing its batch");
                    for p in &plan {
                        self.fail(
                            p.id,
                            FailureKind::Internal,
                            "the device failed the step",
                            out,
                        );
                    }
                }
                StepOutcome::DeviceFailed(e)
            }
        }
    }

    fn reap_expired(&mut self, now: Instant, out: &mut Vec<Output>) {
        let expired: Vec<u64> = self
            .seqs
            .values()
            .filter(|s| s.req.deadline.is_some_and(|d| d <= now))
            .map(|s| s.id)
            .collect();
        for id in expired {
            self.fail(
                id,
                FailureKind::DeadlineExceeded,
                "the request's deadline passed",
                out,
            );
        }
    }

    fn plan(&mut self, now: Instant) -> Vec<Planned> {
        let bs = self.blocks.block_size();
        let mut budget = self.cfg.max_batch_tokens;
        let mut plan: Vec<Planned> = Vec::new();
        let mut in_plan: HashMap<u64, ()> = HashMap::with_capacity(self.running.len());
        let mut preempted = false;

        // 0. A sequence whose next step crosses into the long RoPE regime recomputes its KV
        //    (transformers' generate() drops its cache there); it keeps its place in `running`
        //    and is prefilled again in step 2.
        for i in 0..self.running.len() {
            let s = &self.seqs[&self.running[i]];
            if s.num_computed > 0 && !s.long_rope && self.rope_regime.is_long(s.tokens.len()) {
                self.recompute_in_long_regime(i);
            }
        }

        // 1. Decode, oldest first. The victim is always the newest running sequence, which is
        //    never already planned (it has not been visited yet, or it is the current one).
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            if !self.seqs[&id].is_decoding() {
                i += 1;
                continue;
            }
            let mut scheduled = false;
            loop {
                let need = self.seqs[&id].blocks_needed(1, bs);
                if need <= self.blocks.num_free() {
                    self.grow(id, 1);
                    scheduled = true;
                    break;
                }
                let victim = self.running.len() - 1;
                self.preempt(victim);
                preempted = true;
                if victim == i {
                    break;
                }
            }
            if !scheduled {
                break; // the current sequence was the newest and is now requeued
            }
            plan.push(Planned {
                id,
                len: 1,
                sample: true,
            });
            in_plan.insert(id, ());
            budget -= 1;
            i += 1;
        }

        // 2. Prefill chunks of running sequences, oldest first.
        let mut i = 0;
        while i < self.running.len() && budget > 0 && plan.len() < self.cfg.max_batch_seqs {
            let id = self.running[i];
            if in_plan.contains_key(&id) || self.seqs[&id].is_decoding() {
                i += 1;
                continue;
            }
            loop {
                let s = &self.seqs[&id];
                let chunk = s
                    .remaining()
                    .min(budget)
                    .min(s.coverable(self.blocks.num_free(), bs));
                if chunk > 0 {
                    self.grow(id, chunk);
                    let sample = chunk == self.seqs[&id].remaining();
                    plan.push(Planned {
                        id,
                        len: chunk,
                        sample,
                    });
                    in_plan.insert(id, ());
                    budget -= chunk;
                    break;
                }
                let victim = (i + 1..self.running.len())
                    .rev()
                    .find(|&j| !in_plan.contains_key(&self.running[j]));
                match victim {
                    Some(j) => {
                        self.preempt(j);
                        preempted = true;
                    }
                    None => break, // wait for blocks; older sequences are making progress
                }
            }
            i += 1;
        }

        // 3. Admission.
        while !preempted && budget > 0 && self.running.len() < self.cfg.max_batch_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let caching = self.cfg.enable_prefix_caching;
            let s = self.seqs.get_mut(&id).expect("waiting ids are live");
            if s.num_computed == 0 {
                // the regime of the KV it is about to compute, from its whole length
                s.long_rope = self.rope_regime.is_long(s.tokens.len());
            }
            if caching && s.blocks.is_empty() {
                let max_blocks = (s.tokens.len() - 1) / bs;
                let (blocks, hashes) =
                    self.blocks
                        .match_prefix(&s.cache_scope(), &s.tokens, max_blocks);
                s.num_computed = blocks.len() * bs;
                s.blocks = blocks;
                s.block_hashes = hashes;
            }
            let chunk = s
                .remaining()
                .min(budget)
                .min(s.coverable(self.blocks.num_free(), bs));
            if chunk == 0 {
                let blocks = std::mem::take(&mut s.blocks);
                s.block_hashes.clear();
                s.num_computed = 0;
                self.blocks.release_all(&blocks);
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
            s.state = SeqState::Running;
            let hit = s.num_computed;
            if !s.timer.was_scheduled() {
                self.stats.requests_admitted += 1;
                self.stats.prompt_tokens += s.prompt.len() as u64;
                s.cached_prompt_tokens = hit.min(s.prompt.len()) as u32;
            }
            s.timer.scheduled(now);
            if hit > 0 {
                self.stats.prefix_cache_hit_tokens += hit as u64;
                if let Some(o) = &self.observer {
                    o.on_prefix_cache_hit(hit);
                }
            }
            self.grow(id, chunk);
            let sample = chunk == self.seqs[&id].remaining();
            plan.push(Planned {
                id,
                len: chunk,
                sample,
            });
            budget -= chunk;
        }
        plan
    }

    /// Adds blocks so the next `n` tokens of `id` are covered; the caller checked they exist.
    fn grow(&mut self, id: u64, n: usize) {
        let s = self.seqs.get_mut(&id).expect("planned ids are live");
        for _ in 0..s.blocks_needed(n, self.blocks.block_size()) {
            let b = self
                .blocks
                .allocate()
                .expect("coverable() counted these free blocks");
            s.blocks.push(b);
        }
    }

    /// Moves `running[idx]` back to the front of the queue, freeing its blocks.
    fn preempt(&mut self, idx: usize) {
        let id = self.running.remove(idx);
        self.drop_kv(id);
        let s = self.seqs.get_mut(&id).expect("running ids are live");
        s.state = SeqState::Waiting;
        s.timer.preempted();
        self.waiting.push_front(id);
        self.stats.preemptions += 1;
        if let Some(o) = &self.observer {
            o.on_preemption();
        }
    }

    /// Releases the KV of `id` (its tokens, rng offsets and streamed state stay): its next
    /// chunk is a prefill of prompt + generated tokens from position 0.
    fn drop_kv(&mut self, id: u64) {
        let s = self.seqs.get_mut(&id).expect("running ids are live");
        let blocks = std::mem::take(&mut s.blocks);
        s.block_hashes.clear();
        s.num_computed = 0;
        self.blocks.release_all(&blocks);
    }

    /// Recomputes `running[idx]`, whose KV is short-regime and whose next step is long: its
    /// KV is dropped as for a preemption, but it stays running in place (its seniority kept),
    /// reuses any long-regime prefix in the cache, and is prefilled again; the token sampled
    /// after that prefill is its next generated token, so clients see nothing but the latency.
    fn recompute_in_long_regime(&mut self, idx: usize) {
        let id = self.running[idx];
        self.drop_kv(id);
        let bs = self.blocks.block_size();
        let s = self.seqs.get_mut(&id).expect("running ids are live");
        s.long_rope = true;
        if self.cfg.enable_prefix_caching {
            let max_blocks = (s.tokens.len() - 1) / bs;
            let (blocks, hashes) =
                self.blocks
                    .match_prefix(&s.cache_scope(), &s.tokens, max_blocks);
            s.num_computed = blocks.len() * bs;
            s.blocks = blocks;
            s.block_hashes = hashes;
            if s.num_computed > 0 {
                self.stats.prefix_cache_hit_tokens += s.num_computed as u64;
                if let Some(o) = &self.observer {
                    o.on_prefix_cache_hit(s.num_computed);
                }
            }
        }
        self.stats.rope_recomputes += 1;
    }

    fn build_batch(&self, plan: &[Planned]) -> StepBatch {
        let seqs = plan
            .iter()
            .map(|p| {
                let s = &self.seqs[&p.id];
                let start = s.num_computed;
                SeqStep {
                    seq_id: p.id,
                    tokens: s.tokens[start..start + p.len].to_vec(),
                    start_pos: start,
                    block_table: s.blocks.clone(),
                    sample: p.sample.then(|| s.sample_request()),
                    long_rope: s.long_rope,
                }
            })
            .collect();
        StepBatch { seqs }
    }

    fn apply(
        &mut self,
        plan: Vec<Planned>,
        results: Vec<halo_hal::SeqResult>,
        out: &mut Vec<Output>,
    ) {
        let now = Instant::now();
        let bs = self.blocks.block_size();
        let mut results = results.into_iter();
        let mut ended: Vec<(u64, Event)> = Vec::new();
        for p in plan {
            let s = self.seqs.get_mut(&p.id).expect("planned ids are live");
            s.num_computed += p.len;
            if self.cfg.enable_prefix_caching {
                for i in s.block_hashes.len()..s.num_computed / bs {
                    let parent = (i > 0).then(|| (s.blocks[i - 1], s.block_hashes[i - 1]));
                    let h = self.blocks.register(
                        s.blocks[i],
                        parent,
                        &s.cache_scope(),
                        &s.tokens[i * bs..(i + 1) * bs],
                    );
                    s.block_hashes.push(h);
                }
            }
            if let Some(w) = self.kv_window {
                release_outside_window(&mut self.blocks, s, w, self.cfg.enable_prefix_caching);
            }
            if !p.sample {
                continue;
            }
            let r = results
                .next()
                .expect("validate_against matched results to samples");
            let sampled = match r.outcome {
                Ok(t) => t,
                Err(SeqFailure::NonFiniteLogits) => {
                    ended.push((
                        p.id,
                        self.failure_event(p.id, FailureKind::Internal, "non-finite logits", now),
                    ));
                    continue;
                }
            };
            let tokenizer = self.tokenizer.as_deref();
            match s.accept(sampled, &self.cfg.eos_token_ids, tokenizer, now) {
                Ok(acc) => {
                    self.stats.generated_tokens += 1;
                    out.push(Output {
                        id: p.id,
                        event: acc.event,
                    });
                    if let Some((reason, stop)) = acc.finish {
                        ended.push((p.id, s.finished_event(reason, stop, now)));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "detokenization failed");
                    ended.push((
                        p.id,
                        self.failure_event(
                            p.id,
                            FailureKind::Internal,
                            "detokenization failed",
                            now,
                        ),
                    ));
                }
            }
        }
        if ended.is_empty() {
            return;
        }
        for (id, event) in ended {
            self.end(id, event, out);
        }
        let seqs = &self.seqs;
        self.running.retain(|id| seqs.contains_key(id));
    }

    fn failure_event(&self, id: u64, kind: FailureKind, message: &str, now: Instant) -> Event {
        let s = &self.seqs[&id];
        Event::Failed(Failure {
            kind,
            message: message.to_string(),
            usage: s.usage(),
            timings: s.timer.finish(now),
        })
    }

    /// Fails `id` now, wherever it is.
    fn fail(&mut self, id: u64, kind: FailureKind, message: &str, out: &mut Vec<Output>) {
        let event = self.failure_event(id, kind, message, Instant::now());
        self.end(id, event, out);
        match self.waiting.iter().position(|&w| w == id) {
            Some(i) => {
                self.waiting.remove(i);
            }
            None => self.running.retain(|&r| r != id),
        }
    }

    /// Removes `id` from the table (callers fix the queues), frees its blocks, counts the
    /// outcome and emits the terminal event.
    fn end(&mut self, id: u64, event: Event, out: &mut Vec<Output>) {
        let s = self.seqs.remove(&id).expect("ended ids are live");
        self.blocks.release_all(&s.blocks);
        let outcome = match &event {
            Event::Finished(f) => {
                self.stats.requests_finished += 1;
                Some((Outcome::Finished(f.reason), f.usage, f.timings))
            }
            Event::Failed(f) => {
                if f.kind == FailureKind::Cancelled {
                    self.stats.requests_cancelled += 1;
                } else {
                    self.stats.requests_failed += 1;
                }
                Some((Outcome::Failed(f.kind), f.usage, f.timings))
            }
            Event::Tokens { .. } => None,
        };
        if let (Some(o), Some((outcome, usage, timings))) = (&self.observer, outcome) {
            o.on_request_finished(outcome, &usage, &timings);
        }
        out.push(Output { id, event });
    }
}

/// Releases the leading blocks of `s` that no future query can read: the next query is at
/// position `num_computed` and sees keys from `num_computed + 1 - window` on, so block `i` is
/// dead once `(i + 1) * block_size <= num_computed + 1 - window`. With prefix caching a block is
/// kept until the block after it is registered, since registering names the parent block (an
/// already released parent could have been reused by then). Freed entries form a prefix of the
/// table, so the walk back from the newest dead block stops at the first one already freed.
fn release_outside_window(
    blocks: &mut BlockManager,
    s: &mut Sequence,
    window: usize,
    caching: bool,
) {
    let mut dead = (s.num_computed + 1).saturating_sub(window) / blocks.block_size();
    if caching {
        dead = dead.min(s.block_hashes.len().saturating_sub(1));
    }
    for i in (0..dead.min(s.blocks.len())).rev() {
        let b = std::mem::replace(&mut s.blocks[i], FREED_BLOCK);
        if b == FREED_BLOCK {
            break;
        }
        blocks.release(b);
    }
}
