//! What the golden tests share: a CPU device on a model, and a driver that runs several
//! sequences through it together, each with its own prefill chunk size, as the engine would.

#![allow(dead_code)]

use halo_cpu::CpuDevice;
use halo_hal::{Device, LoadOptions, SampleRequest, SeqStep, StepBatch, WarmupRequest};
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
pub fn generate_together(
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
