#!/usr/bin/env bash
# A fleet of halo workers on one machine, driven by `halo bench` as one target list, with one
# worker SIGTERMed mid-run. Checks what a rolling update or a node drain relies on:
#   - the drained worker finishes the streams it had (its log names them; none is cut),
#     refuses new calls with UNAVAILABLE before sending any token (a router retries those
#     elsewhere), and exits 0 within its drain timeout;
#   - the other workers keep reporting SERVING while it drains and serve every request;
#   - nothing is lost: every request either completed with all its tokens or was refused
#     before its first token (so a router can retry it elsewhere).
# Loopback only (every port is picked by the kernel). Exit 0 when every check holds, 1 when one
# fails (it says which), 2 on bad arguments.
#
#   deploy/fleet/run.sh [-n N] [--model DIR] [--halo BIN] [--out DIR] [--victim I]
#                       [--requests R] [--concurrency C] [--output-len L] [--drain-timeout S]
#
# Defaults: N=3, the tiny-qwen2 test model, `halo` from $HALO_BIN or PATH or target/{release,debug},
# the victim is worker 1 (the middle of the target list, so workers run before and after it),
# R=64 requests per worker at concurrency 4, 256 output tokens each. Workers get
# HALO_CPU_THREADS=1 each unless it is set.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
n=3
model="$root/tests/fixtures/models/tiny-qwen2"
halo="${HALO_BIN:-}"
out=""
victim=1
requests=64
concurrency=4
output_len=256
drain=30

die() { echo "fleet: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) n="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --halo) halo="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --victim) victim="$2"; shift 2 ;;
    --requests) requests="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --output-len) output_len="$2"; shift 2 ;;
    --drain-timeout) drain="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$n" =~ ^[0-9]+$ && "$n" -ge 2 ]] || die "-n must be 2 or more"
[[ "$victim" =~ ^[0-9]+$ && "$victim" -lt "$n" ]] || die "--victim must be below -n"
[[ -d "$model" ]] || die "no model directory $model (halo make-model --preset tiny --out DIR makes one)"
if [[ -z "$halo" ]]; then
  halo=$(command -v halo || true)
  for c in "${CARGO_TARGET_DIR:-$root/target}/release/halo" "${CARGO_TARGET_DIR:-$root/target}/debug/halo"; do
    [[ -z "$halo" && -x "$c" ]] && halo="$c"
  done
fi
[[ -n "$halo" && -x "$halo" ]] || die "no halo binary (set HALO_BIN or --halo)"
if [[ -z "$out" ]]; then out=$(mktemp -d "${TMPDIR:-/tmp}/halo-fleet.XXXXXX"); fi
mkdir -p "$out"
export HALO_CPU_THREADS="${HALO_CPU_THREADS:-1}"

