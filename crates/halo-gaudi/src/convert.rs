//! Conversions between halo_hal's types and the sidecar protocol, and the validation of every
//! reply: the sidecar is another process, so its answers are untrusted input. A reply that is
//! for another epoch or step, has the wrong number of results, names tokens outside the
//! vocabulary or carries impossible numbers is rejected here, never passed on.

use crate::proto as pb;
use halo_hal::{
    DType, KvCacheLayout, ModelInfo, SampledToken, SeqFailure, SeqResult, StepBatch, StepOutput,
    StepTimings, TopToken, WarmupRequest,
};
use thiserror::Error;

/// Longest bucket description or shape name accepted (they end up in logs and metrics).
const MAX_LABEL: usize = 256;
/// Most warmed shapes a warmup reply may list.
const MAX_SHAPES: usize = 100_000;

/// Why a sidecar reply was rejected.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ReplyError {
    #[error("reply for epoch {got}, expected {want}")]
    Epoch { got: u64, want: u64 },
    #[error("reply for step {got}, expected {want}")]
    Step { got: u64, want: u64 },
    #[error("invalid reply: {0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ReplyError> {
    Err(ReplyError::Invalid(msg.into()))
}

pub(crate) fn dtype_to_proto(d: Option<DType>) -> pb::DType {
    match d {
        None => pb::DType::DtypeUnspecified,
        Some(DType::F32) => pb::DType::DtypeF32,
        Some(DType::F16) => pb::DType::DtypeF16,
        Some(DType::BF16) => pb::DType::DtypeBf16,
    }
}

pub(crate) fn step_request(batch: &StepBatch, epoch: u64, step_id: u64) -> pb::StepRequest {
    let seqs = batch
        .seqs
        .iter()
        .map(|s| pb::SeqStep {
            seq_id: s.seq_id,
            tokens: s.tokens.clone(),
            start_pos: s.start_pos as u64,
            block_table: s.block_table.clone(),
            sample: s.sample.as_ref().map(|r| {
                let p = &r.params;
                // The history goes as counts (one pair per distinct token), not raw lists.
                let (has, history_tokens, history_output_counts) = match &r.penalties {
                    Some(ctx) if p.uses_penalties() => (
                        true,
                        ctx.entries().iter().map(|e| e.token).collect(),
                        ctx.entries().iter().map(|e| e.output_count).collect(),
                    ),
                    _ => (false, Vec::new(), Vec::new()),
                };
                pb::SampleRequest {
                    params: Some(pb::SamplingParams {
                        temperature: p.temperature,
                        top_k: p.top_k,
                        top_p: p.top_p,
                        min_p: p.min_p,
                        repetition_penalty: p.repetition_penalty,
                        frequency_penalty: p.frequency_penalty,
                        presence_penalty: p.presence_penalty,
                        seed: p.seed,
                    }),
                    rng_offset: r.rng_offset,
                    logprobs: r.logprobs,
                    top_n: r.top_n,
                    has_penalties: has,
                    prompt_tokens: Vec::new(),
                    generated_tokens: Vec::new(),
                    history_tokens,
                    history_output_counts,
                }
            }),
            long_rope: s.long_rope,
        })
        .collect();
    pb::StepRequest {
        epoch,
        step_id,
        seqs,
    }
}

pub(crate) fn warmup_request(req: &WarmupRequest, epoch: u64) -> pb::WarmupRequest {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    pb::WarmupRequest {
        epoch,
        block_size: clamp(req.block_size),
        max_batch_tokens: clamp(req.max_batch_tokens),
        max_batch_seqs: clamp(req.max_batch_seqs),
        max_seq_len: clamp(req.max_seq_len),
        num_blocks: req.num_blocks.unwrap_or(0) as u64,
        kv_cache_bytes: req.kv_cache_bytes.unwrap_or(0),
    }
}

fn check_epoch(got: u64, want: u64) -> Result<(), ReplyError> {
    if got != want {
        return Err(ReplyError::Epoch { got, want });
    }
    Ok(())
}

