//! The GGUF files llama.cpp's converter and quantizer made from the shared safetensors models
//! (tests/fixtures/gguf, described in ../shared/models/gguf/README.md): each opens, its tensor
//! types are the ones gguf-py lists, its config is the original's, its float tensors (Q and K
//! un-permuted) equal the original's, and prompts tokenize to llama.cpp's ids.

use halo_model::gguf::GgufModel;
use halo_model::{Model, StoredDType};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf")
        .join(file)
}

fn golden() -> serde_json::Map<String, Value> {
    let path = shared().join("models/gguf/llamacpp-golden.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// The safetensors model a fixture was converted from.
fn original(file: &str) -> PathBuf {
    let name = if file.starts_with("tiny-mha") {
        "tiny-mha"
    } else {
        "kq-shared"
    };
    shared().join("models").join(name)
}

#[test]
fn every_fixture_opens_with_llama_cpps_tensor_types() {
    for (file, g) in golden() {
        let m = Model::open(&fixture(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        m.check_tensors().unwrap_or_else(|e| panic!("{file}: {e}"));
        let gguf = GgufModel::open(&fixture(&file)).unwrap();
        let want = g["tensor_types"].as_object().unwrap();
        let got: Vec<_> = gguf.tensors().collect();
        assert_eq!(got.len(), want.len(), "{file}");
        for t in got {
            assert_eq!(
                Some(t.dtype.name()),
                want[&t.name].as_str(),
                "{file}: {}",
                t.name
            );
        }
    }
}

#[test]
fn config_equals_the_safetensors_originals() {
    for file in golden().keys() {
        let m = Model::open(&fixture(file)).unwrap();
        let orig = Model::open(&original(file)).unwrap();
        let mut want = orig.config.clone();
        // GGUF has no torch dtype to report.
        want.torch_dtype = None;
        assert_eq!(m.config, want, "{file}");
        assert_eq!(m.name(), file.trim_end_matches(".gguf"));
    }
}

/// What the converter stores for an f32 original value in `dtype`.
fn stored(dtype: StoredDType, x: f32) -> f32 {
    match dtype {
        StoredDType::F32 => x,
        StoredDType::F16 => half::f16::from_f32(x).to_f32(),
        other => panic!("not a float type: {other}"),
    }
}

#[test]
fn float_tensors_equal_the_originals_with_q_and_k_unpermuted() {
    for file in [
        "tiny-mha-f32.gguf",
        "tiny-mha-f16.gguf",
        "kq-shared-f16.gguf",
    ] {
        let m = Model::open(&fixture(file)).unwrap();
        let orig = Model::open(&original(file)).unwrap();
        let mut compared = 0;
        for (name, shape) in orig.config.expected_tensors() {
            let want = orig.weights.load_f32(&name, &shape).unwrap();
            let t = m.weights.check(&name, &shape).unwrap();
            let got = t.to_f32();
            let want: Vec<f32> = want.iter().map(|&x| stored(t.dtype, x)).collect();
            // Bitwise: the converter's conversion is exact (f32) or round-to-nearest (f16).
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && got.len() == want.len(), "{file}: {name} differs");
            compared += 1;
        }
        assert!(compared > 20, "{file}");
    }
}

#[test]
fn prompts_tokenize_to_llama_cpps_ids() {
    for (file, g) in golden() {
        let m = Model::open(&fixture(&file)).unwrap();
        for case in g["cases"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let want: Vec<u32> = case["llamacpp_prompt_ids_from_text"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let got = m.tokenizer.encode(prompt, true).unwrap();
            assert_eq!(got, want, "{file}: {prompt:?}");
        }
    }
}

#[test]
fn config_and_tokenizer_open_without_the_weights() {
    let (config, tok) =
        halo_model::open_config_and_tokenizer(&fixture("kq-shared-q8_0.gguf")).unwrap();
    assert_eq!(config.num_key_value_heads, 2);
    assert_eq!(tok.eos_token_ids(), &[1]);
    assert_eq!(tok.bos_token_id(), Some(0));
}
