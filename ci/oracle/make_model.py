"""Reference: build a small random Llama-family model in Hugging Face format with transformers,
plus a byte-level BPE tokenizer, and record transformers' own greedy continuations and logits.

The output directory is what a user would download from a hub: config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, generation_config.json, and golden.json (the reference outputs).

Usage: python make_model.py NAME OUT_DIR

This is halo's copy of the shared oracle with more CONFIGS (GQA, tied embeddings, explicit head_dim,
llama3 and linear rope scaling, Llama attention_bias, Qwen2 q/k/v bias, Mistral sliding window, bf16
storage, classic config layout). tiny-mha is built exactly as the shared script builds it; the other
fixtures' golden.json also lists the stored tensors and the rotary inverse frequencies.
"""
import json
import os
import sys
import glob
import copy

import torch
from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

# Fixture shapes are deliberately tiny (hidden 64, intermediate 160, 2 layers) so each committed
# safetensors stays under ~700 KB; vocab 512 is the smallest the BPE trainer fills from the corpus.
_SMALL = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, vocab_size=512, rms_norm_eps=1e-5)

# Gemma 2's soft-capping, far below the real 50 / 30 so that it bends random-weight logits
SOFTCAP_ATTN, SOFTCAP_FINAL = 4.0, 6.0

CONFIGS = {
    # the shared test model (small, MHA, untied, rope_parameters layout)
    "tiny-mha": dict(arch="llama", hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, vocab_size=512,
                     rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, seed=1),
    # GQA (4 q heads share 2 kv heads), tied lm_head, and an explicit head_dim (32) that differs from
    # hidden/heads (16), so a loader that derives head_dim gets the shapes wrong.
    "tiny-gqa-tied": dict(arch="llama", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=32, rope_theta=10000.0, tie_word_embeddings=True, seed=22),
    # Llama 3.1 rope scaling with a small original context (64) so that, at head_dim 16 and theta
    # 10000, the wavelengths (6.3 .. 19869) fall in all three regimes: kept (< 16), smoothed
    # (16 .. 64) and divided by the factor (> 64). golden.json records the resulting inv_freq.
    "tiny-llama3-rope": dict(arch="llama", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                             rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0,
                                                  low_freq_factor=1.0, high_freq_factor=4.0,
                                                  original_max_position_embeddings=64),
                             tie_word_embeddings=False, seed=3),
    # Linear position interpolation in the classic layout (top-level rope_theta + rope_scaling), and
    # Llama's attention_bias, which puts a bias on q, k, v AND o_proj (golden.json lists the tensors).
    "tiny-linear-rope-classic": dict(arch="llama", **_SMALL, num_attention_heads=4, num_key_value_heads=4,
                                     rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
                                     attention_bias=True, tie_word_embeddings=False, classic=True, seed=4),
    # Qwen2: bias on q/k/v only (not o_proj), GQA, tied embeddings like the small Qwen2 checkpoints.
    "tiny-qwen2": dict(arch="qwen2", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                       rope_theta=10000.0, tie_word_embeddings=True, seed=22),
    # Mistral with an 8-token sliding window: the 4th prompt (~40 tokens) is far longer than the
    # window, so a model that ignores the window diverges on it.
    "tiny-mistral-swa": dict(arch="mistral", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                             rope_theta=10000.0, sliding_window=8, tie_word_embeddings=False, seed=6),
    # Stored in bf16. The parameters are rounded to bf16 first and the golden is computed in f32 on
    # those bf16-representable weights, so a loader that widens bf16 -> f32 exactly must match the
    # golden as closely as an f32 model does. config.json says dtype bfloat16.
    "tiny-bf16": dict(arch="llama", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                      rope_theta=10000.0, tie_word_embeddings=False, store_dtype="bfloat16", seed=7),
    # Qwen2 in the layout most Qwen2 checkpoints ship: classic config (rope_theta 1e6 top-level,
    # rope_scaling null), untied lm_head.
    "tiny-qwen2-classic": dict(arch="qwen2", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                               rope_theta=1000000.0, tie_word_embeddings=False, classic=True, seed=8),
    # A Llama-2 style SentencePiece tokenizer (tokenizer="spm"): BPE with byte_fallback, the
    # normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, decoder Replace,
    # ByteFallback, Fuse, Strip; <unk> <s> </s> at 0 1 2 and the 256 byte tokens <0x00>..<0xFF> as
    # ordinary vocabulary at 3..258, as Llama 2 and Mistral 7B ship it. Half the vocabulary is byte
    # tokens, so the random model's continuations are full of byte runs, complete and not.
    "tiny-llama2-spm": dict(arch="llama", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                            rope_theta=10000.0, tie_word_embeddings=False, tokenizer="spm", seed=11),
    # --- issue 16's families (written to tests/fixtures/families/) ---
    # Qwen3: per-head RMSNorm on q and k before RoPE (random weights, so skipping them diverges), no
    # q/k/v bias, GQA, explicit head_dim 32 != hidden/heads 16, tied.
    "tiny-qwen3": dict(arch="qwen3", **_SMALL, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                       rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
                       tie_word_embeddings=True, seed=31),
    # Mixtral: 8 experts, top-2 (softmax over all, renormalised over the two), GQA; experts are
    # small (intermediate 32) to keep the file under 1 MB.
    "tiny-mixtral": dict(arch="mixtral", **dict(_SMALL, intermediate_size=32), num_attention_heads=4,
                         num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
                         rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
                         tie_word_embeddings=False, seed=39),
    # Gemma 2: sliding (window 8) and global layers alternating, attention-logit and final-logit
    # soft-capping low enough to change random-weight logits, query_pre_attn_scalar 24 != head_dim
    # 32 (!= hidden/heads 16), GeGLU with tanh GELU, (1 + w) norms before and after attention and
    # MLP, embeddings scaled by sqrt(hidden), tied; a Gemma-style SentencePiece tokenizer.
    "tiny-gemma2": dict(arch="gemma2", **_SMALL, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                        query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=SOFTCAP_ATTN,
                        final_logit_softcapping=SOFTCAP_FINAL, hidden_activation="gelu_pytorch_tanh",
                        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
                        tie_word_embeddings=True, tokenizer_kind="gemma-spm", seed=41),
    # Phi-3 / Phi-4-mini: fused qkv_proj and gate_up_proj, partial rotary (0.75 of head_dim 16: 12
    # rotated dims, as Phi-4-mini), longrope with original_max_position_embeddings 32 against 256
    # (attention factor sqrt(1 + ln 8 / ln 32)): prompts 1-3 start below 32 and their generations
    # cross it, prompt 4 starts past it. GQA, untied. Classic config layout (rope_scaling with
    # "type": "longrope", top-level partial_rotary_factor) as Phi-4-mini's config.json, and
    # tokenizer_class GPT2Tokenizer as Phi-4-mini's (llama.cpp's converter then reads tokenizer.json).
    "tiny-phi3": dict(arch="phi3", **_SMALL, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, original_max_position_embeddings=32,
                      partial_rotary_factor=0.75, rope_theta=10000.0,
                      rope_scaling=dict(type="longrope", short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                                        long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 8.0]),
                      tie_word_embeddings=False, classic="phi3", tokenizer_class="GPT2Tokenizer", seed=57),
    # Gemma 3 text: 3 layers in the pattern local, local, global (sliding_window_pattern 3, window
    # 8); local layers rotate with rope_local_base_freq 10000, global ones with rope_theta 1e6 and
    # linear rope scaling x2; q_norm/k_norm ((1 + w), random); query_pre_attn_scalar 24 != head_dim
    # 32; no soft-capping; GQA; tied. Classic config layout as the hub's Gemma 3 configs, with
    # layer_types spelled out too. Gemma SentencePiece tokenizer.
    "tiny-gemma3": dict(arch="gemma3", **dict(_SMALL, num_hidden_layers=3), num_attention_heads=4,
                        num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=24, sliding_window=8,
                        sliding_window_pattern=3, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                        rope_scaling=dict(rope_type="linear", factor=2.0), hidden_activation="gelu_pytorch_tanh",
                        tie_word_embeddings=True, tokenizer_kind="gemma-spm", classic="gemma3", seed=61),
    # The Gemma fixtures as llama.cpp's GGUF can carry them: its converter writes no
    # query_pre_attn_scalar (llama.cpp scales queries by 1/sqrt(head_dim) unless the layer count
    # says 27B) and no Gemma 3 sliding_window_pattern (llama.cpp assumes 6), so these keep
    # query_pre_attn_scalar == head_dim, as Gemma 2 2B/9B and Gemma 3 up to 12B do, and Gemma 3's
    # pattern of 5 local layers then 1 global. Their GGUFs must give transformers' ids.
    "tiny-gemma2-hub": dict(arch="gemma2", **_SMALL, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                            query_pre_attn_scalar=32, sliding_window=8, attn_logit_softcapping=SOFTCAP_ATTN,
                            final_logit_softcapping=SOFTCAP_FINAL, hidden_activation="gelu_pytorch_tanh",
                            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
                            tie_word_embeddings=True, tokenizer_kind="gemma-spm", seed=45),
    "tiny-gemma3-hub": dict(arch="gemma3", **dict(_SMALL, num_hidden_layers=6, intermediate_size=64),
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                            sliding_window=8, sliding_window_pattern=6, rope_theta=1000000.0,
                            rope_local_base_freq=10000.0, rope_scaling=dict(rope_type="linear", factor=2.0),
                            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                            tokenizer_kind="gemma-spm", classic="gemma3", seed=62),
    # Qwen3-MoE as Qwen3-30B-A3B is laid out: every layer MoE, 8 small experts
    # (moe_intermediate_size 32) top-2 with norm_topk_prob, q/k norm, GQA, explicit head_dim 32,
    # untied. llama.cpp converts and runs this one.
    "tiny-qwen3moe": dict(arch="qwen3_moe", **_SMALL, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                          num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
                          decoder_sparse_step=1, rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
                          tie_word_embeddings=False, seed=72),
    # The same with a dense first layer (mlp_only_layers [0], intermediate 160) and 3 layers, so a
    # loader must decide per layer; tied to stay under 1 MB. transformers supports it, llama.cpp's
    # converter does not (its qwen3moe has experts in every layer), so this one has no GGUF.
    "tiny-qwen3moe-dense0": dict(arch="qwen3_moe", **dict(_SMALL, num_hidden_layers=3), num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
                                 moe_intermediate_size=32, norm_topk_prob=True, mlp_only_layers=[0],
                                 decoder_sparse_step=1, rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
                                 tie_word_embeddings=True, seed=71),
}

