//! Scenario tests of `halo serve` (small sizes for CI): a KV pool far smaller than the load
//! (requests that fit alone but not together all complete, identically to running alone), a
//! request that can never fit, a cancellation storm over mixed-length streams, a client process
//! killed mid-stream, and SIGTERM with streams active (health flips, new calls are refused,
//! streams drain, exit 0). After each: every block is free and nothing waits or runs.

mod serve_common;

use halo_proto::worker::v1 as pb;
use serve_common::*;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tonic::Code;

/// 16 blocks of 16 tokens: 256 token slots for everything in flight.
const SMALL_POOL: &str = "16";
const CHILD_ENV: &str = "HALO_TEST_CHILD_URL";

fn small_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(
            &[
                "--num-blocks",
                SMALL_POOL,
                "--max-concurrent",
                "64",
                "--max-batch-tokens",
                "64",
            ],
            &[],
        )
    })
}

static TURN: Mutex<()> = Mutex::new(());

fn block_on<Fut: Future<Output = ()>>(f: Fut) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

fn with_small<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let url = small_server().url();
    block_on(body(url));
}

#[test]
fn a_request_that_can_never_fit_the_kv_pool_is_rejected_at_admission() {
    with_small(|url| async move {
        let mut c = client(&url, None).await;
        let before = wait_idle(&mut c, Duration::from_secs(10)).await;
        let capacity = before.total_blocks * before.block_size;
        assert_eq!(capacity, 256);
        let e = c
            .generate(ids_request(prompt(10, 1), capacity))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains(&capacity.to_string()),
            "{}",
            e.message()
        );
        assert_eq!(kv(&mut c).await, before);
    });
}

#[test]
fn under_kv_pressure_requests_that_fit_alone_all_complete_as_if_alone() {
    with_small(|url| async move {
        let mut c = client(&url, None).await;
        // Each needs 170 of the 256 slots: any two together overflow the pool.
        let reqs: Vec<pb::GenerateRequest> = (0..4)
            .map(|i| ids_request(prompt(20, 20 + i), 150))
            .collect();
        let mut alone = Vec::new();
        for r in &reqs {
            let out = c.generate(r.clone()).await.unwrap().into_inner();
            assert_eq!(out.token_ids.len(), 150);
            alone.push(out.token_ids);
        }
        let tasks: Vec<_> = reqs
            .into_iter()
            .map(|r| {
                let mut c = c.clone();
                tokio::spawn(async move { run_stream(&mut c, r).await })
            })
            .collect();
        let t = Instant::now();
        for (i, task) in tasks.into_iter().enumerate() {
            let (ids, fin) = tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("KV pressure must not hang")
                .unwrap();
            let fin = fin.unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(fin.reason, pb::FinishReason::Length as i32);
            assert_eq!(ids, alone[i], "request {i} differs from its solo run");
        }
        eprintln!(
            "4 x 170 tokens through a 256-slot pool in {:?}",
            t.elapsed()
        );
        wait_idle(&mut c, Duration::from_secs(5)).await;
    });
}

/// A deterministic xorshift, so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_cancellation_storm_over_mixed_length_streams_leaks_nothing() {
    with_small(|url| async move {
        let mut c = client(&url, None).await;
        let total = wait_idle(&mut c, Duration::from_secs(10))
            .await
            .total_blocks;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut tasks = Vec::new();
        for i in 0..24u32 {
            let len = 4 + rng.next(40) as usize;
            let new = 8 + rng.next(60) as u32;
            // About half are cut: at the first message, mid-way, or just before the end.
            let cut = match rng.next(4) {
                0 => Some(1),
                1 => Some(1 + rng.next(new as u64 / 2) as usize),
                2 => Some(new as usize - 1),
                _ => None,
            };
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = match c.generate_stream(ids_request(prompt(len, i), new)).await {
                    Ok(s) => s.into_inner(),
                    Err(e) => panic!("stream {i} refused: {e}"),
                };
                let mut got = 0usize;
                while let Some(m) = s.message().await.unwrap() {
                    got += m.token_ids.len();
                    if let Some(f) = m.finish {
                        assert_eq!(f.usage.unwrap().generated_tokens, new);
                        assert_eq!(got, new as usize, "an uncut stream gets every token");
                        return;
                    }
                    if cut.is_some_and(|k| got >= k) {
                        return; // dropping the stream cancels it
                    }
                }
                panic!("stream {i} ended without finish");
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("hung")
                .unwrap();
        }
        let k = wait_idle(&mut c, Duration::from_secs(5)).await;
        assert_eq!(k.free_blocks, total);
    });
}

/// Not a test on its own: the client process the hard-disconnect test starts and kills.
#[test]
#[ignore]
fn child_client_process() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    block_on(async move {
        let c = client(&url, None).await;
        let mut streams = Vec::new();
        for i in 0..3 {
            let mut c = c.clone();
            let mut s = c
                .generate_stream(ids_request(prompt(8, 40 + i), 200))
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().unwrap();
            streams.push(s);
        }
        // A unary call in flight too.
        let mut cu = c.clone();
        tokio::spawn(async move { cu.generate(ids_request(prompt(8, 50), 200)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        println!("CHILD_STREAMING");
        std::future::pending::<()>().await;
    });
}

#[test]
fn killing_a_client_process_mid_stream_frees_its_blocks() {
    with_small(|url| async move {
        let mut c = client(&url, None).await;
        wait_idle(&mut c, Duration::from_secs(10)).await;
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--ignored",
            "--exact",
            "child_client_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let mut child = spawn_tied(cmd);
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("CHILD_STREAMING"))
        });
        assert!(tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .unwrap()
            .unwrap());
        let k = kv(&mut c).await;
        assert!(k.running_requests + k.waiting_requests > 0, "{k:?}");
        child.kill().unwrap(); // SIGKILL: no goodbye from the client
        child.wait().unwrap();
        let t = Instant::now();
        wait_idle(&mut c, Duration::from_secs(10)).await;
        eprintln!("blocks back {:?} after the client died", t.elapsed());
    });
}

#[test]
fn sigterm_with_streams_active_flips_health_refuses_new_calls_drains_and_exits_0() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let mut server = Server::start(&["--num-blocks", "512", "--max-concurrent", "8"], &[]);
    let url = server.url();
    block_on(async {
        let mut c = client(&url, None).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&url).await);
        let check =
            |h: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>| {
                let mut h = h.clone();
                async move {
                    h.check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status)
                }
            };
        assert_eq!(check(&mut health).await.unwrap(), 1);
        let mut streams = Vec::new();
        for i in 0..4u32 {
            let mut s = c
                .generate_stream(ids_request(prompt(16, 60 + i), 600))
                .await
                .unwrap()
                .into_inner();
            let first = s.message().await.unwrap().unwrap();
            streams.push((s, first.token_ids.len()));
        }
        server.sigterm();
        let t = Instant::now();
        // Health turns NOT_SERVING at once, while the streams are still running.
        loop {
            if check(&mut health).await.unwrap() == 2 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(2), "health did not flip");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = c.generate(ids_request(prompt(4, 70), 4)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|(mut s, mut got)| {
                tokio::spawn(async move {
                    loop {
                        let m = s
                            .message()
                            .await
                            .expect("drained stream ends cleanly")
                            .expect("finish");
                        got += m.token_ids.len();
                        if let Some(f) = m.finish {
                            assert_eq!(f.reason, pb::FinishReason::Length as i32);
                            return got;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(
                t.await.unwrap(),
                600,
                "every drained stream gets all its tokens"
            );
        }
    });
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log: {}", server.log_text());
}
