"""halo_hal::sampling, mirrored step by step on one row of f32 logits (numpy, on the host).

The Rust reference is the definition; this file follows its arithmetic exactly so the same seed
gives the same token on every backend:
- every probability and log-sum is accumulated sequentially in f64 (np.cumsum, never numpy's
  pairwise sum, never Python's compensated sum());
- exponentials use math.exp (the C library's exp, as Rust's f64::exp), not numpy's SIMD exp;
- penalties are applied in f32, as in Rust;
- candidate order is logit descending, ties to the lower id (a total order, so stable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import rng


@dataclass
class Params:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int = 0

    def uses_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )


@dataclass
class Request:
    params: Params
    rng_offset: int = 0
    logprobs: bool = False
    top_n: int = 0
    # None when no penalty is on (the history is not sent then). The history comes either as
    # raw lists (prompt, generated) or as counts: (token, occurrences in the output) per
    # distinct token of prompt and output.
    prompt: list[int] | None = None
    generated: list[int] | None = None
    history: list[tuple[int, int]] | None = None

    def has_history(self) -> bool:
        return self.generated is not None or self.prompt is not None or self.history is not None


@dataclass
class Sampled:
    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


class NonFiniteLogits(Exception):
    """NaN or infinity in the row: this sequence fails, the batch goes on."""


def _seq_sum(values: np.ndarray) -> float:
    """Left-to-right f64 sum, as Rust's Iterator::sum."""
    if values.size == 0:
        return 0.0
    return float(np.cumsum(values, dtype=np.float64)[-1])


def _exp(values: np.ndarray) -> np.ndarray:
    return np.fromiter((math.exp(v) for v in values.tolist()), dtype=np.float64, count=values.size)


def log_sum_exp(logits: np.ndarray) -> float:
    m = float(np.max(logits))
    return m + math.log(_seq_sum(_exp(logits.astype(np.float64) - m)))


def order_desc(logits: np.ndarray) -> np.ndarray:
    """All ids by logit descending, ties to the lower id."""
    ids = np.arange(logits.size)
    # lexsort sorts by the last key first; -0.0 and 0.0 compare equal, as partial_cmp says.
    return np.lexsort((ids, -logits.astype(np.float64)))


def top_indices(logits: np.ndarray, n: int) -> np.ndarray:
    return order_desc(logits)[: min(n, logits.size)]


def argmax(logits: np.ndarray) -> int:
    return int(np.argmax(logits))  # the first maximum, as the reference's strict >


def _history_counts(req: Request) -> list[tuple[int, int]]:
    """(token, occurrences in the output) per distinct token of prompt and output."""
    if req.history is not None:
        return req.history
    counts: dict[int, int] = {}
    for t in req.prompt or []:
        counts.setdefault(t, 0)
    for t in req.generated or []:
        counts[t] = counts.get(t, 0) + 1
    return list(counts.items())


def apply_penalties(logits: np.ndarray, req: Request) -> np.ndarray:
    p = req.params
    out = logits.astype(np.float32, copy=True)
    if not req.has_history():
        return out
    vocab = out.size
    history = [(t, c) for t, c in _history_counts(req) if 0 <= t < vocab]
    if p.repetition_penalty != 1.0 and history:
        seen = np.zeros(vocab, dtype=bool)
        seen[[t for t, _ in history]] = True
        rp = np.float32(p.repetition_penalty)
        vals = out[seen]
        out[seen] = np.where(vals > 0, vals / rp, vals * rp).astype(np.float32)
    if p.frequency_penalty != 0.0 or p.presence_penalty != 0.0:
        fp, pp = np.float32(p.frequency_penalty), np.float32(p.presence_penalty)
        for t, c in history:
            if c > 0:
                out[t] = np.float32(out[t] - (np.float32(c) * fp + pp))
    return out


def _choose(logits: np.ndarray, req: Request) -> int:
    p = req.params
    if p.temperature == 0.0:
        return argmax(logits)
    inv_t = 1.0 / float(np.float32(p.temperature))
    if 0 < p.top_k < logits.size:
        order = top_indices(logits, p.top_k)
    else:
        order = order_desc(logits)
    scaled = logits[order].astype(np.float64) * inv_t
    probs = _exp(scaled - scaled[0])
    probs = probs / _seq_sum(probs)

    top_p = float(np.float32(p.top_p))
    if top_p < 1.0:
        cum = np.cumsum(probs)
        hits = np.nonzero(cum >= top_p)[0]
        keep = int(hits[0]) + 1 if hits.size else probs.size
        order, probs = order[:keep], probs[:keep]
    min_p = float(np.float32(p.min_p))
    if min_p > 0.0:
        floor = min_p * probs[0]
        below = np.nonzero(probs < floor)[0]
        keep = max(int(below[0]) if below.size else probs.size, 1)
        order, probs = order[:keep], probs[:keep]
    mass = _seq_sum(probs)
    target = rng.uniform(p.seed, req.rng_offset) * mass
    cum = np.cumsum(probs)
    hits = np.nonzero(target < cum)[0]
    return int(order[hits[0]]) if hits.size else int(order[-1])


def sample(logits: np.ndarray, req: Request) -> Sampled:
    """Samples one token from one row of logits (length = vocabulary)."""
    logits = np.asarray(logits, dtype=np.float32)
    if not np.all(np.isfinite(logits)):
        raise NonFiniteLogits()
    log_z = log_sum_exp(logits)
    work = apply_penalties(logits, req) if req.params.uses_penalties() else logits
    token = _choose(work, req)
    logprob = min(float(np.float32(float(logits[token]) - log_z)), 0.0)
    top: list[tuple[int, float]] = []
    if req.top_n > 0:
        top = [
            (int(t), float(np.float32(float(logits[t]) - log_z)))
            for t in top_indices(logits, req.top_n)
        ]
    return Sampled(token=token, logprob=logprob, top=top)
