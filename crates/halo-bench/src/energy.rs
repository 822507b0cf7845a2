//! Energy per token where the hardware exposes it: Intel/AMD RAPL package counters through
//! `/sys/class/powercap` (host-wide, so meaningful only for a target on this host). Nothing is
//! ever estimated: where no counter can be read the report says "not available" and why.
//! (NVML and hl-smi readers would slot in beside RAPL; neither is present on the machines this
//! was written on, so they are not guessed at.)

use serde::Serialize;
use std::path::{Path, PathBuf};

/// The top-level RAPL zones (packages), each with its counter wrap range.
#[derive(Debug, Clone)]
pub struct Rapl {
    zones: Vec<(PathBuf, u64)>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Rapl {
    /// The package zones under `root` (normally `/sys/class/powercap`): `intel-rapl:N`, not the
    /// sub-zones `intel-rapl:N:M` (they are parts of the package and would count twice).
    pub fn open_at(root: &Path) -> Result<Rapl, String> {
        let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let mut zones = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix("intel-rapl:") else {
                continue;
            };
            if rest.contains(':') {
                continue;
            }
            let dir = e.path();
            let energy = dir.join("energy_uj");
            if read_u64(&energy).is_none() {
                return Err(format!("{} is not readable", energy.display()));
            }
            let range = read_u64(&dir.join("max_energy_range_uj")).unwrap_or(u64::MAX);
            zones.push((energy, range));
        }
        if zones.is_empty() {
            return Err(format!("no RAPL package zone under {}", root.display()));
        }
        zones.sort();
        Ok(Rapl { zones })
    }

    pub fn open() -> Result<Rapl, String> {
        Rapl::open_at(Path::new("/sys/class/powercap"))
    }

    /// Every zone's counter, in microjoules.
    pub fn read(&self) -> Vec<Option<u64>> {
        self.zones.iter().map(|(p, _)| read_u64(p)).collect()
    }

    /// Joules spent between two readings (a counter that wrapped once is unwrapped with its
    /// range); `None` when a reading failed.
    pub fn joules(&self, before: &[Option<u64>], after: &[Option<u64>]) -> Option<f64> {
        let mut uj = 0u128;
        for ((a, b), (_, range)) in before.iter().zip(after).zip(&self.zones) {
            let (a, b) = ((*a)?, (*b)?);
            uj += if b >= a {
                (b - a) as u128
            } else {
                (*range as u128 + 1) - a as u128 + b as u128
            };
        }
        Some(uj as f64 / 1e6)
    }
}

/// Energy for one target at one level (all its rounds together).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Energy {
    /// "rapl" or "not available".
    pub source: String,
    /// Why there is no figure, when there is none.
    pub note: Option<String>,
    /// Joules over the host's RAPL packages while this target's requests ran.
    pub joules: Option<f64>,
    pub joules_per_output_token: Option<f64>,
}

impl Energy {
    pub fn not_available(why: &str) -> Energy {
        Energy {
            source: "not available".into(),
            note: Some(why.to_string()),
            joules: None,
            joules_per_output_token: None,
        }
    }

    pub fn measured(joules: f64, output_tokens: u64) -> Energy {
        Energy {
            source: "rapl".into(),
            note: Some(
                "host-wide RAPL package energy; counts only for a target on this host".into(),
            ),
            joules: Some(joules),
            joules_per_output_token: (output_tokens > 0).then(|| joules / output_tokens as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_packages_and_unwraps() {
        let d = tempfile::tempdir().unwrap();
        for (zone, uj, range) in [
            ("intel-rapl:0", "1000000", "5000000"),
            ("intel-rapl:1", "4900000", "5000000"),
            ("intel-rapl:0:0", "7", "5000000"),
        ] {
            let z = d.path().join(zone);
            std::fs::create_dir(&z).unwrap();
            std::fs::write(z.join("energy_uj"), uj).unwrap();
            std::fs::write(z.join("max_energy_range_uj"), range).unwrap();
        }
        let r = Rapl::open_at(d.path()).unwrap();
        assert_eq!(r.zones.len(), 2, "sub-zones are not counted");
        let before = r.read();
        std::fs::write(d.path().join("intel-rapl:0/energy_uj"), "3500000").unwrap();
        // Package 1 wraps: 4.9 J -> 5.0 J (range) -> 0 -> 0.4 J is 0.5 J + 1 µJ.
        std::fs::write(d.path().join("intel-rapl:1/energy_uj"), "399999").unwrap();
        let j = r.joules(&before, &r.read()).unwrap();
        assert!((j - 3.0).abs() < 1e-9, "{j}");
        let e = Energy::measured(j, 300);
        assert_eq!(e.joules_per_output_token, Some(0.01));
        assert!(Rapl::open_at(&d.path().join("missing")).is_err());
        let n = Energy::not_available("x");
        assert_eq!((n.source.as_str(), n.joules), ("not available", None));
    }
}
