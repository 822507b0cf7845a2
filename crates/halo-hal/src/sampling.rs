//! The reference sampler: the semantics every backend implements, written over one row of
//! logits on the host. The CPU backend runs it as is; the CUDA kernels and the sidecar follow it
//! step by step.
//!
//! Order (Hugging Face's logits-processor order):
//! 1. any non-finite logit fails the sequence ([`SeqFailure::NonFiniteLogits`]);
//! 2. logprobs and top-n come from the *raw* row (log-softmax before any processing);
//! 3. penalties: repetition (HF: divide positive, multiply negative logits of every token seen
//!    in prompt or output), then frequency and presence (OpenAI: over output tokens only);
//! 4. temperature 0 → argmax, ties to the lowest id;
//! 5. otherwise divide by temperature, order candidates by logit (ties: lower id first), keep
//!    top-k, softmax, keep the shortest prefix whose mass reaches top-p, drop tokens below
//!    min-p × the best probability, and pick by inverse CDF with [`crate::rng::uniform`].

use crate::batch::{SampleRequest, SampledToken, SeqFailure, TopToken};
use crate::rng;
use std::cmp::Ordering;
use std::collections::HashMap;

/// Samples one token from `logits` (one row, the vocabulary) as `req` asks.
pub fn sample(logits: &[f32], req: &SampleRequest) -> Result<SampledToken, SeqFailure> {
    if logits.iter().any(|x| !x.is_finite()) {
        return Err(SeqFailure::NonFiniteLogits);
    }
    let log_z = log_sum_exp(logits);
    let params = &req.params;

    let token = if params.uses_penalties() {
        let mut work = logits.to_vec();
        apply_penalties(&mut work, req);
        choose(&work, req)
    } else {
        choose(logits, req)
    };

    let logprob = (logits[token as usize] as f64 - log_z) as f32;
    let top = if req.top_n > 0 {
        top_indices(logits, req.top_n as usize)
            .into_iter()
            .map(|t| TopToken {
                token: t,
                logprob: (logits[t as usize] as f64 - log_z) as f32,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(SampledToken {
        token,
        logprob: logprob.min(0.0),
        top,
    })
}

fn choose(logits: &[f32], req: &SampleRequest) -> u32 {
    let params = &req.params;
    if params.is_greedy() {
        return argmax(logits);
    }
    let inv_t = 1.0 / params.temperature as f64;
    let mut order: Vec<u32> = if params.top_k > 0 && (params.top_k as usize) < logits.len() {
        top_indices(logits, params.top_k as usize)
    } else {
        let mut all: Vec<u32> = (0..logits.len() as u32).collect();
        all.sort_unstable_by(|&a, &b| by_logit_desc(logits, a, b));
        all
    };
    let max = logits[order[0] as usize] as f64 * inv_t;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&t| (logits[t as usize] as f64 * inv_t - max).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);

    if params.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= params.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        order.truncate(keep);
        probs.truncate(keep);
    }
    if params.min_p > 0.0 {
        let floor = params.min_p as f64 * probs[0];
        let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
        order.truncate(keep);
        probs.truncate(keep);
    }
    let mass: f64 = probs.iter().sum();
    let target = rng::uniform(params.seed, req.rng_offset) * mass;
    let mut cum = 0.0;
    for (t, p) in order.iter().zip(&probs) {
        cum += p;
        if target < cum {
            return *t;
        }
    }
    *order.last().expect("at least one candidate")
}

/// Applies repetition, frequency and presence penalties in place.
pub fn apply_penalties(logits: &mut [f32], req: &SampleRequest) {
    let params = &req.params;
    let Some(ctx) = &req.penalties else { return };
    let vocab = logits.len();
    if params.repetition_penalty != 1.0 {
        let mut seen = vec![false; vocab];
        for &t in ctx.prompt.iter().chain(&ctx.generated) {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        let rp = params.repetition_penalty;
        for (l, _) in logits.iter_mut().zip(&seen).filter(|(_, s)| **s) {
            *l = if *l > 0.0 { *l / rp } else { *l * rp };
        }
    }
    if params.frequency_penalty != 0.0 || params.presence_penalty != 0.0 {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &ctx.generated {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= c as f32 * params.frequency_penalty + params.presence_penalty;
            }
        }
    }
}

/// The index of the largest logit; ties go to the lowest index.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in logits.iter().enumerate().skip(1) {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The `n` indices with the largest logits, largest first (ties: lower index first).
pub fn top_indices(logits: &[f32], n: usize) -> Vec<u32> {
    let n = n.min(logits.len());
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    if n < idx.len() {
        idx.select_nth_unstable_by(n, |&a, &b| by_logit_desc(logits, a, b));
        idx.truncate(n);
    }
    idx.sort_unstable_by(|&a, &b| by_logit_desc(logits, a, b));
    idx
}

fn by_logit_desc(logits: &[f32], a: u32, b: u32) -> Ordering {
    logits[b as usize]
        .partial_cmp(&logits[a as usize])
        .unwrap_or(Ordering::Equal)
        .then(a.cmp(&b))
}

fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{PenaltyContext, SamplingParams};
    use proptest::prelude::*;

    fn req(params: SamplingParams) -> SampleRequest {
        SampleRequest {
            params,
            rng_offset: 0,
            logprobs: true,
            top_n: 0,
            penalties: None,
        }
    }

    #[test]
    fn greedy_takes_argmax_with_lowest_id_on_ties() {
        let l = [0.1, 3.0, 3.0, -1.0];
        assert_eq!(sample(&l, &req(SamplingParams::greedy())).unwrap().token, 1);
    }

    #[test]
    fn non_finite_fails_the_sequence() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let l = [0.0, bad, 1.0];
            assert_eq!(
                sample(&l, &req(SamplingParams::greedy())),
                Err(SeqFailure::NonFiniteLogits)
            );
        }
    }

    #[test]
    fn logprob_and_top_n_come_from_the_raw_row() {
        let l = [1.0f32, 2.0, 0.0];
        let mut r = req(SamplingParams::greedy());
        r.top_n = 2;
        let out = sample(&l, &r).unwrap();
        let z = (1f64.exp() + 2f64.exp() + 1.0).ln();
        assert!((out.logprob as f64 - (2.0 - z)).abs() < 1e-6);
        assert_eq!(
            out.top.iter().map(|t| t.token).collect::<Vec<_>>(),
            vec![1, 0]
        );
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_seed() {
        let l: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        for seed in 0..20 {
            let p = SamplingParams {
                temperature: 1.5,
                top_k: 1,
                seed,
                ..Default::default()
            };
            assert_eq!(sample(&l, &req(p)).unwrap().token, argmax(&l));
        }
    }

    #[test]
    fn tiny_top_p_and_large_min_p_keep_only_the_best() {
        let l = [0.0f32, 5.0, 4.9, 1.0];
        for seed in 0..20 {
            let p = SamplingParams {
                temperature: 1.0,
                top_p: 0.01,
                seed,
                ..Default::default()
            };
            assert_eq!(sample(&l, &req(p)).unwrap().token, 1);
            let p = SamplingParams {
                temperature: 1.0,
                min_p: 0.99,
                seed,
                ..Default::default()
            };
            assert_eq!(sample(&l, &req(p)).unwrap().token, 1);
        }
    }

    #[test]
    fn repetition_penalty_follows_hf() {
        let mut l = vec![2.0f32, -2.0, 1.0];
        let mut r = req(SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        });
        r.penalties = Some(PenaltyContext {
            prompt: vec![0u32].into(),
            generated: vec![1],
        });
        apply_penalties(&mut l, &r);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn frequency_and_presence_count_output_only() {
        let mut l = vec![0.0f32; 3];
        let mut r = req(SamplingParams {
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..Default::default()
        });
        r.penalties = Some(PenaltyContext {
            prompt: vec![2u32].into(),
            generated: vec![0, 0, 1],
        });
        apply_penalties(&mut l, &r);
        assert_eq!(l, vec![-1.25, -0.75, 0.0]);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let l = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let n = 4000;
        let ones = (0..n)
            .filter(|&i| {
                let mut r = req(SamplingParams {
                    temperature: 1.0,
                    seed: 9,
                    ..Default::default()
                });
                r.rng_offset = i;
                sample(&l, &r).unwrap().token == 1
            })
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }

    proptest! {
        #[test]
        fn same_seed_same_token_and_always_in_vocab(
            logits in prop::collection::vec(-20.0f32..20.0, 1..200),
            seed in any::<u64>(), offset in 0u64..1000,
            t in 0.05f32..3.0, k in 0u32..50, p in 0.01f32..=1.0, m in 0.0f32..=1.0,
        ) {
            let params = SamplingParams { temperature: t, top_k: k, top_p: p, min_p: m, seed, ..Default::default() };
            let mut r = req(params);
            r.rng_offset = offset;
            r.top_n = 5;
            let a = sample(&logits, &r).unwrap();
            let b = sample(&logits, &r).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert!((a.token as usize) < logits.len());
            prop_assert!(a.logprob <= 0.0 && a.logprob.is_finite());
            prop_assert!(a.top.len() <= 5);
        }
    }
}
