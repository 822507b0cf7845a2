"""Train license-tiny: a small Llama on the license texts in /usr/share/common-licenses, so the
README's first command prints something that reads like text (the random-weight fixtures print noise).

Usage: python train_tiny.py OUT_DIR [--steps N]

Writes a hub-format directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json) and golden.json: transformers' greedy continuation of a few prompts from the
stored weights, which `tests/license_tiny_cli.rs` compares with `halo generate`.

Reproducible: the tokenizer trainer is deterministic, every random draw comes from fixed seeds, the
batch order from a seeded generator, and torch runs on one thread with deterministic algorithms (one
thread also keeps the run polite on a shared machine). Pinned versions: ci/oracle/requirements.txt.
Float reductions follow the CPU's kernels, so weights are byte-identical on the same torch build and
CPU family; elsewhere they can differ in the last bits (the golden is always remade from the stored
weights, so it stays self-consistent).
"""
import argparse
import glob
import json
import math
import os
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LICENSES = "/usr/share/common-licenses"

# Small enough to train in ~10 minutes on one CPU thread and ship in ~2 MB (stored as bf16), big
# enough to memorise the phrasing of ~240 KB of licenses.
MODEL = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=2048, max_position_embeddings=1024, rms_norm_eps=1e-5,
             rope_theta=10000.0, tie_word_embeddings=True)
SEQ_LEN = 128
BATCH = 16
LR = 3e-3
WARMUP = 50
SEED = 1234

PROMPTS = [
    "This program is free software; you can redistribute it",
    "Permission is hereby granted",
    "THE SOFTWARE IS PROVIDED",
    "The license grants you the freedom to",
]
GOLDEN_NEW_TOKENS = 48


def corpus():
    """Each license once (GPL, LGPL and GFDL are symlinks to a versioned file), in a fixed order."""
    seen, texts = set(), []
    for path in sorted(glob.glob(os.path.join(LICENSES, "*"))):
        real = os.path.realpath(path)
        if os.path.isfile(real) and real not in seen:
            seen.add(real)
            with open(real, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
    return texts


def make_tokenizer(texts):
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=MODEL["vocab_size"], special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


def token_stream(tok, texts):
    """Every license as <s> text </s>, concatenated: the model learns where a document starts."""
    ids = []
    for t in texts:
        ids.extend(tok.encode(t).ids)  # the post-processor adds <s>
        ids.append(1)
    return torch.tensor(ids, dtype=torch.long)


def train(model, data, steps):
    gen = torch.Generator().manual_seed(SEED + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_at(step):
        # linear warmup, then cosine decay to a tenth
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        progress = (step - WARMUP) / max(1, steps - WARMUP)
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    start = time.time()
    for step in range(steps):
        starts = torch.randint(0, len(data) - SEQ_LEN - 1, (BATCH,), generator=gen)
        x = torch.stack([data[s:s + SEQ_LEN] for s in starts])
        y = torch.stack([data[s + 1:s + SEQ_LEN + 1] for s in starts])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    import transformers as tf

    texts = corpus()
    tok = make_tokenizer(texts)
    data = token_stream(tok, texts)
    print(f"{len(texts)} licenses, {sum(map(len, texts))} chars, {len(data)} tokens", flush=True)

    cfg = tf.LlamaConfig(bos_token_id=0, eos_token_id=1, initializer_range=0.02, torch_dtype="float32",
                         **MODEL)
    model = tf.LlamaForCausalLM(cfg)
    train(model, data, args.steps)

    # Ship bf16 (half the bytes); the golden is f32 compute on exactly the bf16-rounded weights, as
    # halo computes in f32 on the stored bf16 values.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    os.makedirs(args.out, exist_ok=True)
    import copy
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
                   "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1024}, f, indent=2)

    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(args.out)
    golden = {"model": "license-tiny", "steps": args.steps, "max_new_tokens": GOLDEN_NEW_TOKENS, "cases": []}
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        with torch.no_grad():
            # halo's default: stop at EOS
            out = model.generate(torch.tensor([ids]), max_new_tokens=GOLDEN_NEW_TOKENS, do_sample=False,
                                 eos_token_id=1, pad_token_id=1, use_cache=True)
            gen = out[0, len(ids):].tolist()
            logits = model(out).logits[0]
        margins = []
        for i in range(len(gen)):
            top2 = torch.topk(logits[len(ids) - 1 + i], 2).values
            margins.append(float(top2[0] - top2[1]))
        full = hf_tok.decode(ids + gen, skip_special_tokens=True)
        head = hf_tok.decode(ids, skip_special_tokens=True)
        assert full.startswith(head), (full, head)
        golden["cases"].append({"prompt": prompt, "prompt_ids": ids, "greedy_ids": gen,
                                "continuation_text": full[len(head):], "min_margin": min(margins)})
        print(repr(prompt + full[len(head):]), f"min margin {min(margins):.3f}", flush=True)
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)


if __name__ == "__main__":
    main()
