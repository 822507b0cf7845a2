//! A host model of `sample_tokens` in kernels/sampling.cu, step for step (sort keys, bisection
//! over thresholds, min-p as a key cut), checked against the reference sampler. If the two ever
//! disagree the algorithm is wrong, whatever the GPU does.

use halo_hal::sampling;
use halo_hal::{rng, PenaltyContext, SampleRequest, SamplingParams, SeqFailure};
use proptest::prelude::*;

fn sort_key(l: f32, id: u32) -> u64 {
    let l = if l == 0.0 { 0.0 } else { l };
    let mut b = l.to_bits();
    b = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    ((b as u64) << 32) | (0xFFFF_FFFF - id) as u64
}

fn key_id(k: u64) -> u32 {
    0xFFFF_FFFF - (k & 0xFFFF_FFFF) as u32
}

/// Largest k in [lo, hi] with pred(k), given pred(lo) and pred monotone (true below a cut).
fn bisect(mut lo: u64, mut hi: u64, pred: impl Fn(u64) -> bool) -> u64 {
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if pred(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The token the kernel picks (logprob and top-n are plain reductions, not modelled here).
fn model_choose(raw: &[f32], req: &SampleRequest) -> Result<u32, SeqFailure> {
    if raw.iter().any(|x| !x.is_finite()) {
        return Err(SeqFailure::NonFiniteLogits);
    }
    let mut w = raw.to_vec();
    if req.params.uses_penalties() {
        sampling::apply_penalties(&mut w, req);
    }
    let keys: Vec<u64> = w
        .iter()
        .enumerate()
        .map(|(i, &l)| sort_key(l, i as u32))
        .collect();
    let top_key = *keys.iter().max().unwrap();
    let p = &req.params;
    if p.temperature == 0.0 {
        return Ok(key_id(top_key));
    }
    let inv_t = 1.0 / p.temperature as f64;
    let shift = w[key_id(top_key) as usize] as f64 * inv_t;
    let e: Vec<f64> = w
        .iter()
        .map(|&l| (l as f64 * inv_t - shift).exp())
        .collect();
    let min_key = *keys.iter().min().unwrap();
    let vocab = w.len();
    let mut lo = min_key;
    if p.top_k > 0 && (p.top_k as usize) < vocab {
        lo = bisect(min_key, top_key, |k| {
            keys.iter().filter(|&&x| x >= k).count() >= p.top_k as usize
        });
    }
    let total: f64 = keys
        .iter()
        .zip(&e)
        .filter(|(&k, _)| k >= lo)
        .map(|(_, e)| e)
        .sum();
    let mass = |k: u64| -> f64 {
        keys.iter()
            .zip(&e)
            .filter(|(&x, _)| x >= k)
            .map(|(_, e)| e / total)
            .sum()
    };
    if p.top_p < 1.0 && mass(lo) >= p.top_p as f64 {
        lo = bisect(lo, top_key, |k| mass(k) >= p.top_p as f64);
    }
    if p.min_p > 0.0 {
        let floor = p.min_p as f64 * (1.0 / total);
        lo = keys
            .iter()
            .zip(&e)
            .filter(|(&k, &e)| k >= lo && e / total >= floor)
            .map(|(&k, _)| k)
            .min()
            .unwrap_or(top_key);
    }
    let m = mass(lo);
    let target = rng::uniform(p.seed, req.rng_offset) * m;
    let a = if m > target {
        bisect(lo, top_key, |k| mass(k) > target)
    } else {
        lo
    };
    Ok(key_id(*keys.iter().filter(|&&k| k >= a).min().unwrap()))
}

fn request(
    params: SamplingParams,
    offset: u64,
    penalties: Option<PenaltyContext>,
) -> SampleRequest {
    SampleRequest {
        params,
        rng_offset: offset,
        logprobs: true,
        top_n: 0,
        penalties,
    }
}

#[test]
fn keys_order_like_the_reference() {
    assert!(sort_key(1.0, 5) > sort_key(0.5, 0));
    assert!(sort_key(-0.5, 9) > sort_key(-1.0, 0));
    assert!(sort_key(2.0, 1) > sort_key(2.0, 2), "ties: lower id first");
    assert_eq!(sort_key(-0.0, 3), sort_key(0.0, 3));
    assert_eq!(key_id(sort_key(-7.25, 123)), 123);
}

#[test]
fn greedy_ties_and_zero_signs() {
    let l = [0.0f32, -0.0, 0.0];
    assert_eq!(
        model_choose(&l, &request(SamplingParams::greedy(), 0, None)),
        Ok(0)
    );
    let l = [-0.0f32, 0.0];
    assert_eq!(
        model_choose(&l, &request(SamplingParams::greedy(), 0, None)),
        Ok(0)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn kernel_algorithm_matches_the_reference(
        // Coarse values make ties common, the case sort keys must get right.
        logits in prop::collection::vec((-40i32..40).prop_map(|x| x as f32 * 0.25), 1..120),
        seed in any::<u64>(), offset in 0u64..1000,
        t in prop_oneof![Just(0.0f32), 0.05f32..3.0], k in 0u32..40,
        p in prop_oneof![Just(1.0f32), 0.01f32..1.0], m in prop_oneof![Just(0.0f32), 0.0f32..=1.0],
        rp in prop_oneof![Just(1.0f32), 0.5f32..2.0], fp in -1.0f32..1.0, pp in -1.0f32..1.0,
        history in prop::collection::vec(0u32..130, 0..20),
    ) {
        let params = SamplingParams {
            temperature: t, top_k: k, top_p: p, min_p: m,
            repetition_penalty: rp, frequency_penalty: fp, presence_penalty: pp, seed,
        };
        let (prompt, generated) = history.split_at(history.len() / 2);
        let ctx = PenaltyContext::from_history(prompt, generated);
        let req = request(params, offset, Some(ctx));
        let want = sampling::sample(&logits, &req).map(|s| s.token);
        prop_assert_eq!(model_choose(&logits, &req), want);
    }
}
