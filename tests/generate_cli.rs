//! `halo generate` end to end: the binary reproduces transformers' greedy ids for the shared
//! model and every feature fixture through `--json`, and bad input exits 2 with one line.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn halo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_halo"))
}

fn shared() -> PathBuf {
    std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![shared().join("models/tiny-mha")];
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut more: Vec<PathBuf> = std::fs::read_dir(fixtures)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("golden.json").is_file())
        .collect();
    more.sort();
    dirs.extend(more);
    dirs
}

#[test]
fn generate_json_reproduces_every_golden_file() {
    for dir in model_dirs() {
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                .unwrap();
        // All prompts of a model in one run: submitted together, batched by the engine.
        let cases = golden["cases"].as_array().unwrap();
        let prompts_file = tempfile::NamedTempFile::new().unwrap();
        let prompts: Vec<&str> = cases
            .iter()
            .map(|c| c["prompt"].as_str().unwrap())
            .collect();
        std::fs::write(prompts_file.path(), prompts.join("\n")).unwrap();
        let out = halo()
            .args([
                "generate",
                "--json",
                "--ignore-eos",
                "--max-new-tokens",
                "48",
                "--model",
            ])
            .arg(&dir)
            .arg("--prompts-file")
            .arg(prompts_file.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            cases.len() + 1,
            "one object per prompt and a summary"
        );
        for (case, got) in cases.iter().zip(&lines) {
            assert_eq!(
                got["token_ids"],
                case["greedy_ids"],
                "{}: {}",
                dir.display(),
                case["prompt"]
            );
            assert_eq!(
                got["prompt_tokens"].as_u64().unwrap() as usize,
                case["prompt_ids"].as_array().unwrap().len()
            );
            assert_eq!(got["finish_reason"], "length");
            assert!(got["timings"]["ttft_us"].as_u64().unwrap() > 0);
            // The text is what the ids add to the prompt's text, as transformers decodes it
            // (the fixtures' golden.json carry it; the shared tiny-mha's predates it).
            if let Some(text) = case.get("continuation_text") {
                assert_eq!(&got["text"], text, "{}: {}", dir.display(), case["prompt"]);
            }
        }
        assert_eq!(
            lines[cases.len()]["summary"]["generated_tokens"],
            48 * cases.len()
        );
    }
}

#[test]
fn single_prompt_matches_golden_and_stops_at_eos_without_ignore_eos() {
    let dir = shared().join("models/tiny-mha");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let case = &golden["cases"][0];
    let out = halo()
        .args([
            "generate",
            "--json",
            "--max-new-tokens",
            "48",
            "--ignore-eos",
            "--model",
        ])
        .arg(&dir)
        .args(["--prompt", case["prompt"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["token_ids"], case["greedy_ids"]);
    assert_eq!(got["text"], case["greedy_text"]);
}

/// The blocks `halo generate` reports warming ("KV cache: N blocks of 16 tokens") and the
/// prompts' token counts, for `prompts` and extra flags.
fn pool_blocks(prompts: &str, extra: &[&str]) -> (usize, Vec<usize>) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), prompts).unwrap();
    let out = halo()
        .args(["generate", "--json", "--max-new-tokens", "20", "--model"])
        .arg(shared().join("models/tiny-mha"))
        .arg("--prompts-file")
        .arg(file.path())
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let blocks = stderr
        .split("KV cache: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no KV cache line in {stderr}"));
    let lens = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["prompt_tokens"].as_u64())
        .map(|n| n as usize)
        .collect();
    (blocks, lens)
}

#[test]
fn the_kv_pool_holds_the_job_not_the_models_context() {
    let prompts = "Hello\nThe quick brown fox jumps over the lazy dog again and again\nA\n";
    let (blocks, lens) = pool_blocks(prompts, &[]);
    assert_eq!(lens.len(), 3);
    // Three sequences at once, each at most the longest prompt + 20 new tokens.
    let longest = lens.iter().max().unwrap() + 20;
    assert_eq!(blocks, 3 * longest.div_ceil(16), "prompt lengths {lens:?}");
    // Fewer at once when --max-batch-seqs says so; an explicit size always wins.
    let (two, _) = pool_blocks(prompts, &["--max-batch-seqs", "2"]);
    assert_eq!(two, 2 * longest.div_ceil(16));
    let (asked, _) = pool_blocks(prompts, &["--num-blocks", "40"]);
    assert_eq!(asked, 40);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let dir = shared().join("models/tiny-mha");
    let run = |seed: &str| {
        let out = halo()
            .args([
                "generate",
                "--json",
                "--ignore-eos",
                "--max-new-tokens",
                "16",
                "--temperature",
                "0.9",
            ])
            .args([
                "--top-k", "50", "--top-p", "0.95", "--seed", seed, "--model",
            ])
            .arg(&dir)
            .args(["--prompt", "hello there"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["token_ids"].clone()
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
}

/// Exit 2 and exactly one line on stderr.
fn assert_usage_error(args: &[&str], needle: &str) {
    let out = halo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn bad_arguments_and_bad_model_directories_exit_2() {
    let model = shared().join("models/tiny-mha");
    let model = model.to_str().unwrap();
    assert_usage_error(
        &["generate", "--model", "/nonexistent", "--prompt", "x"],
        "/nonexistent",
    );
    assert_usage_error(&["generate", "--model", model], "--prompt");
    // (extra flags after a valid model and prompt, what the one-line error must name)
    let cases: [(&[&str], &str); 5] = [
        (&["--device", "tpu"], "tpu"),
        (&["--temperature", "NaN"], "temperature"),
        (&["--top-p", "1.5"], "top_p"),
        (&["--max-new-tokens", "0"], "max_new_tokens"),
        (&["--max-new-tokens", "abc"], "max-new-tokens"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["generate", "--model", model, "--prompt", "x"];
        args.extend_from_slice(extra);
        assert_usage_error(&args, needle);
    }

    let broken = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(Path::new(model).join(f), broken.path().join(f)).unwrap();
    }
    let broken_path = broken.path().to_str().unwrap();
    assert_usage_error(
        &["generate", "--model", broken_path, "--prompt", "x"],
        "model.safetensors",
    );
}
