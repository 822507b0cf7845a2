//! GGUF end to end through the binary: `halo generate` on llama.cpp's own files gives
//! llama.cpp's greedy continuation from the prompt text, `halo info` tells the file's types, a
//! model `halo make-model --format gguf` wrote runs, and a broken file is one line and exit 2.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn halo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_halo"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> PathBuf {
    std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
}

fn gguf(file: &str) -> PathBuf {
    root().join("tests/fixtures/gguf").join(file)
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `halo generate --json` of every case's prompt text in one batched run, 48 tokens each with
/// EOS ignored and the KV cache in f32 (as llama.cpp's reference runs kept it), plus `extra`.
fn generate_prompts_of(model: &Path, cases: &[Value], extra: &[&str]) -> Vec<Value> {
    let prompts = tempfile::NamedTempFile::new().unwrap();
    let texts: Vec<&str> = cases
        .iter()
        .map(|c| c["prompt"].as_str().unwrap())
        .collect();
    std::fs::write(prompts.path(), texts.join("\n")).unwrap();
    let out = halo()
        .args([
            "generate",
            "--json",
            "--ignore-eos",
            "--max-new-tokens",
            "48",
        ])
        .args(["--kv-cache-dtype", "f32"])
        .args(extra)
        .arg("--model")
        .arg(model)
        .arg("--prompts-file")
        .arg(prompts.path())
        .output()
        .unwrap();
    json_lines(&out)
}

#[test]
fn generate_on_llamacpp_files_gives_llamacpp_ids_from_the_prompt_text() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("models/gguf/llamacpp-golden.json")).unwrap(),
    )
    .unwrap();
    // The files whose every case halo reproduces token for token (see
    // crates/halo-cpu/tests/gguf_golden.rs for the quantized files' near-ties), with the KV
    // cache in f32 as llama.cpp's reference run kept it (halo's default for quantized files is
    // f16, as llama.cpp's own default is; that default is checked there, near-ties allowed).
    for file in [
        "tiny-mha-f32.gguf",
        "kq-shared-Q6_K.gguf",
        "kq-shared-f16.gguf",
    ] {
        let cases = golden[file]["cases"].as_array().unwrap();
        let lines = generate_prompts_of(&gguf(file), cases, &[]);
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                lines[i]["prompt_tokens"].as_u64().unwrap() as usize,
                case["llamacpp_prompt_ids_from_text"]
                    .as_array()
                    .unwrap()
                    .len(),
                "{file} case {i}: prompt tokens"
            );
            assert_eq!(
                lines[i]["token_ids"], case["greedy_ids"],
                "{file} case {i}: continuation"
            );
        }
    }
}

/// A BF16 GGUF runs llama.cpp's arithmetic (bf16 activations) without being asked, and gives
/// its greedy ids; `--activation-dtype f32` asks for transformers' arithmetic instead, which on
/// case 2 takes the other side of a 0.001-margin step (so the default is seen to be bf16).
#[test]
fn bf16_activations_give_llamacpp_ids_on_its_bf16_files() {
    let dir = root().join("tests/fixtures/gguf-bf16");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bf16-golden.json")).unwrap())
            .unwrap();
    let file = "tiny-bf16-bf16.gguf";
    let cases = golden[file]["cases"].as_array().unwrap();
    for extra in [&[][..], &["--activation-dtype", "bf16"][..]] {
        let lines = generate_prompts_of(&dir.join(file), cases, extra);
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                lines[i]["token_ids"], case["greedy_ids"],
                "{file} case {i}: continuation ({extra:?})"
            );
        }
    }
    let f32_lines = generate_prompts_of(&dir.join(file), cases, &["--activation-dtype", "f32"]);
    assert_ne!(
        f32_lines[2]["token_ids"], cases[2]["greedy_ids"],
        "{file} case 2 with f32 activations"
    );
    // f16 activations are not offered: one line, exit 2.
    let out = halo()
        .args(["generate", "--prompt", "hi", "--activation-dtype", "f16"])
        .arg("--model")
        .arg(dir.join(file))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--activation-dtype"), "{err}");
}

