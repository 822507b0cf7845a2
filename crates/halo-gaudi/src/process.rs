//! One sidecar process: spawned in a private directory (0700) with its Unix socket (0600, never
//! TCP), connected once it answers Health, killed on demand or when dropped. Its stdout and
//! stderr go to a bounded tail that is logged when it dies, never to the worker's own stdout.

use crate::options::GaudiOptions;
use crate::proto::sidecar_client::SidecarClient;
use crate::proto::HealthRequest;
use halo_hal::DeviceError;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

/// The proto the sidecar compiles at start: the very one this crate was built against.
const PROTO: &str = include_str!("../../../proto/halo/sidecar/v1/sidecar.proto");
const TAIL_LINES: usize = 40;
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

pub(crate) struct Sidecar {
    pub epoch: u64,
    pub pid: u32,
    pub client: SidecarClient<Channel>,
    child: Child,
    tail: Tail,
    // Removed (with the socket) when the process is dropped.
    _dir: tempfile::TempDir,
}

fn lost(msg: impl Into<String>) -> DeviceError {
    DeviceError::Lost(msg.into())
}

fn spawn_reader(stream: impl AsyncRead + Unpin + Send + 'static, tail: Tail, epoch: u64) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "halo_gaudi::sidecar", epoch, "{line}");
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.chars().take(500).collect());
        }
    });
}

async fn connect(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by the HTTP/2 layer but never resolved: the connector dials the socket.
    Endpoint::from_static("http://halo-sidecar")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}

impl Sidecar {
    /// Starts a sidecar for `epoch` and waits until it answers Health.
    pub async fn spawn(opts: &GaudiOptions, epoch: u64) -> Result<Sidecar, DeviceError> {
        let python = opts.resolve_python();
        let sidecar_dir = opts.resolve_sidecar_dir();
        if !python.exists() {
            return Err(DeviceError::Unavailable(format!(
                "sidecar python {} not found (run ci/sidecar-venv.sh or set HALO_SIDECAR_PYTHON)",
                python.display()
            )));
        }
        if !sidecar_dir.join(&opts.module).exists() && !sidecar_dir.join("halo_sidecar").exists() {
            return Err(DeviceError::Unavailable(format!(
                "sidecar sources not found in {} (set HALO_SIDECAR_DIR)",
                sidecar_dir.display()
            )));
        }
        let dir =
            private_dir().map_err(|e| lost(format!("cannot create the socket directory: {e}")))?;
        let proto_root = dir.path().join("proto");
        let proto_file = proto_root.join("halo/sidecar/v1/sidecar.proto");
        std::fs::create_dir_all(proto_file.parent().expect("has a parent"))
            .and_then(|_| std::fs::write(&proto_file, PROTO))
            .map_err(|e| lost(format!("cannot write the sidecar proto: {e}")))?;
        let socket = dir.path().join("sidecar.sock");

        let mut python_path = std::ffi::OsString::from(&sidecar_dir);
        if let Some(old) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            python_path.push(":");
            python_path.push(old);
        }
        let mut cmd = Command::new(&python);
        cmd.arg("-m")
            .arg(&opts.module)
            .arg("--socket")
            .arg(&socket)
            .arg("--epoch")
            .arg(epoch.to_string())
            .arg("--device")
            .arg(opts.resolve_backend())
            .arg("--proto-root")
            .arg(&proto_root)
            .arg("--threads")
            .arg(opts.threads.to_string())
            .current_dir(dir.path())
            .env("PYTHONPATH", python_path)
            .env("PYTHONUNBUFFERED", "1")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            DeviceError::Unavailable(format!("cannot start {}: {e}", python.display()))
        })?;
        let pid = child.id().unwrap_or(0);
        let tail: Tail = Arc::default();
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, tail.clone(), epoch);
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, tail.clone(), epoch);
        }
        match wait_ready(&mut child, &socket, epoch, opts.ready_timeout).await {
            Ok(client) => {
                tracing::info!(epoch, pid, "gaudi sidecar ready");
                Ok(Sidecar {
                    epoch,
                    pid,
                    client,
                    child,
                    tail,
                    _dir: dir,
                })
            }
            Err(e) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                tracing::error!(epoch, pid, stderr_tail = %join_tail(&tail), "gaudi sidecar did not start");
                Err(e)
            }
        }
    }

    /// Some(status) once the process has ended.
    pub fn exited(&mut self) -> Option<String> {
        exit_status(&mut self.child)
    }

    /// SIGKILL (which also ends a SIGSTOPped process) and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Sends SIGKILL without waiting (for Drop).
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        self.child.start_kill()
    }

    pub fn stderr_tail(&self) -> String {
        join_tail(&self.tail)
    }

    pub fn log_death(&self, why: &str) {
        tracing::error!(
            epoch = self.epoch,
            pid = self.pid,
            stderr_tail = %self.stderr_tail(),
            "gaudi sidecar {why}"
        );
    }
}

fn join_tail(tail: &Tail) -> String {
    let t = tail.lock().unwrap_or_else(|e| e.into_inner());
    t.iter().cloned().collect::<Vec<_>>().join("\n")
}

fn exit_status(child: &mut Child) -> Option<String> {
    match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        Ok(None) => None,
        Err(e) => Some(format!("unknown status: {e}")),
    }
}

/// Polls until the process answers Health for its epoch on the socket.
async fn wait_ready(
    child: &mut Child,
    socket: &Path,
    epoch: u64,
    timeout: Duration,
) -> Result<SidecarClient<Channel>, DeviceError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = exit_status(child) {
            return Err(lost(format!("sidecar exited during start-up ({status})")));
        }
        if socket.exists() {
            if let Ok(Ok(channel)) =
                tokio::time::timeout(Duration::from_secs(2), connect(socket.to_owned())).await
            {
                let mut client = SidecarClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                let health = client.health(HealthRequest { epoch });
                if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), health).await {
                    if reply.get_ref().epoch == epoch {
                        return Ok(client);
                    }
                    return Err(lost("sidecar answered health for another epoch"));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(lost(format!("sidecar not ready after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn private_dir() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("halo-sidecar-")
        .tempdir_in(base)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}