PROMPTS = [
    "The license grants you the freedom to",
    "Each provider comes with its unique set of features",
    "a",
    "Copyright (C) 2007 Free Software Foundation, Inc. Everyone is permitted to copy and distribute verbatim copies of this license document, but changing it is not allowed.",
]


def corpus():
    text = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, errors="ignore") as f:
                text.append(f.read())
    return text


def make_tokenizer(vocab_size):
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


# four prompts like the others (the golden tests pair each with a prefill chunk size); the third
# has CJK, an emoji and accents, which this vocabulary spells in byte tokens
SPM_PROMPTS = [PROMPTS[0], PROMPTS[1], "我很感谢你的热情 👍 naïve café", PROMPTS[3]]


def make_spm_tokenizer(vocab_size):
    """Llama-2 style tokenizer.json: BPE + byte_fallback, Metaspace spaces via the normalizer."""
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    # train the merges with a Metaspace split (training one word per document is too slow); the
    # shipped tokenizer has no pre-tokenizer, as Llama 2's has none
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                                   normalizers.Replace(" ", "\u2581")])
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    n_learned = vocab_size - len(specials) - len(byte_tokens)
    trainer = trainers.BpeTrainer(vocab_size=n_learned, special_tokens=[], limit_alphabet=60,
                                  show_progress=False)
    trainer_tok.train_from_iterator(corpus(), trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(specials + byte_tokens)}
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    merges = [m for m in merges if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    assert len(vocab) <= vocab_size, len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def continuation_text(out, prompt_ids, gen):
    """The text the generated ids add to the prompt's, as transformers decodes it."""
    from transformers import AutoTokenizer
    t = AutoTokenizer.from_pretrained(out)
    full = t.decode(prompt_ids + gen, skip_special_tokens=True)
    head = t.decode(prompt_ids, skip_special_tokens=True)
    assert full.startswith(head), (full, head)
    return full[len(head):]


def build(name, out):
    c = dict(CONFIGS[name])
    arch, seed, classic = c.pop("arch"), c.pop("seed"), c.pop("classic", False)
    spm = c.pop("tokenizer", "bytelevel") == "spm"
    store_dtype = c.pop("store_dtype", "float32")
    torch.manual_seed(seed)
    import transformers as tf
    cfg_cls, model_cls = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
        "mixtral": (tf.MixtralConfig, tf.MixtralForCausalLM),
        "qwen3_moe": (tf.Qwen3MoeConfig, tf.Qwen3MoeForCausalLM),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM),
        "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM),
        "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM),
    }[arch]
    family = arch in FAMILY_ARCHS
    gemma_tok = c.pop("tokenizer_kind", None) == "gemma-spm"
    tokenizer_class = c.pop("tokenizer_class", "PreTrainedTokenizerFast")
    c.setdefault("max_position_embeddings", 4096)
    bos, eos = (1, 2) if spm else (0, 1)
    extra_ids = {}
    if gemma_tok:
        # Gemma's own special ids: <pad> 0, <eos> 1, <bos> 2, <unk> 3
        bos, eos = 2, 1
        extra_ids = dict(pad_token_id=0)
    elif family:
        extra_ids = dict(pad_token_id=None)
    cfg = cfg_cls(bos_token_id=bos, eos_token_id=eos, initializer_range=0.08, torch_dtype="float32",
                  **extra_ids, **c)
    if arch == "qwen2":
        cfg.use_sliding_window = False
    model = model_cls(cfg).eval()
    # random norms too, so a missed norm weight shows up
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            if n.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            if family and n.endswith("mlp.gate.weight"):
                # routers: spread enough that the prompt's tokens pick different experts
                p.copy_(0.5 * torch.randn_like(p))
        if store_dtype == "bfloat16":
            # round every parameter to bf16 and keep computing in f32: the golden is then exact f32
            # compute on exactly the weights the bf16 file holds
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    os.makedirs(out, exist_ok=True)
    if store_dtype == "bfloat16":
        # a bf16 copy for the file (save_pretrained then writes dtype "bfloat16" in config.json);
        # the f32 model stays for the golden
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    else:
        model.save_pretrained(out, safe_serialization=True)
    if classic == "phi3":
        to_phi3_classic_config(out)
    elif classic == "gemma3":
        to_gemma3_classic_config(out, c["sliding_window_pattern"])
    elif classic:
        to_classic_config(out, store_dtype)
    if gemma_tok:
        from gemma_tokenizer import write_gemma_tokenizer
        tok = write_gemma_tokenizer(out, c["vocab_size"])
    else:
        tok = make_spm_tokenizer(c["vocab_size"]) if spm else make_tokenizer(c["vocab_size"])
        tok.save(os.path.join(out, "tokenizer.json"))
        tc = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
              "tokenizer_class": tokenizer_class, "model_max_length": 4096}
        if spm:
            tc.update(unk_token="<unk>", clean_up_tokenization_spaces=False)
        with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
            json.dump(tc, f, indent=2)
    golden = {"model": name, "cases": []}
    if name != "tiny-mha":
        # extra records for the fixtures (tiny-mha stays byte-identical to the shared copy): which
        # tensors the file holds (with bias variants this is the part a loader gets wrong) and the
        # rotary inverse frequencies transformers uses (after any rope scaling)
        golden["tensors"] = tensor_listing(out)
        golden.update(rope_records(model))
    router = RouterProbe(model) if family else None
    for prompt in (SPM_PROMPTS if spm else PROMPTS):
        ids = tok.encode(prompt).ids
        x = torch.tensor([ids])
        with torch.no_grad():
            if family:
                # the margins come from the logits generate() itself chose by (the cached path):
                # with longrope the cached path and a full re-forward legitimately differ once a
                # generation crosses original_max_position_embeddings
                res = model.generate(x, max_new_tokens=48, do_sample=False, eos_token_id=None,
                                     pad_token_id=eos, use_cache=True, return_dict_in_generate=True,
                                     output_logits=True)
                gen = res.sequences[0, len(ids):].tolist()
                step_logits = [l[0] for l in res.logits]
                head = step_logits[0][:16].tolist()
            else:
                out_ids = model.generate(x, max_new_tokens=48, do_sample=False, eos_token_id=None,
                                         pad_token_id=eos, use_cache=True)
                gen = out_ids[0, len(ids):].tolist()
                logits = model(out_ids).logits[0]
                step_logits = [logits[len(ids) - 1 + i] for i in range(len(gen))]
                head = logits[len(ids) - 1][:16].tolist()
            routing = router.route(model, torch.tensor([ids + gen]), len(ids)) if router else None
        # margin of the greedy choice at each generated step
        margins = []
        for row in step_logits:
            top2 = torch.topk(row, 2).values
            margins.append(float(top2[0] - top2[1]))
        case = {
            "prompt": prompt,
            "prompt_ids": ids,
            "greedy_ids": gen,
            "greedy_text": tok.decode(gen),
            # decode(prompt + generated) - decode(prompt), with transformers' tokenizer
            "continuation_text": continuation_text(out, ids, gen),
            "min_margin": min(margins),
            "margins": margins,
            "last_prompt_logits_head": head,
        }
        if routing:
            case.update(routing)
        golden["cases"].append(case)
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print(name, [round(cs["min_margin"], 4) for cs in golden["cases"]])


