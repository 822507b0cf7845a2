"""What each model family changes in the shared decoder, read from config.json.

The decoder in model.py is one computation with knobs; a family is a setting of those knobs:

- Llama / Mistral / Qwen2: the plain pre-norm block (Qwen2: q/k/v bias).
- Qwen3: per-head RMSNorm on q and k before RoPE (`q_norm`, `k_norm`).
- Gemma 2 / Gemma 3 text: `(1 + w)` RMSNorms before and after attention and MLP, embeddings
  scaled by sqrt(hidden), GeGLU (tanh GELU), scores scaled by query_pre_attn_scalar^-0.5,
  local (sliding) layers mixed with global ones; Gemma 2 soft-caps the attention scores and the
  final logits; Gemma 3 adds q/k norm and gives local layers their own RoPE base.
- Phi-3 (and Phi-4-mini): fused qkv_proj and gate_up_proj, partial rotary, longrope.
- Mixtral / Qwen3-MoE: the MLP is a top-k mixture of experts (see moe.py).
"""

from __future__ import annotations

from dataclasses import dataclass


class FamilyError(ValueError):
    """A family-specific config.json field is missing or out of range."""


@dataclass
class MoeSpec:
    num_experts: int
    top_k: int
    # renormalise the top-k router probabilities to sum to 1 (Mixtral always; Qwen3-MoE when
    # norm_topk_prob)
    norm_topk: bool
    expert_size: int
    # per layer: True where the MLP is the mixture, False where it is a dense MLP
    layers: list
    # where the tensors live: the block's name under model.layers.N, and the expert's
    # (gate, up, down) projection names
    block: str
    projections: tuple


@dataclass
class Family:
    qk_norm: bool = False
    gemma_norms: bool = False  # (1 + w) RMSNorm, computed in f32, and the four-norm layer
    embed_scale: bool = False  # multiply embeddings by sqrt(hidden)
    activation: str = "silu"  # or "gelu_tanh"
    fused: bool = False  # Phi-3's qkv_proj / gate_up_proj
    query_pre_attn_scalar: float | None = None  # scores * this^-0.5 instead of head_dim^-0.5
    attn_softcap: float | None = None
    final_softcap: float | None = None
    moe: MoeSpec | None = None


def _pos_int(cfg: dict, key: str, default=None) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FamilyError(f"config.json: {key} must be a positive integer")
    return value


def _pos_float_or_none(cfg: dict, key: str):
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise FamilyError(f"config.json: {key} must be a positive number or null")
    return float(value)


def _activation(cfg: dict) -> str:
    # Gemma configs name it hidden_activation (older ones hidden_act); both mean GELU with the
    # tanh approximation in every Gemma 2/3 checkpoint
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise FamilyError(f"unsupported Gemma activation {act!r} (gelu_pytorch_tanh)")
    return "gelu_tanh"


def _moe(cfg: dict, arch: str, num_layers: int) -> MoeSpec:
    if arch == "mixtral":
        experts = _pos_int(cfg, "num_local_experts")
        spec = MoeSpec(experts, _pos_int(cfg, "num_experts_per_tok"), True, _pos_int(cfg, "intermediate_size"),
                       [True] * num_layers, "block_sparse_moe", ("w1", "w3", "w2"))
    else:
        # the hub's Qwen3-MoE configs say num_experts; transformers 5 writes num_local_experts
        experts = _pos_int(cfg, "num_experts" if "num_experts" in cfg else "num_local_experts")
        step = _pos_int(cfg, "decoder_sparse_step", 1)
        dense = cfg.get("mlp_only_layers") or []
        if not isinstance(dense, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in dense):
            raise FamilyError("config.json: mlp_only_layers must be a list of layer indices")
        layers = [i not in dense and (i + 1) % step == 0 for i in range(num_layers)]
        spec = MoeSpec(experts, _pos_int(cfg, "num_experts_per_tok"), bool(cfg.get("norm_topk_prob", False)),
                       _pos_int(cfg, "moe_intermediate_size"), layers, "mlp", ("gate_proj", "up_proj", "down_proj"))
    if spec.top_k > spec.num_experts:
        raise FamilyError(f"num_experts_per_tok {spec.top_k} exceeds the {spec.num_experts} experts")
    return spec


def family(cfg: dict, arch: str, num_layers: int) -> Family:
    if arch in ("llama", "mistral", "qwen2"):
        return Family()
    if arch == "qwen3":
        return Family(qk_norm=True)
    if arch in ("mixtral", "qwen3_moe"):
        return Family(qk_norm=arch == "qwen3_moe", moe=_moe(cfg, arch, num_layers))
    if arch == "phi3":
        return Family(fused=True)
    if arch in ("gemma2", "gemma3"):
        qpas = cfg.get("query_pre_attn_scalar")
        if qpas is None:
            raise FamilyError("config.json lacks query_pre_attn_scalar")
        if isinstance(qpas, bool) or not isinstance(qpas, (int, float)) or not qpas > 0:
            raise FamilyError("config.json: query_pre_attn_scalar must be a positive number")
        return Family(qk_norm=arch == "gemma3", gemma_norms=True, embed_scale=True, activation=_activation(cfg),
                      query_pre_attn_scalar=float(qpas), attn_softcap=_pos_float_or_none(cfg, "attn_logit_softcapping"),
                      final_softcap=_pos_float_or_none(cfg, "final_logit_softcapping"))
    raise FamilyError(f"no family settings for {arch!r}")


def gemma_layer_types(cfg: dict, num_layers: int) -> list:
    """Gemma's local/global layout: layer_types when given, else Gemma 3's sliding_window_pattern
    (every Nth layer global; default 6), else Gemma 2's alternation (even layers local)."""
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != num_layers or any(
                t not in ("sliding_attention", "full_attention") for t in types):
            raise FamilyError("config.json: layer_types must name sliding_attention or full_attention per layer")
        return types
    if cfg.get("model_type") == "gemma2":
        return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(num_layers)]
    pattern = _pos_int(cfg, "sliding_window_pattern", 6)
    return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers)]
