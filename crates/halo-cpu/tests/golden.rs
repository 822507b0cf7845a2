//! Golden tests: transformers' own greedy continuations and logits (golden.json beside each
//! model) reproduced exactly by the CPU device, alone and inside mixed batches, for the shared
//! tiny-mha model and every feature fixture in tests/fixtures/models.

use halo_cpu::CpuDevice;
use halo_hal::{Device, LoadOptions, SampleRequest, SeqStep, StepBatch, WarmupRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};

const BLOCK: usize = 4;

struct Case {
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    margins: Vec<f64>,
    logits_head: Vec<f32>,
}

fn model_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    let mut dirs = vec![shared.join("models/tiny-mha")];
    if let Ok(entries) = std::fs::read_dir(root.join("tests/fixtures/models")) {
        let mut more: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("golden.json").is_file())
            .collect();
        more.sort();
        dirs.extend(more);
    }
    dirs
}

fn cases(dir: &Path) -> Vec<Case> {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt_ids: serde_json::from_value(c["prompt_ids"].clone()).unwrap(),
            greedy_ids: serde_json::from_value(c["greedy_ids"].clone()).unwrap(),
            margins: serde_json::from_value(c["margins"].clone()).unwrap(),
            logits_head: serde_json::from_value(c["last_prompt_logits_head"].clone()).unwrap(),
        })
        .collect()
}

fn device(dir: &Path, blocks: usize) -> CpuDevice {
    let mut d = CpuDevice::with_threads(2).unwrap();
    d.load(dir, &LoadOptions::default())
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
    prompt_len: usize,
    /// Positions already in the KV cache.
    done: usize,
    blocks: Vec<u32>,
    out: Vec<u32>,
}

impl Run {
    fn new(id: u64, prompt: &[u32], blocks: Vec<u32>) -> Run {
        Run {
            id,
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            done: 0,
            blocks,
            out: vec![],
        }
    }

    /// The next piece of work: up to `chunk` prompt tokens, or the one decode token.
    fn next_step(&self, chunk: usize) -> SeqStep {
        let end = if self.done < self.prompt_len {
            (self.done + chunk).min(self.prompt_len)
        } else {
            self.done + 1
        };
        SeqStep {
            seq_id: self.id,
            tokens: self.tokens[self.done..end].to_vec(),
            start_pos: self.done,
            block_table: self.blocks.clone(),
            sample: (end >= self.prompt_len).then(SampleRequest::greedy),
        }
    }
}

/// Runs all prompts together, each with its own prefill chunk size, until each has `n` tokens.
fn generate_together(
    d: &mut CpuDevice,
    prompts: &[&[u32]],
    chunks: &[usize],
    n: usize,
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
                .map(|&i| runs[i].next_step(chunks[i]))
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

/// Greedy ids must match exactly wherever transformers' own choice was not a near-tie; past a
/// near-tie (margin below `tie`) the continuation may legitimately differ.
fn assert_ids(dir: &Path, what: &str, got: &[u32], case: &Case, tie: f64) {
    for (i, (g, w)) in got.iter().zip(&case.greedy_ids).enumerate() {
        if g != w {
            assert!(
                case.margins[i] < tie,
                "{} {what}: token {i} is {g}, transformers chose {w} (margin {})",
                dir.display(),
                case.margins[i]
            );
            return;
        }
    }
}

#[test]
fn golden_greedy_ids_alone_exact() {
    for dir in model_dirs() {
        let mut d = device(&dir, 256);
        for (ci, case) in cases(&dir).iter().enumerate() {
            let got = generate_together(
                &mut d,
                &[&case.prompt_ids],
                &[usize::MAX],
                case.greedy_ids.len(),
            );
            assert_eq!(got[0], case.greedy_ids, "{} case {ci}", dir.display());
        }
    }
}

#[test]
fn golden_logits_within_1e4() {
    for dir in model_dirs() {
        let mut d = device(&dir, 256);
        for (ci, case) in cases(&dir).iter().enumerate() {
            let blocks: Vec<u32> = (0..case.prompt_ids.len().div_ceil(BLOCK) as u32).collect();
            let batch = StepBatch {
                seqs: vec![SeqStep {
                    seq_id: 1,
                    tokens: case.prompt_ids.clone(),
                    start_pos: 0,
                    block_table: blocks,
                    sample: Some(SampleRequest::greedy()),
                }],
            };
            let logits = d.logits(&batch).unwrap();
            for (i, (a, b)) in logits.iter().zip(&case.logits_head).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{} case {ci} logit {i}: {a} vs {b}",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn golden_ids_in_mixed_batches_with_chunked_prefill() {
    for dir in model_dirs() {
        let cases = cases(&dir);
        let mut d = device(&dir, 512);
        let prompts: Vec<&[u32]> = cases.iter().map(|c| c.prompt_ids.as_slice()).collect();
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| generate_together(&mut d, &[p], &[usize::MAX], 48).remove(0))
            .collect();
        // Different chunk sizes put prefill chunks and decode tokens of others in one step.
        for chunks in [[usize::MAX, 3, 1, 7], [5, usize::MAX, 2, 16]] {
            let got = generate_together(&mut d, &prompts, &chunks, 48);
            for (ci, case) in cases.iter().enumerate() {
                // The kernels are batch invariant: a sequence's ids are exactly its lone run's,
                // whatever else shares the step and however its prompt is chunked.
                assert_eq!(
                    got[ci],
                    alone[ci],
                    "{} case {ci} chunks {chunks:?}",
                    dir.display()
                );
                // And transformers' own ids, exact up to its first near-tie.
                assert_ids(
                    &dir,
                    &format!("case {ci} chunks {chunks:?}"),
                    &got[ci],
                    case,
                    1e-3,
                );
            }
        }
    }
}
