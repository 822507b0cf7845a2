//! What a new user sees from `halo` in the first hour: every message here is checked word for word
//! with its exit status (2: a bad argument; 1: anything else, e.g. a device this machine lacks),
//! plus the text output's delimiters, stdin prompts, the help text, progress lines and plain
//! lines, and the test script's flags.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn halo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_halo"));
    c.env_remove("RUST_LOG").env_remove("NO_COLOR");
    c
}

fn model() -> String {
    let shared = std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("models/tiny-mha").to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> Output {
    halo().args(args).stdin(Stdio::null()).output().unwrap()
}

/// Exactly `expected` (one line) on stderr, nothing on stdout, and exit `code`.
fn assert_error(args: &[&str], code: i32, expected: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.trim_end(), expected, "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
}

fn generate(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["generate".to_string(), "--model".to_string(), model()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn negative_numbers_are_refused_with_the_reason() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["--prompt", "x", "--max-new-tokens", "-1"],
            "error: invalid value '-1' for '--max-new-tokens <N>': max_new_tokens must be at \
             least 1 (see --help)",
        ),
        (
            &["--prompt", "x", "--max-new-tokens", "0"],
            "error: invalid value '0' for '--max-new-tokens <N>': max_new_tokens must be at \
             least 1 (see --help)",
        ),
        (
            &["--prompt", "x", "--temperature", "-1"],
            "error: invalid value '-1' for '--temperature <T>': temperature must be >= 0 (0 = \
             greedy) (see --help)",
        ),
        (
            &["--prompt", "x", "--top-k", "-3"],
            "error: invalid value '-3' for '--top-k <K>': must not be negative (see --help)",
        ),
        (
            &["--prompt", "x", "--top-p", "1.5"],
            "error: invalid value '1.5' for '--top-p <P>': top_p must be in (0, 1] (see --help)",
        ),
        (
            &["--prompt", "x", "--frequency-penalty", "-3"],
            "error: invalid value '-3' for '--frequency-penalty <F>': must be in [-2, 2] (see \
             --help)",
        ),
    ];
    for (extra, expected) in cases {
        assert_error(&refs(&generate(extra)), 2, expected);
    }
}

#[test]
fn negative_penalties_in_range_are_accepted() {
    let out = halo()
        .args(refs(&generate(&[
            "--prompt",
            "x",
            "--max-new-tokens",
            "2",
            "--frequency-penalty",
            "-0.5",
            "--presence-penalty",
            "-1",
        ])))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_prompts_file_keeps_the_os_error() {
    assert_error(
        &refs(&generate(&["--prompts-file", "/nonexistent"])),
        2,
        "error: cannot read --prompts-file /nonexistent: No such file or directory (os error 2)",
    );
}

#[test]
fn logprobs_and_top_n_need_json() {
    assert_error(
        &refs(&generate(&["--prompt", "x", "--logprobs"])),
        2,
        "error: --logprobs is reported only in the --json output: add --json",
    );
    assert_error(
        &refs(&generate(&["--prompt", "x", "--top-n", "3"])),
        2,
        "error: --top-n is reported only in the --json output: add --json",
    );
}

#[test]
fn no_arguments_prints_the_usage_and_exits_2() {
    let bare = run(&[]);
    let help = run(&["--help"]);
    assert_eq!(bare.status.code(), Some(2));
    assert_eq!(help.status.code(), Some(0));
    assert!(bare.stdout.is_empty());
    // The same text `halo --help` prints, on stderr.
    assert_eq!(
        String::from_utf8_lossy(&bare.stderr),
        String::from_utf8_lossy(&help.stdout)
    );
    assert!(String::from_utf8_lossy(&bare.stderr).contains("Usage: halo <COMMAND>"));
}

#[test]
fn missing_arguments_are_all_named_on_one_line() {
    assert_error(
        &["generate"],
        2,
        "error: the following required arguments were not provided: --model <PATH>, --prompt \
         <PROMPT> (see --help)",
    );
}

#[test]
fn a_device_this_machine_lacks_is_exit_1_not_a_bad_argument() {
    // The gaudi backend's interpreter is looked up first in $HALO_SIDECAR_PYTHON.
    let out = halo()
        .args(refs(&generate(&["--prompt", "x", "--device", "gaudi"])))
        .env("HALO_SIDECAR_PYTHON", "/nonexistent/bin/python")
        .env_remove("HALO_SIDECAR_VENV")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        "error: cannot start the gaudi device: device unavailable: sidecar python \
         /nonexistent/bin/python not found (run ci/sidecar-venv.sh or set HALO_SIDECAR_PYTHON)"
    );
    // CUDA: exit 1 wherever there is no usable GPU (with one, the tiny model simply runs).
    let out = run(&refs(&generate(&[
        "--prompt",
        "x",
        "--device",
        "cuda",
        "--max-new-tokens",
        "1",
    ])));
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1), "{err}");
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{err}");
        assert!(!err.contains("(see --help)"), "not a usage error: {err}");
    }
}

