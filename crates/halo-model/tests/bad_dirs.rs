//! One test per way a model directory can be wrong: each gets one clear error naming the file
//! (and the tensor and shapes where they apply), never a panic.

use halo_model::{Model, ModelError};
use std::fs;
use std::path::{Path, PathBuf};

fn shared_model() -> PathBuf {
    let dir = std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    dir.join("models/tiny-mha")
}

/// A writable copy of tiny-mha.
fn copy_model() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(shared_model()).unwrap() {
        let entry = entry.unwrap();
        let dest = tmp.path().join(entry.file_name());
        fs::copy(entry.path(), &dest).unwrap();
        let mut perms = fs::metadata(&dest).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&dest, perms).unwrap();
    }
    tmp
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn open_err(dir: &Path) -> (ModelError, String) {
    let e = Model::open(dir)
        .and_then(|m| m.check_tensors().map(|_| m))
        .err()
        .expect("must fail");
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn the_shared_model_opens_and_checks() {
    let m = Model::open(&shared_model()).unwrap();
    m.check_tensors().unwrap();
    assert_eq!(m.config.vocab_size, 512);
    assert_eq!(m.tokenizer.eos_token_ids(), &[1]);
    let golden: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(shared_model().join("golden.json")).unwrap())
            .unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let ids = m
            .tokenizer
            .encode(case["prompt"].as_str().unwrap(), true)
            .unwrap();
        let want: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want);
    }
}

#[test]
fn missing_directory_and_missing_files() {
    let (e, msg) = open_err(Path::new("/nonexistent/model"));
    assert!(
        matches!(e, ModelError::MissingFile { .. }) && msg.contains("/nonexistent/model"),
        "{msg}"
    );
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let dir = copy_model();
        fs::remove_file(dir.path().join(file)).unwrap();
        let (e, msg) = open_err(dir.path());
        assert!(matches!(e, ModelError::MissingFile { .. }), "{file}: {msg}");
        assert!(msg.contains(file), "{msg}");
    }
}

#[test]
fn unknown_architecture() {
    let dir = copy_model();
    edit_config(dir.path(), |v| {
        v["architectures"] = serde_json::json!(["FalconForCausalLM"])
    });
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, ModelError::UnknownArchitecture { .. }), "{msg}");
    assert!(
        msg.contains("FalconForCausalLM") && msg.contains("config.json"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_names_it() {
    let dir = copy_model();
    // Claiming a bias the file lacks makes q_proj.bias a missing tensor.
    edit_config(dir.path(), |v| {
        v["attention_bias"] = serde_json::json!(true)
    });
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("model.layers.0.self_attn.q_proj.bias"),
        "{msg}"
    );
}

#[test]
fn misshaped_tensor_names_both_shapes() {
    let dir = copy_model();
    edit_config(dir.path(), |v| {
        v["intermediate_size"] = serde_json::json!(300)
    });
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, ModelError::TensorShape { .. }), "{msg}");
    assert!(
        msg.contains("mlp") && msg.contains("300") && msg.contains("344"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors() {
    let dir = copy_model();
    let path = dir.path().join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, ModelError::Truncated { .. }), "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");
    // A header cut short is a different message, still no panic.
    fs::write(&path, &bytes[..20]).unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, ModelError::Safetensors { .. }), "{msg}");
}

#[test]
fn vocab_size_disagreeing_with_the_embedding() {
    let dir = copy_model();
    edit_config(dir.path(), |v| v["vocab_size"] = serde_json::json!(1000));
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, ModelError::VocabMismatch { .. }), "{msg}");
    assert!(
        msg.contains("1000") && msg.contains("512") && msg.contains("embed_tokens"),
        "{msg}"
    );
}

#[test]
fn invalid_json_and_bad_field() {
    let dir = copy_model();
    fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(
        matches!(e, ModelError::Json { .. }) && msg.contains("config.json"),
        "{msg}"
    );
    let dir = copy_model();
    edit_config(dir.path(), |v| {
        v["num_key_value_heads"] = serde_json::json!(3)
    });
    let (e, msg) = open_err(dir.path());
    assert!(
        matches!(e, ModelError::InvalidConfig { .. }) && msg.contains("num_key_value_heads"),
        "{msg}"
    );
}

#[test]
fn sharded_index_loads_and_bad_shard_names_are_refused() {
    let dir = copy_model();
    fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    let m = Model::open(&shared_model()).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = m
        .weights
        .names()
        .map(|n| {
            (
                n.to_string(),
                serde_json::json!("model-00001-of-00001.safetensors"),
            )
        })
        .collect();
    fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    Model::open(dir.path()).unwrap().check_tensors().unwrap();
    fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": { "x": "../escape.safetensors" } }).to_string(),
    )
    .unwrap();
    let (e, msg) = open_err(dir.path());
    assert!(matches!(e, ModelError::Json { .. }), "{msg}");
}
