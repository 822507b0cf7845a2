"""RoPE inverse frequencies as transformers computes them (f32), per rope type.

default, linear and llama3 give one table; longrope (Phi-3) gives a short and a long table and an
attention factor that scales cos and sin. Only the first `rotary_dim` dims of a head rotate
(partial rotary), so the tables have rotary_dim / 2 entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RopeTables:
    short: torch.Tensor  # [rotary_dim / 2] f32: the only table unless longrope
    long: torch.Tensor | None  # longrope: used by a row whose positions reach past `original`
    original: int | None  # longrope's original_max_position_embeddings
    scaling: float  # multiplies cos and sin (longrope's attention factor; 1 otherwise)


def _base(theta: float, dim: int) -> torch.Tensor:
    exps = torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim
    return 1.0 / (theta**exps)


def _llama3(freqs: torch.Tensor, rope: dict) -> torch.Tensor:
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
    return torch.where(medium, smoothed, scaled)


def _longrope_table(theta: float, dim: int, factors: list) -> torch.Tensor:
    ext = torch.tensor(factors, dtype=torch.float32)
    exps = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext * theta**exps)


def rope_tables(rope: dict, rotary_dim: int, max_position_embeddings: int) -> RopeTables:
    """The tables for one rope spec (already validated by config.py)."""
    theta = rope["rope_theta"]
    kind = rope["rope_type"]
    if kind == "longrope":
        original = int(rope["original_max_position_embeddings"])
        factor = rope.get("factor") or max_position_embeddings / original
        scaling = rope.get("attention_factor")
        if scaling is None:
            scaling = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        short = _longrope_table(theta, rotary_dim, rope["short_factor"])
        long = _longrope_table(theta, rotary_dim, rope["long_factor"])
        return RopeTables(short, long, original, float(scaling))
    freqs = _base(theta, rotary_dim)
    if kind == "linear":
        freqs = freqs / float(rope["factor"])
    elif kind == "llama3":
        freqs = _llama3(freqs, rope)
    return RopeTables(freqs.to(torch.float32), None, None, 1.0)
