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

/// Samples one token from `logits` (one row, the vocabulary) as `req` asks.
pub fn sample(logits: &[f32], req: &SampleRequest) -> Result<SampledToken, SeqFailure> {
    if !all_finite(logits) {
        return Err(SeqFailure::NonFiniteLogits);
    }
    // A vocabulary of exponentials per row: only when the request reads a logprob.
    let log_z = (req.logprobs || req.top_n > 0).then(|| log_sum_exp(logits));
    let params = &req.params;

    let token = if params.uses_penalties() {
        let mut work = logits.to_vec();
        apply_penalties(&mut work, req);
        choose(&work, req)
    } else {
        choose(logits, req)
    };

    let logprob = log_z.map_or(0.0, |z| (logits[token as usize] as f64 - z) as f32);
    let top = if let Some(log_z) = log_z.filter(|_| req.top_n > 0) {
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
    if params.top_k > 0 && (params.top_k as usize) < logits.len() {
        return pick(
            logits,
            top_indices(logits, params.top_k as usize),
            inv_t,
            req,
        );
    }
    if let Some(t) = choose_from_head(logits, inv_t, req) {
        return t;
    }
    let mut all: Vec<u32> = (0..logits.len() as u32).collect();
    all.sort_unstable_by(|&a, &b| by_logit_desc(logits, a, b));
    pick(logits, all, inv_t, req)
}

/// Steps 5 on from the candidates in `order` (logit descending, ties lower id first): softmax,
/// top-p, min-p, inverse CDF. This is the definition; [`choose_from_head`] must agree with it bit
/// for bit.
fn pick(logits: &[f32], mut order: Vec<u32>, inv_t: f64, req: &SampleRequest) -> u32 {
    let params = &req.params;
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

/// Tokens whose scaled logit lies more than this below the best one are the *tail*: each one's
/// term `exp(l/T - max)` is below e^-38 < 2^-54, and so is its probability (the total is at least
/// 1, the best token's own term). Adding such a term to a running sum that is at least 1/2 (whose
/// half-ulp is at least 2^-54) leaves the sum's bits unchanged, and since the terms come in
/// descending order, so does every later one (rounding is monotone).
const TAIL_BELOW: f64 = -38.0;

/// [`pick`] over the whole vocabulary without sorting it: only the *head* (tokens within
/// [`TAIL_BELOW`] of the best) is sorted, and the sums over the whole vocabulary, taken in the
/// same order, are the head's sums to the bit (see [`TAIL_BELOW`]). `None` where the answer could
/// depend on the tail (top-p or min-p not decided within the head, a sum below 1/2), and the
/// caller sorts everything as the definition does.
fn choose_from_head(logits: &[f32], inv_t: f64, req: &SampleRequest) -> Option<u32> {
    let params = &req.params;
    let max = logits[argmax(logits) as usize] as f64 * inv_t;
    let mut keys: Vec<u64> = logits
        .iter()
        .enumerate()
        .filter(|(_, &l)| l as f64 * inv_t - max >= TAIL_BELOW)
        .map(|(i, &l)| desc_key(l, i as u32))
        .collect();
    let tail = keys.len() < logits.len();
    sort_keys(&mut keys);
    let order: Vec<u32> = keys.iter().map(|&k| k as u32).collect();
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&t| (logits[t as usize] as f64 * inv_t - max).exp())
        .collect();
    // The total is at least 1 (the best token's term is exp(0)): the tail adds nothing to it.
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);

    // `cut`: the kept candidates are a prefix of the head, so the tail plays no part.
    let mut keep = probs.len();
    let mut cut = !tail;
    if params.top_p < 1.0 {
        let mut cum = 0.0;
        match probs.iter().position(|p| {
            cum += p;
            cum >= params.top_p as f64
        }) {
            Some(i) => {
                keep = i + 1;
                cut = true;
            }
            None if tail => return None,
            None => {}
        }
    }
    if params.min_p > 0.0 {
        let floor = params.min_p as f64 * probs[0];
        let n = probs[..keep].iter().take_while(|&&p| p >= floor).count();
        if n < keep {
            keep = n.max(1);
            cut = true;
        } else if !cut {
            return None;
        }
    }
    let mass: f64 = probs[..keep].iter().sum();
    if !cut && mass < 0.5 {
        return None;
    }
    let target = rng::uniform(params.seed, req.rng_offset) * mass;
    let mut cum = 0.0;
    for (t, p) in order[..keep].iter().zip(&probs) {
        cum += p;
        if target < cum {
            return Some(*t);
        }
    }
    Some(if cut {
        order[keep - 1]
    } else {
        last_in_order(logits)
    })
}

