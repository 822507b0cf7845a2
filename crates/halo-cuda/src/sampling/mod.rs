//! The host half of device sampling: each sampled sequence's parameters and penalty history
//! packed into the `#[repr(C)]` records `kernels/sampling.cu` reads, and the records it writes
//! back turned into [`SeqResult`]s.
//!
//! The tests hold a host model of the kernel's algorithm (threshold bisection over 64-bit sort
//! keys instead of a sort) and check it against `halo_hal::sampling::sample` on random rows, so
//! the algorithm is verified without a GPU; the GPU tests then check the kernel against both.

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use halo_hal::{
    DeviceError, SampleRequest, SampledToken, SeqFailure, SeqResult, StepBatch, TopToken,
};

/// The most alternatives (`top_n`) a request may ask for; the output buffers are this wide.
pub const MAX_TOP_N: usize = 64;

/// Mirrors `struct SampleParams` in kernels/sampling.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleParams {
    pub seed: u64,
    pub rng_offset: u64,
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub top_k: u32,
    pub top_n: u32,
    pub logits_row: i32,
    pub pen_start: i32,
    pub pen_len: i32,
    pub use_penalties: i32,
}

/// Mirrors `struct PenaltyEntry`: one distinct token of a sequence's history.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PenaltyEntry {
    pub token: u32,
    /// In the prompt or the output (repetition penalty applies).
    pub seen: u32,
    /// Occurrences in the output (frequency and presence penalties apply).
    pub generated_count: u32,
    pub pad: u32,
}

/// Mirrors `struct SampleOut`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleOut {
    pub token: i32,
    pub logprob: f32,
    pub status: i32,
    pub n_top: i32,
}

// SAFETY: plain #[repr(C)] records of integers and floats, laid out as the CUDA structs.
unsafe impl DeviceRepr for SampleParams {}
unsafe impl DeviceRepr for PenaltyEntry {}
unsafe impl DeviceRepr for SampleOut {}
unsafe impl ValidAsZeroBits for SampleOut {}

/// The records for every sampled sequence of a step, in batch order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplePack {
    pub params: Vec<SampleParams>,
    pub penalties: Vec<PenaltyEntry>,
}

/// Packs the sample requests of `batch`; sequence `sampled[i]` reads logits row `i`.
pub fn pack(batch: &StepBatch, sampled: &[usize], vocab: usize) -> Result<SamplePack, DeviceError> {
    let mut pack = SamplePack::default();
    for (row, &si) in sampled.iter().enumerate() {
        let s = &batch.seqs[si];
        let req = s.sample.as_ref().ok_or_else(|| {
            DeviceError::BadBatch(format!(
                "sequence {} listed as sampling without a request",
                s.seq_id
            ))
        })?;
        if req.top_n as usize > MAX_TOP_N {
            return Err(DeviceError::BadBatch(format!(
                "sequence {}: top_n {} exceeds the CUDA backend's maximum of {MAX_TOP_N}",
                s.seq_id, req.top_n
            )));
        }
        let p = &req.params;
        let start = pack.penalties.len();
        if p.uses_penalties() {
            pack.penalties.extend(penalty_entries(req, vocab));
        }
        pack.params.push(SampleParams {
            seed: p.seed,
            rng_offset: req.rng_offset,
            temperature: p.temperature,
            top_p: p.top_p,
            min_p: p.min_p,
            repetition_penalty: p.repetition_penalty,
            frequency_penalty: p.frequency_penalty,
            presence_penalty: p.presence_penalty,
            top_k: p.top_k,
            top_n: req.top_n,
            logits_row: row as i32,
            pen_start: start as i32,
            pen_len: (pack.penalties.len() - start) as i32,
            use_penalties: p.uses_penalties() as i32,
        });
    }
    Ok(pack)
}

/// One entry per distinct in-vocabulary token of the history (the reference skips the rest);
/// the engine keeps the history as exactly these counts, ascending by token.
fn penalty_entries(req: &SampleRequest, vocab: usize) -> Vec<PenaltyEntry> {
    let Some(ctx) = &req.penalties else {
        return Vec::new();
    };
    ctx.entries()
        .iter()
        .filter(|e| (e.token as usize) < vocab)
        .map(|e| PenaltyEntry {
            token: e.token,
            seen: 1,
            generated_count: e.output_count,
            pad: 0,
        })
        .collect()
}

