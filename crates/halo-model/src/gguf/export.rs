//! Writes a Hugging Face model directory (what `halo make-model` makes) as a GGUF file the way
//! llama.cpp's converter and quantizer would: `llama`/`qwen2` metadata, the byte-level BPE
//! vocabulary as `gpt2` tokens and merges, Q/K rows of `llama` models permuted for ggml's
//! interleaved RoPE, llama3 rope scaling as a `rope_freqs` tensor, and a quantization mix, so
//! benchmarks of quantized models need no download and llama.cpp can run the same file.

use super::error::GgufError;
use super::names::{gguf_name_for, gguf_name_fused};
use super::writer::GgufWriter;
use crate::config::{read_json, Architecture};
use crate::error::{ModelError, Result};
use crate::rope::{RopeConfig, RopeScaling};
use crate::{quant, Model, StoredDType};
use serde_json::Value;
use std::path::Path;

/// The weight types of an exported file, named as llama.cpp's `llama-quantize` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantization {
    F32,
    F16,
    Q8_0,
    /// Q4_K, with Q6_K for the head and, in the layers llama.cpp picks, attn_v and ffn_down.
    Q4KM,
    Q6K,
}

impl std::str::FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Quantization::F32,
            "f16" => Quantization::F16,
            "q8_0" => Quantization::Q8_0,
            "q4_k_m" => Quantization::Q4KM,
            "q6_k" => Quantization::Q6K,
            _ => {
                return Err(format!(
                    "unknown GGUF quantization '{s}' (choose f32, f16, q8_0, q4_k_m or q6_k)"
                ))
            }
        })
    }
}

/// ggml's `LLAMA_FTYPE_*` number for `general.file_type`.
fn file_type(q: Quantization) -> u32 {
    match q {
        Quantization::F32 => 0,
        Quantization::F16 => 1,
        Quantization::Q8_0 => 7,
        Quantization::Q4KM => 15,
        Quantization::Q6K => 18,
    }
}

/// Layers where llama.cpp's `_M` mixes spend more bits on attn_v and ffn_down: the first and
/// last eighth, and every third layer between.
fn more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// The stored type of 2-D tensor `hf` (rows of `cols` values) under `q`; float types where the
/// rows are not whole blocks, as llama-quantize falls back.
fn tensor_type(q: Quantization, hf: &str, cols: usize, layers: usize, tied: bool) -> StoredDType {
    let layer = hf
        .strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse::<usize>().ok());
    let is_head = hf == "lm_head.weight" || (tied && hf == "model.embed_tokens.weight");
    let want = match q {
        Quantization::F32 => StoredDType::F32,
        Quantization::F16 => StoredDType::F16,
        Quantization::Q8_0 => StoredDType::Q8_0,
        Quantization::Q6K => StoredDType::Q6_K,
        Quantization::Q4KM if is_head => StoredDType::Q6_K,
        Quantization::Q4KM => match layer {
            // llama-quantize gives a fused q|k|v (Phi-3's attn_qkv) 5 bits in every layer
            Some(_) if hf.ends_with("qkv_proj.weight") => StoredDType::Q5_K,
            Some(l)
                if (hf.ends_with("v_proj.weight") || hf.ends_with("down_proj.weight"))
                    && more_bits(l, layers) =>
            {
                StoredDType::Q6_K
            }
            _ => StoredDType::Q4_K,
        },
    };
    if want.row_bytes(cols).is_some() {
        want
    } else if StoredDType::Q8_0.row_bytes(cols).is_some() && want.is_quantized() {
        StoredDType::Q8_0
    } else {
        StoredDType::F16
    }
}

/// Inverse of [`super::permute::unpermute_rows`]: HF row `h·half + i` of each head goes to
/// stored row `2i + h`.
fn permute_rows(values: &[f32], rows: usize, cols: usize, head_rows: usize) -> Vec<f32> {
    let half = head_rows / 2;
    let mut out = vec![0.0f32; values.len()];
    for head in 0..rows / head_rows {
        let base = head * head_rows;
        for h in 0..2 {
            for i in 0..half {
                let (src, dst) = (base + h * half + i, base + 2 * i + h);
                out[dst * cols..][..cols].copy_from_slice(&values[src * cols..][..cols]);
            }
        }
    }
    out
}

