//! deploy/fleet/run.sh end to end with three workers on loopback: one `halo bench` target list
//! over all of them, the middle worker SIGTERMed mid-run; the script checks that it drains its
//! streams and exits 0, the others keep SERVING and serve every request, and no request is
//! lost (each completed in full or was refused before its first token). Bounded by `timeout`.

use std::process::Command;

#[test]
fn a_fleet_keeps_serving_while_one_worker_drains_and_loses_nothing() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = tempfile::tempdir().unwrap();
    let result = Command::new("timeout")
        .args(["-k", "5", "300", "bash"])
        .arg(format!("{root}/deploy/fleet/run.sh"))
        .args(["-n", "3", "--victim", "1", "--out"])
        .arg(out.path())
        .env("HALO_BIN", env!("CARGO_BIN_EXE_halo"))
        .env("RUST_LOG", "info")
        .env_remove("HALO_AUTH_TOKEN")
        .env_remove("HALO_BENCH_TOKEN")
        .output()
        .expect("run deploy/fleet/run.sh");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "deploy/fleet/run.sh failed ({}):\n{stderr}",
        result.status
    );
    assert!(stderr.contains("nothing lost"), "{stderr}");
    assert!(stderr.contains("w1 (drained)"), "{stderr}");
}
