//! What the golden tests share: a CPU device on a model, and a driver that runs several
//! sequences through it together, each with its own prefill chunk size, as the engine would.

#![allow(dead_code)]

use halo_cpu::CpuDevice;
use halo_hal::{Device, LoadOptions, SampleRequest, SeqStep, StepBatch, WarmupRequest};
use serde_json::Value;
use std::path::Path;

pub const BLOCK: usize = 4;

pub fn device(dir: &Path, blocks: usize) -> CpuDevice {
    device_with(dir, blocks, &LoadOptions::default())
}

pub fn device_with(dir: &Path, blocks: usize, options: &LoadOptions) -> CpuDevice {
    let mut d = CpuDevice::with_threads(2).unwrap();
    d.load(dir, options)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let req = WarmupRequest {
        block_size: BLOCK,
        num_blocks: Some(blocks),
        max_seq_len: 512,
        ..Default::default()
    };
    d.warmup(&req).unwrap();
    d
}

/// A sequence being generated: its tokens so far and its (deliberately scattered) blocks.
struct Run {
    id: u64,
    tokens: Vec<u32>,
    /// Positions already in the KV cache.
    done: usize,
    blocks: Vec<u32>,
    out: Vec<u32>,
    /// The RoPE regime its KV is computed in.
    long_rope: bool,
}

impl Run {
    fn new(id: u64, prompt: &[u32], blocks: Vec<u32>) -> Run {
        Run {
            id,
            tokens: prompt.to_vec(),
            done: 0,
            blocks,
            out: vec![],
            long_rope: false,
        }
    }

    /// The next piece of work: up to `chunk` tokens still without KV (the prompt, or the whole
    /// sequence again after a regime switch), or the one decode token. As the engine does
    /// (halo_engine::rope_regime): the sequence is long-regime when its length exceeds
    /// `long_above`, and it is recomputed from position 0 when it crosses.
    fn next_step(&mut self, chunk: usize, long_above: Option<usize>) -> SeqStep {
        let long = long_above.is_some_and(|n| self.tokens.len() > n);
        if long != self.long_rope {
            self.long_rope = long;
            self.done = 0;
        }
        let end = self.done.saturating_add(chunk).min(self.tokens.len());
        SeqStep {
            seq_id: self.id,
            tokens: self.tokens[self.done..end].to_vec(),
            start_pos: self.done,
            block_table: self.blocks.clone(),
            sample: (end == self.tokens.len()).then(SampleRequest::greedy),
            long_rope: self.long_rope,
        }
    }
}

/// Each case run alone, its prompt in one chunk, gives transformers' greedy ids exactly
/// (`long_above` as in [`generate_together_regimes`]); `what` names the model in failures.
pub fn assert_greedy_alone(
    d: &mut CpuDevice,
    cases: &[Case],
    long_above: Option<usize>,
    what: &str,
) {
    for (ci, case) in cases.iter().enumerate() {
        let got = generate_together_regimes(
            d,
            &[&case.prompt_ids],
            &[usize::MAX],
            case.greedy_ids.len(),
            long_above,
        );
        assert_eq!(got[0], case.greedy_ids, "{what} case {ci}");
    }
}

/// Runs all prompts together, each with its own prefill chunk size, until each has `n` tokens.
pub fn generate_together(
    d: &mut CpuDevice,
    prompts: &[&[u32]],
    chunks: &[usize],
    n: usize,
) -> Vec<Vec<u32>> {
    generate_together_regimes(d, prompts, chunks, n, None)
}

/// As [`generate_together`] for a model whose RoPE switches to its long set for sequences
/// longer than `long_above` (LongRoPE's original length): each step names its sequence's
/// regime, and a sequence that crosses is recomputed, as the engine does.
pub fn generate_together_regimes(
    d: &mut CpuDevice,
    prompts: &[&[u32]],
    chunks: &[usize],
    n: usize,
    long_above: Option<usize>,
) -> Vec<Vec<u32>> {
    let per_seq = (prompts.iter().map(|p| p.len()).max().unwrap() + n).div_ceil(BLOCK);
    let mut runs: Vec<Run> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // Interleave blocks of different sequences, in reverse, to exercise the block table.
            let blocks = (0..per_seq)
                .rev()
                .map(|b| (b * prompts.len() + i) as u32)
                .collect();
            Run::new(i as u64, p, blocks)
        })
        .collect();
    while runs.iter().any(|r| r.out.len() < n) {
        let active: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].out.len() < n).collect();
        let batch = StepBatch {
            seqs: active
                .iter()
                .map(|&i| runs[i].next_step(chunks[i], long_above))
                .collect(),
        };
        let out = d.step(&batch).unwrap();
        let mut results = out.results.into_iter();
        for (&i, s) in active.iter().zip(&batch.seqs) {
            let r = &mut runs[i];
            r.done = s.end_pos();
            if s.sample.is_some() {
                let tok = results.next().unwrap().outcome.unwrap().token;
                r.tokens.push(tok);
                r.out.push(tok);
            }
        }
    }
    runs.into_iter().map(|r| r.out).collect()
}

/// One golden case of a fixture's golden.json (transformers' greedy run of one prompt).
pub struct Case {
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub margins: Vec<f64>,
    pub logits_head: Vec<f32>,
}

/// The golden cases beside a model (transformers' own: every case has prompt logits).
pub fn cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("golden.json")).unwrap();
    let cases = parse_cases(&serde_json::from_str(&text).unwrap());
    assert!(
        cases.iter().all(|c| !c.logits_head.is_empty()),
        "{}: a case without prompt logits",
        dir.display()
    );
    cases
}

/// The `cases` of a golden document (`logits_head` is empty where a case has no
/// `last_prompt_logits_head`, as llama.cpp's cases do not).
pub fn parse_cases(golden: &Value) -> Vec<Case> {
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt_ids: serde_json::from_value(c["prompt_ids"].clone()).unwrap(),
            greedy_ids: serde_json::from_value(c["greedy_ids"].clone()).unwrap(),
            // llama.cpp reports no margin for a token that ends inside a UTF-8 character:
            // NaN, which no tie check accepts.
            margins: serde_json::from_value::<Vec<Option<f64>>>(c["margins"].clone())
                .unwrap()
                .into_iter()
                .map(|m| m.unwrap_or(f64::NAN))
                .collect(),
            logits_head: c
                .get("last_prompt_logits_head")
                .map(|v| serde_json::from_value(v.clone()).unwrap())
                .unwrap_or_default(),
        })
        .collect()
}

/// Greedy ids equal transformers' up to its first near-tie (margin below `tie`), past which a
/// continuation may legitimately differ.
pub fn assert_ids_up_to_tie(what: &str, got: &[u32], case: &Case, tie: f64) {
    for (i, (g, w)) in got.iter().zip(&case.greedy_ids).enumerate() {
        if g != w {
            assert!(
                case.margins[i] < tie,
                "{what}: token {i} is {g}, transformers chose {w} (margin {})",
                case.margins[i]
            );
            return;
        }
    }
}

/// The logits after one prefill of `prompt` (in LongRoPE's long regime when `long_rope`).
pub fn prompt_logits(d: &mut CpuDevice, prompt: &[u32], long_rope: bool) -> Vec<f32> {
    let batch = StepBatch {
        seqs: vec![SeqStep {
            seq_id: 1,
            tokens: prompt.to_vec(),
            start_pos: 0,
            block_table: (0..prompt.len().div_ceil(BLOCK) as u32).collect(),
            sample: Some(SampleRequest::greedy()),
            long_rope,
        }],
    };
    d.logits(&batch).unwrap()
}
