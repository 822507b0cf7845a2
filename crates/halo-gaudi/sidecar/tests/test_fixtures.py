"""Every transformers-made fixture under tests/fixtures/models (GQA, tied, explicit head_dim, llama3
and linear rope, q/k/v(/o) bias, Qwen2, Mistral sliding window, bf16 storage, both config layouts)
and tests/fixtures/families (Qwen3, Mixtral, Gemma 2, Gemma 3, Phi-3 with longrope, Qwen3-MoE):
rope frequencies, last-prompt logits and 48 greedy ids, all prompts in one mixed batch."""

import glob
import json
import os

import numpy as np
import pytest
import torch

from halo_sidecar import sampling
from halo_sidecar.backend import select
from halo_sidecar.config import inv_freq, load_config, longrope_recompute_position
from halo_sidecar.executor import Executor, Seq
from halo_sidecar.rope import rope_tables

FIXTURE_ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "tests", "fixtures"))
ROOT = os.path.join(FIXTURE_ROOT, "models")
FAMILIES = os.path.join(FIXTURE_ROOT, "families")
MODELS = sorted(glob.glob(os.path.join(ROOT, "*", "golden.json")))
FAMILY_FIXTURES = sorted(glob.glob(os.path.join(FAMILIES, "*", "golden.json")))
FIXTURES = MODELS + FAMILY_FIXTURES


def test_fixtures_are_present():
    assert len(MODELS) >= 7, ROOT
    names = {os.path.basename(os.path.dirname(p)) for p in FAMILY_FIXTURES}
    assert {"tiny-qwen3", "tiny-mixtral", "tiny-gemma2", "tiny-gemma3", "tiny-phi3", "tiny-qwen3moe"} <= names


def _check_rope(model_dir, golden):
    cfg = load_config(model_dir)
    if "rope_inv_freq" in golden:
        want = torch.tensor(golden["rope_inv_freq"], dtype=torch.float32)
        torch.testing.assert_close(inv_freq(cfg), want, rtol=1e-6, atol=0)
    if "rope_long_inv_freq" in golden:
        tables = rope_tables(cfg.rope, cfg.rotary_dim, cfg.max_position_embeddings)
        torch.testing.assert_close(tables.long, torch.tensor(golden["rope_long_inv_freq"]), rtol=1e-6, atol=0)
        assert tables.scaling == pytest.approx(golden["rope_attention_scaling"], rel=1e-9)
    if "rope_inv_freq_by_layer_type" in golden:
        kinds = ["sliding_attention" if w is not None else "full_attention" for w in cfg.layer_windows]
        for kind, rope in zip(kinds, cfg.layer_ropes):
            got = rope_tables(rope, cfg.rotary_dim, cfg.max_position_embeddings).short
            want = torch.tensor(golden["rope_inv_freq_by_layer_type"][kind], dtype=torch.float32)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("golden_path", FIXTURES, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_fixture_matches_transformers(golden_path):
    _check_fixture(golden_path, select("cpu"))


MOE_FIXTURES = [p for p in FAMILY_FIXTURES if "moe" in p or "mixtral" in p]


@pytest.mark.parametrize("golden_path", MOE_FIXTURES, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_moe_fixtures_match_transformers_in_the_static_form(golden_path):
    """The MoE block's HPU-graph form (no data-dependent control flow) gives the same ids."""
    backend = select("cpu")
    backend.static_moe = True
    ex = _check_fixture(golden_path, backend)
    assert all(layer.moe.static for layer in ex.model.layers if layer.moe is not None)


def _check_fixture(golden_path, backend):
    model_dir = os.path.dirname(golden_path)
    with open(golden_path, encoding="utf-8") as f:
        golden = json.load(f)
    _check_rope(model_dir, golden)

    ex = Executor(backend)
    ex.load(model_dir, "f32")
    ex.warmup(16, 128, 4, 128, 40, 0)
    cases = golden["cases"]
    recompute_at = longrope_recompute_position(load_config(model_dir))

    def long_rope(seq_len: int) -> bool:
        return recompute_at is not None and seq_len > recompute_at

    for case in cases:
        seq = Seq(0, case["prompt_ids"], 0, list(range(8)), None, long_rope(len(case["prompt_ids"])))
        shape = ex.buckets.prefill(1, len(seq.tokens), seq.end)
        row = ex._forward(shape, ex._inputs(shape, [seq]))[0].numpy()
        np.testing.assert_allclose(row[:16], case["last_prompt_logits_head"], atol=1e-4)

    # longrope: where a sequence grows past the original length, transformers recomputes it
    # with the long factors; the engine's part, played here, is to send it again from position 0
    # in the long regime
    outs = {i: [] for i in range(len(cases))}
    pos = {i: 0 for i in range(len(cases))}
    steps = len(cases[0]["greedy_ids"])
    recomputed = 0
    while any(len(o) < steps for o in outs.values()):
        batch = []
        for i, case in enumerate(cases):
            blocks = list(range(i * 10, i * 10 + 10))
            req = sampling.Request(params=sampling.Params())
            if pos[i] == 0:
                n = len(case["prompt_ids"])
                batch.append(Seq(i, case["prompt_ids"], 0, blocks, req, long_rope(n)))
                pos[i] = n
            elif len(outs[i]) < steps and pos[i] == recompute_at:
                batch.append(Seq(i, case["prompt_ids"] + outs[i], 0, blocks, req, True))
                pos[i] += 1
                recomputed += 1
            elif len(outs[i]) < steps:
                batch.append(Seq(i, [outs[i][-1]], pos[i], blocks, req, long_rope(pos[i] + 1)))
                pos[i] += 1
        results, timings = ex.step(batch)
        assert not timings.graph_compiled, timings.bucket
        for r in results:
            outs[r.seq_id].append(r.sampled.token)
    for i, case in enumerate(cases):
        assert outs[i] == case["greedy_ids"], case["prompt"]
    if recompute_at is not None:
        assert recomputed >= 1, "no generation crossed the longrope original length"
    return ex