#[test]
fn halo_cpu_isa_caps_the_kernels_and_a_bad_value_is_exit_2() {
    let out = halo()
        .args(refs(&generate(&["--prompt", "x", "--max-new-tokens", "1"])))
        .env("HALO_CPU_ISA", "sse4")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        "error: HALO_CPU_ISA=\"sse4\": expected avx512, avx2 or portable"
    );
    // Every cap runs; each path's chain rounds differently, far below this prompt's margins,
    // so the greedy ids agree.
    let ids = |cap: &str| {
        let out = halo()
            .args(refs(&generate(&[
                "--prompt",
                "Hello",
                "--max-new-tokens",
                "8",
                "--json",
            ])))
            .env("HALO_CPU_ISA", cap)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cap}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        line["token_ids"].clone()
    };
    let best = ids("avx512");
    assert_eq!(ids("avx2"), best);
    assert_eq!(ids("portable"), best);
}

#[test]
fn prompts_from_stdin_print_delimited_completions_and_progress_lines() {
    let mut child = halo()
        .args(refs(&generate(&[
            "--prompts-file",
            "-",
            "--max-new-tokens",
            "3",
            "--ignore-eos",
        ])))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello\n\nthe world\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let headers: Vec<&str> = stdout.lines().filter(|l| l.starts_with("--- ")).collect();
    assert_eq!(
        headers,
        ["--- prompt 1 ---", "--- prompt 2 ---"],
        "{stdout}"
    );
    assert!(stdout.starts_with("--- prompt 1 ---\n"), "{stdout}");

    // stderr is a pipe: one line for the load and one for the warmup, with their durations,
    // then the summary; no spinner, no colour codes.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("halo: loaded tiny-mha in ")
            && lines[0].ends_with(" (2 layers, 0.5 M parameters)"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("halo: warmed up in ") && lines[1].contains(" s (KV cache: "),
        "{stderr}"
    );
    assert!(lines[2].starts_with("2 prompts, 6 tokens in "), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");

    let mut child = halo()
        .args(refs(&generate(&["--prompts-file", "-"])))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n \n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: standard input: no prompts (one per line)"
    );
}

#[test]
fn every_generate_flag_has_a_description() {
    let out = run(&["generate", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // Long help: each flag on its own line, its description on the next.
    let lines: Vec<&str> = help.lines().collect();
    let mut flags = 0;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("--") || t.starts_with("-h, ") {
            flags += 1;
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
            assert!(
                !next.is_empty() && !next.starts_with('-'),
                "{t} has no description:\n{help}"
            );
        }
    }
    assert!(flags >= 25, "{help}");
    assert!(help.contains("f32, f16 or bf16"), "{help}");
    assert!(help.contains("`-`: standard input"), "{help}");
}

#[test]
fn the_test_script_runs_every_test_binary_and_then_fmt_and_clippy() {
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/test.sh")).unwrap();
    assert!(
        script
            .lines()
            .any(|l| l.starts_with("cargo test --workspace --all-targets --no-fail-fast")),
        "{script}"
    );
    // A failing test does not skip fmt and clippy.
    assert!(script.contains("|| failed+=(\"cargo test\")"), "{script}");
}

/// On a terminal (a pty from util-linux `script`, where installed): a spinner while the model
/// loads and warms up, then the same finished lines as off a terminal.
#[test]
fn a_terminal_gets_a_spinner_then_the_same_lines() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` command for a pty");
        return;
    }
    let cmd = format!(
        "{} generate --model {} --prompt hi --max-new-tokens 2",
        env!("CARGO_BIN_EXE_halo"),
        model()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("loading "), "{text:?}");
    assert!(text.contains("warming up"), "{text:?}");
    assert!(text.contains("halo: loaded tiny-mha in "), "{text:?}");
    assert!(text.contains("halo: warmed up in "), "{text:?}");
}
