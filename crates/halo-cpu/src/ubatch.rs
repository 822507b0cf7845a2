//! Splitting a step into passes of at most a few hundred tokens ("micro-batches", llama.cpp's
//! `n_ubatch`). A step of thousands of prefill tokens run as one pass through the layers needs
//! activations of thousands of rows: at bench-110m's width a 4096-token step's gate/up output
//! is 100 MB, past glibc's largest mmap threshold (32 MiB), so every layer mapped it afresh and
//! faulted it in page by page (`perf`: ~550 K page faults in the prefill of 32 prompts), and
//! none of it stayed in cache between one op and the next. Passes of [`UBATCH_TOKENS`] keep
//! every buffer in reused heap memory.
//!
//! The passes run in token order, so a later piece of a sequence attends to the keys and values
//! its earlier piece wrote into the cache, exactly as engine-level chunked prefill does; each
//! token's arithmetic does not depend on what else is in its pass (the kernels' batch
//! invariance), so the logits are the same bits as one pass would give.

use halo_hal::{SeqStep, StepBatch};

/// Most tokens one pass through the layers takes.
pub const UBATCH_TOKENS: usize = 512;

/// `batch` as consecutive batches of at most `limit` tokens (`limit >= 1`), in token order. A
/// sequence that straddles a boundary is cut in two: the earlier piece samples nothing, the
/// later one keeps the sequence's sample and starts where the earlier one ended. Every piece of
/// a sequence keeps its whole block table and RoPE regime.
pub fn split(batch: &StepBatch, limit: usize) -> Vec<StepBatch> {
    let limit = limit.max(1);
    let mut parts = Vec::new();
    let mut current = StepBatch { seqs: Vec::new() };
    let mut room = limit;
    for seq in &batch.seqs {
        let mut done = 0;
        loop {
            let left = seq.tokens.len() - done;
            let take = left.min(room);
            let last = take == left;
            current.seqs.push(SeqStep {
                seq_id: seq.seq_id,
                tokens: seq.tokens[done..done + take].to_vec(),
                start_pos: seq.start_pos + done,
                block_table: seq.block_table.clone(),
                sample: if last { seq.sample.clone() } else { None },
                long_rope: seq.long_rope,
            });
            done += take;
            room -= take;
            if room == 0 {
                parts.push(std::mem::replace(
                    &mut current,
                    StepBatch { seqs: Vec::new() },
                ));
                room = limit;
            }
            if last {
                break;
            }
        }
    }
    if !current.seqs.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_hal::SampleRequest;
    use proptest::prelude::*;

    fn seq(id: u64, start_pos: usize, n: usize, sample: bool) -> SeqStep {
        SeqStep {
            seq_id: id,
            tokens: (0..n as u32).map(|t| t + 100 * id as u32).collect(),
            start_pos,
            block_table: vec![id as u32, 7, 9],
            sample: sample.then(SampleRequest::greedy),
            long_rope: id % 2 == 1,
        }
    }

    #[test]
    fn a_sequence_across_a_boundary_is_cut_and_only_its_last_piece_samples() {
        let batch = StepBatch {
            seqs: vec![seq(0, 5, 3, true), seq(1, 0, 6, true), seq(2, 40, 1, true)],
        };
        let parts = split(&batch, 4);
        let shape: Vec<Vec<(u64, usize, usize, bool)>> = parts
            .iter()
            .map(|p| {
                p.seqs
                    .iter()
                    .map(|s| (s.seq_id, s.start_pos, s.tokens.len(), s.sample.is_some()))
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![(0, 5, 3, true), (1, 0, 1, false)],
                vec![(1, 1, 4, false)],
                vec![(1, 5, 1, true), (2, 40, 1, true)],
            ]
        );
    }

    #[test]
    fn a_batch_within_the_limit_is_one_part() {
        let batch = StepBatch {
            seqs: vec![seq(0, 0, 3, true), seq(1, 9, 1, false)],
        };
        assert_eq!(split(&batch, 4), vec![batch.clone()]);
        assert_eq!(split(&batch, UBATCH_TOKENS), vec![batch]);
    }

    proptest! {
        #[test]
        fn parts_hold_every_token_once_in_order(
            lens in prop::collection::vec((1usize..40, 0usize..100, any::<bool>()), 1..12),
            limit in 1usize..64,
        ) {
            let batch = StepBatch {
                seqs: lens
                    .iter()
                    .enumerate()
                    .map(|(i, &(n, start, sample))| seq(i as u64, start, n, sample))
                    .collect(),
            };
            let parts = split(&batch, limit);
            for p in &parts {
                prop_assert!(p.num_tokens() >= 1 && p.num_tokens() <= limit);
            }
            // Every part but the last is full.
            for p in &parts[..parts.len() - 1] {
                prop_assert_eq!(p.num_tokens(), limit);
            }
            // Pieces of a sequence, in order, rebuild it: tokens, positions, block table,
            // regime; the sample rides on its last piece only.
            let pieces: Vec<&SeqStep> = parts.iter().flat_map(|p| &p.seqs).collect();
            let mut at = 0;
            for s in &batch.seqs {
                let mut tokens = Vec::new();
                let mut next_pos = s.start_pos;
                loop {
                    let piece = pieces[at];
                    at += 1;
                    prop_assert_eq!(piece.seq_id, s.seq_id);
                    prop_assert_eq!(piece.start_pos, next_pos);
                    prop_assert_eq!(&piece.block_table, &s.block_table);
                    prop_assert_eq!(piece.long_rope, s.long_rope);
                    next_pos += piece.tokens.len();
                    tokens.extend_from_slice(&piece.tokens);
                    if tokens.len() == s.tokens.len() {
                        prop_assert_eq!(&piece.sample, &s.sample);
                        break;
                    }
                    prop_assert!(piece.sample.is_none());
                }
                prop_assert_eq!(&tokens, &s.tokens);
            }
            prop_assert_eq!(at, pieces.len());
            prop_assert_eq!(parts.iter().map(|p| p.num_samples()).sum::<usize>(), batch.num_samples());
        }
    }
}