# architectures of issue 16's families: their golden.json margins come from generate()'s own
# logits, and MoE ones record how the prompt was routed
FAMILY_ARCHS = {"qwen3", "mixtral", "qwen3_moe", "gemma2", "gemma3", "phi3"}


def rope_records(model):
    """The rotary inverse frequencies transformers uses, after scaling: one list, or one per layer
    type (Gemma 3's local and global layers have their own), plus longrope's long-context set."""
    rot = model.model.rotary_emb
    if hasattr(rot, "inv_freq"):
        rec = {"rope_inv_freq": rot.inv_freq.tolist()}
        rp = model.config.rope_parameters
        if rp.get("rope_type") == "longrope":
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
            long_inv, scaling = ROPE_INIT_FUNCTIONS["longrope"](
                model.config, None, seq_len=rp["original_max_position_embeddings"] + 1)
            rec["rope_long_inv_freq"] = long_inv.tolist()
            rec["rope_attention_scaling"] = float(scaling)
        return rec
    return {"rope_inv_freq_by_layer_type": {lt: getattr(rot, f"{lt}_inv_freq").tolist()
                                            for lt in rot.layer_types},
            "rope_attention_scaling_by_layer_type": {lt: float(getattr(rot, f"{lt}_attention_scaling"))
                                                     for lt in rot.layer_types}}


