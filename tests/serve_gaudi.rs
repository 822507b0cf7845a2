//! The Gaudi path through the whole worker: `halo serve --device gaudi` (the sidecar on torch
//! CPU here) gives the golden ids, and when the sidecar is SIGKILLed mid-stream the stream ends
//! UNAVAILABLE with the count of tokens already sent, health flips to NOT_SERVING, the worker
//! restarts the sidecar, health comes back and new requests succeed with every block free.
//! Needs the sidecar's Python environment (ci/sidecar-venv.sh; ci/test.sh builds it).

mod serve_common;

use serve_common::*;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

async fn serving(url: &str) -> ServingStatus {
    let mut h = HealthClient::new(channel(url).await);
    match h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(r) => ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown),
        Err(_) => ServingStatus::Unknown,
    }
}

/// The direct children of `pid` (the sidecar is the server's only child process).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let after = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
        if after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(pid)
        {
            out.push(child);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_mid_stream_fails_unavailable_then_the_worker_recovers() {
    let server = Server::start(
        &[
            "--device",
            "gaudi",
            "--num-blocks",
            "96",
            "--max-batch-seqs",
            "4",
            "--max-batch-tokens",
            "64",
            "--max-total-tokens",
            "1024",
        ],
        &[("OMP_NUM_THREADS", "1")],
    );
    let url = server.url();
    let mut c = client(&url, None).await;
    let total = kv(&mut c).await.total_blocks;
    let (prompt_ids, golden_ids) = golden().remove(0);

    // Golden ids through the sidecar, served.
    let (ids, end) = run_stream(
        &mut c,
        ids_request(prompt_ids.clone(), golden_ids.len() as u32),
    )
    .await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(ids, golden_ids);

    // A long stream; kill the sidecar once some tokens arrived.
    let mut stream = c
        .generate_stream(ids_request(prompt_ids.clone(), 900))
        .await
        .unwrap()
        .into_inner();
    let mut received = 0usize;
    while received < 5 {
        let m = stream.message().await.unwrap().expect("stream open");
        received += m.token_ids.len();
    }
    let sidecars = children(server.child.id());
    assert_eq!(sidecars.len(), 1, "one sidecar process: {sidecars:?}");
    let killed_at = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &sidecars[0].to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        match stream.message().await {
            Ok(Some(m)) => received += m.token_ids.len(),
            Ok(None) => panic!("stream ended without a status"),
            Err(s) => break s,
        }
    };
    assert!(
        killed_at.elapsed() < Duration::from_secs(20),
        "failure took {:?}",
        killed_at.elapsed()
    );
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let sent: usize = status
        .metadata()
        .get("halo-tokens-sent")
        .expect("halo-tokens-sent")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sent, received, "the count matches what the client got");

    // Health flips, then comes back once the sidecar is restarted, re-loaded and re-warmed.
    let until = Instant::now() + Duration::from_secs(90);
    let mut saw_down = false;
    loop {
        match serving(&url).await {
            ServingStatus::Serving if saw_down => break,
            ServingStatus::Serving => {}
            _ => saw_down = true,
        }
        assert!(
            Instant::now() < until,
            "health never came back (saw down: {saw_down})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_down, "health must report the loss");
    let restarted = children(server.child.id());
    assert_eq!(restarted.len(), 1);
    assert_ne!(restarted[0], sidecars[0], "a new sidecar process");

    let (ids, end) = run_stream(&mut c, ids_request(prompt_ids, golden_ids.len() as u32)).await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(ids, golden_ids);
    let idle = wait_idle(&mut c, Duration::from_secs(10)).await;
    assert_eq!(idle.free_blocks, total);
}
