"""Shape buckets: every step is padded to one of a small set of shapes that warmup ran.

On Gaudi a new input shape means a graph compile (seconds); padding to warmed shapes keeps every
step after warmup compile-free. Prefill runs as (batch, tokens) with the block dimension that
many tokens need; a single prefill chunk with earlier context also gets (1, tokens, blocks)
shapes. Decode runs as (batch, blocks). Each dimension's ladder doubles from its minimum and
ends exactly at its maximum. A shape outside the set still runs (padded to ladder values) and
is counted as a compile after warmup.
"""

from __future__ import annotations

from dataclasses import dataclass


def ladder(lo: int, hi: int) -> list[int]:
    """lo, 2lo, 4lo, ... below hi, then hi itself."""
    lo, hi = max(1, lo), max(1, hi)
    out = []
    v = min(lo, hi)
    while v < hi:
        out.append(v)
        v *= 2
    out.append(hi)
    return out


def ceil_to(values: list[int], x: int) -> int:
    """The smallest ladder value >= x; past the top, x rounded up to a multiple of the top."""
    for v in values:
        if v >= x:
            return v
    top = values[-1]
    return -(-x // top) * top


@dataclass(frozen=True, order=True)
class Shape:
    kind: str  # "prefill" or "decode"
    batch: int
    tokens: int
    blocks: int

    def __str__(self) -> str:
        if self.kind == "decode":
            return f"decode b={self.batch} nb={self.blocks}"
        return f"prefill b={self.batch} t={self.tokens} nb={self.blocks}"


class Buckets:
    def __init__(
        self,
        block_size: int,
        max_batch_tokens: int,
        max_batch_seqs: int,
        max_seq_len: int,
        num_blocks: int | None = None,
    ):
        if min(block_size, max_batch_tokens, max_batch_seqs, max_seq_len) <= 0:
            raise ValueError("bucket limits must be positive")
        self.block_size = block_size
        self.max_batch_tokens = max_batch_tokens
        self.max_prefill = min(max_batch_tokens, max_seq_len)
        self.batch = ladder(1, max_batch_seqs)
        self.tokens = ladder(min(block_size, self.max_prefill), self.max_prefill)
        # No sequence spans more blocks than the pool has, whatever max_seq_len says.
        most_blocks = -(-max_seq_len // block_size)
        if num_blocks is not None:
            most_blocks = max(1, min(most_blocks, num_blocks))
        self.blocks = ladder(1, most_blocks)

    def _blocks_for(self, tokens: int) -> int:
        return ceil_to(self.blocks, -(-tokens // self.block_size))

    def prefill(self, batch: int, max_tokens: int, max_end: int) -> Shape:
        """The shape for `batch` prefill rows, the longest with `max_tokens` new tokens and the
        furthest reaching position `max_end`."""
        t = ceil_to(self.tokens, max_tokens)
        nb = max(self._blocks_for(t), ceil_to(self.blocks, -(-max_end // self.block_size)))
        return Shape("prefill", ceil_to(self.batch, batch), t, nb)

    def pack_prefill(self, rows: list[tuple[int, int]], warmed: set) -> list[tuple[Shape, list[int]]]:
        """Splits prefill rows, given as (new tokens, end position), into passes whose shapes
        are warmed, longest rows first: a few more passes instead of a compile. Returns each
        pass's shape and its row indices. Rows no warmed shape fits run alone."""
        order = sorted(range(len(rows)), key=lambda i: (-rows[i][0], i))
        passes: list[tuple[Shape, list[int]]] = []
        for i in order:
            for n, (_, members) in enumerate(passes):
                grown = members + [i]
                shape = self.prefill(
                    len(grown), max(rows[j][0] for j in grown), max(rows[j][1] for j in grown)
                )
                if shape in warmed:
                    passes[n] = (shape, grown)
                    break
            else:
                passes.append((self.prefill(1, rows[i][0], rows[i][1]), [i]))
        return passes

    def decode(self, batch: int, max_end: int) -> Shape:
        nb = ceil_to(self.blocks, -(-max_end // self.block_size))
        return Shape("decode", ceil_to(self.batch, batch), 1, nb)

    def warmup_shapes(self) -> list[Shape]:
        """Every shape warmup runs: the ones the scheduler's limits can produce."""
        shapes = set()
        # Padded rows x tokens may exceed the token budget when prompt lengths differ; allow
        # twice the budget so two uneven prompts still land in a warmed shape.
        cap = 2 * ceil_to(self.tokens, self.max_batch_tokens)
        for b in self.batch:
            for t in self.tokens:
                if b * t <= cap:
                    shapes.add(Shape("prefill", b, t, self._blocks_for(t)))
        for t in self.tokens:
            for nb in self.blocks:
                if nb > self._blocks_for(t):
                    shapes.add(Shape("prefill", 1, t, nb))
        for b in self.batch:
            for nb in self.blocks:
                shapes.add(Shape("decode", b, 1, nb))
        return sorted(shapes)
