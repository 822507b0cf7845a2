"""Llama, Mistral and Qwen2 in plain torch, over a paged KV cache.

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

from .config import ModelConfig, inv_freq


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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer:
    def __init__(self, cfg: ModelConfig, w: Weights, i: int):
        p = f"model.layers.{i}."
        h, d = cfg.hidden_size, cfg.head_dim
        qd, kvd = cfg.num_heads * d, cfg.num_kv_heads * d
        self.input_norm = w.get(p + "input_layernorm.weight", (h,))
        self.post_norm = w.get(p + "post_attention_layernorm.weight", (h,))
        self.q = w.get(p + "self_attn.q_proj.weight", (qd, h))
        self.k = w.get(p + "self_attn.k_proj.weight", (kvd, h))
        self.v = w.get(p + "self_attn.v_proj.weight", (kvd, h))
        self.o = w.get(p + "self_attn.o_proj.weight", (h, qd))
        self.qb = self.kb = self.vb = self.ob = None
        if cfg.qkv_bias:
            self.qb = w.get(p + "self_attn.q_proj.bias", (qd,))
            self.kb = w.get(p + "self_attn.k_proj.bias", (kvd,))
            self.vb = w.get(p + "self_attn.v_proj.bias", (kvd,))
        if w.has(p + "self_attn.o_proj.bias"):
            self.ob = w.get(p + "self_attn.o_proj.bias", (h,))
        f = cfg.intermediate_size
        self.gate = w.get(p + "mlp.gate_proj.weight", (f, h))
        self.up = w.get(p + "mlp.up_proj.weight", (f, h))
        self.down = w.get(p + "mlp.down_proj.weight", (h, f))
        self.gate_b = self.up_b = self.down_b = None
        if cfg.mlp_bias:
            self.gate_b = w.get(p + "mlp.gate_proj.bias", (f,))
            self.up_b = w.get(p + "mlp.up_proj.bias", (f,))
            self.down_b = w.get(p + "mlp.down_proj.bias", (h,))
        self.window = cfg.layer_windows[i]


class CausalLM(torch.nn.Module):
    """The decoder stack. Holds the weights and the paged KV cache of every layer."""

    def __init__(self, cfg: ModelConfig, w: Weights):
        super().__init__()
        self.cfg = cfg
        h, v = cfg.hidden_size, cfg.vocab_size
        self.embed = w.get("model.embed_tokens.weight", (v, h))
        self.layers = [Layer(cfg, w, i) for i in range(cfg.num_layers)]
        self.norm = w.get("model.norm.weight", (h,))
        if cfg.tie_word_embeddings or not w.has("lm_head.weight"):
            if not cfg.tie_word_embeddings:
                raise WeightError("tensor lm_head.weight is missing")
            self.lm_head = self.embed
        else:
            self.lm_head = w.get("lm_head.weight", (v, h))
        self.inv_freq = inv_freq(cfg).to(w.device)
        self.scale = cfg.head_dim**-0.5
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self.block_size = 0

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        """num_blocks usable blocks plus one scratch block (id num_blocks) for padding writes."""
        cfg = self.cfg
        slots = (num_blocks + 1) * block_size
        shape = (slots, cfg.num_kv_heads, cfg.head_dim)
        dev, dt = self.embed.device, self.embed.dtype
        self.k_cache = [torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.num_layers)]
        self.v_cache = [torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.num_layers)]
        self.block_size = block_size

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T] int64
        positions: torch.Tensor,  # [B, T] int64
        slot_mapping: torch.Tensor,  # [B, T] int64: cache slot of each new token
        block_tables: torch.Tensor,  # [B, NB] int64
        last_index: torch.Tensor,  # [B] int64: index in T of each row's last real token
    ) -> torch.Tensor:
        cfg = self.cfg
        b, t = input_ids.shape
        bs = self.block_size
        kvh, d = cfg.num_kv_heads, cfg.head_dim
        group = cfg.num_heads // kvh

        x = self.embed[input_ids]
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq  # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos().to(x.dtype)[:, None]  # [B, 1, T, D]
        sin = emb.sin().to(x.dtype)[:, None]

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

        for li, layer in enumerate(self.layers):
            r = x
            hn = _rms_norm(x, layer.input_norm, cfg.rms_norm_eps)
            q = torch.nn.functional.linear(hn, layer.q, layer.qb)
            k = torch.nn.functional.linear(hn, layer.k, layer.kb)
            v = torch.nn.functional.linear(hn, layer.v, layer.vb)
            q = q.view(b, t, cfg.num_heads, d).transpose(1, 2)
            k = k.view(b, t, kvh, d).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            kc, vc = self.k_cache[li], self.v_cache[li]
            kc.index_copy_(0, flat_slots, k.transpose(1, 2).reshape(-1, kvh, d))
            vc.index_copy_(0, flat_slots, v.reshape(-1, kvh, d))
            keys = kc[key_slots].permute(0, 2, 1, 3)  # [B, KVH, S, D]
            vals = vc[key_slots].permute(0, 2, 1, 3)
            # Query head h reads KV head h // group: fold the group into the query axis.
            qg = q.reshape(b, kvh, group * t, d)
            scores = torch.matmul(qg, keys.transpose(-1, -2)).to(torch.float32) * self.scale
            scores = scores.view(b, kvh, group, t, -1)
            scores = scores.masked_fill(~masks[layer.window], torch.finfo(torch.float32).min)
            probs = torch.softmax(scores, dim=-1).to(x.dtype).view(b, kvh, group * t, -1)
            out = torch.matmul(probs, vals).view(b, cfg.num_heads, t, d)
            out = out.transpose(1, 2).reshape(b, t, cfg.num_heads * d)
            x = r + torch.nn.functional.linear(out, layer.o, layer.ob)
            r = x
            hn = _rms_norm(x, layer.post_norm, cfg.rms_norm_eps)
            gate = torch.nn.functional.linear(hn, layer.gate, layer.gate_b)
            up = torch.nn.functional.linear(hn, layer.up, layer.up_b)
            x = r + torch.nn.functional.linear(
                torch.nn.functional.silu(gate) * up, layer.down, layer.down_b
            )

        last = x[torch.arange(b, device=x.device), last_index]  # [B, H]
        last = _rms_norm(last, self.norm, cfg.rms_norm_eps)
        return torch.nn.functional.linear(last, self.lm_head).to(torch.float32)