class RouterProbe:
    """Records each MoE layer's router logits during a forward pass, to show which experts the
    prompt's tokens chose and how close a choice came to flipping (a tiny gap would make the
    fixture fragile under float reordering)."""

    def __init__(self, model):
        self.seen = {}
        self.top_k = getattr(model.config, "num_experts_per_tok", 0)
        self.layers = []
        for i, layer in enumerate(model.model.layers):
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None and hasattr(gate, "top_k"):
                self.layers.append(i)
                gate.register_forward_hook(self._hook(i))

    def _hook(self, i):
        def hook(_module, _inputs, output):
            self.seen[i] = output[0].detach().float()
        return hook

    def route(self, model, ids, n_prompt):
        if not self.layers:
            return None
        self.seen.clear()
        model(ids)
        distinct, min_gap = [], float("inf")
        for i in self.layers:
            # in router logits: softmax is monotonic, so this gap is what a flip has to cross
            top = torch.topk(self.seen[i], self.top_k + 1, dim=-1)
            distinct.append(len(set(top.indices[:n_prompt, :self.top_k].flatten().tolist())))
            min_gap = min(min_gap, float((top.values[:, self.top_k - 1] - top.values[:, self.top_k]).min()))
        return {"moe_layers": self.layers, "prompt_distinct_experts": distinct,
                "min_router_gap": min_gap}


