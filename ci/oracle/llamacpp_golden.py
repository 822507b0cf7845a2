"""Records llama.cpp's own greedy continuations of the family fixtures' GGUF conversions.

For each GGUF it starts llama-server (CPU, one slot, one thread, f32 KV cache, flash attention
off, weights not repacked), sends every case of the source fixture's golden.json as token ids
(the prompt_ids, BOS included), and records the 48 greedy ids (temperature 0, one request per
step so that EOS can be chosen without stopping, as in transformers' golden)
with the top-1 minus top-2 log-probability at each step (log-softmax keeps logit differences, so
this is the raw logit margin; taken one step at a time from the greedy prefix; null where the
server returns no probabilities, for a token that ends inside a UTF-8 character), plus /tokenize
of the prompt text with special tokens.

Usage: python llamacpp_golden.py LLAMA_SERVER OUT.json FIXTURES_DIR GGUF...
Each GGUF's source fixture is FIXTURES_DIR/<name without -f32/-f16>.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from gguf import GGUFReader


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def wait_ready(port, proc):
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("llama-server did not become ready")


FLAGS = ["-c", "512", "-np", "1", "-t", "1", "--no-webui", "--offline", "--no-repack",
         "-ctk", "f32", "-ctv", "f32", "-fa", "off"]


def run_file(server, gguf_path, golden, eos):
    port = free_port()
    proc = subprocess.Popen([server, "-m", gguf_path, "--host", "127.0.0.1", "--port", str(port)] + FLAGS,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        cases = []
        for case in golden["cases"]:
            n = len(case["greedy_ids"])
            # one step at a time, as transformers' golden is made: EOS may be chosen and does not
            # stop (ignore_eos would instead forbid it), and the margins need per-step probabilities
            # (the server merges those of tokens that only together form a UTF-8 character)
            ids, margins = [], []
            for _ in range(n):
                step = post(port, "/completion", {
                    "prompt": case["prompt_ids"] + ids, "n_predict": 1, "temperature": 0.0, "top_k": 1,
                    "n_probs": 2, "post_sampling_probs": False, "cache_prompt": False,
                    "return_tokens": True, "samplers": ["top_k"]})
                if step["stop_type"] == "eos":
                    tok_id = eos
                else:
                    assert len(step["tokens"]) == 1, step
                    tok_id = step["tokens"][0]
                ids.append(tok_id)
                if "completion_probabilities" not in step:
                    # a token that ends inside a UTF-8 character comes back without probabilities
                    margins.append(None)
                    continue
                top = step["completion_probabilities"][0]["top_logprobs"]
                assert top[0]["id"] == tok_id, (top, tok_id)
                margins.append(top[0]["logprob"] - top[1]["logprob"])
            tok = post(port, "/tokenize", {"content": case["prompt"], "add_special": True})["tokens"]
            cases.append({"prompt": case["prompt"], "prompt_ids": case["prompt_ids"],
                          "llamacpp_prompt_ids_from_text": tok, "greedy_ids": ids, "margins": margins,
                          "matches_transformers": ids == case["greedy_ids"]})
        return cases
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    server, out_path, fixtures = sys.argv[1:4]
    result = {}
    for path in sys.argv[4:]:
        name = os.path.basename(path)
        source = name.rsplit("-", 1)[0]
        golden = json.load(open(os.path.join(fixtures, source, "golden.json")))
        reader = GGUFReader(path)
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        eos = int(reader.fields["tokenizer.ggml.eos_token_id"].contents())
        cases = run_file(server, path, golden, eos)
        result[name] = {"source": source, "tensor_types": types,
                        "server_flags": " ".join(["llama-server", "-m", name, "--host", "127.0.0.1",
                                                  "--port", "<free port>"] + FLAGS),
                        "cases": cases}
        print(name, "matches transformers:", [c["matches_transformers"] for c in cases],
              "min margin %.5f" % min(min((m for m in c["margins"] if m is not None), default=float("inf")) for c in cases), flush=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
