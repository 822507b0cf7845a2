"""The sampler and RNG against the values and rules of halo_hal::sampling / halo_hal::rng."""

import math

import numpy as np
import pytest

from halo_sidecar import rng, sampling


def req(**kw):
    extra = {k: kw.pop(k) for k in ("rng_offset", "top_n", "prompt", "generated") if k in kw}
    return sampling.Request(params=sampling.Params(**kw), **extra)


def test_rng_known_values():
    assert rng.mix64(0) == 0
    assert rng.mix64(1) == 0x5692161D100B05E5
    u = rng.uniform(42, 0)
    assert 0.0 <= u < 1.0
    assert rng.uniform(42, 0) != rng.uniform(42, 1)
    assert rng.uniform(2**64 - 1, 2**64 - 1) < 1.0


def test_greedy_ties_to_lowest_id():
    assert sampling.sample(np.array([0.1, 3.0, 3.0, -1.0]), req()).token == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_fails(bad):
    with pytest.raises(sampling.NonFiniteLogits):
        sampling.sample(np.array([0.0, bad, 1.0]), req())


def test_logprob_and_top_n_from_raw_row():
    out = sampling.sample(np.array([1.0, 2.0, 0.0], dtype=np.float32), req(top_n=2))
    z = math.log(math.exp(1) + math.exp(2) + 1)
    assert abs(out.logprob - (2 - z)) < 1e-6
    assert [t for t, _ in out.top] == [1, 0]


def test_top_k_one_is_greedy():
    logits = np.array([((i * 37) % 11) * 0.3 for i in range(50)], dtype=np.float32)
    for seed in range(20):
        assert sampling.sample(logits, req(temperature=1.5, top_k=1, seed=seed)).token == int(np.argmax(logits))


def test_tiny_top_p_and_large_min_p_keep_the_best():
    logits = np.array([0.0, 5.0, 4.9, 1.0], dtype=np.float32)
    for seed in range(20):
        assert sampling.sample(logits, req(temperature=1.0, top_p=0.01, seed=seed)).token == 1
        assert sampling.sample(logits, req(temperature=1.0, min_p=0.99, seed=seed)).token == 1


def test_penalties_follow_the_reference():
    r = req(repetition_penalty=2.0, prompt=[0], generated=[1])
    assert sampling.apply_penalties(np.array([2.0, -2.0, 1.0], dtype=np.float32), r).tolist() == [1.0, -4.0, 1.0]
    r = req(frequency_penalty=0.5, presence_penalty=0.25, prompt=[2], generated=[0, 0, 1])
    assert sampling.apply_penalties(np.zeros(3, dtype=np.float32), r).tolist() == [-1.25, -0.75, 0.0]


def test_follows_the_distribution():
    logits = np.array([0.0, math.log(3.0)], dtype=np.float32)
    ones = sum(sampling.sample(logits, req(temperature=1.0, seed=9, rng_offset=i)).token for i in range(4000))
    assert abs(ones / 4000 - 0.75) < 0.03
