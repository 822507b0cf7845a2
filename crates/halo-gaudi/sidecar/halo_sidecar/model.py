"""The decoder families (Llama, Mistral, Qwen2, Qwen3, Qwen3-MoE, Mixtral, Gemma 2, Gemma 3 text,
Phi-3) in plain torch, over a paged KV cache. What differs between families is a set of knobs
(families.py): norms, q/k norm, score scale and soft-capping, activation, fused projections,
partial rotary and per-layer RoPE tables, and a mixture-of-experts MLP (moe.py).

One forward pass takes a padded [batch, tokens] block of new tokens with their positions, the
cache slot each new token's K/V goes to, and each row's block table. It writes the new K/V into
the cache first, then gathers every row's keys through its block table and attends with a
causal (and, for sliding-window layers, windowed) mask built from positions, so a prefill chunk
with earlier context, a fresh prompt and a decode token are the same computation. Padding rows
and tokens point at a scratch block no sequence owns.

Only the rows' last tokens go through the final norm and the LM head: logits for [batch, vocab].
"""

from __future__ import annotations

import glob
import json
import os

import torch

from .config import ModelConfig
from .moe import MoeBlock
from .rope import rope_tables


class WeightError(ValueError):
    """A tensor is missing or has the wrong shape."""


def _safetensor_files(model_dir: str) -> list[str]:
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            names = sorted(set(json.load(f).get("weight_map", {}).values()))
        return [os.path.join(model_dir, n) for n in names]
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        raise WeightError("no .safetensors file in the model directory")
    return files