/// A key whose ascending order is [`by_logit_desc`]'s: logit descending (-0.0 equal to 0.0),
/// then id ascending.
fn desc_key(l: f32, id: u32) -> u64 {
    let l = if l == 0.0 { 0.0 } else { l };
    let b = l.to_bits();
    let ascending = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    ((!ascending as u64) << 32) | id as u64
}

/// Sorts [`desc_key`]s ascending. The keys come in id order, so a stable sort on the logit half
/// alone gives the full order: large sets go through an LSD radix sort on those 32 bits (8 bits a
/// pass, a pass skipped where every key has the same byte), small ones through the library sort.
fn sort_keys(keys: &mut Vec<u64>) {
    debug_assert!(keys.windows(2).all(|w| w[0] as u32 <= w[1] as u32));
    if keys.len() < 1024 {
        keys.sort_unstable();
        return;
    }
    let mut scratch = vec![0u64; keys.len()];
    for shift in [32u32, 40, 48, 56] {
        let mut counts = [0usize; 256];
        for &k in keys.iter() {
            counts[(k >> shift) as usize & 0xFF] += 1;
        }
        if counts.contains(&keys.len()) {
            continue;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for &k in keys.iter() {
            let b = (k >> shift) as usize & 0xFF;
            scratch[counts[b]] = k;
            counts[b] += 1;
        }
        std::mem::swap(keys, &mut scratch);
    }
}

/// The last token in [`by_logit_desc`] order: the smallest logit, the highest id among ties.
fn last_in_order(logits: &[f32]) -> u32 {
    let mut last = 0usize;
    for (i, &x) in logits.iter().enumerate().skip(1) {
        if x <= logits[last] {
            last = i;
        }
    }
    last as u32
}

/// Applies repetition, frequency and presence penalties in place. The history comes as counts
/// (one entry per distinct token), so a step costs O(distinct tokens), however long the history.
pub fn apply_penalties(logits: &mut [f32], req: &SampleRequest) {
    let params = &req.params;
    let Some(ctx) = &req.penalties else { return };
    let rp = params.repetition_penalty;
    let output_penalties = params.frequency_penalty != 0.0 || params.presence_penalty != 0.0;
    // Each token's logit changes on its own: repetition first, then frequency and presence,
    // the same order and arithmetic as applying each pass over the whole row.
    for e in ctx.entries() {
        let Some(l) = logits.get_mut(e.token as usize) else {
            continue;
        };
        if rp != 1.0 {
            *l = if *l > 0.0 { *l / rp } else { *l * rp };
        }
        if output_penalties && e.output_count > 0 {
            *l -= e.output_count as f32 * params.frequency_penalty + params.presence_penalty;
        }
    }
}

/// The index of the largest logit; ties go to the lowest index (NaNs are never chosen unless
/// every logit is one; [`sample`] turns those away first).
///
/// Two passes that vectorize instead of one that does not: the maximum over 16 independent
/// lanes, then the first index holding it. A running "best so far" compare is one serial chain
/// through the vocabulary, and at 32 sequences a step's greedy picks cost ~1.5% of the step.
pub fn argmax(logits: &[f32]) -> u32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    // -0.0 == 0.0, so a maximum of zero finds the first zero of either sign, as the one-pass
    // definition keeps the first of values that do not compare greater.
    logits.iter().position(|&x| x == max).unwrap_or(0) as u32
}

