//! The official `openai` Python client against `halo serve --http-listen`: completions and chat,
//! unary and streamed, logprobs, and the client's own exceptions for bad requests, an unknown
//! model and a wrong key (tests/http/openai_client.py holds the checks).
//!
//! The client lives in the pinned venv ci/openai-venv.sh builds (`$HALO_OPENAI_PYTHON`, which
//! ci/test.sh exports; else the script is run here to build or reuse it).

mod serve_common;

use serve_common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn openai_python() -> PathBuf {
    if let Some(p) = std::env::var_os("HALO_OPENAI_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(root().join("ci/openai-venv.sh"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "ci/openai-venv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("the venv's python").trim())
}

#[test]
fn the_official_openai_client_drives_completions_and_chat() {
    let python = openai_python();
    let token = "openai-client-token";
    let model = qwen2_with_chatml();
    let server = Server::start_with_model(
        model.path(),
        &["--http-listen", "127.0.0.1:0"],
        &[("HALO_AUTH_TOKEN", token)],
    );
    let golden = root().join("tests/fixtures/models/tiny-qwen2/golden.json");
    let out = Command::new(&python)
        .arg(root().join("tests/http/openai_client.py"))
        .arg(server.http_base())
        .arg(token)
        .arg(&golden)
        .output()
        .expect("run the openai client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    println!("{stdout}");
}
