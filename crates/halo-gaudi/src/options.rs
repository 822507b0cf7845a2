//! How to find and run the sidecar, and how long to wait for it.
//!
//! Paths resolve from explicit options first, then the environment, then the development
//! defaults (the venv ci/sidecar-venv.sh builds, the sidecar sources next to this crate).

use std::path::PathBuf;
use std::time::Duration;

/// Options for [`crate::GaudiDevice::new`]. `Default` gives production timeouts and resolves
/// paths from the environment.
#[derive(Clone, Debug)]
pub struct GaudiOptions {
    /// The Python interpreter. None: `$HALO_SIDECAR_PYTHON`, else `$HALO_SIDECAR_VENV/bin/python`,
    /// else `~/.cache/halo/sidecar-venv/bin/python`.
    pub python: Option<PathBuf>,
    /// The directory holding the `halo_sidecar` package. None: `$HALO_SIDECAR_DIR`, else the
    /// sources next to this crate (a development build).
    pub sidecar_dir: Option<PathBuf>,
    /// The Python module to run (`python -m MODULE`); tests substitute faulty sidecars.
    pub module: String,
    /// Where the sidecar puts tensors: "auto" (hpu, then cuda, then cpu), "hpu", "cuda" or
    /// "cpu". None: `$HALO_SIDECAR_DEVICE`, else "auto".
    pub backend: Option<String>,
    /// torch intra-op threads in the sidecar; 0 = torch's default.
    pub threads: usize,
    /// Extra environment for the sidecar process.
    pub env: Vec<(String, String)>,
    /// From spawn to a Health answer.
    pub ready_timeout: Duration,
    pub load_timeout: Duration,
    pub warmup_timeout: Duration,
    /// The step watchdog: a step taking longer means a hung sidecar; it is killed.
    pub step_timeout: Duration,
    /// Delay before the first restart after a failure; doubles per consecutive failure.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
}

impl Default for GaudiOptions {
    fn default() -> Self {
        GaudiOptions {
            python: None,
            sidecar_dir: None,
            module: "halo_sidecar".into(),
            backend: None,
            threads: 0,
            env: Vec::new(),
            ready_timeout: Duration::from_secs(180),
            load_timeout: Duration::from_secs(900),
            warmup_timeout: Duration::from_secs(3600),
            // Generous: an unwarmed shape on HPU compiles a graph inside the step.
            step_timeout: Duration::from_secs(60),
            restart_backoff: Duration::from_millis(500),
            restart_backoff_max: Duration::from_secs(30),
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl GaudiOptions {
    pub(crate) fn resolve_python(&self) -> PathBuf {
        if let Some(p) = &self.python {
            return p.clone();
        }
        if let Some(p) = env_path("HALO_SIDECAR_PYTHON") {
            return p;
        }
        let venv = env_path("HALO_SIDECAR_VENV").unwrap_or_else(|| {
            env_path("HOME")
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".cache/halo/sidecar-venv")
        });
        venv.join("bin/python")
    }

    pub(crate) fn resolve_sidecar_dir(&self) -> PathBuf {
        self.sidecar_dir
            .clone()
            .or_else(|| env_path("HALO_SIDECAR_DIR"))
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/sidecar")))
    }

    pub(crate) fn resolve_backend(&self) -> String {
        self.backend
            .clone()
            .or_else(|| {
                std::env::var("HALO_SIDECAR_DEVICE")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| "auto".into())
    }

    /// The delay before restart number `failures` (1-based).
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.restart_backoff
            .saturating_mul(factor)
            .min(self.restart_backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let o = GaudiOptions {
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_millis(700),
            ..Default::default()
        };
        let got: Vec<u128> = (1..=6).map(|n| o.backoff(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 700, 700, 700]);
        assert_eq!(o.backoff(1000).as_millis(), 700);
    }

    #[test]
    fn explicit_paths_win() {
        let o = GaudiOptions {
            python: Some("/x/python".into()),
            sidecar_dir: Some("/y".into()),
            backend: Some("cpu".into()),
            ..Default::default()
        };
        assert_eq!(o.resolve_python(), PathBuf::from("/x/python"));
        assert_eq!(o.resolve_sidecar_dir(), PathBuf::from("/y"));
        assert_eq!(o.resolve_backend(), "cpu");
    }
}