fn label(s: &str, what: &str) -> Result<String, ReplyError> {
    if s.len() > MAX_LABEL || s.chars().any(|c| c.is_control()) {
        return invalid(format!("{what} is not a short printable label"));
    }
    Ok(s.to_owned())
}

fn logprob(x: f32) -> Result<f32, ReplyError> {
    if !x.is_finite() || x > 0.0 {
        return invalid(format!("logprob {x} is not a log-probability"));
    }
    Ok(x)
}

pub(crate) fn model_info(reply: &pb::LoadReply, epoch: u64) -> Result<ModelInfo, ReplyError> {
    check_epoch(reply.epoch, epoch)?;
    let Some(m) = &reply.model else {
        return invalid("load reply without model info");
    };
    let dtype = match pb::DType::try_from(m.dtype) {
        Ok(pb::DType::DtypeF32) => DType::F32,
        Ok(pb::DType::DtypeF16) => DType::F16,
        Ok(pb::DType::DtypeBf16) => DType::BF16,
        _ => return invalid("load reply without a known dtype"),
    };
    let positive = [
        m.vocab_size,
        m.context_length,
        m.num_layers,
        m.hidden_size,
        m.num_kv_heads,
        m.head_dim,
    ];
    if positive.contains(&0) {
        return invalid("load reply with a zero model dimension");
    }
    Ok(ModelInfo {
        name: label(&m.name, "model name")?,
        architecture: label(&m.architecture, "architecture")?,
        dtype,
        vocab_size: m.vocab_size as usize,
        context_length: m.context_length as usize,
        num_layers: m.num_layers as usize,
        hidden_size: m.hidden_size as usize,
        num_kv_heads: m.num_kv_heads as usize,
        head_dim: m.head_dim as usize,
        param_count: m.param_count,
        weight_bytes: m.weight_bytes,
    })
}

pub(crate) fn kv_layout(
    reply: &pb::WarmupReply,
    req: &WarmupRequest,
    epoch: u64,
) -> Result<KvCacheLayout, ReplyError> {
    check_epoch(reply.epoch, epoch)?;
    if reply.block_size as usize != req.block_size {
        return invalid(format!(
            "block size {} where {} was asked",
            reply.block_size, req.block_size
        ));
    }
    let num_blocks = usize::try_from(reply.num_blocks).unwrap_or(usize::MAX);
    if num_blocks == 0 || num_blocks > u32::MAX as usize {
        return invalid(format!("{} KV blocks", reply.num_blocks));
    }
    if let Some(n) = req.num_blocks {
        if n != num_blocks {
            return invalid(format!("{num_blocks} KV blocks where {n} were asked"));
        }
    }
    if reply.bytes_per_block == 0 {
        return invalid("zero bytes per KV block");
    }
    if reply.buckets_warmed.len() > MAX_SHAPES {
        return invalid("too many warmed shapes");
    }
    let warmed_shapes = reply
        .buckets_warmed
        .iter()
        .map(|s| label(s, "warmed shape"))
        .collect::<Result<_, _>>()?;
    Ok(KvCacheLayout {
        block_size: req.block_size,
        num_blocks,
        bytes_per_block: reply.bytes_per_block,
        warmed_shapes,
        warmup_ms: reply.warmup_ms,
    })
}

