"""transformers' own generate on the same model and GPU, as the baseline halo's CUDA backend is compared
with: N prompts batched (left padding), greedy, exactly NEW tokens each, bf16.
Usage: python hf_generate.py MODEL_DIR PROMPTS_FILE NEW  -> prints generated tokens per second."""
import sys
import time

import torch
import transformers

model_dir, prompts_file, new = sys.argv[1], sys.argv[2], int(sys.argv[3])
prompts = [line.rstrip("\n") for line in open(prompts_file) if line.strip()]
tok = transformers.PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
tok.pad_token_id = 1
tok.padding_side = "left"
device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu only to check this script without a GPU
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device).eval()
enc = tok(prompts, return_tensors="pt", padding=True).to(device)
args = dict(do_sample=False, pad_token_id=1, eos_token_id=None)
with torch.no_grad():
    model.generate(**enc, max_new_tokens=4, min_new_tokens=4, **args)  # warm up kernels
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, **args)
    if device == "cuda":
        torch.cuda.synchronize()
assert out.shape[1] == enc["input_ids"].shape[1] + new, out.shape
print(len(prompts) * new / (time.perf_counter() - t0))
