//! The run manifest every report carries: which tool (version, git commit) ran what (command
//! line, workload hash) where (host CPU and memory), and how energy was measured. Each target's
//! self-description is in its own report entry (`info`).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub os: String,
    pub arch: String,
    pub cpu_model: Option<String>,
    pub logical_cpus: Option<usize>,
    pub memory_bytes: Option<u64>,
    /// NVIDIA GPUs as the driver lists them (`/proc/driver/nvidia/gpus/*/information`, "Model:");
    /// empty where there is no NVIDIA driver. Other accelerators are not probed.
    pub gpus: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub tool: String,
    pub version: String,
    /// The commit it was built from (`-modified` when the crate had uncommitted changes), or
    /// "unknown".
    pub git_commit: String,
    pub command_line: Vec<String>,
    pub workload_sha256: String,
    pub host: Host,
    /// "rapl", or "not available: WHY".
    pub energy: String,
}

pub fn git_commit() -> &'static str {
    option_env!("HALO_BENCH_GIT_COMMIT").unwrap_or("unknown")
}

/// `model name` of the first processor in a /proc/cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// The `Model:` line of an NVIDIA driver `information` file.
pub fn nvidia_model(information: &str) -> Option<String> {
    information.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Model").then(|| v.trim().to_string())
    })
}

fn nvidia_gpus() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = dir
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("information")).ok()?;
            Some((
                e.file_name().to_string_lossy().to_string(),
                nvidia_model(&text)?,
            ))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, m)| m).collect()
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let v = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
        v.trim().parse::<u64>().ok().map(|k| k * 1024)
    })
}

impl Host {
    pub fn detect() -> Host {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Host {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpu_model: cpu_model(&read("/proc/cpuinfo")),
            logical_cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
            memory_bytes: mem_total(&read("/proc/meminfo")),
            gpus: nvidia_gpus(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpu = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8480\nflags\t: a\n";
        assert_eq!(cpu_model(cpu).as_deref(), Some("Intel(R) Xeon(R) 8480"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(
            mem_total("MemTotal:       16303540 kB\nMemFree: 1 kB\n"),
            Some(16303540 * 1024)
        );
        assert!(!git_commit().is_empty());
        assert_eq!(
            nvidia_model("Model: \t\t NVIDIA H200\nIRQ:   42\n").as_deref(),
            Some("NVIDIA H200")
        );
    }
}