#[test]
fn info_lists_the_stored_types_of_a_q4_k_m_file() {
    let out = halo()
        .args(["info", "--json", "--model"])
        .arg(gguf("kq-shared-Q4_K_M.gguf"))
        .output()
        .unwrap();
    let v = &json_lines(&out)[0];
    let types = v["stored_bytes_by_type"].as_object().unwrap();
    assert!(
        types.contains_key("Q4_K") && types.contains_key("Q6_K"),
        "{v}"
    );
    let stored: u64 = types.values().map(|b| b.as_u64().unwrap()).sum();
    let file = std::fs::metadata(gguf("kq-shared-Q4_K_M.gguf"))
        .unwrap()
        .len();
    assert!(stored <= file && stored > file / 2, "{stored} of {file}");
    // A step streams the projections in their stored types: well under f32's 4 bytes each.
    let per_step = v["model"]["weight_bytes"].as_u64().unwrap();
    let params = v["model"]["param_count"].as_u64().unwrap();
    assert!(
        per_step < params,
        "{per_step} bytes per step for {params} parameters"
    );
}

#[test]
fn a_made_gguf_model_generates() {
    let dir = tempfile::tempdir().unwrap();
    let out = halo()
        .args([
            "make-model",
            "--preset",
            "tiny",
            "--format",
            "gguf",
            "--quant",
            "q4_k_m",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --model takes the directory that holds the one file.
    let out = halo()
        .args([
            "generate",
            "--json",
            "--ignore-eos",
            "--max-new-tokens",
            "8",
        ])
        .args(["--prompt", "Hello"])
        .arg("--model")
        .arg(dir.path())
        .output()
        .unwrap();
    let v = &json_lines(&out)[0];
    assert_eq!(v["generated_tokens"], 8, "{v}");
}

#[test]
fn broken_gguf_files_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(gguf("tiny-mha-q8_0.gguf")).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_gguf = dir.path().join("notes.gguf");
    std::fs::write(&not_gguf, b"hello, this is not a model").unwrap();
    let two = dir.path().join("two");
    std::fs::create_dir(&two).unwrap();
    std::fs::write(two.join("a.gguf"), &bytes).unwrap();
    std::fs::write(two.join("b.gguf"), &bytes).unwrap();
    for (path, needle) in [
        (&truncated, "truncated.gguf"),
        (&not_gguf, "notes.gguf"),
        (&two, "two"),
    ] {
        let out = halo()
            .args(["generate", "--prompt", "x", "--model"])
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

/// The KV pool's block count under one `--kv-cache-mb`, from the warmup line.
fn kv_blocks(model: &Path, kv_dtype: Option<&str>) -> usize {
    // A job larger than a 1 MiB pool (8 sequences of ~100 prompt + 100 new tokens; `generate`
    // sizes its pool to the job), so the budget decides the block count.
    let prompts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(prompts.path(), ("hi there ".repeat(50) + "\n").repeat(8)).unwrap();
    let mut cmd = halo();
    cmd.args(["generate", "--max-new-tokens", "100", "--ignore-eos"])
        .arg("--prompts-file")
        .arg(prompts.path())
        .args(["--kv-cache-mb", "1", "--max-batch-seqs", "64"])
        .arg("--model")
        .arg(model);
    if let Some(d) = kv_dtype {
        cmd.args(["--kv-cache-dtype", d]);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let at = err.find("KV cache: ").expect("a warmup line") + "KV cache: ".len();
    err[at..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_kv_cache_type_follows_the_weights_unless_named() {
    let quantized = gguf("kq-shared-Q6_K.gguf");
    let float = gguf("tiny-mha-f32.gguf");
    let f32_blocks = kv_blocks(&quantized, Some("f32"));
    // The same budget holds twice the blocks in a half-width type.
    assert_eq!(kv_blocks(&quantized, Some("f16")), 2 * f32_blocks);
    assert_eq!(kv_blocks(&quantized, Some("bf16")), 2 * f32_blocks);
    // Quantized weights default to f16 rows (as llama.cpp), float weights to f32.
    assert_eq!(kv_blocks(&quantized, None), 2 * f32_blocks);
    assert_eq!(kv_blocks(&float, None), kv_blocks(&float, Some("f32")));
    // A type the pool cannot store is one line and exit 2.
    let out = halo()
        .args(["generate", "--prompt", "hi", "--kv-cache-dtype", "q8_0"])
        .arg("--model")
        .arg(&quantized)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--kv-cache-dtype") && err.contains("f16"),
        "{err}"
    );
}
