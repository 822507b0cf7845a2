"""Reads a model directory's config.json into the few numbers the torch model needs.

Both config layouts are accepted: the older top-level `rope_theta` + `rope_scaling`, and the newer
`rope_parameters` object (transformers >= 5; Gemma 3's holds one entry per layer type). RoPE
frequencies follow transformers' definitions for the default, linear, llama3 and longrope rope
types (rope.py), computed in f32 as transformers does. What a family changes beyond the numbers
here comes from families.py.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

from .families import Family, FamilyError, family, gemma_layer_types
from .rope import rope_tables

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "MixtralForCausalLM": "mixtral",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
}
# model_type values that name the same architectures
MODEL_TYPES = {"gemma3_text": "gemma3"}
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "gemma2", "gemma3", "phi3")


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
    family: Family = None
    # the leading dims of each head that RoPE rotates (Phi-3's partial_rotary_factor)
    rotary_dim: int = 0
    # One rope spec per layer: `rope` everywhere except Gemma 3's local layers.
    layer_ropes: list = None


def _int(cfg: dict, key: str, default=None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ConfigError(f"config.json lacks {key}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"config.json: {key} must be a positive integer")
    return value


def _rope(cfg: dict, params=None) -> dict:
    if params is None:
        params = cfg.get("rope_parameters")
    if isinstance(params, dict):
        rope = dict(params)
    else:
        rope = dict(cfg.get("rope_scaling") or {})
        if "rope_theta" in cfg:
            rope["rope_theta"] = cfg["rope_theta"]
    kind = rope.get("rope_type", rope.get("type", "default")) or "default"
    if kind not in ("default", "linear", "llama3", "longrope"):
        raise ConfigError(f"unsupported rope type {kind!r} (default, linear, llama3, longrope)")
    rope["rope_type"] = kind
    if kind == "longrope" and "original_max_position_embeddings" not in rope:
        # Phi-3 keeps it at the top level of config.json
        rope["original_max_position_embeddings"] = cfg.get("original_max_position_embeddings")
    needed = {"linear": ["factor"], "llama3": ["factor", "low_freq_factor", "high_freq_factor",
                                               "original_max_position_embeddings"],
              "longrope": ["original_max_position_embeddings"]}
    for key in needed.get(kind, []):
        value = rope.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"rope type {kind} needs a positive {key}")
    theta = rope.get("rope_theta", 10000.0)
    if not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
        raise ConfigError("config.json: rope_theta must be a positive number")
    rope["rope_theta"] = float(theta)
    return rope


def _check_longrope(rope: dict, rotary_dim: int) -> None:
    for key in ("short_factor", "long_factor"):
        factors = rope.get(key)
        if (not isinstance(factors, list) or len(factors) != rotary_dim // 2
                or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0 for f in factors)):
            raise ConfigError(f"longrope {key} must list {rotary_dim // 2} positive numbers (rotary dim / 2)")


def _gemma3_ropes(cfg: dict, types: list) -> tuple[dict, list]:
    """Gemma 3: global layers use rope_theta and rope_scaling, local ones their own base."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:
        glob = _rope(cfg, params["full_attention"])
        local = _rope(cfg, params.get("sliding_attention") or {"rope_type": "default", "rope_theta": 10000.0})
    else:
        glob = _rope(cfg)
        if "rope_theta" not in cfg and not isinstance(params, dict):
            glob["rope_theta"] = 1_000_000.0  # transformers' Gemma 3 default for global layers
        local_base = cfg.get("rope_local_base_freq", 10000.0)
        local = _rope(cfg, {"rope_type": "default", "rope_theta": local_base})
    return glob, [local if t == "sliding_attention" else glob for t in types]


def _layer_windows(cfg: dict, arch: str, num_layers: int) -> list:
    window = cfg.get("sliding_window")
    if arch in ("qwen2", "qwen3", "qwen3_moe") and not cfg.get("use_sliding_window", False):
        window = None
    if window is None:
        return [None] * num_layers
    window = _int(cfg, "sliding_window")
    if arch in ("gemma2", "gemma3"):
        types = gemma_layer_types(cfg, num_layers)
        return [window if t == "sliding_attention" else None for t in types]
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == num_layers:
        return [window if t == "sliding_attention" else None for t in types]
    if arch in ("qwen2", "qwen3", "qwen3_moe"):
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
        arch = MODEL_TYPES.get(cfg.get("model_type"), cfg.get("model_type"))
    if arch not in SUPPORTED:
        raise ConfigError(f"unsupported architecture {archs or arch!r} (Llama, Mistral, Qwen2, Qwen3, "
                          "Qwen3-MoE, Mixtral, Gemma 2, Gemma 3 text, Phi-3)")
    hidden = _int(cfg, "hidden_size")
    heads = _int(cfg, "num_attention_heads")
    kv_heads = _int(cfg, "num_key_value_heads", heads)
    if heads % kv_heads:
        raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
    head_dim = cfg.get("head_dim") or hidden // heads
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise ConfigError("head_dim must be a positive even integer")
    layers = _int(cfg, "num_hidden_layers")
    try:
        fam = family(cfg, arch, layers)
        if arch == "gemma3":
            rope, layer_ropes = _gemma3_ropes(cfg, gemma_layer_types(cfg, layers))
        else:
            rope = _rope(cfg)
            layer_ropes = [rope] * layers
    except FamilyError as e:
        raise ConfigError(str(e)) from None
    partial = cfg.get("partial_rotary_factor", rope.get("partial_rotary_factor", 1.0))
    if isinstance(partial, bool) or not isinstance(partial, (int, float)) or not 0 < partial <= 1:
        raise ConfigError("config.json: partial_rotary_factor must be in (0, 1]")
    rotary_dim = int(head_dim * partial)
    if rotary_dim <= 0 or rotary_dim % 2:
        raise ConfigError(f"the rotated part of a head ({rotary_dim} dims) must be a positive even number")
    if rope["rope_type"] == "longrope":
        _check_longrope(rope, rotary_dim)
    max_pos = _int(cfg, "max_position_embeddings", 2048)
    return ModelConfig(
        architecture=arch,
        hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size"),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_int(cfg, "vocab_size"),
        max_position_embeddings=max_pos,
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", arch in ("gemma2", "gemma3"))),
        qkv_bias=True if arch == "qwen2" else bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        rope=rope,
        layer_windows=_layer_windows(cfg, arch, layers),
        torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
        family=fam,
        rotary_dim=rotary_dim,
        layer_ropes=layer_ropes,
    )


def longrope_recompute_position(cfg: ModelConfig) -> int | None:
    """For longrope: the original length. A sequence longer than it is in the long regime
    (Seq.long_rope, set by the engine); transformers (Phi-3's generate) recomputes the whole
    sequence when it first crosses, as halo's engine does, so a caller that sends it again from
    position 0 in the long regime there gets golden.json's ids, and one that keeps the cache and
    flags only the new steps long gets cached_path.json's. None for every other rope type."""
    if cfg.rope["rope_type"] != "longrope":
        return None
    return int(cfg.rope["original_max_position_embeddings"])


def inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """RoPE inverse frequencies (rotary_dim / 2 of them, f32), as transformers computes them:
    the global layers' for Gemma 3, the short factors' for longrope."""
    return rope_tables(cfg.rope, cfg.rotary_dim, cfg.max_position_embeddings).short
