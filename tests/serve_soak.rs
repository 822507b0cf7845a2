//! A short soak (the same code runs longer with HALO_SOAK_SECS): many concurrent mixed-length
//! streams against one server for a fixed time. Every request ends with exactly one outcome and
//! all of them succeed, no KV block leaks, and the server's resident memory stays flat once
//! warmed up.

mod serve_common;

use serve_common::*;
use std::time::{Duration, Instant};

/// Resident set size of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `clients` loops of streams with seeded lengths until `until`; returns (ok, failed).
async fn load(url: &str, clients: u32, until: Instant) -> (usize, usize) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = client(url, None).await;
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let mut i = 0u32;
            while Instant::now() < until {
                let salt = c * 1000 + i;
                let len = 4 + (salt * 37 % 120) as usize;
                let new = 1 + salt * 13 % 40;
                let (ids, end) = run_stream(&mut client, ids_request(prompt(len, salt), new)).await;
                match end {
                    Ok(f)
                        if ids.len() == new as usize
                            && f.usage.map(|u| u.generated_tokens) == Some(new) =>
                    {
                        ok += 1
                    }
                    _ => failed += 1,
                }
                i += 1;
            }
            (ok, failed)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (ok, failed) = t.await.unwrap();
        total.0 += ok;
        total.1 += failed;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_loses_nothing_leaks_nothing_and_memory_stays_flat() {
    let secs: u64 = std::env::var("HALO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let server = Server::start(&["--num-blocks", "96", "--max-batch-seqs", "8"], &[]);
    let url = server.url();
    let mut c = client(&url, None).await;
    let total = kv(&mut c).await.total_blocks;

    // Warm up: the allocator and caches reach their working size.
    let (ok, failed) = load(&url, 8, Instant::now() + Duration::from_secs(2)).await;
    assert!(ok > 0 && failed == 0, "warmup: {ok} ok, {failed} failed");
    wait_idle(&mut c, Duration::from_secs(10)).await;
    let warm_rss = rss_kib(server.child.id());

    let (ok, failed) = load(&url, 8, Instant::now() + Duration::from_secs(secs)).await;
    assert_eq!(failed, 0, "{ok} ok, {failed} failed");
    assert!(ok >= 8, "only {ok} requests completed");
    let idle = wait_idle(&mut c, Duration::from_secs(10)).await;
    assert_eq!(idle.free_blocks, total, "leaked KV blocks");
    let after_rss = rss_kib(server.child.id());
    // Flat: allow allocator noise, not growth per request.
    assert!(
        after_rss <= warm_rss + 16 * 1024,
        "RSS grew from {warm_rss} KiB to {after_rss} KiB over {ok} requests"
    );
}
