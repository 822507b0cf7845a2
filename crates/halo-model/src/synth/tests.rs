//! Writes synthetic models and loads them back through the crate's own loader.

use super::*;
use crate::{Architecture, Model, ModelConfig, RopeScaling, StoredDType};
use std::collections::BTreeMap;

fn written(name: &str, seed: u64, dtype: SynthDType) -> (tempfile::TempDir, SynthSummary) {
    let dir = tempfile::tempdir().unwrap();
    let summary = write_model(preset_by_name(name).unwrap(), dir.path(), seed, dtype).unwrap();
    (dir, summary)
}

#[test]
fn tiny_loads_as_a_model_with_the_preset_shapes() {
    let (dir, summary) = written("tiny", 3, SynthDType::F32);
    let p = preset("tiny").unwrap();
    assert_eq!(summary.params, p.param_count());
    let model = Model::open(dir.path()).unwrap();
    let c = &model.config;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (p.hidden_size, p.intermediate_size, p.num_hidden_layers)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (4, 4, 32)
    );
    assert_eq!((c.vocab_size, c.max_position_embeddings), (512, 4096));
    assert!(!c.tie_word_embeddings && !c.qkv_bias && !c.o_bias && !c.mlp_bias);
    assert_eq!(c.rope.scaling, RopeScaling::Default);
    assert_eq!(
        (c.bos_token_id, c.torch_dtype.as_deref()),
        (Some(0), Some("float32"))
    );
    assert_eq!(c.param_count(), summary.params);

    // exactly the tensors the loader expects, no more
    model.check_tensors().unwrap();
    let expected: BTreeMap<String, Vec<usize>> = c.expected_tensors().into_iter().collect();
    let stored: BTreeMap<String, Vec<usize>> = model
        .weights
        .names()
        .map(|n| (n.to_string(), model.weights.get(n).unwrap().shape.clone()))
        .collect();
    assert_eq!(stored, expected);
    assert_eq!(model.weights.dominant_dtype(), Some(StoredDType::F32));

    let mode = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().permissions();
    assert_eq!(mode("model.safetensors"), mode("config.json"));

    let norm = model.weights.load_f32("model.norm.weight", &[128]).unwrap();
    assert!(norm.iter().all(|v| (0.9..1.1).contains(v)));
    let q = model
        .weights
        .load_f32("model.layers.1.self_attn.q_proj.weight", &[128, 128])
        .unwrap();
    let std = (q.iter().map(|v| v * v).sum::<f32>() / q.len() as f32).sqrt();
    assert!((std - WEIGHT_STD).abs() < 0.002, "{std}");

    let tok = &model.tokenizer;
    assert_eq!(tok.vocab_size(), c.vocab_size);
    assert_eq!(tok.bos_token_id(), Some(0));
    assert!(tok.eos_token_ids().contains(&1));
    for text in ["Hello, world! 42 apples.", "naïve café — 東京 🚀 ß"] {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids[0], 0);
        assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 1, "one BOS");
        assert!(ids.iter().all(|&i| (i as usize) < c.vocab_size));
        assert_eq!(tok.decode(&ids, true).unwrap(), text);
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("model.safetensors")).unwrap();
    let (a, _) = written("tiny", 9, SynthDType::Bf16);
    let (b, _) = written("tiny", 9, SynthDType::Bf16);
    let (c, _) = written("tiny", 10, SynthDType::Bf16);
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
    for f in ["config.json", "tokenizer.json"] {
        let (x, y) = (a.path().join(f), b.path().join(f));
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
}

#[test]
fn half_precision_dtypes_are_recorded_and_stored() {
    for (dtype, stored, name) in [
        (SynthDType::Bf16, StoredDType::BF16, "bfloat16"),
        (SynthDType::F16, StoredDType::F16, "float16"),
    ] {
        let (dir, summary) = written("tiny", 1, dtype);
        let model = Model::open(dir.path()).unwrap();
        assert_eq!(model.weights.dominant_dtype(), Some(stored));
        assert_eq!(model.config.torch_dtype.as_deref(), Some(name));
        model.check_tensors().unwrap();
        assert!(summary.weight_bytes < summary.params * 2 + 64 * 1024);
        // the same draws as f32, rounded
        let (f32_dir, _) = written("tiny", 1, SynthDType::F32);
        let full = Model::open(f32_dir.path()).unwrap();
        let shape = [512, 128];
        let a = model
            .weights
            .load_f32("model.embed_tokens.weight", &shape)
            .unwrap();
        let b = full
            .weights
            .load_f32("model.embed_tokens.weight", &shape)
            .unwrap();
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() <= y.abs() / 128.0 + 1e-7));
    }
}

