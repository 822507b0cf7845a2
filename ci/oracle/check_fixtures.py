"""Checks that the committed fixtures mean what their names say, using transformers itself.

For every fixture directory it reloads the model from disk (so the classic-layout configs and the
bf16 file go through transformers' own loader) and confirms:
  * the greedy ids in golden.json are reproduced, and each equals the argmax of a full (no-cache)
    forward pass, so the golden does not depend on the KV-cache path;
  * last_prompt_logits_head matches within 1e-4;
  * the tensor listing in golden.json is what the file holds;
  * the feature is live: the sliding window changes the long prompt's logits, rope scaling changes
    inv_freq (llama3: in all three wavelength regimes), the bf16 file widens to the golden's weights,
    the explicit head_dim differs from hidden/heads, biases exist exactly where the family puts them.

For issue 16's families (tests/fixtures/families) the feature checks are in check_families.py.

Usage: python check_fixtures.py FIXTURES_DIR   (tests/fixtures/models or tests/fixtures/families)
Exit status 0 when every check passes, 1 otherwise.
"""
import json
import math
import os
import sys

import torch
import transformers as tf
from safetensors import safe_open

from check_families import check_family, crosses_longrope

FAILURES = []


def check(ok, what):
    if not ok:
        FAILURES.append(what)
        print("FAIL", what)


