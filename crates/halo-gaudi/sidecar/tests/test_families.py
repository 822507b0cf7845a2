"""Issue 16's families: config.json parsing per family, its errors, the MoE block and the rope
tables, each against a direct computation."""

import glob
import json
import os

import pytest
import torch

from halo_sidecar import sampling
from halo_sidecar.backend import select
from halo_sidecar.executor import Executor, Seq

from halo_sidecar.config import ConfigError, load_config, longrope_recompute_position
from halo_sidecar.families import MoeSpec
from halo_sidecar.moe import MoeBlock
from halo_sidecar.rope import rope_tables

BASE = {
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
}
GEMMA2 = dict(BASE, architectures=["Gemma2ForCausalLM"], model_type="gemma2", head_dim=32,
              query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=4.0,
              final_logit_softcapping=6.0, hidden_activation="gelu_pytorch_tanh")
GEMMA3 = dict(BASE, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", head_dim=16,
              query_pre_attn_scalar=16, sliding_window=8, sliding_window_pattern=2, rope_theta=1e6,
              rope_local_base_freq=1e4, rope_scaling={"rope_type": "linear", "factor": 4.0})
PHI3 = dict(BASE, architectures=["Phi3ForCausalLM"], partial_rotary_factor=0.5, rope_theta=1e4,
            original_max_position_embeddings=64,
            rope_scaling={"type": "longrope", "short_factor": [1.0, 2.0, 3.0, 4.0],
                          "long_factor": [2.0, 4.0, 6.0, 8.0]})
QWEN3MOE = dict(BASE, architectures=["Qwen3MoeForCausalLM"], head_dim=32, num_experts=8, num_experts_per_tok=2,
                moe_intermediate_size=16, norm_topk_prob=True, mlp_only_layers=[0], decoder_sparse_step=1)
MIXTRAL = dict(BASE, architectures=["MixtralForCausalLM"], num_local_experts=4, num_experts_per_tok=2)