/// Checks a step reply against the batch it answers and converts it. Never panics, whatever the
/// reply holds.
pub fn validate_step_reply(
    reply: &pb::StepReply,
    batch: &StepBatch,
    epoch: u64,
    step_id: u64,
    vocab_size: usize,
) -> Result<StepOutput, ReplyError> {
    check_epoch(reply.epoch, epoch)?;
    if reply.step_id != step_id {
        return Err(ReplyError::Step {
            got: reply.step_id,
            want: step_id,
        });
    }
    let expected = batch.num_samples();
    if reply.results.len() != expected {
        return invalid(format!(
            "{} results for {expected} sampled sequences",
            reply.results.len()
        ));
    }
    let mut results = Vec::with_capacity(expected);
    for r in &reply.results {
        let outcome = match &r.outcome {
            Some(pb::seq_result::Outcome::Token(t)) => {
                let top = t
                    .top
                    .iter()
                    .map(|a| {
                        Ok(TopToken {
                            token: a.token,
                            logprob: logprob(a.logprob)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ReplyError>>()?;
                Ok(SampledToken {
                    token: t.token,
                    logprob: logprob(t.logprob)?,
                    top,
                })
            }
            Some(pb::seq_result::Outcome::Failure(f)) => match pb::SeqFailure::try_from(*f) {
                Ok(pb::SeqFailure::NonFiniteLogits) => Err(SeqFailure::NonFiniteLogits),
                _ => return invalid(format!("unknown failure {f}")),
            },
            None => return invalid("a result without an outcome"),
        };
        results.push(SeqResult {
            seq_id: r.seq_id,
            outcome,
        });
    }
    let timings = match &reply.timings {
        Some(t) => StepTimings {
            forward_us: t.forward_us,
            padded_tokens: t.padded_tokens,
            bucket: if t.bucket.is_empty() {
                None
            } else {
                Some(label(&t.bucket, "bucket")?)
            },
            graph_compiled: t.graph_compiled,
        },
        None => StepTimings::default(),
    };
    let out = StepOutput { results, timings };
    out.validate_against(batch, vocab_size)
        .map_err(|e| ReplyError::Invalid(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_hal::{SampleRequest, SeqStep};
    use proptest::prelude::*;

    const VOCAB: usize = 64;

    fn batch(samples: &[bool], top_n: u32) -> StepBatch {
        StepBatch {
            seqs: samples
                .iter()
                .enumerate()
                .map(|(i, &s)| SeqStep {
                    seq_id: 10 + i as u64,
                    tokens: vec![1],
                    start_pos: 0,
                    block_table: vec![i as u32],
                    sample: s.then(|| SampleRequest {
                        top_n,
                        ..SampleRequest::greedy()
                    }),
                    long_rope: false,
                })
                .collect(),
        }
    }

    fn good_reply(b: &StepBatch) -> pb::StepReply {
        pb::StepReply {
            epoch: 3,
            step_id: 7,
            results: b
                .seqs
                .iter()
                .filter(|s| s.sample.is_some())
                .map(|s| pb::SeqResult {
                    seq_id: s.seq_id,
                    outcome: Some(pb::seq_result::Outcome::Token(pb::SampledToken {
                        token: 5,
                        logprob: -0.25,
                        top: vec![pb::TopToken {
                            token: 5,
                            logprob: -0.25,
                        }],
                    })),
                })
                .collect(),
            timings: Some(pb::StepTimings {
                forward_us: 10,
                padded_tokens: 2,
                bucket: "decode b=2 nb=1".into(),
                graph_compiled: false,
            }),
        }
    }

    #[test]
    fn a_good_reply_converts() {
        let b = batch(&[true, false, true], 1);
        let out = validate_step_reply(&good_reply(&b), &b, 3, 7, VOCAB).unwrap();
        assert_eq!(out.results.len(), 2);
        assert_eq!(out.results[1].seq_id, 12);
        assert_eq!(out.timings.bucket.as_deref(), Some("decode b=2 nb=1"));
    }

    #[test]
    fn each_kind_of_garbage_is_rejected() {
        let b = batch(&[true, true], 1);
        let check = |f: &dyn Fn(&mut pb::StepReply)| {
            let mut r = good_reply(&b);
            f(&mut r);
            validate_step_reply(&r, &b, 3, 7, VOCAB).unwrap_err()
        };
        assert_eq!(
            check(&|r| r.epoch = 2),
            ReplyError::Epoch { got: 2, want: 3 }
        );
        assert_eq!(
            check(&|r| r.step_id = 6),
            ReplyError::Step { got: 6, want: 7 }
        );
        check(&|r| {
            r.results.pop();
        });
        check(&|r| r.results.swap(0, 1));
        check(&|r| r.results[0].outcome = None);
        check(&|r| r.results[0].outcome = Some(pb::seq_result::Outcome::Failure(99)));
        let token = |r: &mut pb::StepReply| match &mut r.results[0].outcome {
            Some(pb::seq_result::Outcome::Token(t)) => t.clone(),
            _ => unreachable!(),
        };
        let set = |r: &mut pb::StepReply, t: pb::SampledToken| {
            r.results[0].outcome = Some(pb::seq_result::Outcome::Token(t))
        };
        check(&|r| {
            let mut t = token(r);
            t.token = VOCAB as u32;
            set(r, t)
        });
        check(&|r| {
            let mut t = token(r);
            t.logprob = f32::NAN;
            set(r, t)
        });
        check(&|r| {
            let mut t = token(r);
            t.top.push(pb::TopToken {
                token: 1,
                logprob: -1.0,
            });
            set(r, t)
        });
        check(&|r| r.timings.as_mut().unwrap().bucket = "x".repeat(1000));
    }

    fn arb_outcome() -> impl Strategy<Value = Option<pb::seq_result::Outcome>> {
        let token = (
            any::<u32>(),
            any::<f32>(),
            prop::collection::vec((any::<u32>(), any::<f32>()), 0..4),
        )
            .prop_map(|(token, logprob, top)| {
                pb::seq_result::Outcome::Token(pb::SampledToken {
                    token: token % (2 * VOCAB as u32),
                    logprob,
                    top: top
                        .into_iter()
                        .map(|(t, l)| pb::TopToken {
                            token: t % (2 * VOCAB as u32),
                            logprob: l,
                        })
                        .collect(),
                })
            });
        prop_oneof![
            Just(None),
            (0i32..3).prop_map(|f| Some(pb::seq_result::Outcome::Failure(f))),
            token.prop_map(Some),
        ]
    }

    proptest! {
        /// Whatever the sidecar sends, validation returns Ok or Err without panicking, and an
        /// accepted reply satisfies the contract the engine relies on.
        #[test]
        fn arbitrary_replies_never_panic_and_accepted_ones_are_sound(
            samples in prop::collection::vec(any::<bool>(), 1..6),
            top_n in 0u32..3,
            epoch in 2u64..5, step_id in 6u64..9,
            ids in prop::collection::vec(8u64..16, 0..7),
            outcomes in prop::collection::vec(arb_outcome(), 0..7),
            bucket in "[a-z =0-9]{0,20}",
        ) {
            let b = batch(&samples, top_n);
            let reply = pb::StepReply {
                epoch, step_id,
                results: ids.iter().zip(outcomes).map(|(&seq_id, outcome)| pb::SeqResult { seq_id, outcome }).collect(),
                timings: Some(pb::StepTimings { forward_us: 1, padded_tokens: 0, bucket, graph_compiled: false }),
            };
            if let Ok(out) = validate_step_reply(&reply, &b, 3, 7, VOCAB) {
                prop_assert_eq!(epoch, 3);
                prop_assert_eq!(step_id, 7);
                let want: Vec<u64> = b.seqs.iter().filter(|s| s.sample.is_some()).map(|s| s.seq_id).collect();
                let got: Vec<u64> = out.results.iter().map(|r| r.seq_id).collect();
                prop_assert_eq!(got, want);
                for r in &out.results {
                    if let Ok(t) = &r.outcome {
                        prop_assert!((t.token as usize) < VOCAB);
                        prop_assert!(t.logprob.is_finite() && t.logprob <= 0.0);
                        prop_assert!(t.top.len() <= top_n as usize);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_warmup_replies_never_panic(
            epoch in 0u64..3, block_size in 0u32..40, num_blocks in any::<u64>(),
            bytes in any::<u64>(), shapes in prop::collection::vec(".{0,300}", 0..3),
        ) {
            let req = WarmupRequest { block_size: 16, max_seq_len: 64, ..Default::default() };
            let reply = pb::WarmupReply { epoch, block_size, num_blocks, bytes_per_block: bytes, buckets_warmed: shapes, warmup_ms: 1 };
            if let Ok(layout) = kv_layout(&reply, &req, 1) {
                prop_assert!(layout.num_blocks > 0);
                prop_assert_eq!(layout.block_size, 16);
            }
        }
    }
}
