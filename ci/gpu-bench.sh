#!/usr/bin/env bash
# The CUDA backend's benchmark (run on a GPU machine with torch and transformers installed, after
# ci/gpu-check.sh): for the make-model presets bench-110m and llama-1b in bf16, batch-1 decode
# tokens/s and its ratio to the HBM roofline (weight bytes per step / measured copy bandwidth), and
# aggregate tokens/s at 1, 8, 32 and 64 concurrent sequences next to transformers' generate on the
# same model and GPU. Prints a Markdown table last.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin halo
halo=target/release/halo
work=${HALO_GPU_BENCH_DIR:-/tmp/halo-gpu-bench}
mkdir -p "$work"
new=128

bw=$(python3 ci/gpu/copy_bandwidth.py)
rows=()
for preset in bench-110m llama-1b; do
  model="$work/$preset"
  [ -f "$model/config.json" ] || "$halo" make-model --preset "$preset" --out "$model" --dtype bf16 >&2
  weight_bytes=$("$halo" info --device cuda --model "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"]["weight_bytes"])')
  one=$("$halo" generate --device cuda --dtype bf16 --model "$model" --prompt "Once upon a time there was" \
        --max-new-tokens 256 --ignore-eos --json | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["timings"]["decode_tokens_per_s"])')
  roof=$(python3 -c "print($bw / $weight_bytes)")
  rows+=("| $preset | batch-1 decode | $(printf %.1f "$one") tok/s | roofline $(printf %.1f "$roof") tok/s ($(python3 -c "print(f'{100*$one/$roof:.0f}')")%) |")
  for n in 1 8 32 64; do
    prompts="$work/prompts$n.txt"
    python3 -c "
import random
random.seed($n)
words = 'the a robot house tree ran jumped over small big red blue happy cat dog bird sky sun moon'.split()
print('\n'.join(' '.join(random.choice(words) for _ in range(24)) for _ in range($n)))" > "$prompts"
    ours=$("$halo" generate --device cuda --dtype bf16 --model "$model" --prompts-file "$prompts" \
           --max-new-tokens $new --ignore-eos --max-batch-seqs 64 --json | tail -n 1 \
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["generated_tokens_per_s"])')
    theirs=$(python3 ci/gpu/hf_generate.py "$model" "$prompts" $new)
    rows+=("| $preset | $n sequences | $(printf %.0f "$ours") tok/s | transformers $(printf %.0f "$theirs") tok/s ($(python3 -c "print(f'{$ours/$theirs:.1f}')")x) |")
  done
done
echo
echo "copy bandwidth: $(python3 -c "print(f'{$bw/1e9:.0f}')") GB/s"
echo "| model | load | halo | reference |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
