"""Mixture-of-experts MLP (Mixtral, Qwen3-MoE): a router picks top-k experts per token.

The router's softmax runs in f32 over all experts; the k largest probabilities are kept (and
renormalised to sum to 1 where the family does), and each token's output is the weighted sum of
its experts' SwiGLU MLPs. Tokens are grouped by expert so each selected expert's weights are
read once per forward pass, and experts nobody chose are not touched.
"""

from __future__ import annotations

import torch

from .families import MoeSpec


class MoeBlock:
    def __init__(self, spec: MoeSpec, hidden: int, w, prefix: str):
        base = f"{prefix}{spec.block}."
        e, f = spec.num_experts, spec.expert_size
        self.spec = spec
        self.router = w.get(base + "gate.weight", (e, hidden))
        gate_name, up_name, down_name = spec.projections
        # one [E, f, hidden] / [E, hidden, f] stack per projection, indexed by expert id
        self.gate = torch.stack([w.get(f"{base}experts.{i}.{gate_name}.weight", (f, hidden)) for i in range(e)])
        self.up = torch.stack([w.get(f"{base}experts.{i}.{up_name}.weight", (f, hidden)) for i in range(e)])
        self.down = torch.stack([w.get(f"{base}experts.{i}.{down_name}.weight", (hidden, f)) for i in range(e)])

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, hidden] -> (weights [N, k] in x's dtype, expert ids [N, k])."""
        logits = torch.nn.functional.linear(x, self.router)
        probs = torch.softmax(logits.to(torch.float32), dim=-1)
        top_w, top_i = torch.topk(probs, self.spec.top_k, dim=-1)
        if self.spec.norm_topk:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return top_w.to(x.dtype), top_i

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        top_w, top_i = self.route(flat)
        out = torch.zeros_like(flat)
        # ascending expert order, as transformers accumulates, so sums round the same way
        for e in torch.unique(top_i).tolist():
            tokens, slot = torch.where(top_i == e)
            h = flat[tokens]
            y = torch.nn.functional.silu(torch.nn.functional.linear(h, self.gate[e]))
            y = y * torch.nn.functional.linear(h, self.up[e])
            y = torch.nn.functional.linear(y, self.down[e]) * top_w[tokens, slot, None]
            out.index_add_(0, tokens, y)
        return out.reshape(shape)