/// llama3 scaling as the per-frequency divisors llama.cpp reads from `rope_freqs.weight`.
fn rope_factors(rope: &RopeConfig, head_dim: usize) -> Option<Vec<f32>> {
    if !matches!(rope.scaling, RopeScaling::Llama3 { .. }) {
        return None;
    }
    let plain = RopeConfig {
        scaling: RopeScaling::Default,
        ..rope.clone()
    };
    let base = plain.inv_freq(head_dim);
    Some(
        base.iter()
            .zip(rope.inv_freq(head_dim))
            .map(|(b, s)| b / s)
            .collect(),
    )
}

fn export_err(path: &Path, msg: String) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        source: GgufError::BadTensor {
            tensor: String::new(),
            msg,
        },
    }
}

/// The vocabulary of `tokenizer.json` as GGUF token strings, types and merges.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

fn vocab(dir: &Path, size: usize) -> Result<Vocab> {
    let path = dir.join("tokenizer.json");
    let json = read_json(&path)?;
    let bad = |msg: &str| ModelError::Tokenizer {
        path: path.clone(),
        msg: msg.into(),
    };
    if json["model"]["type"].as_str() != Some("BPE") {
        return Err(bad("only byte-level BPE tokenizers export to GGUF"));
    }
    // Ids the tokenizer does not name stay as unused placeholders (type 5), as the converter
    // writes them.
    let mut tokens: Vec<String> = (0..size).map(|i| format!("[PAD{i}]")).collect();
    let mut types = vec![5i32; size];
    let vocab = json["model"]["vocab"]
        .as_object()
        .ok_or_else(|| bad("no model.vocab"))?;
    let added = json["added_tokens"].as_array().cloned().unwrap_or_default();
    let entries = vocab
        .iter()
        .map(|(t, id)| (t.as_str(), id.as_u64(), 1))
        .chain(added.iter().map(|a| {
            let special = a["special"].as_bool().unwrap_or(false);
            (
                a["content"].as_str().unwrap_or(""),
                a["id"].as_u64(),
                if special { 3 } else { 4 },
            )
        }));
    for (text, id, kind) in entries {
        let id = id.ok_or_else(|| bad("a token id is not a number"))? as usize;
        if id >= size {
            return Err(bad(&format!(
                "token id {id} is past the vocabulary ({size})"
            )));
        }
        tokens[id] = text.to_owned();
        types[id] = kind;
    }
    let merges = json["model"]["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(p) => {
                        Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Vocab {
        tokens,
        types,
        merges,
    })
}

/// What [`export`] wrote.
pub struct ExportSummary {
    pub tensors: usize,
    pub bytes: u64,
}