/// Turns the kernel's records into results, in batch order.
pub fn unpack(
    batch: &StepBatch,
    sampled: &[usize],
    outs: &[SampleOut],
    top_tokens: &[i32],
    top_logprobs: &[f32],
    vocab: usize,
) -> Result<Vec<SeqResult>, DeviceError> {
    let mut results = Vec::with_capacity(sampled.len());
    for (i, &si) in sampled.iter().enumerate() {
        let o = outs[i];
        let outcome = match o.status {
            0 => {
                if o.token < 0 || o.token as usize >= vocab {
                    return Err(DeviceError::Backend(format!(
                        "sampler returned token {}",
                        o.token
                    )));
                }
                let n = (o.n_top.max(0) as usize).min(MAX_TOP_N);
                let top = (0..n)
                    .map(|j| TopToken {
                        token: top_tokens[i * MAX_TOP_N + j] as u32,
                        logprob: top_logprobs[i * MAX_TOP_N + j],
                    })
                    .collect();
                Ok(SampledToken {
                    token: o.token as u32,
                    logprob: o.logprob,
                    top,
                })
            }
            1 => Err(SeqFailure::NonFiniteLogits),
            other => return Err(DeviceError::Backend(format!("sampler status {other}"))),
        };
        results.push(SeqResult {
            seq_id: batch.seqs[si].seq_id,
            outcome,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod kernel_model;

#[cfg(test)]
mod tests {
    use super::*;
    use halo_hal::{PenaltyContext, SamplingParams, SeqStep};

    fn step(id: u64, sample: Option<SampleRequest>) -> SeqStep {
        SeqStep {
            seq_id: id,
            tokens: vec![1],
            start_pos: 0,
            block_table: vec![0],
            sample,
            long_rope: false,
        }
    }

    #[test]
    fn records_match_the_cuda_struct_sizes() {
        assert_eq!(std::mem::size_of::<SampleParams>(), 64);
        assert_eq!(std::mem::size_of::<PenaltyEntry>(), 16);
        assert_eq!(std::mem::size_of::<SampleOut>(), 16);
        let src = crate::kernels::KernelSource::Sampling.raw();
        assert!(src.contains(&format!(
            "#define SAMPLE_THREADS {}",
            crate::plan::geometry::SAMPLE_THREADS
        )));
    }

    #[test]
    fn packs_penalty_history_as_distinct_tokens() {
        let mut req = SampleRequest::greedy();
        req.params = SamplingParams {
            repetition_penalty: 1.3,
            frequency_penalty: 0.5,
            ..Default::default()
        };
        req.penalties = Some(PenaltyContext::from_history(&[4, 4, 9, 999], &[9, 2, 9]));
        let b = StepBatch {
            seqs: vec![step(1, None), step(2, Some(req))],
        };
        let p = pack(&b, &[1], 16).unwrap();
        assert_eq!(p.params.len(), 1);
        assert_eq!(
            (
                p.params[0].pen_start,
                p.params[0].pen_len,
                p.params[0].use_penalties
            ),
            (0, 3, 1)
        );
        let e: Vec<(u32, u32, u32)> = p
            .penalties
            .iter()
            .map(|e| (e.token, e.seen, e.generated_count))
            .collect();
        assert_eq!(e, vec![(2, 1, 1), (4, 1, 0), (9, 1, 2)]);
    }

    #[test]
    fn rejects_top_n_beyond_the_buffer() {
        let mut req = SampleRequest::greedy();
        req.top_n = MAX_TOP_N as u32 + 1;
        let b = StepBatch {
            seqs: vec![step(1, Some(req))],
        };
        assert!(matches!(pack(&b, &[0], 16), Err(DeviceError::BadBatch(_))));
    }

    #[test]
    fn unpacks_failures_and_alternatives() {
        let b = StepBatch {
            seqs: vec![
                step(7, Some(SampleRequest::greedy())),
                step(8, Some(SampleRequest::greedy())),
            ],
        };
        let outs = [
            SampleOut {
                token: 3,
                logprob: -0.25,
                status: 0,
                n_top: 1,
            },
            SampleOut {
                token: 0,
                logprob: 0.0,
                status: 1,
                n_top: 0,
            },
        ];
        let mut tt = vec![0i32; 2 * MAX_TOP_N];
        let mut tl = vec![0f32; 2 * MAX_TOP_N];
        tt[0] = 3;
        tl[0] = -0.25;
        let r = unpack(&b, &[0, 1], &outs, &tt, &tl, 16).unwrap();
        assert_eq!(r[0].seq_id, 7);
        assert_eq!(
            r[0].outcome.as_ref().unwrap().top,
            vec![TopToken {
                token: 3,
                logprob: -0.25
            }]
        );
        assert_eq!(r[1].outcome, Err(SeqFailure::NonFiniteLogits));
        let bad = [
            SampleOut {
                token: 99,
                ..Default::default()
            },
            outs[1],
        ];
        assert!(unpack(&b, &[0, 1], &bad, &tt, &tl, 16).is_err());
    }
}
