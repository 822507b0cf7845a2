"""Mixture-of-experts MLP (Mixtral, Qwen3-MoE): a router picks top-k experts per token.

The router's softmax runs in f32 over all experts; the k largest probabilities are kept (and
renormalised to sum to 1 where the family does), and each token's output is the weighted sum of
its experts' SwiGLU MLPs. Tokens are grouped by expert so each selected expert's weights are
read once per forward pass, and experts nobody chose are not touched.

That grouping is data-dependent control flow (which experts ran, how many tokens each took), which
an HPU graph would freeze at capture and replay for other tokens. Under HPU graphs the block runs
its static form instead (`static = True`): the same arithmetic with shapes fixed by the batch
alone. When a step has fewer (token, expert) pairs than experts it gathers just those pairs'
expert weights; otherwise it runs every expert on every token and keeps the chosen outputs.
"""

from __future__ import annotations

import torch

from .families import MoeSpec


class MoeBlock:
    def __init__(self, spec: MoeSpec, hidden: int, w, prefix: str):
        base = f"{prefix}{spec.block}."
        e, f = spec.num_experts, spec.expert_size
        self.spec = spec
        # shapes fixed by the batch alone (HPU graphs); see the module's docstring
        self.static = False
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
        out = self._static(flat) if self.static else self._grouped(flat)
        return out.reshape(shape)

    def _grouped(self, flat: torch.Tensor) -> torch.Tensor:
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
        return out

    def _static(self, flat: torch.Tensor) -> torch.Tensor:
        top_w, top_i = self.route(flat)
        # each token's slots in ascending expert id: the order the grouped form adds them in
        top_i, order = torch.sort(top_i, dim=-1)
        top_w = torch.gather(top_w, -1, order)
        n, k = top_i.shape
        silu = torch.nn.functional.silu
        if n * k < self.spec.num_experts:
            # [n, k, f, hidden] and [n, k, hidden, f]: only the chosen experts' weights
            col = flat[:, None, :, None]
            g = torch.matmul(self.gate[top_i], col).squeeze(-1)
            u = torch.matmul(self.up[top_i], col).squeeze(-1)
            y = torch.matmul(self.down[top_i], (silu(g) * u).unsqueeze(-1)).squeeze(-1)
        else:
            # every expert on every token ([experts, n, ...]), then each token's chosen rows
            g = torch.matmul(flat, self.gate.transpose(1, 2))
            u = torch.matmul(flat, self.up.transpose(1, 2))
            every = torch.matmul(silu(g) * u, self.down.transpose(1, 2))
            rows = torch.arange(n, device=flat.device)[:, None].expand(n, k)
            y = every[top_i, rows]
        out = torch.zeros_like(flat)
        for slot in range(k):
            out = out + y[:, slot] * top_w[:, slot, None]
        return out
