//! A Gaudi sidecar's StepReply from arbitrary bytes (the sidecar is another process: untrusted
//! input), checked by `halo_gaudi::validate_step_reply` against a fixed batch. Properties:
//! nothing panics; an accepted reply is for this epoch and step, satisfies
//! `StepOutput::validate_against` for the batch, and converts the wire values unchanged.

#![no_main]

use halo_gaudi::proto as pb;
use halo_gaudi::validate_step_reply;
use halo_hal::{SampleRequest, SeqStep, StepBatch};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;

const EPOCH: u64 = 7;
const STEP: u64 = 3;
const VOCAB: usize = 64;

/// Three sequences: a sampled one with two alternatives, a prefill chunk that does not sample,
/// and a sampled one with logprobs but no alternatives. Replies must answer seq 10 then 12.
fn batch() -> &'static StepBatch {
    static BATCH: OnceLock<StepBatch> = OnceLock::new();
    BATCH.get_or_init(|| StepBatch {
        seqs: vec![
            SeqStep {
                seq_id: 10,
                tokens: vec![1],
                start_pos: 4,
                block_table: vec![0, 1],
                sample: Some(SampleRequest {
                    top_n: 2,
                    ..SampleRequest::greedy()
                }),
                long_rope: false,
            },
            SeqStep {
                seq_id: 11,
                tokens: vec![5, 6, 7],
                start_pos: 0,
                block_table: vec![2],
                sample: None,
                long_rope: false,
            },
            SeqStep {
                seq_id: 12,
                tokens: vec![9],
                start_pos: 0,
                block_table: vec![3],
                sample: Some(SampleRequest {
                    logprobs: true,
                    ..SampleRequest::greedy()
                }),
                long_rope: false,
            },
        ],
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = pb::StepReply::decode(data) else {
        return;
    };
    let batch = batch();
    let Ok(out) = validate_step_reply(&reply, batch, EPOCH, STEP, VOCAB) else {
        return;
    };
    assert_eq!((reply.epoch, reply.step_id), (EPOCH, STEP));
    if let Err(e) = out.validate_against(batch, VOCAB) {
        panic!("accepted reply fails validate_against: {e}");
    }
    assert_eq!(out.results.len(), batch.num_samples());
    let sampled = batch.seqs.iter().filter(|s| s.sample.is_some());
    for ((got, wire), step) in out.results.iter().zip(&reply.results).zip(sampled) {
        assert_eq!(got.seq_id, step.seq_id);
        assert_eq!(got.seq_id, wire.seq_id);
        match (&got.outcome, &wire.outcome) {
            (Ok(tok), Some(pb::seq_result::Outcome::Token(w))) => {
                assert_eq!(tok.token, w.token);
                assert_eq!(tok.logprob.to_bits(), w.logprob.to_bits());
                assert!(tok.logprob.is_finite() && tok.logprob <= 0.0);
                let top_n = step.sample.as_ref().map_or(0, |s| s.top_n) as usize;
                assert!(tok.top.len() <= top_n);
                assert_eq!(tok.top.len(), w.top.len());
                for (a, b) in tok.top.iter().zip(&w.top) {
                    assert_eq!(
                        (a.token, a.logprob.to_bits()),
                        (b.token, b.logprob.to_bits())
                    );
                    assert!(
                        (a.token as usize) < VOCAB && a.logprob.is_finite() && a.logprob <= 0.0
                    );
                }
            }
            (Err(_), Some(pb::seq_result::Outcome::Failure(f))) => {
                assert_eq!(*f, pb::SeqFailure::NonFiniteLogits as i32);
            }
            (got, wire) => panic!("outcome {got:?} accepted from wire outcome {wire:?}"),
        }
    }
    if let Some(bucket) = &out.timings.bucket {
        assert!(bucket.len() <= 256 && !bucket.chars().any(char::is_control));
    }
});