pids=()
bench_pid=""
cleanup() {
  local p
  [[ -n "$bench_pid" ]] && kill "$bench_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() { echo "fleet: FAIL: $*" >&2; echo "fleet: logs and reports in $out" >&2; exit 1; }
note() { echo "fleet: $*" >&2; }

# Worker $1's /metrics text (HTTP/1.0 over bash's /dev/tcp: no curl needed); empty when down.
scrape() {
  local host=${maddr[$1]%:*} port=${maddr[$1]##*:}
  ( exec 3<>"/dev/tcp/$host/$port" && printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3 \
    && timeout 2 cat <&3 ) 2>/dev/null || true
}
# The sum of the samples of worker $1 whose line starts with $2 (empty when there are none).
metric() {
  scrape "$1" | awk -v m="$2" 'index($0, m) == 1 { s += $NF; found = 1 } END { if (found) print s }'
}

# 1. Start the workers on kernel-picked loopback ports; each prints its ports once serving.
addr=(); maddr=()
for ((i = 0; i < n; i++)); do
  RUST_LOG="${RUST_LOG:-info}" "$halo" serve --model "$model" \
    --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --drain-timeout-secs "$drain" \
    >"$out/worker$i.out" 2>"$out/worker$i.log" </dev/null &
  pids+=("$!")
done
for ((i = 0; i < n; i++)); do
  line=""
  for ((t = 0; t < 1200; t++)); do
    line=$(head -n 1 "$out/worker$i.out" 2>/dev/null || true)
    [[ -n "$line" ]] && break
    kill -0 "${pids[$i]}" 2>/dev/null || fail "worker $i exited at start: $(tail -n 3 "$out/worker$i.log")"
    sleep 0.1
  done
  # "halo serving on 127.0.0.1:PORT (metrics on http://127.0.0.1:PORT/metrics)"
  [[ "$line" =~ ^halo\ serving\ on\ ([^ ]+)\ \(metrics\ on\ http://([^/]+)/metrics\)$ ]] \
    || fail "worker $i did not start in 120 s (stdout: '$line')"
  addr[$i]=${BASH_REMATCH[1]}; maddr[$i]=${BASH_REMATCH[2]}
  note "worker $i (pid ${pids[$i]}) serving on ${addr[$i]}, metrics on ${maddr[$i]}"
done

# 2. One bench run over every worker as one target list (targets run one after another).
targets=()
for ((i = 0; i < n; i++)); do targets+=("w$i=grpc://${addr[$i]}"); done
warmup=2
"$halo" bench "${targets[@]}" --input-len uniform:8-24 --output-len "fixed:$output_len" \
  --num-requests "$requests" --concurrency "$concurrency" --warmup "$warmup" --seed 7 \
  --request-timeout 60 --out "$out/bench" >"$out/bench.md" 2>"$out/bench.log" </dev/null &
bench_pid=$!

# 3. SIGTERM the victim once it is mid-run: streams running and some requests already done.
v=$victim
ok_pattern='halo_requests_total{'
sent=0
for ((t = 0; t < 6000; t++)); do
  kill -0 "$bench_pid" 2>/dev/null || break
  done_ok=$(scrape "$v" \
    | awk -v m="$ok_pattern" 'index($0, m) == 1 && /code="OK"/ { s += $NF } END { print s + 0 }')
  running=$(metric "$v" "halo_running_sequences ")
  if [[ "${done_ok:-0}" -ge $((warmup + requests / 4)) && "${running:-0}" -gt 0 ]]; then
    kill -TERM "${pids[$v]}"
    sent=1
    note "SIGTERM to worker $v with $running streams running and $done_ok done"
    break
  fi
  sleep 0.02
done
[[ "$sent" == 1 ]] || fail "never caught worker $v mid-run (bench ended or 120 s passed)"

# 4. While it drains, every other worker still reports SERVING.
others_checked=0
while :; do
  alive=0
  kill -0 "${pids[$v]}" 2>/dev/null && alive=1
  for ((i = 0; i < n; i++)); do
    [[ "$i" == "$v" ]] && continue
    [[ "$(metric "$i" "halo_serving ")" == 1 ]] || fail "worker $i stopped SERVING while worker $v drained"
  done
  others_checked=$((others_checked + 1))
  [[ "$alive" == 1 ]] || break
  sleep 0.05
done
set +e
wait "${pids[$v]}"
victim_rc=$?
set -e
[[ "$victim_rc" == 0 ]] || fail "worker $v exited $victim_rc after SIGTERM (want 0)"
grep -q "drain timeout passed" "$out/worker$v.log" && fail "worker $v hit its drain timeout"
in_flight=$(sed 's/\x1b\[[0-9;]*m//g' "$out/worker$v.log" \
  | sed -n 's/.*draining in-flight requests.*in_flight=\([0-9]*\).*/\1/p' | head -n 1)
[[ -n "$in_flight" ]] || fail "worker $v's log has no drain line (RUST_LOG must include info)"
note "worker $v drained $in_flight in-flight calls and exited 0 (others SERVING at $others_checked checks)"

# 5. The bench finishes against the rest of the fleet.
set +e
wait "$bench_pid"
bench_rc=$?
set -e
bench_pid=""
[[ -f "$out/bench/requests.jsonl" ]] || fail "bench wrote no requests.jsonl (exit $bench_rc): $(tail -n 3 "$out/bench.log")"

# 6. Nothing lost: judge every request record.
python3 - "$out/bench/requests.jsonl" "$v" "$n" "$requests" "$output_len" "$in_flight" <<'PY'
import json, sys
path, v, n, requests, output_len, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
recs = [json.loads(l) for l in open(path) if l.strip()]
by = {}
for r in recs:
    by.setdefault(r["target"], []).append(r)
problems = []
def is_ok(r): return r["outcome"].get("result") == "ok"
def status(r): return r["outcome"].get("status", "")
summary = []
for i in range(n):
    rs = by.get(f"w{i}", [])
    if len(rs) != requests:
        problems.append(f"w{i}: {len(rs)} records, want {requests}")
    good = [r for r in rs if is_ok(r)]
    bad = [r for r in rs if not is_ok(r)]
    for r in good:
        got = r["usage_output_tokens"] if r.get("usage_output_tokens") is not None else r["stream_tokens"]
        if got != output_len:
            problems.append(f"w{i} request {r['index']}: {got} tokens, want {output_len}")
    if i != v:
        for r in bad:
            problems.append(f"w{i} request {r['index']} failed ({status(r)}) on a worker that was not drained")
    else:
        for r in bad:
            if r["stream_tokens"] != 0 or r["chunks"]:
                problems.append(f"w{i} request {r['index']}: cut after {r['stream_tokens']} tokens ({status(r)})")
        if bad:
            t_refused = min(r["start"] + r["end"] for r in bad)
            spanning = [r for r in good if r["start"] < t_refused < r["start"] + r["end"]]
        else:
            spanning = []
        # Informational only: which completed streams straddle the first refusal is timing (a
        # drained stream can finish before any refused call returns). The invariants are above:
        # nothing cut after a token, and the worker drained its in-flight calls and exited 0.
        if in_flight > 0 and bad and not spanning:
            print(f"fleet: note: w{i}: its {in_flight} drained streams all ended before the first refusal returned",
                  file=sys.stderr)
        codes = {}
        for r in bad:
            codes[status(r)] = codes.get(status(r), 0) + 1
        # Besides UNAVAILABLE ("shutting down", then connection refused), a call racing the
        # transport's GOAWAY at the very end can fail INTERNAL/CANCELLED: still before any token.
        codes = ", ".join(f"{k} {v}" for k, v in sorted(codes.items()))
        summary.append(f"w{i} (drained): {len(good)} completed, {len(spanning)} of them across the SIGTERM; "
                       f"{len(bad)} refused before any token ({codes})")
        continue
    summary.append(f"w{i}: {len(good)}/{len(rs)} completed")
for s in summary:
    print("fleet:", s, file=sys.stderr)
if problems:
    for p in problems[:20]:
        print("fleet: FAIL:", p, file=sys.stderr)
    sys.exit(1)
PY
note "OK: $n workers, worker $v drained mid-run, nothing lost (reports in $out/bench)"