/// Whether every logit is finite, in chunks that vectorize (`any` stops at each element).
fn all_finite(logits: &[f32]) -> bool {
    logits
        .chunks(256)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

/// The `n` indices with the largest logits, largest first (ties: lower index first).
///
/// One pass with a bounded buffer: once `n` are held, only a logit strictly above the `n`-th
/// best can enter (an equal one comes later, so has a higher id and ranks below it); the buffer
/// is cut back to `n` by selection when it fills.
pub fn top_indices(logits: &[f32], n: usize) -> Vec<u32> {
    let n = n.min(logits.len());
    if n == 0 {
        return Vec::new();
    }
    let cmp = |a: &u32, b: &u32| by_logit_desc(logits, *a, *b);
    if n.saturating_mul(4) >= logits.len() {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        if n < idx.len() {
            idx.select_nth_unstable_by(n, cmp);
            idx.truncate(n);
        }
        idx.sort_unstable_by(cmp);
        return idx;
    }
    let cap = (2 * n).max(256);
    let mut buf: Vec<u32> = Vec::with_capacity(cap);
    let mut floor = f32::NEG_INFINITY;
    let mut full = false;
    for (i, &x) in logits.iter().enumerate() {
        if full && x <= floor {
            continue;
        }
        buf.push(i as u32);
        if buf.len() == cap {
            buf.select_nth_unstable_by(n - 1, cmp);
            buf.truncate(n);
            floor = logits[buf[n - 1] as usize];
            full = true;
        }
    }
    if buf.len() > n {
        buf.select_nth_unstable_by(n - 1, cmp);
        buf.truncate(n);
    }
    buf.sort_unstable_by(cmp);
    buf
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
        r.penalties = Some(PenaltyContext::from_history(&[0], &[1]));
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
        r.penalties = Some(PenaltyContext::from_history(&[2], &[0, 0, 1]));
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

    /// The sampler as it was before partial selection: a full sort of the vocabulary.
    fn choose_by_full_sort(logits: &[f32], req: &SampleRequest) -> u32 {
        if req.params.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / req.params.temperature as f64;
        let mut all: Vec<u32> = (0..logits.len() as u32).collect();
        all.sort_unstable_by(|&a, &b| by_logit_desc(logits, a, b));
        if req.params.top_k > 0 {
            all.truncate(req.params.top_k as usize);
        }
        pick(logits, all, inv_t, req)
    }

    /// Penalties from the raw history: a vocabulary-sized `seen` map and a HashMap of counts.
    fn penalties_by_maps(
        logits: &mut [f32],
        params: &SamplingParams,
        prompt: &[u32],
        generated: &[u32],
    ) {
        if params.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in prompt.iter().chain(generated) {
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
            let mut counts = std::collections::HashMap::<u32, u32>::new();
            for &t in generated {
                *counts.entry(t).or_default() += 1;
            }
            for (t, c) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= c as f32 * params.frequency_penalty + params.presence_penalty;
                }
            }
        }
    }

    fn row(seed: u64, n: usize, spread: f64, coarse: bool) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let x = ((rng::uniform(seed, i) - 0.5) * spread) as f32;
                if coarse {
                    (x * 2.0).round() / 2.0
                } else {
                    x
                }
            })
            .collect()
    }

    #[test]
    fn head_only_sampling_is_the_full_sort_on_wide_rows() {
        // Rows whose tails lie far below the head (the case the head-only path takes), top-p
        // near 1, min-p tiny enough to reach into the tail, and one huge best logit.
        let mut checked = 0;
        for case in 0..400u64 {
            let n = 1 + (rng::uniform(5, case) * 3000.0) as usize;
            let spread = [4.0, 40.0, 80.0, 400.0][case as usize % 4];
            let mut l = row(case, n, spread, case % 3 == 0);
            if case % 7 == 0 {
                l[n / 2] = 1000.0;
            }
            for (t, p, m) in [
                (1.0, 1.0, 0.0),
                (0.7, 0.9, 0.0),
                (1.3, 0.99999994, 0.0),
                (1.0, 1.0, 1e-30),
                (0.5, 0.95, 0.05),
                (2.0, 1.0, 0.3),
                (0.05, 0.5, 0.0),
            ] {
                for offset in 0..3 {
                    let mut r = req(SamplingParams {
                        temperature: t,
                        top_p: p,
                        min_p: m,
                        seed: case,
                        ..Default::default()
                    });
                    r.rng_offset = offset;
                    assert_eq!(
                        choose(&l, &r),
                        choose_by_full_sort(&l, &r),
                        "case {case} n {n} t {t} p {p} m {m} offset {offset}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 400 * 7 * 3);
    }

    #[test]
    fn radix_sorted_keys_are_the_library_sort() {
        for case in 0..20u64 {
            let n = 1000 + case as usize * 700;
            let l = row(case, n, [1.0, 30.0, 1e6][case as usize % 3], case % 2 == 0);
            let mut keys: Vec<u64> = l
                .iter()
                .enumerate()
                .map(|(i, &x)| desc_key(x, i as u32))
                .collect();
            let mut want = keys.clone();
            want.sort_unstable();
            sort_keys(&mut keys);
            assert_eq!(keys, want, "case {case}");
        }
    }

    #[test]
    fn top_indices_is_the_head_of_the_full_sort() {
        for case in 0..200u64 {
            let n = 1 + (rng::uniform(6, case) * 5000.0) as usize;
            let mut l = row(case, n, 20.0, case % 2 == 0);
            if case % 5 == 0 {
                // Signed zeros and long ties: equal by partial_cmp, lower id first.
                for (i, x) in l.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
                    *x = if i % 2 == 0 { 0.0 } else { -0.0 };
                }
            }
            let mut all: Vec<u32> = (0..n as u32).collect();
            all.sort_by(|&a, &b| by_logit_desc(&l, a, b));
            for k in [1, 2, 5, 50, 127, 128, 129, 300, 1000, n] {
                let k = k.min(n);
                assert_eq!(top_indices(&l, k), all[..k], "case {case} n {n} k {k}");
            }
        }
    }

    #[test]
    fn penalties_match_the_map_version() {
        for case in 0..100u64 {
            let vocab = 1 + (rng::uniform(8, case) * 500.0) as usize;
            let l = row(case, vocab, 10.0, false);
            let hist = |s: u64, n: u64| -> Vec<u32> {
                (0..n)
                    .map(|i| (rng::uniform(s, i) * (vocab + 5) as f64) as u32)
                    .collect()
            };
            let mut r = req(SamplingParams {
                temperature: 1.0,
                repetition_penalty: [1.0, 1.3, 0.8][case as usize % 3],
                frequency_penalty: [0.0, 0.5, -0.4][case as usize / 3 % 3],
                presence_penalty: [0.0, 0.7][case as usize % 2],
                ..Default::default()
            });
            let (prompt, generated) = (hist(case + 1000, 40), hist(case + 2000, 60));
            // the counts built as the engine builds them: the prompt at once, then token by token
            let mut ctx = PenaltyContext::from_history(&prompt, &[]);
            for &t in &generated {
                ctx.record_output(t);
            }
            r.penalties = Some(ctx);
            let (mut a, mut b) = (l.clone(), l.clone());
            apply_penalties(&mut a, &r);
            penalties_by_maps(&mut b, &r.params, &prompt, &generated);
            assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "case {case}"
            );
        }
    }

    /// The definition [`argmax`] must keep: one pass, first of the values nothing exceeds.
    fn argmax_one_pass(logits: &[f32]) -> u32 {
        let mut best = 0usize;
        for (i, &x) in logits.iter().enumerate().skip(1) {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    proptest! {
        #[test]
        fn argmax_is_the_one_pass_definition(
            logits in prop::collection::vec(prop_oneof![
                (-3i32..3).prop_map(|x| x as f32),
                Just(0.0f32), Just(-0.0f32),
                Just(f32::NEG_INFINITY),
                -1e30f32..1e30,
            ], 1..300),
        ) {
            prop_assert_eq!(argmax(&logits), argmax_one_pass(&logits));
        }

        #[test]
        fn all_finite_is_every_is_finite(
            logits in prop::collection::vec(prop_oneof![
                20 => -1e30f32..1e30,
                1 => Just(f32::NAN),
                1 => Just(f32::INFINITY),
                1 => Just(f32::NEG_INFINITY),
            ], 0..700),
        ) {
            prop_assert_eq!(all_finite(&logits), logits.iter().all(|x| x.is_finite()));
        }

        #[test]
        fn partial_selection_matches_the_full_sort(
            logits in prop::collection::vec(prop_oneof![
                (-20.0f32..20.0),
                (-200.0f32..200.0),
                (-8i32..8).prop_map(|x| x as f32 * 0.5),
            ], 1..400),
            seed in any::<u64>(), offset in 0u64..1000,
            t in 0.02f32..3.0, k in prop_oneof![Just(0u32), 1u32..500],
            p in prop_oneof![Just(1.0f32), 0.01f32..1.0, Just(0.99999994f32)],
            m in prop_oneof![Just(0.0f32), 0.0f32..=1.0, Just(1e-30f32)],
        ) {
            let params = SamplingParams { temperature: t, top_k: k, top_p: p, min_p: m, seed, ..Default::default() };
            let mut r = req(params);
            r.rng_offset = offset;
            prop_assert_eq!(choose(&logits, &r), choose_by_full_sort(&logits, &r));
        }

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