class Weights:
    """Reads tensors by HF name from the directory's safetensors files, checking shapes."""

    def __init__(self, model_dir: str, device: torch.device, dtype: torch.dtype):
        from safetensors import safe_open

        self._handles = {}
        self._where = {}
        for path in _safetensor_files(model_dir):
            handle = safe_open(path, framework="pt", device="cpu")
            self._handles[path] = handle
            for name in handle.keys():
                self._where[name] = path
        self.device, self.dtype = device, dtype
        self.bytes = 0
        self.params = 0

    def has(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str, shape: tuple) -> torch.Tensor:
        path = self._where.get(name)
        if path is None:
            raise WeightError(f"tensor {name} is missing")
        t = self._handles[path].get_tensor(name)
        if tuple(t.shape) != tuple(shape):
            raise WeightError(f"tensor {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        t = t.to(device=self.device, dtype=self.dtype).contiguous()
        self.params += t.numel()
        self.bytes += t.numel() * t.element_size()
        return t


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _gemma_norm(x: torch.Tensor, one_plus_w: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm: normalised and scaled by (1 + w), all in f32, then back to x's dtype."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * one_plus_w).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the leading cos.shape[-1] dims of each head; the rest pass (partial rotary)."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    xr, xp = x[..., :rot], x[..., rot:]
    return torch.cat((xr * cos + _rotate_half(xr) * sin, xp), dim=-1)


class Layer:
    def __init__(self, cfg: ModelConfig, w: Weights, i: int):
        p = f"model.layers.{i}."
        fam = cfg.family
        h, d = cfg.hidden_size, cfg.head_dim
        qd, kvd = cfg.num_heads * d, cfg.num_kv_heads * d
        self.norm = self._norm_fn(cfg)
        self.input_norm = self._norm_weight(cfg, w, p + "input_layernorm.weight", (h,))
        self.post_norm = self._norm_weight(cfg, w, p + "post_attention_layernorm.weight", (h,))
        # Gemma: post_attention_layernorm normalises the attention output; these two wrap the MLP
        self.pre_ff_norm = self.post_ff_norm = None
        if fam.gemma_norms:
            self.pre_ff_norm = self._norm_weight(cfg, w, p + "pre_feedforward_layernorm.weight", (h,))
            self.post_ff_norm = self._norm_weight(cfg, w, p + "post_feedforward_layernorm.weight", (h,))
        if fam.fused:
            qkv = w.get(p + "self_attn.qkv_proj.weight", (qd + 2 * kvd, h))
            self.q, self.k, self.v = (t.contiguous() for t in torch.split(qkv, [qd, kvd, kvd]))
        else:
            self.q = w.get(p + "self_attn.q_proj.weight", (qd, h))
            self.k = w.get(p + "self_attn.k_proj.weight", (kvd, h))
            self.v = w.get(p + "self_attn.v_proj.weight", (kvd, h))
        self.o = w.get(p + "self_attn.o_proj.weight", (h, qd))
        self.q_norm = self.k_norm = None
        if fam.qk_norm:
            self.q_norm = self._norm_weight(cfg, w, p + "self_attn.q_norm.weight", (d,))
            self.k_norm = self._norm_weight(cfg, w, p + "self_attn.k_norm.weight", (d,))
        self.qb = self.kb = self.vb = self.ob = None
        if cfg.qkv_bias:
            self.qb = w.get(p + "self_attn.q_proj.bias", (qd,))
            self.kb = w.get(p + "self_attn.k_proj.bias", (kvd,))
            self.vb = w.get(p + "self_attn.v_proj.bias", (kvd,))
        if w.has(p + "self_attn.o_proj.bias"):
            self.ob = w.get(p + "self_attn.o_proj.bias", (h,))
        self.moe = None
        self.gate = self.up = self.down = None
        self.gate_b = self.up_b = self.down_b = None
        if fam.moe is not None and fam.moe.layers[i]:
            self.moe = MoeBlock(fam.moe, h, w, p)
        else:
            f = cfg.intermediate_size
            if fam.fused:
                gate_up = w.get(p + "mlp.gate_up_proj.weight", (2 * f, h))
                self.gate, self.up = (t.contiguous() for t in torch.split(gate_up, [f, f]))
            else:
                self.gate = w.get(p + "mlp.gate_proj.weight", (f, h))
                self.up = w.get(p + "mlp.up_proj.weight", (f, h))
            self.down = w.get(p + "mlp.down_proj.weight", (h, f))
            if cfg.mlp_bias:
                self.gate_b = w.get(p + "mlp.gate_proj.bias", (f,))
                self.up_b = w.get(p + "mlp.up_proj.bias", (f,))
                self.down_b = w.get(p + "mlp.down_proj.bias", (h,))
        self.act = (torch.nn.functional.silu if fam.activation == "silu"
                    else lambda g: torch.nn.functional.gelu(g, approximate="tanh"))
        self.window = cfg.layer_windows[i]
        self.rope = cfg.layer_ropes[i]

    @staticmethod
    def _norm_fn(cfg: ModelConfig):
        return _gemma_norm if cfg.family.gemma_norms else _rms_norm

    @staticmethod
    def _norm_weight(cfg: ModelConfig, w: Weights, name: str, shape: tuple) -> torch.Tensor:
        t = w.get(name, shape)
        # Gemma scales by (1 + w) in f32: precompute it once
        return 1.0 + t.to(torch.float32) if cfg.family.gemma_norms else t

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.moe is not None:
            return self.moe(x)
        gate = torch.nn.functional.linear(x, self.gate, self.gate_b)
        up = torch.nn.functional.linear(x, self.up, self.up_b)
        return torch.nn.functional.linear(self.act(gate) * up, self.down, self.down_b)


class CausalLM(torch.nn.Module):
    """The decoder stack. Holds the weights and the paged KV cache of every layer."""

    def __init__(self, cfg: ModelConfig, w: Weights):
        super().__init__()
        self.cfg = cfg
        fam = cfg.family
        h, v = cfg.hidden_size, cfg.vocab_size
        self.embed = w.get("model.embed_tokens.weight", (v, h))
        self.layers = [Layer(cfg, w, i) for i in range(cfg.num_layers)]
        self.norm = Layer._norm_weight(cfg, w, "model.norm.weight", (h,))
        self.final_norm = Layer._norm_fn(cfg)
        if cfg.tie_word_embeddings or not w.has("lm_head.weight"):
            if not cfg.tie_word_embeddings:
                raise WeightError("tensor lm_head.weight is missing")
            self.lm_head = self.embed
        else:
            self.lm_head = w.get("lm_head.weight", (v, h))
        # one set of RoPE tables per distinct rope spec (Gemma 3: local and global)
        self.ropes = []
        for rope in cfg.layer_ropes:
            if not any(r is rope for r, _ in self.ropes):
                t = rope_tables(rope, cfg.rotary_dim, cfg.max_position_embeddings)
                t.short = t.short.to(w.device)
                t.long = None if t.long is None else t.long.to(w.device)
                self.ropes.append((rope, t))
        self.scale = (fam.query_pre_attn_scalar or cfg.head_dim) ** -0.5
        # Gemma multiplies embeddings by sqrt(hidden), rounded to the weights' dtype
        self.embed_scale = None
        if fam.embed_scale:
            self.embed_scale = torch.tensor(h**0.5, dtype=self.embed.dtype, device=w.device)
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self.block_size = 0

    def use_static_moe(self) -> None:
        """MoE layers run their static form (no data-dependent control flow; HPU graphs)."""
        for layer in self.layers:
            if layer.moe is not None:
                layer.moe.static = True

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        """num_blocks usable blocks plus one scratch block (id num_blocks) for padding writes."""
        cfg = self.cfg
        slots = (num_blocks + 1) * block_size
        shape = (slots, cfg.num_kv_heads, cfg.head_dim)
        dev, dt = self.embed.device, self.embed.dtype
        self.k_cache = [torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.num_layers)]
        self.v_cache = [torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.num_layers)]
        self.block_size = block_size

    def _cos_sin(self, tables, positions: torch.Tensor, long_rope: torch.Tensor, dtype: torch.dtype):
        """cos, sin [B, 1, T, rotary_dim] for one set of tables. longrope: a row uses the long
        factors when its sequence is in the long regime (`long_rope`, decided by the engine from
        the sequence's whole length, as transformers decides per forward pass from seq_len > its
        original_max_position_embeddings); the engine recomputes a sequence that crosses."""
        pos = positions.to(torch.float32)[..., None]
        if tables.long is None:
            freqs = pos * tables.short
        else:
            use_long = long_rope[:, None, None]
            freqs = torch.where(use_long, pos * tables.long, pos * tables.short)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * tables.scaling).to(dtype)[:, None]
        sin = (emb.sin() * tables.scaling).to(dtype)[:, None]
        return cos, sin

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T] int64
        positions: torch.Tensor,  # [B, T] int64
        slot_mapping: torch.Tensor,  # [B, T] int64: cache slot of each new token
        block_tables: torch.Tensor,  # [B, NB] int64
        last_index: torch.Tensor,  # [B] int64: index in T of each row's last real token
        long_rope: torch.Tensor,  # [B] bool: the row's sequence is in the long RoPE regime
    ) -> torch.Tensor:
        cfg = self.cfg
        fam = cfg.family
        b, t = input_ids.shape
        bs = self.block_size
        kvh, d = cfg.num_kv_heads, cfg.head_dim
        group = cfg.num_heads // kvh

        x = self.embed[input_ids]
        if self.embed_scale is not None:
            x = x * self.embed_scale
        rot = {id(rope): self._cos_sin(tables, positions, long_rope, x.dtype) for rope, tables in self.ropes}

        offsets = torch.arange(bs, device=x.device)
        key_slots = (block_tables[:, :, None] * bs + offsets).reshape(b, -1)  # [B, S]
        key_pos = torch.arange(key_slots.shape[1], device=x.device)
        causal = key_pos[None, None, :] <= positions[:, :, None]  # [B, T, S]
        masks = {}
        for window in set(cfg.layer_windows):
            m = causal
            if window is not None:
                m = m & (positions[:, :, None] - key_pos[None, None, :] < window)
            masks[window] = m[:, None, None]  # [B, 1, 1, T, S]
        flat_slots = slot_mapping.reshape(-1)
        eps = cfg.rms_norm_eps

        for li, layer in enumerate(self.layers):
            norm = layer.norm
            r = x
            hn = norm(x, layer.input_norm, eps)
            q = torch.nn.functional.linear(hn, layer.q, layer.qb).view(b, t, cfg.num_heads, d)
            k = torch.nn.functional.linear(hn, layer.k, layer.kb).view(b, t, kvh, d)
            v = torch.nn.functional.linear(hn, layer.v, layer.vb)
            if layer.q_norm is not None:
                q = norm(q, layer.q_norm, eps)
                k = norm(k, layer.k_norm, eps)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            cos, sin = rot[id(layer.rope)]
            q = _rope(q, cos, sin)
            k = _rope(k, cos, sin)
            kc, vc = self.k_cache[li], self.v_cache[li]
            kc.index_copy_(0, flat_slots, k.transpose(1, 2).reshape(-1, kvh, d))
            vc.index_copy_(0, flat_slots, v.reshape(-1, kvh, d))
            keys = kc[key_slots].permute(0, 2, 1, 3)  # [B, KVH, S, D]
            vals = vc[key_slots].permute(0, 2, 1, 3)
            # Query head h reads KV head h // group: fold the group into the query axis.
            qg = q.reshape(b, kvh, group * t, d)
            scores = torch.matmul(qg, keys.transpose(-1, -2)).to(torch.float32) * self.scale
            if fam.attn_softcap is not None:
                scores = torch.tanh(scores / fam.attn_softcap) * fam.attn_softcap
            scores = scores.view(b, kvh, group, t, -1)
            scores = scores.masked_fill(~masks[layer.window], torch.finfo(torch.float32).min)
            probs = torch.softmax(scores, dim=-1).to(x.dtype).view(b, kvh, group * t, -1)
            out = torch.matmul(probs, vals).view(b, cfg.num_heads, t, d)
            out = out.transpose(1, 2).reshape(b, t, cfg.num_heads * d)
            attn = torch.nn.functional.linear(out, layer.o, layer.ob)
            if layer.pre_ff_norm is not None:
                # Gemma: norm the attention output, then wrap the MLP in its own two norms
                x = r + norm(attn, layer.post_norm, eps)
                mlp = layer.mlp(norm(x, layer.pre_ff_norm, eps))
                x = x + norm(mlp, layer.post_ff_norm, eps)
            else:
                x = r + attn
                x = x + layer.mlp(norm(x, layer.post_norm, eps))

        last = x[torch.arange(b, device=x.device), last_index]  # [B, H]
        last = self.final_norm(last, self.norm, eps)
        logits = torch.nn.functional.linear(last, self.lm_head).to(torch.float32)
        if fam.final_softcap is not None:
            logits = torch.tanh(logits / fam.final_softcap) * fam.final_softcap
        return logits