/// Writes `model` (opened from a Hugging Face directory) to `out` as GGUF with `q`'s types.
pub fn export(model: &Model, q: Quantization, out: &Path) -> Result<ExportSummary> {
    let c = &model.config;
    let arch = match c.architecture {
        Architecture::Llama | Architecture::Mistral | Architecture::Mixtral => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Phi3 => "phi3",
        Architecture::Qwen3 => "qwen3",
        Architecture::Gemma2 => "gemma2",
        Architecture::Gemma3 => "gemma3",
        // llama.cpp's `qwen3moe` has experts in every layer and always renormalises the kept
        // weights: a dense layer has no GGUF form, and without norm_topk_prob llama.cpp would
        // run the file differently.
        Architecture::Qwen3Moe
            if c.moe
                .as_ref()
                .is_some_and(|m| m.norm_topk_prob && m.sparse_layers.iter().all(|&s| s)) =>
        {
            "qwen3moe"
        }
        other => {
            return Err(ModelError::Gguf {
                path: out.to_path_buf(),
                source: GgufError::UnknownArchitecture {
                    arch: other.hf_name().to_owned(),
                    supported: "LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, \
                                Qwen2ForCausalLM, Phi3ForCausalLM, Qwen3ForCausalLM, \
                                Gemma2ForCausalLM, Gemma3ForCausalLM, Qwen3MoeForCausalLM \
                                with norm_topk_prob and no dense layers",
                },
            })
        }
    };
    let mut w = GgufWriter::new();
    let key = |k: &str| format!("{arch}.{k}");
    let as_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    w.add_str("general.architecture", arch)
        .add_str("general.name", &model.name())
        .add_u32("general.quantization_version", 2)
        .add_u32("general.file_type", file_type(q))
        .add_u32(&key("context_length"), as_u32(c.max_position_embeddings))
        .add_u32(&key("embedding_length"), as_u32(c.hidden_size))
        .add_u32(&key("block_count"), as_u32(c.num_hidden_layers))
        .add_u32(&key("feed_forward_length"), as_u32(c.intermediate_size))
        .add_u32(&key("attention.head_count"), as_u32(c.num_attention_heads))
        .add_u32(
            &key("attention.head_count_kv"),
            as_u32(c.num_key_value_heads),
        )
        .add_u32(&key("attention.key_length"), as_u32(c.head_dim))
        .add_u32(&key("attention.value_length"), as_u32(c.head_dim))
        .add_u32(
            &key("rope.dimension_count"),
            as_u32(c.rope.rotary_dim(c.head_dim)),
        )
        .add_u32(&key("vocab_size"), as_u32(c.vocab_size))
        .add_f32(&key("rope.freq_base"), c.rope.theta)
        .add_f32(
            &key("attention.layer_norm_rms_epsilon"),
            c.rms_norm_eps as f32,
        );
    if let Some(m) = &c.moe {
        w.add_u32(&key("expert_count"), as_u32(m.num_experts))
            .add_u32(&key("expert_used_count"), as_u32(m.experts_per_token))
            .add_u32(
                &key("expert_feed_forward_length"),
                as_u32(m.expert_intermediate_size),
            );
    }
    if let Some(window) = c.sliding_window {
        w.add_u32(&key("attention.sliding_window"), as_u32(window));
    }
    if matches!(c.architecture, Architecture::Gemma2 | Architecture::Gemma3) {
        super::gemma::export_metadata(&mut w, arch, c).map_err(|msg| export_err(out, msg))?;
    }
    if let RopeScaling::Linear { factor } = c.rope.scaling {
        w.add_str(&key("rope.scaling.type"), "linear")
            .add_f32(&key("rope.scaling.factor"), factor);
    }
    // LongRoPE as llama.cpp's converter writes it: metadata here, factor tensors below.
    if let RopeScaling::LongRope(lr) = &c.rope.scaling {
        w.add_u32(
            &key("rope.scaling.original_context_length"),
            as_u32(lr.original_max_position_embeddings),
        )
        .add_f32(&key("rope.scaling.attn_factor"), lr.attention_factor);
    }

    let v = vocab(&model.dir, c.vocab_size)?;
    w.add_str("tokenizer.ggml.model", "gpt2")
        .add_str("tokenizer.ggml.pre", "gpt-2")
        .add_strings("tokenizer.ggml.tokens", &v.tokens)
        .add(
            "tokenizer.ggml.token_type",
            super::Value::Array(super::Array::I32(v.types)),
        )
        .add_strings("tokenizer.ggml.merges", &v.merges);
    let tok = &model.tokenizer;
    if let Some(bos) = tok.bos_token_id() {
        w.add_u32("tokenizer.ggml.bos_token_id", bos);
    }
    if let Some(&eos) = tok.eos_token_ids().first() {
        w.add_u32("tokenizer.ggml.eos_token_id", eos);
    }
    w.add_bool("tokenizer.ggml.add_bos_token", tok.adds_bos());

    let mut bytes = 0u64;
    let mut tensors = 0;
    if let Some(factors) = rope_factors(&c.rope, c.head_dim) {
        let raw: Vec<u8> = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
        bytes += raw.len() as u64;
        tensors += 1;
        w.add_tensor("rope_freqs.weight", &[factors.len()], StoredDType::F32, raw)
            .map_err(|source| ModelError::Gguf {
                path: out.to_path_buf(),
                source,
            })?;
    }
    if let RopeScaling::LongRope(lr) = &c.rope.scaling {
        for (name, factors) in [
            ("rope_factors_long.weight", &lr.long_factor),
            ("rope_factors_short.weight", &lr.short_factor),
        ] {
            let raw: Vec<u8> = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
            bytes += raw.len() as u64;
            tensors += 1;
            w.add_tensor(name, &[factors.len()], StoredDType::F32, raw)
                .map_err(|source| ModelError::Gguf {
                    path: out.to_path_buf(),
                    source,
                })?;
        }
    }
    let experts = crate::config::moe::ExpertNames::for_architecture(c.architecture);
    for (hf, shape) in c.expected_tensors() {
        // A sparse layer's experts go out stacked, after this loop.
        if experts.is_some_and(|n| super::experts::is_expert(&hf, n)) {
            continue;
        }
        let router = experts.and_then(|n| super::experts::gguf_name(&hf, n));
        let fused = c.fused_projections.then(|| gguf_name_fused(&hf)).flatten();
        let name = router
            .clone()
            .or(fused)
            .or_else(|| gguf_name_for(&hf, c.sandwich_norms))
            .ok_or_else(|| export_err(out, format!("no GGUF name for tensor '{hf}'")))?;
        let mut values = model.weights.check(&hf, &shape)?.to_f32();
        // llama.cpp's converter folds Gemma's `(1 + w)` into every norm weight.
        if c.norm_weight_offset != 0.0 && hf.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v += c.norm_weight_offset);
        }
        let dtype = match shape.as_slice() {
            // llama-quantize keeps the router (`ffn_gate_inp`) in f32.
            _ if router.is_some() => StoredDType::F32,
            [rows, cols] => {
                // Heads are head_dim rows in both q and k, so one permutation serves both.
                if arch == "llama"
                    && (hf.ends_with("q_proj.weight") || hf.ends_with("k_proj.weight"))
                {
                    values = permute_rows(&values, *rows, *cols, c.head_dim);
                }
                tensor_type(q, &hf, *cols, c.num_hidden_layers, c.tie_word_embeddings)
            }
            // Norms and biases stay f32, as the converter keeps 1-D tensors.
            _ => StoredDType::F32,
        };
        let data = quant::quantize_to_vec(dtype, &values)
            .ok_or_else(|| export_err(out, format!("'{hf}' does not fit {dtype} blocks")))?;
        bytes += data.len() as u64;
        tensors += 1;
        w.add_tensor(&name, &shape, dtype, data)
            .map_err(|source| ModelError::Gguf {
                path: out.to_path_buf(),
                source,
            })?;
    }
    let (n, b) = super::experts::write_stacks(model, out, &mut w, |hf, cols| {
        tensor_type(q, hf, cols, c.num_hidden_layers, c.tie_word_embeddings)
    })?;
    tensors += n;
    bytes += b;
    w.write(out).map_err(|source| ModelError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(ExportSummary { tensors, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::permute::unpermute_rows;

    #[test]
    fn permutation_round_trips_through_the_loader() {
        let (rows, cols, head) = (8, 3, 4);
        let values: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let stored = permute_rows(&values, rows, cols, head);
        assert_ne!(stored, values);
        let bytes: Vec<u8> = stored.iter().flat_map(|v| v.to_le_bytes()).collect();
        let back = unpermute_rows(&bytes, rows, cols * 4, head).unwrap();
        let back: Vec<f32> = back
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(back, values);
    }

    #[test]
    fn q4_k_m_mix_follows_llama_quantize() {
        let t = |hf: &str| tensor_type(Quantization::Q4KM, hf, 256, 16, false);
        // a fused q|k|v is not a v projection: 5 bits in every layer
        for l in [0, 3] {
            let qkv = format!("model.layers.{l}.self_attn.qkv_proj.weight");
            assert_eq!(t(&qkv), StoredDType::Q5_K);
        }
        assert_eq!(t("lm_head.weight"), StoredDType::Q6_K);
        assert_eq!(t("model.embed_tokens.weight"), StoredDType::Q4_K);
        assert_eq!(
            t("model.layers.0.self_attn.v_proj.weight"),
            StoredDType::Q6_K
        );
        assert_eq!(
            t("model.layers.3.self_attn.v_proj.weight"),
            StoredDType::Q4_K
        );
        assert_eq!(t("model.layers.4.mlp.down_proj.weight"), StoredDType::Q6_K);
        assert_eq!(t("model.layers.4.mlp.up_proj.weight"), StoredDType::Q4_K);
        // Rows that are not whole K blocks fall back.
        assert_eq!(
            tensor_type(
                Quantization::Q4KM,
                "model.layers.1.mlp.up_proj.weight",
                96,
                16,
                false
            ),
            StoredDType::Q8_0
        );
        assert_eq!(
            tensor_type(
                Quantization::Q8_0,
                "model.layers.1.mlp.up_proj.weight",
                40,
                16,
                false
            ),
            StoredDType::F16
        );
    }
}
