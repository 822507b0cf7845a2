//! The README's default model (models/license-tiny, trained by ci/oracle/train_tiny.py on the
//! license texts): `halo generate` prints transformers' greedy continuation of each golden prompt,
//! as text the way README command 1 runs it, and as ids through `--json`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/license-tiny")
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(model().join("golden.json")).unwrap()).unwrap()
}

fn generate(prompt: &str, extra: &[&str]) -> std::process::Output {
    let max = golden()["max_new_tokens"].as_u64().unwrap().to_string();
    Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["generate", "--model"])
        .arg(model())
        .args(["--prompt", prompt, "--max-new-tokens", &max])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn text_output_is_the_golden_continuation() {
    for case in golden()["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let out = generate(prompt, &[]);
        assert!(
            out.status.success(),
            "{prompt:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = format!("{}\n", case["continuation_text"].as_str().unwrap());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{prompt:?}");
    }
}

#[test]
fn json_ids_are_the_golden_ids_and_read_like_a_license() {
    for case in golden()["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let out = generate(prompt, &["--json"]);
        assert!(out.status.success());
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["token_ids"], case["greedy_ids"], "{prompt:?}");
        assert_eq!(
            got["prompt_tokens"],
            case["prompt_ids"].as_array().unwrap().len()
        );
    }
    // Trained, not random: the first prompt continues as the GPL's notice does.
    let first = &golden()["cases"][0];
    assert!(first["continuation_text"]
        .as_str()
        .unwrap()
        .starts_with(" and/or modify\n    it under the terms of the GNU General Public License"));
}