#[test]
fn large_preset_configs_parse_with_their_published_shapes() {
    let path = std::path::Path::new("config.json");
    let p = preset("llama-1b").unwrap();
    let c = ModelConfig::from_json(&p.config_json(p.default_dtype, 0), path).unwrap();
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (2048, 8192, 16)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (32, 8, 64)
    );
    assert_eq!((c.vocab_size, c.max_position_embeddings), (128256, 131072));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    assert_eq!(c.rope.theta, 500000.0);
    assert_eq!(
        c.rope.scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        }
    );
    let expected: u64 = c
        .expected_tensors()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    assert_eq!(expected, p.param_count());

    let p = preset("bench-110m").unwrap();
    let c = ModelConfig::from_json(&p.config_json(p.default_dtype, 0), path).unwrap();
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (768, 2048, 12)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (12, 12, 64)
    );
    assert_eq!((c.vocab_size, c.max_position_embeddings), (32000, 1024));
    assert_eq!(c.rope.scaling, RopeScaling::Default);
    // The MoE presets: a Mixtral and a Qwen3-MoE, 16 experts of 512 in every layer, two per
    // token, renormalised.
    for (name, arch) in [
        ("bench-moe", Architecture::Mixtral),
        ("bench-qwen3moe", Architecture::Qwen3Moe),
    ] {
        let p = preset(name).unwrap();
        let c = ModelConfig::from_json(&p.config_json(p.default_dtype, 0), path).unwrap();
        assert_eq!(c.architecture, arch);
        assert_eq!(c.qk_norm, arch == Architecture::Qwen3Moe, "{name}");
        let m = c.moe.as_ref().unwrap();
        assert_eq!(
            (
                m.num_experts,
                m.experts_per_token,
                m.expert_intermediate_size
            ),
            (16, 2, 512),
            "{name}"
        );
        assert!(
            m.norm_topk_prob && m.sparse_layers.iter().all(|&s| s),
            "{name}"
        );
        let plan: BTreeMap<String, Vec<usize>> = tensors::plan(p, 0, SynthDType::F32)
            .into_iter()
            .map(|(n, t)| (n, t.shape))
            .collect();
        let expected: BTreeMap<String, Vec<usize>> = c.expected_tensors().into_iter().collect();
        assert_eq!(plan, expected, "{name}");
        assert_eq!(c.param_count(), p.param_count(), "{name}");
    }
}

#[test]
fn the_llama_1b_tokenizer_fills_its_vocabulary() {
    let json = serde_json::to_string(&tokenizer::tokenizer_json(128256).unwrap()).unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    assert_eq!(tok.get_vocab_size(true), 128256);
    let text = "Round trip through a large vocabulary: Ünïcode ✓";
    let ids = tok.encode(text, true).unwrap().get_ids().to_vec();
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    assert!(tok.decode(&[128255], true).unwrap().len() > 1);
}

#[test]
fn bad_requests_are_typed_errors() {
    let e = preset_by_name("llama-70b").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown preset 'llama-70b' (known: tiny, bench-110m, llama-1b, bench-moe, \
         bench-qwen3moe, bench-phi3, bench-qwen3, bench-gemma2, bench-gemma3)"
    );
    assert!(matches!(
        "f8".parse::<SynthDType>(),
        Err(SynthError::UnknownDType(_))
    ));
    assert_eq!("bf16".parse::<SynthDType>().unwrap(), SynthDType::Bf16);

    // a directory under a regular file can never be created, even as root
    let file = tempfile::NamedTempFile::new().unwrap();
    let e = write_model(
        preset("tiny").unwrap(),
        &file.path().join("model"),
        0,
        SynthDType::F32,
    )
    .unwrap_err();
    assert!(matches!(e, SynthError::DirNotWritable { .. }), "{e}");
}
