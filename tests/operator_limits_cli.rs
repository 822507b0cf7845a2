//! Operator flags out of range: every sizing flag of `generate` and `serve` has an explicit upper
//! bound (so no product of them overflows an allocation or a 32-bit block id), and a value past
//! it, or zero, is one line on stderr naming the flag and the limit, with exit status 2, before
//! any model loads or any port is bound.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn halo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_halo"))
}

fn shared() -> PathBuf {
    std::env::var_os("HALO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn model() -> String {
    shared()
        .join("models/tiny-mha")
        .to_str()
        .unwrap()
        .to_string()
}

fn run(args: &[&str]) -> std::process::Output {
    let mut child = halo()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs halo with `args`; the status must be 2 and stderr exactly one line equal to `want`.
/// A run that does not exit (a `serve` that accepted its flags) is killed after a minute.
fn assert_usage_line(args: &[&str], want: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert_eq!(err.trim_end(), want, "{args:?}");
}

/// The flags both `generate` and `serve` take (src/commands/engine_args.rs): parsed with bounds.
const ENGINE_FLAGS: [(&str, &str, &str, &str); 10] = [
    (
        "--num-blocks",
        "NUM_BLOCKS",
        "0",
        "must be between 1 and 4194304",
    ),
    (
        "--num-blocks",
        "NUM_BLOCKS",
        "4294967297",
        "must be between 1 and 4194304",
    ),
    (
        "--kv-cache-mb",
        "KV_CACHE_MB",
        "0",
        "must be between 1 and 16777216",
    ),
    // 2^44 MiB is 2^64 bytes: `mb << 20` used to wrap to a zero-byte budget.
    (
        "--kv-cache-mb",
        "KV_CACHE_MB",
        "17592186044416",
        "must be between 1 and 16777216",
    ),
    (
        "--block-size",
        "BLOCK_SIZE",
        "0",
        "must be between 1 and 1024",
    ),
    (
        "--block-size",
        "BLOCK_SIZE",
        "1048576",
        "must be between 1 and 1024",
    ),
    (
        "--max-batch-tokens",
        "MAX_BATCH_TOKENS",
        "0",
        "must be between 1 and 1048576",
    ),
    (
        "--max-batch-tokens",
        "MAX_BATCH_TOKENS",
        "18446744073709551615",
        "must be between 1 and 1048576",
    ),
    (
        "--max-batch-seqs",
        "MAX_BATCH_SEQS",
        "0",
        "must be between 1 and 65536",
    ),
    (
        "--max-batch-seqs",
        "MAX_BATCH_SEQS",
        "abc",
        "expected a whole number between 1 and 65536",
    ),
];

#[test]
fn engine_flags_out_of_range_exit_2_naming_the_flag() {
    let model = model();
    for cmd in [
        &["generate", "--model", &model, "--prompt", "x"][..],
        &[
            "serve",
            "--model",
            &model,
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
        ][..],
    ] {
        for (flag, meta, value, why) in ENGINE_FLAGS {
            let mut args = cmd.to_vec();
            args.extend_from_slice(&[flag, value]);
            let want =
                format!("error: invalid value '{value}' for '{flag} <{meta}>': {why} (see --help)");
            assert_usage_line(&args, &want);
        }
    }
}

/// `serve`'s own limits (and `generate --max-new-tokens`) go through EngineConfig::validate,
/// whose messages name the flag and the setting.
#[test]
fn serve_limits_out_of_range_exit_2_naming_the_flag() {
    let model = model();
    let cases: [(&str, &str, &str); 8] = [
        (
            "--max-concurrent",
            "0",
            "--max-concurrent (max_concurrent_requests) must be between 1 and 1048576, got 0",
        ),
        (
            "--max-concurrent",
            "4000000000",
            "--max-concurrent (max_concurrent_requests) must be between 1 and 1048576, got 4000000000",
        ),
        (
            "--max-input-tokens",
            "0",
            "--max-input-tokens (max_input_tokens) must be between 1 and 16777216, got 0",
        ),
        (
            "--max-input-tokens",
            "100000000000",
            "--max-input-tokens (max_input_tokens) must be between 1 and 16777216, got 100000000000",
        ),
        (
            "--max-total-tokens",
            "100000000000",
            "--max-total-tokens (max_total_tokens) must be between 1 and 16777216, got 100000000000",
        ),
        (
            "--max-new-tokens",
            "0",
            "--max-new-tokens (max_new_tokens_cap) must be between 1 and 16777216, got 0",
        ),
        (
            "--max-new-tokens",
            "18446744073709551615",
            "--max-new-tokens (max_new_tokens_cap) must be between 1 and 16777216, got 18446744073709551615",
        ),
        (
            "--max-batch-seqs",
            "1024",
            "max_batch_tokens (512) must be at least max_batch_seqs (1024)",
        ),
    ];
    for (flag, value, why) in cases {
        let args = [
            "serve",
            "--model",
            &model,
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            flag,
            value,
        ];
        assert_usage_line(&args, &format!("error: {why}"));
    }
}

/// `serve`'s timeouts: a drain past a day (or a stall timeout of zero or past a day) is refused
/// by the flag's parser; a value near `u64::MAX` seconds used to reach `Duration` arithmetic.
#[test]
fn serve_timeouts_out_of_range_exit_2_naming_the_flag() {
    let model = model();
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "--drain-timeout-secs",
            "DRAIN_TIMEOUT_SECS",
            "86401",
            "must be between 0 and 86400",
        ),
        (
            "--drain-timeout-secs",
            "DRAIN_TIMEOUT_SECS",
            "18446744073709551615",
            "must be between 0 and 86400",
        ),
        (
            "--drain-timeout-secs",
            "DRAIN_TIMEOUT_SECS",
            "ten",
            "expected whole seconds between 0 and 86400",
        ),
        (
            "--stall-timeout-secs",
            "STALL_TIMEOUT_SECS",
            "0",
            "must be between 1 and 86400",
        ),
        (
            "--stall-timeout-secs",
            "STALL_TIMEOUT_SECS",
            "18446744073709551615",
            "must be between 1 and 86400",
        ),
        (
            "--stall-timeout-secs",
            "STALL_TIMEOUT_SECS",
            "1.5",
            "expected whole seconds between 1 and 86400",
        ),
    ];
    for (flag, meta, value, why) in cases {
        let args = [
            "serve",
            "--model",
            &model,
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            flag,
            value,
        ];
        let want =
            format!("error: invalid value '{value}' for '{flag} <{meta}>': {why} (see --help)");
        assert_usage_line(&args, &want);
    }
}

#[test]
fn generate_max_new_tokens_past_the_bound_exits_2() {
    let model = model();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "x",
        "--max-new-tokens",
        "100000000000",
    ];
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--max-new-tokens (max_new_tokens_cap) must be between 1 and 16777216"),
        "{err}"
    );
}
