#!/usr/bin/env bash
# halo against llama.cpp on the same GGUF files, same thread count, runs interleaved in rounds
# (A, B, A, B ...) so a slow minute on a shared machine lands on both. Prints one line per
# measurement and round, then the medians.
#
#   LLAMA_CPP_BIN   llama.cpp's build bin/ (llama-bench, llama-batched-bench), built from the
#                   llama-cpp-python sdist's vendor/llama.cpp with -DGGML_NATIVE=ON
#   HALO            the halo binary (default: target/release/halo)
#   THREADS         threads for both (default: 2); ROUNDS (default: 3)
#   HALO_ARGS       extra flags for every halo run (e.g. "--activation-dtype bf16" for BF16
#                   files: llama.cpp's own arithmetic for them)
#
#   benches/vs_llamacpp.sh FILE.gguf [FILE.gguf ...]
#
# Measurements, per file:
#   tg128   batch-1 decode: llama-bench -p 0 -n 128 vs `halo generate` 128 tokens (decode tokens/s)
#   pp512   prefill of 512 tokens: llama-bench -p 512 -n 0 vs `halo generate` of a 512-token
#           prompt, 1 new token, --max-batch-tokens 512 (prompt tokens / TTFT)
#   b32     32 sequences x 128 new tokens after ~128-token prompts, end to end (prefill
#           included): llama-batched-bench -npp 128 -ntg 128 -npl 32 (generated tokens / total
#           time) vs `halo generate --prompts-file` (summary generated_tokens_per_s)
#   tg32    the same runs' aggregate decode rate once every prompt is in: llama-batched-bench's
#           speed_tg vs halo's tokens after the first / (wall - the last first-token time); halo
#           runs with --max-batch-tokens 4096 so, like the batched bench, it prefills all 32
#           prompts before decoding
# halo's KV cache is f16 for every file, as llama.cpp's is by default (--kv-cache-dtype f16:
# halo's own default for float files is f32).
set -euo pipefail
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to the llama.cpp build bin directory}"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
halo="${HALO:-$root/target/release/halo}"
threads="${THREADS:-2}"
rounds="${ROUNDS:-3}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prompts the tokenizer turns into about N tokens each (the synthetic vocab is byte-level).
words() { python3 -c "import random,sys; r=random.Random(int(sys.argv[2])); print(' '.join(r.choice(['the','license','grants','you','freedom','to','share','and','change','software','free','works','of','any','kind']) for _ in range(int(sys.argv[1]))))" "$1" "$2"; }
words 215 1 > "$work/p512.txt"   # ~512 tokens with the bench presets' tokenizer (2.4 per word)
for i in $(seq 1 32); do words 54 "$i"; done > "$work/p32.txt"   # ~128 tokens each

halo_json() {
    # shellcheck disable=SC2086 # HALO_ARGS is a list of flags
    HALO_CPU_THREADS=$threads "$halo" generate --json --ignore-eos --kv-cache-dtype f16 ${HALO_ARGS:-} "$@"
}

# One figure out of a tool's JSON lines on stdin.
cat > "$work/pick.py" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
what = sys.argv[1]
if what == "decode":
    print(rows[0]["timings"]["decode_tokens_per_s"])
elif what == "prefill":
    print(rows[0]["prompt_tokens"] / (rows[0]["timings"]["ttft_us"] / 1e6))
elif what == "summary":
    # End to end, then the aggregate decode rate after the last prompt's first token.
    summary = [r for r in rows if "summary" in r][0]["summary"]
    reqs = [r for r in rows if "timings" in r]
    last_first = max(r["timings"]["ttft_us"] for r in reqs) / 1e6
    after = sum(r["generated_tokens"] - 1 for r in reqs)
    print(summary["generated_tokens_per_s"], after / (summary["wall_s"] - last_first))
elif what == "llama-bench":
    print(rows[0]["avg_ts"])
elif what == "batched":
    print(rows[0]["pl"] * rows[0]["tg"] / rows[0]["t"], rows[0]["speed_tg"])
PY
pick() { python3 "$work/pick.py" "$1"; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for f in "$@"; do
    name=$(basename "$f")
    for r in $(seq 1 "$rounds"); do
        h=$(halo_json --model "$f" --prompt "Once upon a time" --max-new-tokens 128 | pick decode)
        l=$("$LLAMA_CPP_BIN/llama-bench" -m "$f" -t "$threads" -p 0 -n 128 -r 1 -o jsonl 2>/dev/null | pick llama-bench)
        echo "$name tg128 round $r halo $h llama.cpp $l" | tee -a "$work/tg.txt"

        h=$(halo_json --model "$f" --prompts-file "$work/p512.txt" --max-new-tokens 1 --max-batch-tokens 512 | pick prefill)
        l=$("$LLAMA_CPP_BIN/llama-bench" -m "$f" -t "$threads" -p 512 -n 0 -r 1 -o jsonl 2>/dev/null | pick llama-bench)
        echo "$name pp512 round $r halo $h llama.cpp $l" | tee -a "$work/pp.txt"

        read -r h ht < <(halo_json --model "$f" --prompts-file "$work/p32.txt" --max-new-tokens 128 --max-batch-seqs 32 --max-batch-tokens 4096 | pick summary)
        read -r l lt < <("$LLAMA_CPP_BIN/llama-batched-bench" -m "$f" -t "$threads" -c 9000 -npp 128 -ntg 128 -npl 32 --output-format jsonl 2>/dev/null | pick batched)
        echo "$name b32 round $r halo $h llama.cpp $l" | tee -a "$work/b32.txt"
        echo "$name tg32 round $r halo $ht llama.cpp $lt" | tee -a "$work/tg32.txt"
    done
    for m in tg pp b32 tg32; do
        hm=$(grep "^$name " "$work/$m.txt" | awk '{print $6}' | median)
        lm=$(grep "^$name " "$work/$m.txt" | awk '{print $8}' | median)
        echo "MEDIAN $name $m halo $hm llama.cpp $lm ratio $(python3 -c "print(round($hm / $lm, 2))")"
    done
done
