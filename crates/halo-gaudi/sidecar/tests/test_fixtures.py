"""Every transformers-made fixture under tests/fixtures/models (GQA, tied, explicit head_dim, llama3
and linear rope, q/k/v(/o) bias, Qwen2, Mistral sliding window, bf16 storage, both config layouts):
rope frequencies, last-prompt logits and 48 greedy ids, all prompts in one mixed batch."""

import glob
import json
import os

import numpy as np
import pytest
import torch

from halo_sidecar import sampling
from halo_sidecar.backend import select
from halo_sidecar.config import inv_freq, load_config
from halo_sidecar.executor import Executor, Seq

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "tests", "fixtures", "models"))
FIXTURES = sorted(glob.glob(os.path.join(ROOT, "*", "golden.json")))


def test_fixtures_are_present():
    assert len(FIXTURES) >= 7, ROOT


@pytest.mark.parametrize("golden_path", FIXTURES, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_fixture_matches_transformers(golden_path):
    model_dir = os.path.dirname(golden_path)
    with open(golden_path, encoding="utf-8") as f:
        golden = json.load(f)
    if "rope_inv_freq" in golden:
        want = torch.tensor(golden["rope_inv_freq"], dtype=torch.float32)
        torch.testing.assert_close(inv_freq(load_config(model_dir)), want, rtol=1e-6, atol=0)

    ex = Executor(select("cpu"))
    ex.load(model_dir, "f32")
    ex.warmup(16, 128, 4, 128, 40, 0)
    cases = golden["cases"]
    for case in cases:
        seq = Seq(0, case["prompt_ids"], 0, list(range(8)), None)
        shape = ex.buckets.prefill(1, len(seq.tokens), seq.end)
        row = ex._forward(shape, ex._inputs(shape, [seq]))[0].numpy()
        np.testing.assert_allclose(row[:16], case["last_prompt_logits_head"], atol=1e-4)

    outs = {i: [] for i in range(len(cases))}
    pos = {i: 0 for i in range(len(cases))}
    steps = len(cases[0]["greedy_ids"])
    while any(len(o) < steps for o in outs.values()):
        batch = []
        for i, case in enumerate(cases):
            blocks = list(range(i * 10, i * 10 + 10))
            req = sampling.Request(params=sampling.Params())
            if pos[i] == 0:
                batch.append(Seq(i, case["prompt_ids"], 0, blocks, req))
                pos[i] = len(case["prompt_ids"])
            elif len(outs[i]) < steps:
                batch.append(Seq(i, [outs[i][-1]], pos[i], blocks, req))
                pos[i] += 1
        results, timings = ex.step(batch)
        assert not timings.graph_compiled, timings.bucket
        for r in results:
            outs[r.seq_id].append(r.sampled.token)
    for i, case in enumerate(cases):
        assert outs[i] == case["greedy_ids"], case["prompt"]
