"""config.json parsing: both rope layouts, rope types, windows, errors."""

import json
import math

import pytest
import torch

from halo_sidecar.config import ConfigError, inv_freq, load_config

BASE = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
}


def write(tmp_path, **over):
    cfg = dict(BASE, **over)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return load_config(str(tmp_path))


def test_both_rope_layouts_agree(tmp_path):
    old = write(tmp_path, rope_theta=500000.0, rope_scaling={"type": "linear", "factor": 2.0})
    new = write(tmp_path, rope_parameters={"rope_type": "linear", "rope_theta": 500000.0, "factor": 2.0})
    assert torch.equal(inv_freq(old), inv_freq(new))
    base = write(tmp_path, rope_theta=500000.0)
    assert torch.allclose(inv_freq(old), inv_freq(base) / 2)
    assert old.head_dim == 16 and old.num_kv_heads == 2


def test_llama3_keeps_high_and_scales_low_frequencies(tmp_path):
    rope = {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
    }
    cfg = write(tmp_path, rope_parameters=rope)
    plain = inv_freq(write(tmp_path, rope_theta=500000.0))
    scaled = inv_freq(cfg)
    wavelen = 2 * math.pi / plain
    assert torch.equal(scaled[wavelen < 16], plain[wavelen < 16])
    assert torch.allclose(scaled[wavelen > 64], plain[wavelen > 64] / 8)


def test_windows_per_architecture(tmp_path):
    m = write(tmp_path, architectures=["MistralForCausalLM"], sliding_window=32)
    assert m.layer_windows == [32, 32]
    q = write(tmp_path, architectures=["Qwen2ForCausalLM"], sliding_window=32, use_sliding_window=False)
    assert q.layer_windows == [None, None] and q.qkv_bias
    q = write(tmp_path, architectures=["Qwen2ForCausalLM"], sliding_window=32, use_sliding_window=True,
              max_window_layers=1)
    assert q.layer_windows == [None, 32]


@pytest.mark.parametrize("bad", [
    {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"},
    {"hidden_size": -1},
    {"num_key_value_heads": 3},
    {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}},
    {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}},
])
def test_rejects_bad_configs(tmp_path, bad):
    with pytest.raises(ConfigError):
        write(tmp_path, **bad)
