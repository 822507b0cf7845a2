"""transformers' greedy ids for the tiny-phi3 fixture when the KV cache is kept across the LongRoPE
switch: every forward call is the prompt (one call) or one decode token, and each picks the short
or long factors from its own max(position_ids) + 1 > original_max_position_embeddings.

transformers' generate() differs once a generation crosses original_max_position_embeddings:
Phi3ForCausalLM.prepare_inputs_for_generation then drops the cache and re-runs the whole sequence
with the long factors (golden.json records that path). halo's engine follows generate(): it
recomputes a crossing sequence, and its prefix cache keeps long- and short-regime blocks apart
(crates/halo-engine/src/rope_regime.rs). This file is the reference for device-level tests that
keep the cache and flag each step's regime by the sequence's length (the CUDA and sidecar tests),
computed by transformers itself.

Usage: /root/llamacpp/venv/bin/python ci/oracle/phi3_cached_path.py tests/fixtures/families/tiny-phi3
"""
import json
import os
import sys

import torch
import transformers as tf


def main(d):
    model = tf.Phi3ForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    golden = json.load(open(os.path.join(d, "golden.json")))
    orig = model.config.rope_parameters["original_max_position_embeddings"]
    out = {"model": golden["model"], "original_max_position_embeddings": orig, "cases": []}
    for case in golden["cases"]:
        ids = case["prompt_ids"]
        n = len(case["greedy_ids"])
        gen, margins = [], []
        with torch.no_grad():
            cache = tf.DynamicCache(config=model.config)
            res = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
            for _ in range(n):
                row = res.logits[0, -1]
                top2 = torch.topk(row, 2)
                margins.append(float(top2.values[0] - top2.values[1]))
                t = int(top2.indices[0])
                gen.append(t)
                res = model(input_ids=torch.tensor([[t]]), cache=res.cache,
                            use_cache=True)
        out["cases"].append({
            "prompt_ids": ids,
            "cached_ids": gen,
            "margins": margins,
            # generated tokens before this index come from forwards that never cross the
            # original length, so generate()'s recompute cannot have changed them
            "same_as_generate_before": max(0, orig - len(ids) + 1) if len(ids) <= orig else n,
        })
        first = next((i for i, (a, b) in enumerate(zip(gen, case["greedy_ids"])) if a != b), None)
        print(len(ids), "first difference from generate():", first)
    with open(os.path.join(d, "cached_path.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
