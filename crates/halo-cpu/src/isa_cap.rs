//! `HALO_CPU_ISA`: the most the CPU backend's kernels may use (`avx512`, `avx2` or `portable`),
//! as oneDNN's `ONEDNN_MAX_CPU_ISA` caps its kernels. Unset, every kernel this CPU supports is
//! used. It lets one machine run (and measure) the paths a smaller CPU would take, and lets a
//! provider rule a path out. Read once per process: every call of a run then uses the same
//! chains, as batch invariance needs.

use std::sync::OnceLock;

/// Instruction-set levels, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsaCap {
    Portable,
    Avx2,
    Avx512,
}

impl std::str::FromStr for IsaCap {
    type Err = String;

    fn from_str(s: &str) -> Result<IsaCap, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512" => Ok(IsaCap::Avx512),
            "avx2" => Ok(IsaCap::Avx2),
            "portable" => Ok(IsaCap::Portable),
            _ => Err(format!(
                "HALO_CPU_ISA={s:?}: expected avx512, avx2 or portable"
            )),
        }
    }
}

/// The cap from `HALO_CPU_ISA` (unset or empty: none), or an error naming a value it cannot
/// read.
pub fn from_env() -> Result<IsaCap, String> {
    match std::env::var("HALO_CPU_ISA") {
        Ok(s) if s.trim().is_empty() => Ok(IsaCap::Avx512),
        Ok(s) => s.parse(),
        Err(std::env::VarError::NotPresent) => Ok(IsaCap::Avx512),
        Err(std::env::VarError::NotUnicode(s)) => Err(format!(
            "HALO_CPU_ISA={s:?}: expected avx512, avx2 or portable"
        )),
    }
}

/// The cap every kernel choice of this process honours; a value [`from_env`] refuses (the
/// device refuses to start on it) caps nothing here.
pub(crate) fn cap() -> IsaCap {
    static CAP: OnceLock<IsaCap> = OnceLock::new();
    *CAP.get_or_init(|| from_env().unwrap_or(IsaCap::Avx512))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_in_any_case_and_others_are_named() {
        assert_eq!("AVX2".parse::<IsaCap>(), Ok(IsaCap::Avx2));
        assert_eq!(" avx512 ".parse::<IsaCap>(), Ok(IsaCap::Avx512));
        assert_eq!("portable".parse::<IsaCap>(), Ok(IsaCap::Portable));
        let e = "sse4".parse::<IsaCap>().unwrap_err();
        assert!(e.contains("\"sse4\"") && e.contains("avx2"), "{e}");
        assert!(IsaCap::Portable < IsaCap::Avx2 && IsaCap::Avx2 < IsaCap::Avx512);
    }
}
