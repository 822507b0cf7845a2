#!/usr/bin/env python3
"""SentencePiece (`tokenizer.ggml.model = "llama"`) GGUF tokenizer fixture, with llama.cpp's ids.

Writes into OUT_DIR (default tests/fixtures/gguf-spm):

- `spm.gguf`: a vocabulary-only GGUF (no tensors; llama-tokenize loads with `vocab_only`) whose
  tokenizer is a tiny sentencepiece BPE model (byte_fallback, 640 pieces, 256 of them bytes) trained on the license
  texts in /usr/share/common-licenses plus a few lines of accented Latin and CJK, so that some
  multi-byte characters are pieces and others fall back to `<0xNN>` bytes. tokens / scores /
  token_type are filled as llama.cpp's converter does (`_create_vocab_sentencepiece` in
  conversion/base.py), and two tokens are appended the way it appends added tokens: a CONTROL
  token `<|end|>` and a USER_DEFINED token `[[sep]]`, both with score -1000.
  BOS 1, EOS 2, UNK 0, add_bos_token true, add_space_prefix true.
- `spm-noprefix.gguf`: the same vocabulary with `tokenizer.ggml.add_space_prefix = false` and
  add_bos_token false.
- `spm-phi3.gguf`: `general.name = "Phi-3 tiny test"` (llama.cpp then strips the whitespace after
  special tokens but <unk>, <s> and <|endoftext|>), with three more tokens: `<|user|>` and
  `<|endoftext|>` CONTROL, and `<|im_end|>` NORMAL (llama.cpp makes it CONTROL by its text).
- `spm.json`: for each file and each prompt, the ids `llama-tokenize --ids` prints (special tokens
  parsed, BOS added when the file asks for it: what llama-server's /tokenize gives with
  add_special).

Usage (gguf-py from llama.cpp's tree and `sentencepiece` from PyPI in the venv):

    /root/llamacpp/venv/bin/python ci/oracle/spm_fixture.py \
        --llama-tokenize /root/llamacpp/build/bin/llama-tokenize [OUT_DIR]

`--check GGUF... --cases OUT.json` instead records llama-tokenize's ids, for existing SPM GGUFs
(e.g. llama.cpp's own models/ggml-vocab-llama-spm.gguf and ggml-vocab-phi-3.gguf, too large to
commit), for the prompts above, the texts of each file's `.inp` test file when there is one, and
400 random strings; `HALO_SPM_CASES=OUT.json cargo test -p halo-model --test gguf_spm` then checks
halo against them.

Pinned: sentencepiece 0.2.x, gguf-py from llama-cpp-python 0.3.36's vendored llama.cpp, whose
llama-tokenize produced the committed ids.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import random
import tempfile

import gguf
import sentencepiece as spm

VOCAB_SIZE = 640

EXTRA_TRAINING_LINES = [
    "café résumé naïve façade déjà vu über Straße",
    "café crème, résumé, naïve élève",
    "日本語 日本 本語 中文 中国",
    "日本の文化 日本語の本",
]

# (text, why). Every prompt goes through both files.
PROMPTS = [
    ("Hello world", "ascii"),
    ("the license and the software", "common words"),
    ("GNU General Public License, version 3.", "punctuation"),
    (" leading space", "one leading space"),
    ("   three leading spaces", "several leading spaces"),
    ("trailing space ", "one trailing space"),
    ("trailing spaces   ", "several trailing spaces"),
    ("multiple    inner     spaces", "runs of spaces"),
    (" ", "a lone space"),
    ("    ", "spaces only"),
    ("line one\nline two\n", "newlines"),
    ("\n\nblank lines\n\n\n", "leading/trailing newlines"),
    ("tab\tseparated\tvalues", "tabs"),
    ("café résumé über", "accented letters in the vocab"),
    ("日本語のテキスト", "CJK, partly in the vocab"),
    ("中文测试，汉字", "CJK mostly absent: byte fallback"),
    ("emoji 😀 and 👍🏽 and 🇫🇷", "emoji: 4-byte fallback, ZWJ-free sequences"),
    ("Zürich Ωmega ŁódŹ ß", "letters absent from the vocab"),
    ("<|end|>", "control token alone"),
    ("before<|end|>after", "control token inside text"),
    ("a <|end|> b", "control token between spaces"),
    ("<|end|><|end|>x", "two control tokens"),
    ("one[[sep]]two", "user-defined token"),
    ("[[sep]] start", "user-defined token first"),
    ("<s>bos in text</s>", "BOS/EOS strings in the text"),
    ("<unk> and <0x41>", "unk and byte-token strings in the text"),
    ("x", "one character"),
    ("", "empty"),
    ("Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>", "licence line"),
    ("THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND", "upper case"),
    ("naïve\u00a0non-breaking\u2009thin space", "unicode spaces are not ▁"),
    ("▁already▁escaped", "literal ▁ in the input"),
    ("mixed 123 4567 89", "digits"),
    ("\u0000nul and \u007f del", "control characters"),
    ("<|user|>\nHi there<|end|>\n<|assistant|>", "chat turn: Phi-3 strips the newline after specials"),
    ("<|user|> \t\n x</s> y<s> z<unk> w", "whitespace after each kind of special"),
    ("<|endoftext|>  after", "<|endoftext|> keeps its whitespace"),
    ("say <|im_end|> now", "<|im_end|>: control by its text where it is a token"),
]


def train(workdir):
    lines = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                lines.extend(line.strip() for line in f if line.strip())
    lines.extend(EXTRA_TRAINING_LINES * 20)
    corpus = os.path.join(workdir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    prefix = os.path.join(workdir, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=False,
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def vocab_from(sp):
    """tokens, scores, types as conversion/base.py's _create_vocab_sentencepiece fills them."""
    T = gguf.TokenType
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        t = T.NORMAL
        if sp.IsUnknown(i):
            t = T.UNKNOWN
        elif sp.IsControl(i):
            t = T.CONTROL
        elif sp.IsUnused(i):
            t = T.UNUSED
        elif sp.IsByte(i):
            t = T.BYTE
        tokens.append(sp.IdToPiece(i).encode("utf-8"))
        scores.append(sp.GetScore(i))
        types.append(int(t))
    # Added tokens, as the converter writes tokenizer_config.json's added_tokens_decoder.
    for text, t in (("<|end|>", T.CONTROL), ("[[sep]]", T.USER_DEFINED)):
        tokens.append(text.encode("utf-8"))
        scores.append(-1000.0)
        types.append(int(t))
    return tokens, scores, types


