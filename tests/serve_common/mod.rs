//! Shared by the `serve_*` end-to-end tests: start the real `halo` binary on free loopback ports
//! with the tiny reference model, talk to it with a real tonic client, read its live state.

#![allow(dead_code)]

use halo_proto::worker::v1 as pb;
use pb::worker_client::WorkerClient;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/tiny-mha")
}

/// A running `halo serve`. Killed on drop; also killed by the kernel if the test process dies
/// (PR_SET_PDEATHSIG, armed from a thread that lives as long as the process).
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics_addr: String,
    /// The OpenAI-compatible HTTP address when started with `--http-listen`.
    pub http_addr: Option<String>,
    pub log: PathBuf,
}

impl Server {
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::start_with_model(&model_dir(), args, envs)
    }

    pub fn start_with_model(
        model: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let log = std::env::temp_dir().join(format!(
            "halo-serve-test-{}-{}.log",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_suffix()
        ));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halo"));
        cmd.arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("HALO_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = spawn_tied(cmd);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        // "halo serving on 127.0.0.1:PORT (metrics on http://127.0.0.1:PORT/metrics)"
        let addr = line
            .strip_prefix("halo serving on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected serving line: {line}"))
            .to_string();
        let metrics_addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        // "...; OpenAI API on http://127.0.0.1:PORT/v1)"
        let http_addr = line
            .split("OpenAI API on http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .map(str::to_string);
        Server {
            child,
            addr,
            metrics_addr,
            http_addr,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OpenAI API's base URL (`http://ADDR/v1`); panics without `--http-listen`.
    pub fn http_base(&self) -> String {
        format!(
            "http://{}/v1",
            self.http_addr
                .as_deref()
                .expect("started with --http-listen")
        )
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < until, "server did not exit in {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn rand_suffix() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u128
}

/// Spawns `cmd` from a thread that never exits, with the parent-death signal set, so the child
/// cannot outlive the test process (the signal fires when the spawning *thread* exits).
pub fn spawn_tied(mut cmd: Command) -> Child {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("spawner").expect("spawn")
}

/// Adds `authorization: Bearer <token>` when a token is set.
#[derive(Clone)]
pub struct Auth(pub Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub type Client = WorkerClient<InterceptedService<Channel, Auth>>;

pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

pub async fn client(url: &str, token: Option<&str>) -> Client {
    let auth = Auth(token.map(|t| format!("Bearer {t}").parse().unwrap()));
    WorkerClient::with_interceptor(channel(url).await, auth).max_decoding_message_size(64 << 20)
}

/// The live KV and queue state.
pub async fn kv(c: &mut Client) -> pb::KvInfo {
    c.get_info(pb::GetInfoRequest {})
        .await
        .expect("get_info")
        .into_inner()
        .kv
        .unwrap()
}

/// Waits until every block is free and nothing waits or runs.
pub async fn wait_idle(c: &mut Client, timeout: Duration) -> pb::KvInfo {
    let until = Instant::now() + timeout;
    loop {
        let k = kv(c).await;
        if k.free_blocks == k.total_blocks && k.waiting_requests == 0 && k.running_requests == 0 {
            return k;
        }
        assert!(Instant::now() < until, "not idle after {timeout:?}: {k:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ids_request(ids: Vec<u32>, max_new_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        prompt: Some(pb::generate_request::Prompt::TokenIds(pb::TokenIds { ids })),
        max_new_tokens,
        stop: Some(pb::StopCriteria {
            ignore_eos: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Prompt ids of length `n` inside the tiny model's vocabulary, varied by `salt`.
pub fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 2 + (i * 7 + salt * 13) % 500)
        .collect()
}

/// The golden cases: (prompt_ids, greedy_ids).
pub fn golden() -> Vec<(Vec<u32>, Vec<u32>)> {
    let text = std::fs::read_to_string(model_dir().join("golden.json")).expect("golden.json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (ids(&c["prompt_ids"]), ids(&c["greedy_ids"])))
        .collect()
}

/// Runs a stream to its end: (all token ids, the finish or the error status).
pub async fn run_stream(
    c: &mut Client,
    req: pb::GenerateRequest,
) -> (Vec<u32>, Result<pb::Finish, Status>) {
    let mut stream = match c.generate_stream(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => return (Vec::new(), Err(s)),
    };
    let mut ids = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                ids.extend(m.token_ids);
                if let Some(f) = m.finish {
                    return (ids, Ok(f));
                }
            }
            Ok(None) => return (ids, Err(Status::internal("stream ended without finish"))),
            Err(s) => return (ids, Err(s)),
        }
    }
}

/// tiny-qwen2 with the ChatML template transformers' golden renderings use.
pub fn qwen2_with_chatml() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-qwen2");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let templates: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/chat_templates/golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let chatml = templates["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "qwen2-chatml")
        .unwrap()["template"]
        .clone();
    let path = dir.path().join("tokenizer_config.json");
    let mut tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tc["chat_template"] = chatml;
    std::fs::write(&path, serde_json::to_string(&tc).unwrap()).unwrap();
    dir
}