def write(tmp_path, cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return load_config(str(tmp_path))


def test_gemma2_knobs(tmp_path):
    c = write(tmp_path, GEMMA2)
    f = c.family
    assert c.architecture == "gemma2" and f.gemma_norms and f.embed_scale and not f.qk_norm
    assert f.activation == "gelu_tanh" and f.query_pre_attn_scalar == 24.0
    assert (f.attn_softcap, f.final_softcap) == (4.0, 6.0)
    # no layer_types: Gemma 2 alternates, local first
    assert c.layer_windows == [8, None, 8, None]
    assert c.tie_word_embeddings  # Gemma's default


def test_gemma3_local_and_global_rope(tmp_path):
    c = write(tmp_path, GEMMA3)
    assert c.family.qk_norm and c.family.final_softcap is None
    assert c.layer_windows == [8, None, 8, None]
    local, glob = c.layer_ropes[0], c.layer_ropes[1]
    assert (local["rope_type"], local["rope_theta"]) == ("default", 1e4)
    assert (glob["rope_type"], glob["rope_theta"], glob["factor"]) == ("linear", 1e6, 4.0)
    # the transformers 5 layout gives the same
    new = dict(GEMMA3, layer_types=["sliding_attention", "full_attention"] * 2, rope_parameters={
        "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    for k in ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"):
        new.pop(k)
    c2 = write(tmp_path, new)
    assert c2.layer_windows == c.layer_windows
    for a, b in zip(c.layer_ropes, c2.layer_ropes):
        assert torch.equal(rope_tables(a, 16, 256).short, rope_tables(b, 16, 256).short)


def test_phi3_partial_rotary_and_longrope(tmp_path):
    c = write(tmp_path, PHI3)
    assert c.family.fused and c.head_dim == 16 and c.rotary_dim == 8
    t = rope_tables(c.rope, c.rotary_dim, c.max_position_embeddings)
    exps = torch.arange(0, 8, 2).float() / 8
    torch.testing.assert_close(t.short, 1.0 / (torch.tensor([1.0, 2.0, 3.0, 4.0]) * 1e4**exps))
    torch.testing.assert_close(t.long, 1.0 / (torch.tensor([2.0, 4.0, 6.0, 8.0]) * 1e4**exps))
    # factor 256 / 64 = 4: sqrt(1 + ln 4 / ln 64)
    assert t.scaling == pytest.approx((1 + torch.log(torch.tensor(4.0)).item() / torch.log(torch.tensor(64.0)).item()) ** 0.5)
    assert longrope_recompute_position(c) == 64
    assert longrope_recompute_position(write(tmp_path, BASE | {"architectures": ["LlamaForCausalLM"]})) is None


def test_moe_layers(tmp_path):
    q = write(tmp_path, QWEN3MOE)
    assert q.family.qk_norm and q.family.moe.layers == [False, True, True, True]
    assert q.family.moe.norm_topk and q.family.moe.projections == ("gate_proj", "up_proj", "down_proj")
    m = write(tmp_path, MIXTRAL)
    assert m.family.moe.layers == [True] * 4 and m.family.moe.norm_topk and m.family.moe.expert_size == 96
    # transformers 5 writes num_local_experts for Qwen3-MoE too
    alias = dict(QWEN3MOE, num_local_experts=8)
    alias.pop("num_experts")
    assert write(tmp_path, alias).family.moe.num_experts == 8


@pytest.mark.parametrize("bad", [
    dict(GEMMA2, query_pre_attn_scalar=None),
    dict(GEMMA2, attn_logit_softcapping=-1.0),
    dict(GEMMA2, hidden_activation="relu"),
    dict(GEMMA3, layer_types=["sliding_attention"]),
    dict(PHI3, rope_scaling={"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}),
    dict(PHI3, partial_rotary_factor=1.5),
    dict(PHI3, original_max_position_embeddings=None),
    dict(QWEN3MOE, num_experts_per_tok=9),
    dict(QWEN3MOE, mlp_only_layers="0"),
    dict(MIXTRAL, num_local_experts=0),
])
def test_rejects_bad_family_configs(tmp_path, bad):
    with pytest.raises(ConfigError):
        write(tmp_path, bad)


class _W:
    """Weights stand-in: random tensors by name."""

    def __init__(self):
        self.g = torch.Generator().manual_seed(0)

    def get(self, name, shape):
        return torch.randn(shape, generator=self.g)


@pytest.mark.parametrize("norm_topk", [True, False])
def test_moe_block_matches_per_token_sum(norm_topk):
    spec = MoeSpec(6, 2, norm_topk, 8, [True], "mlp", ("gate_proj", "up_proj", "down_proj"))
    block = MoeBlock(spec, 16, _W(), "model.layers.0.")
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    got = block(x)
    flat = x.reshape(-1, 16)
    probs = torch.softmax(flat @ block.router.T, dim=-1)
    want = torch.zeros_like(flat)
    chosen = set()
    for n in range(flat.shape[0]):
        w, idx = torch.topk(probs[n], 2)
        if norm_topk:
            w = w / w.sum()
        for wk, e in zip(w.tolist(), idx.tolist()):
            chosen.add(e)
            h = torch.nn.functional.silu(block.gate[e] @ flat[n]) * (block.up[e] @ flat[n])
            want[n] += wk * (block.down[e] @ h)
    assert len(chosen) > 2  # the tokens spread over several experts
    torch.testing.assert_close(got.reshape(-1, 16), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_topk", [True, False])
@pytest.mark.parametrize("tokens", [1, 2, 10])
def test_static_moe_matches_the_grouped_form(norm_topk, tokens):
    """Both static paths: gathering the pairs' experts (tokens * k < experts) and running every
    expert (otherwise), against the data-dependent grouped form."""
    spec = MoeSpec(6, 2, norm_topk, 8, [True], "mlp", ("gate_proj", "up_proj", "down_proj"))
    block = MoeBlock(spec, 16, _W(), "model.layers.0.")
    x = torch.randn(tokens, 16, generator=torch.Generator().manual_seed(2))
    grouped = block(x)
    block.static = True
    static = block(x)
    torch.testing.assert_close(static, grouped, rtol=1e-6, atol=1e-6)


FAMILY_DIRS = sorted(
    os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..",
                                                       "tests", "fixtures", "families", "*", "golden.json")))


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
@pytest.mark.parametrize("model_dir", FAMILY_DIRS, ids=os.path.basename)
def test_families_run_in_half_precision(model_dir, dtype):
    """bf16 / f16 storage: every family loads and its prompt logits track the f32 golden's."""
    with open(os.path.join(model_dir, "golden.json"), encoding="utf-8") as f:
        case = json.load(f)["cases"][3]
    ex = Executor(select("cpu"))
    ex.load(model_dir, dtype)
    ex.warmup(16, 128, 4, 128, 16, 0)
    original = longrope_recompute_position(load_config(model_dir))
    long_rope = original is not None and len(case["prompt_ids"]) > original
    seq = Seq(0, case["prompt_ids"], 0, list(range(8)), None, long_rope)
    shape = ex.buckets.prefill(1, len(seq.tokens), seq.end)
    row = ex._forward(shape, ex._inputs(shape, [seq]))[0]
    assert torch.isfinite(row).all()
    want = torch.tensor(case["last_prompt_logits_head"])
    got = row[:16]
    # bf16 keeps ~3 significant digits through up to 6 random layers; a wrong path decorrelates
    assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.95, (got, want)


def test_phi3_without_recompute_follows_the_cached_path():
    """Driven with the KV cache kept across the longrope switch (no recompute; each step flagged
    long once its sequence is longer than the original length), the sidecar gives the ids
    transformers gives on that path (cached_path.json, ci/oracle/phi3_cached_path.py): the
    device follows the regime flag step by step. The engine recomputes at the crossing instead
    (golden.json: test_fixtures.py, crates/halo-gaudi/tests/gaudi_families.rs)."""
    model_dir = os.path.join(os.path.dirname(FAMILY_DIRS[0]), "tiny-phi3")
    with open(os.path.join(model_dir, "cached_path.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    ex = Executor(select("cpu"))
    ex.load(model_dir, "f32")
    ex.warmup(16, 128, 4, 128, 40, 0)
    original = longrope_recompute_position(load_config(model_dir))
    outs = {i: [] for i in range(len(cases))}
    pos = {i: 0 for i in range(len(cases))}
    steps = len(cases[0]["cached_ids"])
    while any(len(o) < steps for o in outs.values()):
        batch = []
        for i, case in enumerate(cases):
            req = sampling.Request(params=sampling.Params())
            blocks = list(range(i * 10, i * 10 + 10))
            if pos[i] == 0:
                n = len(case["prompt_ids"])
                batch.append(Seq(i, case["prompt_ids"], 0, blocks, req, n > original))
                pos[i] = n
            elif len(outs[i]) < steps:
                batch.append(Seq(i, [outs[i][-1]], pos[i], blocks, req, pos[i] + 1 > original))
                pos[i] += 1
        results, _ = ex.step(batch)
        for r in results:
            outs[r.seq_id].append(r.sampled.token)
    for i, case in enumerate(cases):
        assert outs[i] == case["cached_ids"], i