def write_gguf(path, tokens, scores, types, add_space_prefix, add_bos, name=None, extra=()):
    tokens, scores, types = list(tokens), list(scores), list(types)
    for text, t in extra:
        tokens.append(text.encode("utf-8"))
        scores.append(-1000.0)
        types.append(int(t))
    w = gguf.GGUFWriter(path, "llama")
    if name is not None:
        w.add_name(name)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_ids(tool, model, text, workdir):
    prompt = os.path.join(workdir, "prompt.txt")
    with open(prompt, "wb") as f:
        f.write(text.encode("utf-8"))
    out = subprocess.run(
        [tool, "-m", model, "-f", prompt, "--no-escape", "--ids", "--log-disable"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    return json.loads(line)


def dump(fixture):
    """JSON with one line per case, so diffs of the fixture read prompt by prompt."""
    j = lambda v: json.dumps(v, ensure_ascii=False)
    out = ["{", f' "vocab_size": {fixture["vocab_size"]},', ' "files": {']
    names = list(fixture["files"])
    for n, name in enumerate(names):
        f = fixture["files"][name]
        out.append(f'  {j(name)}: {{')
        for key in ("add_space_prefix", "add_bos"):
            out.append(f'   {j(key)}: {j(f[key])},')
        out.append('   "cases": [')
        cases = f["cases"]
        for i, c in enumerate(cases):
            out.append("    " + j(c) + ("," if i + 1 < len(cases) else ""))
        out.append("   ]")
        out.append("  }" + ("," if n + 1 < len(names) else ""))
    out.append(" }")
    out.append("}")
    text = "\n".join(out) + "\n"
    assert json.loads(text) == fixture
    return text


RANDOM_PIECES = [
    "the", " the", "Hello", " world", "license", "ing", "tion", " ", "  ", "   ", "\n", "\n\n",
    "\t", " \n ", "é", "ß", "café", "über", "日本", "語", "の", "中文", "测试", "，", "😀", "👍🏽",
    "🇫🇷", "👨\u200d👩\u200d👧", "Ω", "ł", "0", "12", "345", ".", ",", "!", "?", "\"", "(", ")", "-",
    "x", "q", "Z", "\u00a0", "\u2009", "\u3000", "▁", "<s>", "</s>", "<unk>", "<|user|>",
    "<|assistant|>", "<|end|>", "<|endoftext|>", "<|system|>", "<", ">", "|", "<0x41>", "[INST]",
    "Äpfel", "нещо", "Бълг", "ﷺ", "\u0000", "\u007f", "\ufeff",
]


def random_strings(n, seed=11):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randrange(1, 14)):
            if rng.randrange(6) == 0:
                cp = rng.choice([rng.randrange(0x20, 0x80), rng.randrange(0xA0, 0x3000), rng.randrange(0x1F300, 0x1FA00)])
                parts.append(chr(cp))
            else:
                parts.append(rng.choice(RANDOM_PIECES))
        out.append("".join(parts))
    return out


def check_cases(args):
    """llama-tokenize's ids for existing GGUFs (not committed: see the module doc)."""
    fixture = {"files": {}}
    with tempfile.TemporaryDirectory() as work:
        for path in args.check:
            texts = [t for t, _ in PROMPTS]
            inp = path + ".inp"
            if os.path.isfile(inp):
                with open(inp, encoding="utf-8") as f:
                    texts += f.read().split("\n__ggml_vocab_test__\n")
            texts += random_strings(400)
            cases = [
                {"text": t, "why": "check", "ids": llama_ids(args.llama_tokenize, path, t, work)}
                for t in texts
            ]
            fixture["files"][os.path.abspath(path)] = {"cases": cases}
            print(f"{path}: {len(cases)} cases", file=sys.stderr)
    with open(args.cases, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-tokenize", required=True)
    ap.add_argument("--check", nargs="+", metavar="GGUF")
    ap.add_argument("--cases")
    ap.add_argument("out_dir", nargs="?", default="tests/fixtures/gguf-spm")
    args = ap.parse_args()
    if args.check:
        return check_cases(args)
    os.makedirs(args.out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        sp = train(work)
        tokens, scores, types = vocab_from(sp)
        files = {
            "spm.gguf": dict(add_space_prefix=True, add_bos=True),
            "spm-noprefix.gguf": dict(add_space_prefix=False, add_bos=False),
            "spm-phi3.gguf": dict(
                add_space_prefix=True,
                add_bos=True,
                name="Phi-3 tiny test",
                extra=(
                    ("<|user|>", gguf.TokenType.CONTROL),
                    ("<|endoftext|>", gguf.TokenType.CONTROL),
                    ("<|im_end|>", gguf.TokenType.NORMAL),
                ),
            ),
        }
        fixture = {"vocab_size": len(tokens), "files": {}}
        for name, opts in files.items():
            path = os.path.join(args.out_dir, name)
            write_gguf(path, tokens, scores, types, **opts)
            cases = []
            for text, why in PROMPTS:
                cases.append({"text": text, "why": why, "ids": llama_ids(args.llama_tokenize, path, text, work)})
            fixture["files"][name] = {
                "add_space_prefix": opts["add_space_prefix"],
                "add_bos": opts["add_bos"],
                "cases": cases,
            }
        # Where the fixture exercises what it claims to.
        byte_ids = {i for i, t in enumerate(types) if t == int(gguf.TokenType.BYTE)}
        used = {i for f in fixture["files"].values() for c in f["cases"] for i in c["ids"]}
        assert used & byte_ids, "no prompt fell back to bytes"
        assert len(tokens) - 2 in used and len(tokens) - 1 in used, "added tokens unused"
        phi3 = fixture["files"]["spm-phi3.gguf"]["cases"]
        assert all(i in {c2 for c in phi3 for c2 in c["ids"]} for i in (642, 643, 644)), "phi3"
    with open(os.path.join(args.out_dir, "spm.json"), "w", encoding="utf-8") as f:
        f.write(dump(fixture))
    print(f"wrote {args.out_dir}: {len(tokens)} tokens, {len(PROMPTS)} prompts", file=sys.stderr)


if __name__ == "__main__":
    main()
