"""A tiny Gemma-style SentencePiece tokenizer for the Gemma family fixtures.

llama.cpp's Gemma 2 converter reads only `tokenizer.model` (a SentencePiece model), so the Gemma
fixtures ship one, as the real checkpoints do, next to the `tokenizer.json` transformers derives
from it. Gemma's layout: <pad> <eos> <bos> <unk> = 0 1 2 3, BPE with byte fallback (the 256
<0xNN> pieces are ordinary vocabulary), no dummy prefix, whitespace kept as "▁", digits split.
Trained on the same license texts as the other fixtures' tokenizers.
"""
import glob
import json
import os
import tempfile

import sentencepiece as spm


def _train(model_path, vocab_size):
    lines = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, errors="ignore") as f:
                lines.extend(line for line in f.read().split("\n") if line.strip())
    with tempfile.TemporaryDirectory() as work:
        corpus = os.path.join(work, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        prefix = os.path.join(work, "gemma")
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, character_coverage=0.9995, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
            split_digits=True, num_threads=1, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
            pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
            minloglevel=2)
        with open(prefix + ".model", "rb") as src, open(model_path, "wb") as dst:
            dst.write(src.read())


class _Encoded:
    def __init__(self, ids):
        self.ids = ids


class GemmaTok:
    """The two calls make_model.py makes of a tokenizer (encode(text).ids with BOS, decode),
    answered by transformers' own GemmaTokenizer built from tokenizer.model."""

    def __init__(self, hf):
        self.hf = hf

    def encode(self, text):
        return _Encoded(self.hf(text)["input_ids"])

    def decode(self, ids):
        return self.hf.decode(ids)


def write_gemma_tokenizer(out, vocab_size):
    """Writes tokenizer.model, then tokenizer.json / tokenizer_config.json as transformers converts
    them, and checks that both encode the fixture prompts alike."""
    from transformers import GemmaTokenizer
    model_path = os.path.join(out, "tokenizer.model")
    _train(model_path, vocab_size)
    # transformers converts tokenizer.model itself when it is the only tokenizer file there; no
    # <mask> token (it would get id 512, past the vocabulary)
    for stale in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    hf = GemmaTokenizer.from_pretrained(out, add_bos_token=True, mask_token=None, model_max_length=4096)
    hf.save_pretrained(out)
    # drop the local bookkeeping save_pretrained records (an absolute vocab_file path)
    tc_path = os.path.join(out, "tokenizer_config.json")
    with open(tc_path) as f:
        tc = json.load(f)
    for k in ("vocab_file", "is_local", "local_files_only"):
        tc.pop(k, None)
    with open(tc_path, "w") as f:
        json.dump(tc, f, indent=2)
    hf = GemmaTokenizer.from_pretrained(out)
    assert len(hf) == vocab_size, len(hf)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    from make_model import PROMPTS
    for p in PROMPTS + ["  two spaces, digits 2007 and\nnewline"]:
        want = [2] + sp.encode(p)
        got = hf(p)["input_ids"]
        assert got == want, (p, got, want)
    return GemmaTok(hf)
