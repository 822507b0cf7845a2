"""Runs load, warmup and step on one backend: the part of the sidecar that knows no gRPC.

A step is split into a prefill pass (new prompts and prompt chunks) and a decode pass (one new
token each); each pass is padded to its shape bucket, runs the (graph-wrapped) model once, and
its sampled rows go through the reference sampler on the host. Every input is checked before
any tensor is touched: the batch comes from another process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import sampling
from .backend import Backend
from .buckets import Buckets, Shape
from .config import load_config
from .model import CausalLM, Weights

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

# A block-table entry the engine released (halo_hal::FREED_BLOCK): with a model whose every
# layer attends through a sliding window, a block wholly older than the window. It is never
# written; the gathered tables point it at the scratch block, which the window mask hides.
FREED_BLOCK = 0xFFFFFFFF
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class BadRequest(ValueError):
    """The caller broke the protocol (maps to INVALID_ARGUMENT)."""


class NotReady(RuntimeError):
    """A call came out of order (maps to FAILED_PRECONDITION)."""


@dataclass
class Seq:
    seq_id: int
    tokens: list
    start_pos: int
    block_table: list
    sample: sampling.Request | None
    # The sequence's RoPE regime, decided by the engine from its whole length (LongRoPE's long
    # factors when True); the same for every chunk of the sequence.
    long_rope: bool = False

    @property
    def end(self) -> int:
        return self.start_pos + len(self.tokens)


@dataclass
class Result:
    seq_id: int
    sampled: sampling.Sampled | None  # None: non-finite logits


@dataclass
class Timings:
    forward_us: int = 0
    padded_tokens: int = 0
    bucket: str = ""
    graph_compiled: bool = False


class Executor:
    def __init__(self, backend: Backend, warm_all: bool | None = None):
        self.backend = backend
        # Every bucket runs at warmup where a new shape costs a compile (HPU graphs) or a CUDA
        # kernel autotune; on CPU nothing is compiled, so only the extreme shapes run (memory
        # touched, kernels exercised) and the rest are registered. HALO_SIDECAR_WARMUP=all|edges.
        if warm_all is None:
            mode = os.environ.get("HALO_SIDECAR_WARMUP", "")
            warm_all = mode == "all" or (mode != "edges" and backend.name != "cpu")
        self.warm_all = warm_all
        self.model: CausalLM | None = None
        self.run = None
        self.info: dict = {}
        self.buckets: Buckets | None = None
        self.num_blocks = 0
        self.max_seq_len = 0
        self.seen: set[Shape] = set()
        self.warmed = False
        self.steps = 0
        self.padded_tokens_total = 0
        self.compiles_after_warmup = 0

    # -- load -------------------------------------------------------------------------------
    def load(self, model_dir: str, dtype: str | None) -> dict:
        start = time.monotonic()
        cfg = load_config(model_dir)
        torch_dtype = DTYPES[dtype] if dtype else self.backend.default_dtype()
        weights = Weights(model_dir, self.backend.device, torch_dtype)
        model = CausalLM(cfg, weights)
        if self.backend.static_moe:
            model.use_static_moe()
        self.model, self.run = model, self.backend.wrap(model)
        self.buckets, self.warmed, self.seen = None, False, set()
        self.info = {
            "name": os.path.basename(os.path.normpath(model_dir)),
            "architecture": cfg.architecture,
            "dtype": DTYPE_NAMES[torch_dtype],
            "vocab_size": cfg.vocab_size,
            "context_length": cfg.max_position_embeddings,
            "num_layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size,
            "num_kv_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim,
            "param_count": weights.params,
            "weight_bytes": weights.bytes,
            "load_ms": int((time.monotonic() - start) * 1000),
        }
        return self.info

    # -- warmup -----------------------------------------------------------------------------
    def warmup(self, block_size, max_batch_tokens, max_batch_seqs, max_seq_len, num_blocks, kv_bytes):
        if self.model is None:
            raise NotReady("warmup before load")
        if min(block_size, max_batch_tokens, max_batch_seqs, max_seq_len) <= 0:
            raise BadRequest("warmup limits must be positive")
        if max_seq_len > self.info["context_length"]:
            raise BadRequest(
                f"max_seq_len {max_seq_len} exceeds the model's context {self.info['context_length']}"
            )
        start = time.monotonic()
        cfg = self.model.cfg
        elem = torch.tensor([], dtype=self.model.embed.dtype).element_size()
        per_block = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * block_size * elem
        if num_blocks <= 0:
            budget = kv_bytes if kv_bytes > 0 else self._default_kv_budget(per_block, block_size, max_batch_seqs, max_seq_len)
            num_blocks = budget // per_block
        if num_blocks <= 0:
            raise BadRequest(f"a KV pool of {num_blocks} blocks")
        self.model.allocate_cache(num_blocks, block_size)
        self.num_blocks, self.max_seq_len = num_blocks, max_seq_len
        self.buckets = Buckets(block_size, max_batch_tokens, max_batch_seqs, max_seq_len, num_blocks)
        shapes = self.buckets.warmup_shapes()
        if self.warm_all:
            to_run = shapes
        else:
            to_run = []
            for kind in ("prefill", "decode"):
                of_kind = [x for x in shapes if x.kind == kind]
                size = lambda x: (x.batch * x.tokens * x.blocks, x)  # noqa: E731
                to_run += sorted({min(of_kind, key=size), max(of_kind, key=size)})
        # Twice on HPU: the first run compiles, the second captures/replays the graph.
        rounds = 2 if self.backend.name == "hpu" else 1
        for shape in to_run:
            for _ in range(rounds):
                self._forward(shape, self._dummy(shape))
        self.seen.update(shapes)
        self.backend.synchronize()
        self.warmed = True
        ms = int((time.monotonic() - start) * 1000)
        return num_blocks, per_block, [str(s) for s in shapes], ms

    def _default_kv_budget(self, per_block: int, block_size: int, max_seqs: int, max_len: int) -> int:
        free, _total = self.backend.memory()
        want = per_block * max_seqs * -(-max_len // block_size)
        if self.backend.name == "cpu":
            # Host memory is shared with everything else: enough for a full batch, at most a
            # quarter of what is free.
            return max(min(want, free // 4), per_block)
        # Accelerator memory is ours: most of what the weights left, minus room for graphs.
        return int(free * 0.8)

    # -- step -------------------------------------------------------------------------------
    def step(self, seqs: list[Seq]) -> tuple[list[Result], Timings]:
        if not self.warmed:
            raise NotReady("step before warmup")
        self._validate(seqs)
        prefill = [s for s in seqs if not (len(s.tokens) == 1 and s.start_pos > 0)]
        decode = [s for s in seqs if len(s.tokens) == 1 and s.start_pos > 0]
        timings = Timings()
        logits: dict[int, np.ndarray] = {}
        buckets = []
        passes: list[tuple[Shape, list[Seq]]] = []
        if prefill:
            rows = [(len(s.tokens), s.end) for s in prefill]
            for shape, idx in self.buckets.pack_prefill(rows, self.seen):
                group = [prefill[i] for i in idx]
                timings.padded_tokens += shape.batch * shape.tokens - sum(len(s.tokens) for s in group)
                passes.append((shape, group))
        if decode:
            shape = self.buckets.decode(len(decode), max(s.end for s in decode))
            timings.padded_tokens += shape.batch - len(decode)
            passes.append((shape, decode))
        for shape, group in passes:
            if shape not in self.seen:
                self.seen.add(shape)
                timings.graph_compiled = True
                self.compiles_after_warmup += 1
            buckets.append(str(shape))
            t0 = time.monotonic()
            out = self._forward(shape, self._inputs(shape, group))
            rows_out = out[: len(group)].cpu().numpy()
            timings.forward_us += int((time.monotonic() - t0) * 1e6)
            for s, row in zip(group, rows_out):
                logits[s.seq_id] = row
        timings.bucket = " + ".join(buckets)
        self.steps += 1
        self.padded_tokens_total += timings.padded_tokens
        results = []
        for s in seqs:
            if s.sample is None:
                continue
            try:
                results.append(Result(s.seq_id, sampling.sample(logits[s.seq_id], s.sample)))
            except sampling.NonFiniteLogits:
                results.append(Result(s.seq_id, None))
        return results, timings

    def _validate(self, seqs: list[Seq]) -> None:
        if not seqs:
            raise BadRequest("empty batch")
        vocab, bs = self.info["vocab_size"], self.buckets.block_size
        ids, written = set(), set()
        for s in seqs:
            if s.seq_id in ids:
                raise BadRequest(f"sequence {s.seq_id} appears twice")
            ids.add(s.seq_id)
            if not s.tokens:
                raise BadRequest(f"sequence {s.seq_id} has no tokens")
            if any(t >= vocab for t in s.tokens):
                raise BadRequest(f"sequence {s.seq_id}: a token is outside the vocabulary")
            if s.end > self.max_seq_len:
                raise BadRequest(f"sequence {s.seq_id}: length {s.end} exceeds {self.max_seq_len}")
            if len(s.block_table) < -(-s.end // bs):
                raise BadRequest(f"sequence {s.seq_id}: block table too short for {s.end} positions")
            for i, b in enumerate(s.block_table):
                if b == FREED_BLOCK:
                    if (i + 1) * bs > s.start_pos:
                        raise BadRequest(f"sequence {s.seq_id}: block {i} was freed but a position in it is written")
                elif b >= self.num_blocks:
                    raise BadRequest(f"sequence {s.seq_id}: a block is outside the pool of {self.num_blocks}")
            for pos in range(s.start_pos, s.end):
                slot = s.block_table[pos // bs] * bs + pos % bs
                if slot in written:
                    raise BadRequest(f"sequence {s.seq_id}: a KV slot is written twice in one step")
                written.add(slot)
            if s.sample is not None and s.sample.params.uses_penalties() and not s.sample.has_history():
                raise BadRequest(f"sequence {s.seq_id}: penalties without a token history")

    # -- tensors ----------------------------------------------------------------------------
    def _inputs(self, shape: Shape, group: list[Seq]) -> dict:
        bs, scratch = self.buckets.block_size, self.num_blocks
        b, t, nb = shape.batch, shape.tokens, shape.blocks
        ids = np.zeros((b, t), dtype=np.int64)
        pos = np.zeros((b, t), dtype=np.int64)
        # Padding writes land in the scratch block, which no sequence reads.
        slots = scratch * bs + (np.arange(b * t, dtype=np.int64) % bs).reshape(b, t)
        tables = np.full((b, nb), scratch, dtype=np.int64)
        last = np.zeros(b, dtype=np.int64)
        long_rope = np.zeros(b, dtype=np.bool_)
        for r, s in enumerate(group):
            long_rope[r] = s.long_rope
            n = len(s.tokens)
            ids[r, :n] = s.tokens
            p = np.arange(s.start_pos, s.end, dtype=np.int64)
            pos[r, :n] = p
            table = np.asarray(s.block_table, dtype=np.int64)
            table[table == FREED_BLOCK] = scratch
            slots[r, :n] = table[p // bs] * bs + p % bs
            used = min(len(table), nb)
            tables[r, :used] = table[:used]
            last[r] = n - 1
        return {"ids": ids, "pos": pos, "slots": slots, "tables": tables, "last": last, "long": long_rope}

    def _dummy(self, shape: Shape) -> dict:
        bs, scratch = self.buckets.block_size, self.num_blocks
        b, t, nb = shape.batch, shape.tokens, shape.blocks
        return {
            "ids": np.zeros((b, t), dtype=np.int64),
            "pos": np.tile(np.arange(t, dtype=np.int64), (b, 1)),
            "slots": scratch * bs + (np.arange(b * t, dtype=np.int64) % bs).reshape(b, t),
            "tables": np.full((b, nb), scratch, dtype=np.int64),
            "last": np.full(b, t - 1, dtype=np.int64),
            "long": np.zeros(b, dtype=np.bool_),
        }

    def _forward(self, shape: Shape, x: dict) -> torch.Tensor:
        dev = self.backend.device
        args = [torch.from_numpy(x[k]).to(dev) for k in ("ids", "pos", "slots", "tables", "last", "long")]
        with torch.inference_mode():
            out = self.run(*args)
        self.backend.mark_step()
        return out
