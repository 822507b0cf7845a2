"""The torch model through the executor on CPU (f32) against transformers' golden greedy ids:
alone, all prompts in one mixed batch, and with chunked prefill; plus padding and compile counters."""

import numpy as np
import pytest

from halo_sidecar import sampling
from halo_sidecar.backend import select
from halo_sidecar.executor import BadRequest, Executor, Seq

BS = 16


@pytest.fixture(scope="module")
def ex(model_dir):
    e = Executor(select("cpu"), warm_all=True)
    info = e.load(model_dir, "f32")
    assert info["vocab_size"] == 512 and info["architecture"] == "llama"
    e.warmup(BS, 64, 4, 128, 64, 0)
    return e


def greedy():
    return sampling.Request(params=sampling.Params())


class Gen:
    """One sequence's state: blocks are handed out by a simple counter, as the engine would."""

    def __init__(self, seq_id, prompt, first_block):
        self.id, self.prompt, self.out = seq_id, list(prompt), []
        self.blocks = list(range(first_block, first_block + 8))
        self.pos = 0

    def chunk(self, n):
        toks = self.prompt[self.pos:self.pos + n]
        done = self.pos + len(toks) == len(self.prompt)
        s = Seq(self.id, toks, self.pos, self.blocks, greedy() if done else None)
        self.pos += len(toks)
        return s

    def next(self):
        s = Seq(self.id, [self.out[-1]], self.pos, self.blocks, greedy())
        self.pos += 1
        return s


def run(ex, gens, steps, chunk=64):
    """Drives the given sequences together until each has `steps` tokens."""
    while any(len(g.out) < steps for g in gens):
        batch, budget = [], 64
        for g in gens:
            if len(g.out) >= steps:
                continue
            s = g.chunk(min(chunk, budget)) if g.pos < len(g.prompt) else g.next()
            if not s.tokens:
                continue
            budget -= len(s.tokens)
            batch.append((g, s))
            if budget <= 0:
                break
        results, timings = ex.step([s for _, s in batch])
        assert not timings.graph_compiled, timings.bucket
        by_id = {r.seq_id: r for r in results}
        for g, s in batch:
            if s.sample is not None:
                g.out.append(by_id[g.id].sampled.token)


def test_golden_alone(ex, golden):
    for i, case in enumerate(golden[:3]):
        g = Gen(i, case["prompt_ids"], 0)
        run(ex, [g], len(case["greedy_ids"]))
        assert g.out == case["greedy_ids"], case["prompt"]


def test_golden_mixed_batch_with_chunked_prefill(ex, golden):
    # The long prompt (67 tokens) arrives in 20-token chunks next to the others' decode steps.
    gens = [Gen(i, c["prompt_ids"], i * 8) for i, c in enumerate(golden)]
    run(ex, gens, 40, chunk=20)
    for g, case in zip(gens, golden):
        assert g.out == case["greedy_ids"][:40], case["prompt"]


def test_last_prompt_logits_match_the_reference(ex, golden):
    for case in golden:
        seq = Seq(7, case["prompt_ids"], 0, list(range(8)), greedy())
        shape = ex.buckets.prefill(1, len(seq.tokens), seq.end)
        row = ex._forward(shape, ex._inputs(shape, [seq]))[0].numpy()
        head = np.array(case["last_prompt_logits_head"], dtype=np.float32)
        np.testing.assert_allclose(row[:16], head, atol=2e-5)


def test_padding_and_buckets_are_reported(ex):
    results, t = ex.step([Seq(1, list(range(1, 16)), 0, [0], greedy())])
    assert t.bucket == "prefill b=1 t=16 nb=1" and t.padded_tokens == 1
    results, t = ex.step([Seq(1, [5], 15, [0, 1], greedy()), Seq(2, [3, 4], 0, [2], greedy())])
    assert t.bucket == "prefill b=1 t=16 nb=1 + decode b=1 nb=1"
    assert t.padded_tokens == 14
    assert [r.seq_id for r in results] == [1, 2]


def test_bad_batches_are_rejected(ex):
    for bad in (
        [],
        [Seq(1, [600], 0, [0], None)],
        [Seq(1, [1] * 17, 0, [0], None)],
        [Seq(1, [1], 0, [64], None)],
        [Seq(1, [1], 200, list(range(13)), None)],
        [Seq(1, [1], 0, [0], None), Seq(2, [1], 0, [0], None)],
    ):
        with pytest.raises(BadRequest):
            ex.step(bad)
