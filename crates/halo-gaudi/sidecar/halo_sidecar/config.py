"""Reads a model directory's config.json into the few numbers the torch model needs.

Both config layouts are accepted: the older top-level `rope_theta` + `rope_scaling`, and the newer
`rope_parameters` object (transformers >= 5). RoPE frequencies follow transformers' definitions
for the default, linear and llama3 rope types, computed in f32 as transformers does.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}


class ConfigError(ValueError):
    """The model directory's config.json is missing, malformed or unsupported."""


@dataclass
class ModelConfig:
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    qkv_bias: bool
    mlp_bias: bool
    rope: dict
    # One entry per layer: the sliding window in tokens, or None for full attention.
    layer_windows: list
    torch_dtype: str | None


def _int(cfg: dict, key: str, default=None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ConfigError(f"config.json lacks {key}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"config.json: {key} must be a positive integer")
    return value


def _rope(cfg: dict) -> dict:
    params = cfg.get("rope_parameters")
    if isinstance(params, dict):
        rope = dict(params)
    else:
        rope = dict(cfg.get("rope_scaling") or {})
        if "rope_theta" in cfg:
            rope["rope_theta"] = cfg["rope_theta"]
    kind = rope.get("rope_type", rope.get("type", "default")) or "default"
    if kind not in ("default", "linear", "llama3"):
        raise ConfigError(f"unsupported rope type {kind!r} (default, linear, llama3)")
    rope["rope_type"] = kind
    needed = {"linear": ["factor"], "llama3": ["factor", "low_freq_factor", "high_freq_factor",
                                               "original_max_position_embeddings"]}
    for key in needed.get(kind, []):
        value = rope.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"rope type {kind} needs a positive {key}")
    theta = rope.get("rope_theta", 10000.0)
    if not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
        raise ConfigError("config.json: rope_theta must be a positive number")
    rope["rope_theta"] = float(theta)
    return rope


def _layer_windows(cfg: dict, arch: str, num_layers: int) -> list:
    window = cfg.get("sliding_window")
    if arch == "qwen2" and not cfg.get("use_sliding_window", False):
        window = None
    if window is None:
        return [None] * num_layers
    window = _int(cfg, "sliding_window")
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == num_layers:
        return [window if t == "sliding_attention" else None for t in types]
    if arch == "qwen2":
        first = cfg.get("max_window_layers", num_layers)
        return [window if i >= first else None for i in range(num_layers)]
    return [window] * num_layers


def load_config(model_dir: str) -> ModelConfig:
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read config.json: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError("config.json is not an object")
    archs = cfg.get("architectures") or []
    arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        arch = cfg.get("model_type")
    if arch not in ("llama", "mistral", "qwen2"):
        raise ConfigError(f"unsupported architecture {archs or arch!r} (Llama, Mistral, Qwen2)")
    hidden = _int(cfg, "hidden_size")
    heads = _int(cfg, "num_attention_heads")
    kv_heads = _int(cfg, "num_key_value_heads", heads)
    if heads % kv_heads:
        raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
    head_dim = cfg.get("head_dim") or hidden // heads
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise ConfigError("head_dim must be a positive even integer")
    layers = _int(cfg, "num_hidden_layers")
    return ModelConfig(
        architecture=arch,
        hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size"),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_int(cfg, "vocab_size"),
        max_position_embeddings=_int(cfg, "max_position_embeddings", 2048),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=True if arch == "qwen2" else bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        rope=_rope(cfg),
        layer_windows=_layer_windows(cfg, arch, layers),
        torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
    )


def inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """RoPE inverse frequencies (head_dim / 2 of them, f32), as transformers computes them."""
    dim = cfg.head_dim
    rope = cfg.rope
    base = rope["rope_theta"]
    exps = torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim
    freqs = 1.0 / (base**exps)
    kind = rope["rope_type"]
    if kind == "linear":
        freqs = freqs / float(rope["factor"])
    elif kind == "llama3":
        factor = float(rope["factor"])
        low = float(rope["low_freq_factor"])
        high = float(rope["high_freq_factor"])
        old_len = float(rope["original_max_position_embeddings"])
        low_wavelen = old_len / low
        high_wavelen = old_len / high
        wavelen = 2 * math.pi / freqs
        scaled = torch.where(wavelen > low_wavelen, freqs / factor, freqs)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        freqs = torch.where(medium, smoothed, scaled)
    return freqs.to(torch.float32)
