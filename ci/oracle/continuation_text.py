"""Adds (or re-checks) each golden case's `continuation_text`: the text the greedy ids add to the
prompt's, `decode(prompt_ids + greedy_ids) - decode(prompt_ids)` with transformers' tokenizer
(special tokens skipped), which is what halo's completion text must equal.

Usage: python continuation_text.py MODEL_DIR...   (rewrites golden.json in place)
"""
import json
import os
import sys

from transformers import AutoTokenizer


def continuation(tok, prompt_ids, gen):
    full = tok.decode(prompt_ids + gen, skip_special_tokens=True)
    head = tok.decode(prompt_ids, skip_special_tokens=True)
    assert full.startswith(head), (full, head)
    return full[len(head):]


def main(dirs):
    for d in dirs:
        path = os.path.join(d, "golden.json")
        with open(path) as f:
            golden = json.load(f)
        tok = AutoTokenizer.from_pretrained(d)
        for case in golden["cases"]:
            text = continuation(tok, case["prompt_ids"], case["greedy_ids"])
            old = case.get("continuation_text")
            assert old is None or old == text, (d, case["prompt"], old, text)
            case["continuation_text"] = text
        with open(path, "w") as f:
            json.dump(golden, f, indent=1)
        print(d, "continuation texts:", len(golden["cases"]))


if __name__ == "__main__":
    main(sys.argv[1:])