def tensor_listing(out):
    from safetensors import safe_open
    listing = {}
    with safe_open(os.path.join(out, "model.safetensors"), framework="pt") as f:
        for k in sorted(f.keys()):
            sl = f.get_slice(k)
            listing[k] = {"dtype": sl.get_dtype(), "shape": list(sl.get_shape())}
    return listing


def to_classic_config(out, store_dtype="float32"):
    """Rewrite config.json in the classic layout most published checkpoints use
    (top-level rope_theta and rope_scaling instead of rope_parameters)."""
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rp.get("rope_theta", 10000.0)
    scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
    cfg["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = store_dtype
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def to_gemma3_classic_config(out, pattern):
    """Rewrite a Gemma 3 text config.json in the hub's layout: rope_theta (global layers),
    rope_local_base_freq (local layers), rope_scaling (global layers only), sliding_window_pattern."""
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    glob_rp, local_rp = dict(rp["full_attention"]), rp["sliding_attention"]
    cfg["rope_theta"] = glob_rp.pop("rope_theta")
    cfg["rope_local_base_freq"] = local_rp["rope_theta"]
    cfg["rope_scaling"] = None if glob_rp.get("rope_type", "default") == "default" else glob_rp
    cfg["sliding_window_pattern"] = pattern
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = "float32"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def to_phi3_classic_config(out):
    """Rewrite a Phi-3 config.json as Phi-3/Phi-4-mini checkpoints ship it: top-level rope_theta,
    partial_rotary_factor and original_max_position_embeddings, and rope_scaling holding only
    the longrope type and its two factor lists."""
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp["rope_theta"]
    cfg["partial_rotary_factor"] = rp.get("partial_rotary_factor", 1.0)
    cfg["original_max_position_embeddings"] = rp["original_max_position_embeddings"]
    cfg["rope_scaling"] = {"type": "longrope", "short_factor": rp["short_factor"], "long_factor": rp["long_factor"]}
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = "float32"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2])