def default_inv_freq(theta, dim):
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def check_dir(d):
    name = os.path.basename(d.rstrip("/"))
    golden = json.load(open(os.path.join(d, "golden.json")))
    cfg = tf.AutoConfig.from_pretrained(d)
    model = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()

    with safe_open(os.path.join(d, "model.safetensors"), framework="pt") as f:
        listing = {k: {"dtype": f.get_slice(k).get_dtype(), "shape": list(f.get_slice(k).get_shape())}
                   for k in sorted(f.keys())}
    if "tensors" in golden:
        check(listing == golden["tensors"], f"{name}: tensor listing")

    tok = tf.AutoTokenizer.from_pretrained(d)
    for case in golden["cases"]:
        ids = case["prompt_ids"]
        check(tok(case["prompt"])["input_ids"] == ids, f"{name}: prompt ids")
        if "continuation_text" in golden["cases"][0]:
            full_text = tok.decode(ids + case["greedy_ids"], skip_special_tokens=True)
            head_text = tok.decode(ids, skip_special_tokens=True)
            check(full_text == head_text + case["continuation_text"], f"{name}: continuation text")
        full = torch.tensor([ids + case["greedy_ids"]])
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=len(case["greedy_ids"]),
                                 do_sample=False, eos_token_id=None, pad_token_id=cfg.eos_token_id, use_cache=True)
            logits = model(full).logits[0]
        check(gen[0, len(ids):].tolist() == case["greedy_ids"], f"{name}: greedy ids reproduce")
        argmax = logits[len(ids) - 1: len(ids) - 1 + len(case["greedy_ids"])].argmax(-1).tolist()
        # a longrope generation that crosses original_max_position_embeddings chose its first
        # tokens with the short factors, which one full (long-factor) forward cannot reproduce:
        # check_families checks those cases on both sides of the switch instead
        if not crosses_longrope(cfg, case):
            check(argmax == case["greedy_ids"], f"{name}: no-cache argmax == cached greedy")
        head = torch.tensor(case["last_prompt_logits_head"])
        if not crosses_longrope(cfg, case):
            check(torch.allclose(logits[len(ids) - 1][:16], head, atol=1e-4), f"{name}: logits head")

    if check_family(check, name, d, model, golden, listing):
        print(name, "checked")
        return

    inv = model.model.rotary_emb.inv_freq
    head_dim = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    rp = cfg.rope_parameters
    base = default_inv_freq(rp["rope_theta"], head_dim)
    if "rope_inv_freq" in golden:
        check(torch.allclose(inv, torch.tensor(golden["rope_inv_freq"])), f"{name}: recorded inv_freq")
    kind = rp.get("rope_type", "default")
    if kind == "default":
        check(torch.allclose(inv, base), f"{name}: default rope")
    elif kind == "linear":
        # linear scaling divides positions, which HF implements as inv_freq / factor
        check(torch.allclose(inv, base / rp["factor"]), f"{name}: linear rope = default / factor")
    elif kind == "llama3":
        wl = 2 * math.pi / base
        orig = rp["original_max_position_embeddings"]
        hi, lo = orig / rp["high_freq_factor"], orig / rp["low_freq_factor"]
        kept, divided = wl < hi, wl > lo
        smoothed = ~kept & ~divided
        check(bool(kept.any() and divided.any() and smoothed.any()), f"{name}: llama3 hits all regimes")
        check(torch.allclose(inv[kept], base[kept]), f"{name}: llama3 keeps high frequencies")
        check(torch.allclose(inv[divided], base[divided] / rp["factor"]), f"{name}: llama3 divides low")
        check(bool((inv[smoothed] < base[smoothed]).all() and (inv[smoothed] > base[smoothed] / rp["factor"]).all()),
              f"{name}: llama3 smooths the middle")

    if getattr(cfg, "sliding_window", None):
        long_case = max(golden["cases"], key=lambda c: len(c["prompt_ids"]))
        check(len(long_case["prompt_ids"]) > 2 * cfg.sliding_window, f"{name}: a prompt exceeds the window")
        x = torch.tensor([long_case["prompt_ids"]])
        with torch.no_grad():
            windowed = model(x).logits[0, -1]
            cfg_full = tf.AutoConfig.from_pretrained(d)
            cfg_full.sliding_window = None
            unwindowed = tf.AutoModelForCausalLM.from_pretrained(d, config=cfg_full, dtype=torch.float32).eval()(x).logits[0, -1]
        check(float((windowed - unwindowed).abs().max()) > 1e-2, f"{name}: the window changes the logits")

    if getattr(cfg, "head_dim", None) and "gqa" in name:
        check(cfg.head_dim != cfg.hidden_size // cfg.num_attention_heads, f"{name}: explicit head_dim differs")
    if "gqa" in name or "llama3" in name or "qwen2" in name or "mistral" in name:
        check(cfg.num_key_value_heads < cfg.num_attention_heads, f"{name}: GQA")
    biases = sorted({k.split(".")[-2] for k in listing if k.endswith(".bias")})
    if cfg.model_type == "qwen2":
        check(biases == ["k_proj", "q_proj", "v_proj"], f"{name}: qwen2 bias on q/k/v only")
    elif getattr(cfg, "attention_bias", False):
        check(biases == ["k_proj", "o_proj", "q_proj", "v_proj"], f"{name}: llama attention_bias on q/k/v/o")
    else:
        check(biases == [], f"{name}: no biases")
    check(("lm_head.weight" in listing) != bool(cfg.tie_word_embeddings), f"{name}: lm_head iff untied")

    dtypes = {v["dtype"] for v in listing.values()}
    if "bf16" in name:
        check(dtypes == {"BF16"}, f"{name}: stored in bf16")
        check(cfg.dtype == torch.bfloat16, f"{name}: config says bfloat16")
    else:
        check(dtypes == {"F32"}, f"{name}: stored in f32")
    if "spm" in name:
        tj = json.load(open(os.path.join(d, "tokenizer.json")))
        check(tj["model"].get("byte_fallback") is True, f"{name}: byte_fallback")
        check([x["type"] for x in tj["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse", "Strip"],
              f"{name}: Llama-2 decoder")
        check(all(f"<0x{b:02X}>" in tj["model"]["vocab"] for b in range(256)), f"{name}: byte tokens in vocab")
        check(golden["cases"][0]["continuation_text"].startswith(" "), f"{name}: first word keeps its space")
        check(any("\ufffd" in c["continuation_text"] for c in golden["cases"]), f"{name}: incomplete byte runs")
    print(name, "checked")


if __name__ == "__main__":
    root = sys.argv[1]
    for entry in sorted(os.listdir(root)):
        if os.path.isfile(os.path.join(root, entry, "golden.json")):
            check_dir(os.path.join(root, entry))
    print("FAILED" if FAILURES else "all fixture checks passed", len(FAILURES))
    sys.exit(1 if FAILURES else 0)
