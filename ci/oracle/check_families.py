"""Feature checks for issue 16's family fixtures (tests/fixtures/families): each fixture must
exercise what its name claims, shown by switching the feature off in transformers and seeing the
output change, or by reading the stored tensors. check_fixtures.py calls `check_family`.
"""
import copy
import os

import torch
import transformers as tf

# a feature counts as live when switching it off moves the logits by more than this
LIVE = 1e-3


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _moved(model, other, ids):
    return float((_logits(model, ids) - _logits(other, ids)).abs().max())


def _long_ids(golden):
    case = max(golden["cases"], key=lambda c: len(c["prompt_ids"]))
    return case["prompt_ids"] + case["greedy_ids"]


def _with_config(d, **changes):
    cfg = tf.AutoConfig.from_pretrained(d)
    for k, v in changes.items():
        setattr(cfg, k, v)
    return tf.AutoModelForCausalLM.from_pretrained(d, config=cfg, dtype=torch.float32).eval()


def _qk_norm(check, name, model, listing, golden):
    """q_norm/k_norm stored per layer, head_dim wide, with non-trivial weights that matter."""
    cfg = model.config
    for i in range(cfg.num_hidden_layers):
        for n in ("q_norm", "k_norm"):
            key = f"model.layers.{i}.self_attn.{n}.weight"
            check(key in listing and listing[key]["shape"] == [cfg.head_dim], f"{name}: {key} stored")
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for layer in plain.model.layers:
            w = layer.self_attn.q_norm.weight
            check(float((w - 1).abs().max()) > 0.05 or name.startswith("tiny-gemma"),
                  f"{name}: q_norm weights are not ones")
            # the neutral weight: 1 for Qwen3's x*w, 0 for Gemma's x*(1+w)
            neutral = 0.0 if "gemma" in cfg.model_type else 1.0
            layer.self_attn.q_norm.weight.fill_(neutral)
            layer.self_attn.k_norm.weight.fill_(neutral)
    check(_moved(model, plain, _long_ids(golden)) > LIVE, f"{name}: q/k norm weights change the logits")


def _gqa_head_dim(check, name, cfg):
    check(cfg.num_key_value_heads < cfg.num_attention_heads, f"{name}: GQA")
    check(cfg.head_dim != cfg.hidden_size // cfg.num_attention_heads, f"{name}: explicit head_dim differs")


def crosses_longrope(cfg, case):
    """Whether this case starts below a longrope model's original length and generates past it."""
    rp = getattr(cfg, "rope_parameters", None) or {}
    if rp.get("rope_type") != "longrope":
        return False
    orig = rp["original_max_position_embeddings"]
    return len(case["prompt_ids"]) <= orig < len(case["prompt_ids"]) + len(case["greedy_ids"])


def _generate_logits(model, ids, n):
    with torch.no_grad():
        res = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=model.config.eos_token_id, use_cache=True,
                             return_dict_in_generate=True, output_logits=True)
    return res.sequences[0, len(ids):].tolist(), torch.stack([l[0] for l in res.logits])


def _with_rope(d, **changes):
    cfg = tf.AutoConfig.from_pretrained(d)
    cfg.rope_parameters = dict(cfg.rope_parameters, **changes)
    return tf.AutoModelForCausalLM.from_pretrained(d, config=cfg, dtype=torch.float32).eval()


