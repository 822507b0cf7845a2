//! `halo serve` as a new user starts it: health already reports SERVING when the serving line
//! is printed (even with the health watcher's first tick delayed), two workers on `--listen
//! 127.0.0.1:0` both start (each picks a free metrics port and names it), host names are
//! resolved, bad addresses are one line with exit 2, and a log file gets no colour codes.

mod serve_common;

use serve_common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn health_status(url: &str) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(url).await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

/// The watcher's first tick comes 5 s late; the status published before the serving line must
/// not depend on it. (Before the fix the line was printed before health was set at all, and the
/// first probe saw NOT_SERVING until the watcher's first tick.)
#[test]
fn health_is_serving_when_the_serving_line_is_printed() {
    let server = Server::start(
        &[],
        &[
            ("HALO_TEST_HEALTH_FIRST_TICK_DELAY_MS", "5000"),
            ("RUST_LOG", "info"),
        ],
    );
    let status = block_on(health_status(&server.url()));
    let log = server.log_text();
    assert_eq!(
        status, 1,
        "SERVING (1) right after the serving line; log: {log}"
    );
    // The log is a file: plain text, no colour codes; the load and warmup lines are there.
    assert!(log.contains("health: SERVING"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(log.contains("halo: loaded tiny-mha in "), "{log}");
    assert!(log.contains("halo: warmed up in "), "{log}");
}

/// A `halo serve` started with exactly `args` (no metrics flags added): the child and its
/// serving line.
fn serve_raw(args: &[&str]) -> (std::process::Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_halo"));
    cmd.arg("serve")
        .arg("--model")
        .arg(model_dir())
        .args(args)
        .env_remove("HALO_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = spawn_tied(cmd);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("halo serve {args:?} printed no serving line")
        });
    (child, line)
}

fn metrics_port(line: &str) -> u16 {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
}

#[test]
fn two_workers_on_port_0_pick_free_metrics_ports() {
    let (mut a, line_a) = serve_raw(&["--listen", "127.0.0.1:0"]);
    let (mut b, line_b) = serve_raw(&["--listen", "127.0.0.1:0"]);
    for line in [&line_a, &line_b] {
        assert!(line.starts_with("halo serving on 127.0.0.1:"), "{line}");
        assert!(line.contains("(metrics on http://127.0.0.1:"), "{line}");
        assert_ne!(metrics_port(line), 9090, "{line}");
    }
    assert_ne!(metrics_port(&line_a), metrics_port(&line_b));
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn listen_accepts_a_host_name() {
    let (mut c, line) = serve_raw(&["--listen", "localhost:0", "--metrics-listen", "localhost:0"]);
    assert!(line.starts_with("halo serving on "), "{line}");
    let addr = line
        .strip_prefix("halo serving on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let status = block_on(health_status(&format!("http://{addr}")));
    assert_eq!(status, 1);
    let _ = c.kill();
    let _ = c.wait();
}

/// Exit 2 and exactly `expected` (one line) on stderr.
fn assert_usage_error(args: &[&str], expected: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end(), expected, "{args:?}");
}

#[test]
fn bad_listen_addresses_are_one_line_exit_2() {
    let model = model_dir();
    let model = model.to_str().unwrap();
    assert_usage_error(
        &["serve", "--model", model, "--listen", "127.0.0.1"],
        "error: invalid value '127.0.0.1' for '--listen <LISTEN>': expected HOST:PORT, e.g. \
         127.0.0.1:50051 or localhost:50051 (see --help)",
    );
    assert_usage_error(
        &[
            "serve",
            "--model",
            model,
            "--metrics-listen",
            "localhost:99999",
        ],
        "error: invalid value 'localhost:99999' for '--metrics-listen <METRICS_LISTEN>': \
         expected HOST:PORT, e.g. 127.0.0.1:50051 or localhost:50051 (see --help)",
    );
}