def _phi3(check, name, d, model, golden, listing):
    """Fused projections, partial rotary, and longrope's switch from the short to the long factors
    by sequence length, as transformers' generation makes it: each step's logits are those of a
    full forward over the sequence so far, with the long factors once it is longer than
    original_max_position_embeddings (Phi-3's prepare_inputs_for_generation drops the cache at
    that point, so the prefix is recomputed with the long factors)."""
    cfg = model.config
    rp = cfg.rope_parameters
    hd = cfg.hidden_size // cfg.num_attention_heads
    rot = int(hd * rp["partial_rotary_factor"])
    check(rp["partial_rotary_factor"] < 1 and rot < hd, f"{name}: partial rotary")
    check(len(golden["rope_inv_freq"]) == rot // 2 == len(golden["rope_long_inv_freq"]),
          f"{name}: inv_freq covers only the rotated dims")
    check(golden["rope_inv_freq"] != golden["rope_long_inv_freq"], f"{name}: short and long factors differ")
    check(golden["rope_attention_scaling"] > 1.0, f"{name}: longrope attention factor > 1")
    for i in range(cfg.num_hidden_layers):
        qkv = listing[f"model.layers.{i}.self_attn.qkv_proj.weight"]["shape"]
        check(qkv == [(cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd, cfg.hidden_size],
              f"{name}: layer {i} fused qkv_proj")
        gu = listing[f"model.layers.{i}.mlp.gate_up_proj.weight"]["shape"]
        check(gu == [2 * cfg.intermediate_size, cfg.hidden_size], f"{name}: layer {i} fused gate_up_proj")
    orig = rp["original_max_position_embeddings"]
    crossing = [c for c in golden["cases"] if crosses_longrope(cfg, c)]
    past = [c for c in golden["cases"] if len(c["prompt_ids"]) > orig]
    check(len(crossing) >= 1 and len(past) >= 1, f"{name}: generations cross the original length, a prompt starts past it")
    all_short = _with_rope(d, long_factor=rp["short_factor"])
    all_long = _with_rope(d, short_factor=rp["long_factor"])
    for c in crossing:
        ids, n_below = c["prompt_ids"], orig - len(c["prompt_ids"]) + 1
        # below the switch a plain forward of the prefix (all short factors) gives the same choices
        prefix = ids + c["greedy_ids"][:n_below - 1]
        argmax = _logits(model, prefix)[len(ids) - 1:].argmax(-1).tolist()
        check(argmax == c["greedy_ids"][:n_below], f"{name}: greedy below the switch == no-cache argmax")
        # past it, transformers' Phi-3 generation drops its cache and re-runs the whole sequence
        # with the long factors, so a full forward (longer than the original length: long
        # factors everywhere) chooses the same tokens
        full = _logits(model, ids + c["greedy_ids"])
        argmax = full[len(ids) - 1 + n_below: len(ids) - 1 + len(c["greedy_ids"])].argmax(-1).tolist()
        check(argmax == c["greedy_ids"][n_below:], f"{name}: greedy past the switch == full long-factor forward")
        _, golden_steps = _generate_logits(model, ids, len(c["greedy_ids"]))
        check(torch.allclose(golden_steps[0][:16], torch.tensor(c["last_prompt_logits_head"]), atol=1e-4),
              f"{name}: logits head (cached path)")
        _, short_steps = _generate_logits(all_short, ids, len(c["greedy_ids"]))
        _, long_steps = _generate_logits(all_long, ids, len(c["greedy_ids"]))
        check(float((golden_steps[:n_below] - short_steps[:n_below]).abs().max()) < 1e-5,
              f"{name}: short factors before the switch")
        check(float((golden_steps[n_below:] - short_steps[n_below:]).abs().max()) > LIVE,
              f"{name}: the long factors take over past the original length")
        check(float((golden_steps[:n_below] - long_steps[:n_below]).abs().max()) > LIVE,
              f"{name}: the short factors matter before the switch")
    for c in past:
        check(_moved(model, all_short, c["prompt_ids"]) > LIVE, f"{name}: a long prompt uses the long factors")


def _gemma3_rope(check, name, d, model, golden):
    """Local layers rotate with their own base, global ones with rope_theta and linear scaling."""
    rp = model.config.rope_parameters
    check(rp["sliding_attention"]["rope_theta"] != rp["full_attention"]["rope_theta"],
          f"{name}: rope_local_base_freq != rope_theta")
    check(rp["full_attention"]["rope_type"] == "linear" and rp["sliding_attention"]["rope_type"] == "default",
          f"{name}: linear scaling on global layers only")
    inv = golden["rope_inv_freq_by_layer_type"]
    hd = model.config.head_dim
    check(torch.allclose(torch.tensor(inv["full_attention"]),
                         _default_inv(rp["full_attention"]["rope_theta"], hd) / rp["full_attention"]["factor"]),
          f"{name}: global inv_freq = default / factor")
    check(torch.allclose(torch.tensor(inv["sliding_attention"]), _default_inv(rp["sliding_attention"]["rope_theta"], hd)),
          f"{name}: local inv_freq from rope_local_base_freq")
    ids = _long_ids(golden)
    for layer_type, change in (("sliding_attention", {"rope_theta": rp["full_attention"]["rope_theta"]}),
                               ("full_attention", {"rope_type": "default", "factor": 1.0})):
        cfg = tf.AutoConfig.from_pretrained(d)
        cfg.rope_parameters = {k: dict(v) for k, v in cfg.rope_parameters.items()}
        cfg.rope_parameters[layer_type].update(change)
        other = tf.AutoModelForCausalLM.from_pretrained(d, config=cfg, dtype=torch.float32).eval()
        check(_moved(model, other, ids) > LIVE, f"{name}: {layer_type} rope parameters matter")


def _default_inv(theta, dim):
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _moe(check, name, d, model, golden, listing, experts_key, n_experts):
    """Experts stored one tensor per expert and projection (the hub layout); the prompt's tokens
    of one step pick different experts in every MoE layer; top-k matters."""
    cfg = model.config
    moe_layers = golden["cases"][0]["moe_layers"]
    check(len(moe_layers) >= 1, f"{name}: has MoE layers")
    for i in moe_layers:
        for e in range(n_experts):
            for proj in experts_key[1]:
                key = f"model.layers.{i}.{experts_key[0]}.experts.{e}.{proj}.weight"
                check(key in listing, f"{name}: {key} stored")
        check(f"model.layers.{i}.{experts_key[0]}.gate.weight" in listing, f"{name}: layer {i} router stored")
    for c in golden["cases"]:
        if len(c["prompt_ids"]) > 2:
            check(min(c["prompt_distinct_experts"]) >= 2, f"{name}: prompt routed to several experts")
        check(c["min_router_gap"] >= 1e-3, f"{name}: no near-tie in the router")
    check(max(max(c["prompt_distinct_experts"]) for c in golden["cases"]) >= n_experts - 1,
          f"{name}: the long prompt reaches (almost) every expert")
    top1 = _with_config(d, num_experts_per_tok=1)
    check(_moved(model, top1, _long_ids(golden)) > LIVE, f"{name}: top-{cfg.num_experts_per_tok} differs from top-1")


def _gemma(check, name, d, model, golden, listing):
    """What Gemma 2 and 3 share: local/global layers with the window exceeded, four norms per
    layer, query_pre_attn_scalar, tied, SentencePiece tokenizer.model shipped."""
    cfg = model.config
    kinds = set(cfg.layer_types)
    check(kinds == {"sliding_attention", "full_attention"}, f"{name}: local and global layers")
    check(cfg.sliding_window == 8, f"{name}: window 8")
    longest = max(len(c["prompt_ids"]) for c in golden["cases"])
    check(longest > 2 * cfg.sliding_window, f"{name}: a prompt exceeds the window")
    all_global = _with_config(d, layer_types=["full_attention"] * cfg.num_hidden_layers)
    check(_moved(model, all_global, _long_ids(golden)) > LIVE, f"{name}: the local window changes the logits")
    if name.endswith("-hub"):
        # what llama.cpp assumes for a GGUF (it stores no query_pre_attn_scalar)
        check(cfg.query_pre_attn_scalar == cfg.head_dim, f"{name}: query_pre_attn_scalar == head_dim")
    else:
        check(cfg.query_pre_attn_scalar != cfg.head_dim, f"{name}: query_pre_attn_scalar != head_dim")
        plain_scale = _with_config(d, query_pre_attn_scalar=cfg.head_dim)
        check(_moved(model, plain_scale, _long_ids(golden)) > LIVE, f"{name}: query_pre_attn_scalar matters")
    for i in range(cfg.num_hidden_layers):
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            check(f"model.layers.{i}.{n}.weight" in listing, f"{name}: layer {i} {n}")
    check(cfg.hidden_activation == "gelu_pytorch_tanh", f"{name}: GeGLU with tanh GELU")
    check(cfg.tie_word_embeddings and "lm_head.weight" not in listing, f"{name}: tied")
    check(os.path.isfile(os.path.join(d, "tokenizer.model")), f"{name}: ships tokenizer.model")


def check_family(check, name, d, model, golden, listing):
    """Runs the checks for the family fixture `name` (directory d); returns False if it is not one."""
    cfg = model.config
    if not name.startswith(("tiny-qwen3", "tiny-mixtral", "tiny-gemma", "tiny-phi3")):
        return False
    check({v["dtype"] for v in listing.values()} == {"F32"}, f"{name}: stored in f32")
    check(min(c["min_margin"] for c in golden["cases"]) >= 1e-4, f"{name}: margins >= 1e-4")
    if name == "tiny-qwen3":
        check(cfg.model_type == "qwen3", f"{name}: model_type qwen3")
        _gqa_head_dim(check, name, cfg)
        _qk_norm(check, name, model, listing, golden)
        check(cfg.tie_word_embeddings and "lm_head.weight" not in listing, f"{name}: tied")
        return True
    if name == "tiny-mixtral":
        check(cfg.model_type == "mixtral" and cfg.num_local_experts == 8 and cfg.num_experts_per_tok == 2,
              f"{name}: 8 experts, top-2")
        check(cfg.num_key_value_heads < cfg.num_attention_heads, f"{name}: GQA")
        _moe(check, name, d, model, golden, listing, ("block_sparse_moe", ("w1", "w2", "w3")), 8)
        return True
    if name.startswith("tiny-gemma2"):
        check(cfg.model_type == "gemma2", f"{name}: model_type gemma2")
        check(cfg.layer_types == ["sliding_attention", "full_attention"] * (cfg.num_hidden_layers // 2),
              f"{name}: sliding and global layers alternate")
        _gemma(check, name, d, model, golden, listing)
        ids = _long_ids(golden)
        for knob in ("attn_logit_softcapping", "final_logit_softcapping"):
            uncapped = _with_config(d, **{knob: None})
            check(_moved(model, uncapped, ids) > LIVE, f"{name}: {knob} changes the logits")
        return True
    if name == "tiny-phi3":
        check(cfg.model_type == "phi3", f"{name}: model_type phi3")
        check(cfg.num_key_value_heads < cfg.num_attention_heads, f"{name}: GQA")
        _phi3(check, name, d, model, golden, listing)
        return True
    if name.startswith("tiny-gemma3"):
        check(cfg.model_type == "gemma3_text", f"{name}: model_type gemma3_text")
        want = (["sliding_attention"] * 5 + ["full_attention"] if name.endswith("-hub")
                else ["sliding_attention", "sliding_attention", "full_attention"])
        check(cfg.layer_types == want, f"{name}: layer pattern")
        _gemma(check, name, d, model, golden, listing)
        _qk_norm(check, name, model, listing, golden)
        _gemma3_rope(check, name, d, model, golden)
        check(cfg.attn_logit_softcapping is None and cfg.final_logit_softcapping is None, f"{name}: no soft-capping")
        return True
    if name.startswith("tiny-qwen3moe"):
        check(cfg.model_type == "qwen3_moe" and cfg.num_experts == 8 and cfg.num_experts_per_tok == 2,
              f"{name}: 8 experts, top-2")
        _gqa_head_dim(check, name, cfg)
        _qk_norm(check, name, model, listing, golden)
        _moe(check, name, d, model, golden, listing, ("mlp", ("gate_proj", "up_proj", "down_proj")), 8)
        moe_layers = golden["cases"][0]["moe_layers"]
        dense = [i for i in range(cfg.num_hidden_layers) if i not in moe_layers]
        check(dense == list(cfg.mlp_only_layers), f"{name}: exactly the mlp_only_layers are dense")
        check(bool(dense) == name.endswith("-dense0"), f"{name}: a dense layer iff -dense0")
        for i in dense:
            check(listing.get(f"model.layers.{i}.mlp.gate_proj.weight", {}).get("shape")
                  == [cfg.intermediate_size, cfg.hidden_size], f"{name}: layer {i} dense MLP stored")
        check(cfg.norm_topk_prob, f"{name}: norm_topk_prob")
        unnormed = _with_config(d, norm_topk_prob=False)
        check(_moved(model, unnormed, _long_ids(golden)) > LIVE, f"{name}: norm_topk_prob matters")
        return True
    check(False, f"{name}: no feature checks for this fixture")
    return True
