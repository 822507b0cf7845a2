//! Length distributions for synthetic prompts and outputs: `N` / `fixed:N`, `uniform:LO-HI`,
//! `normal:MEAN,STD`, `hist:LEN=WEIGHT,...` (inline) or `hist:PATH` (a file of `LEN WEIGHT` lines).

use crate::rng::Rng;
use crate::BenchError;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthDist {
    Fixed {
        len: u32,
    },
    /// Uniform over the integers in [lo, hi].
    Uniform {
        lo: u32,
        hi: u32,
    },
    /// Normal, rounded to the nearest integer and clamped to [1, 4 * mean + 1] so that a wide
    /// spread never produces zero-length or absurd requests.
    Normal {
        mean: f64,
        std: f64,
    },
    /// Discrete: `len` with probability proportional to `weight`.
    Histogram {
        bins: Vec<(u32, f64)>,
    },
}

fn bad(spec: &str, why: &str) -> BenchError {
    BenchError::Arg(format!("bad length distribution '{spec}': {why}"))
}

fn parse_len(spec: &str, s: &str) -> Result<u32, BenchError> {
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| bad(spec, &format!("'{}' is not a positive integer", s.trim())))?;
    if v == 0 {
        return Err(bad(spec, "lengths must be at least 1"));
    }
    Ok(v)
}

fn parse_f64(spec: &str, s: &str) -> Result<f64, BenchError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| bad(spec, &format!("'{}' is not a number", s.trim())))?;
    if !v.is_finite() {
        return Err(bad(spec, "numbers must be finite"));
    }
    Ok(v)
}

impl LengthDist {
    /// Parses the command-line syntax. `hist:PATH` reads the file here, once.
    pub fn parse(spec: &str) -> Result<Self, BenchError> {
        let (kind, rest) = match spec.split_once(':') {
            Some((k, r)) => (k.trim(), r),
            None => ("fixed", spec),
        };
        match kind {
            "fixed" => Ok(LengthDist::Fixed {
                len: parse_len(spec, rest)?,
            }),
            "uniform" => {
                let (lo, hi) = rest
                    .split_once('-')
                    .ok_or_else(|| bad(spec, "expected uniform:LO-HI"))?;
                let (lo, hi) = (parse_len(spec, lo)?, parse_len(spec, hi)?);
                if lo > hi {
                    return Err(bad(spec, "LO must not exceed HI"));
                }
                Ok(LengthDist::Uniform { lo, hi })
            }
            "normal" => {
                let (m, s) = rest
                    .split_once(',')
                    .ok_or_else(|| bad(spec, "expected normal:MEAN,STD"))?;
                let (mean, std) = (parse_f64(spec, m)?, parse_f64(spec, s)?);
                if mean < 1.0 || std < 0.0 {
                    return Err(bad(spec, "MEAN must be at least 1 and STD not negative"));
                }
                Ok(LengthDist::Normal { mean, std })
            }
            "hist" => {
                let text;
                let body = if rest.contains('=') {
                    rest
                } else {
                    text = std::fs::read_to_string(rest.trim()).map_err(|e| {
                        BenchError::Arg(format!(
                            "cannot read histogram file '{}': {e}",
                            rest.trim()
                        ))
                    })?;
                    text.as_str()
                };
                let mut bins = Vec::new();
                for item in body
                    .split([',', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && !s.starts_with('#'))
                {
                    let (l, w) = item
                        .split_once('=')
                        .or_else(|| item.split_once(char::is_whitespace))
                        .ok_or_else(|| bad(spec, &format!("bin '{item}' is not LEN=WEIGHT")))?;
                    let (len, weight) = (parse_len(spec, l)?, parse_f64(spec, w)?);
                    if weight < 0.0 {
                        return Err(bad(spec, "weights must not be negative"));
                    }
                    bins.push((len, weight));
                }
                if bins.is_empty() || bins.iter().map(|b| b.1).sum::<f64>() <= 0.0 {
                    return Err(bad(spec, "the histogram needs a bin with positive weight"));
                }
                Ok(LengthDist::Histogram { bins })
            }
            other => Err(bad(
                spec,
                &format!("unknown kind '{other}' (fixed, uniform, normal, hist)"),
            )),
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> u32 {
        match self {
            LengthDist::Fixed { len } => *len,
            LengthDist::Uniform { lo, hi } => rng.range_inclusive(*lo as u64, *hi as u64) as u32,
            LengthDist::Normal { mean, std } => {
                let x = (mean + std * rng.standard_normal()).round();
                x.clamp(1.0, 4.0 * mean + 1.0) as u32
            }
            LengthDist::Histogram { bins } => {
                let total: f64 = bins.iter().map(|b| b.1).sum();
                let mut u = rng.next_f64() * total;
                for &(len, w) in bins {
                    if u < w {
                        return len;
                    }
                    u -= w;
                }
                // Rounding can leave u a hair above the last weight.
                bins.iter().rev().find(|b| b.1 > 0.0).map_or(1, |b| b.0)
            }
        }
    }

    /// The largest length this distribution can produce (for sizing checks).
    pub fn max(&self) -> u32 {
        match self {
            LengthDist::Fixed { len } => *len,
            LengthDist::Uniform { hi, .. } => *hi,
            LengthDist::Normal { mean, .. } => (4.0 * mean + 1.0) as u32,
            LengthDist::Histogram { bins } => bins.iter().map(|b| b.0).max().unwrap_or(1),
        }
    }
}

impl std::fmt::Display for LengthDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LengthDist::Fixed { len } => write!(f, "fixed:{len}"),
            LengthDist::Uniform { lo, hi } => write!(f, "uniform:{lo}-{hi}"),
            LengthDist::Normal { mean, std } => write!(f, "normal:{mean},{std}"),
            LengthDist::Histogram { bins } => {
                write!(f, "hist:")?;
                for (i, (l, w)) in bins.iter().enumerate() {
                    write!(f, "{}{l}={w}", if i > 0 { "," } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            LengthDist::parse("128").unwrap(),
            LengthDist::Fixed { len: 128 }
        );
        assert_eq!(
            LengthDist::parse("fixed:7").unwrap(),
            LengthDist::Fixed { len: 7 }
        );
        assert_eq!(
            LengthDist::parse("uniform:10-20").unwrap(),
            LengthDist::Uniform { lo: 10, hi: 20 }
        );
        assert_eq!(
            LengthDist::parse("normal:100,10").unwrap(),
            LengthDist::Normal {
                mean: 100.0,
                std: 10.0
            }
        );
        assert_eq!(
            LengthDist::parse("hist:10=1,20=3").unwrap(),
            LengthDist::Histogram {
                bins: vec![(10, 1.0), (20, 3.0)]
            }
        );
        for bad in [
            "0",
            "uniform:20-10",
            "uniform:5",
            "normal:0,1",
            "hist:",
            "hist:5=-1",
            "zipf:3",
            "x",
        ] {
            assert!(LengthDist::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn histogram_file_and_sampling_frequencies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.txt");
        std::fs::write(&p, "# len weight\n10 1\n20 3\n").unwrap();
        let d = LengthDist::parse(&format!("hist:{}", p.display())).unwrap();
        let mut rng = Rng::new(1);
        let n = 40_000;
        let twenties = (0..n).filter(|_| d.sample(&mut rng) == 20).count();
        let frac = twenties as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.01, "{frac}");
    }

    #[test]
    fn samples_stay_in_range() {
        let mut rng = Rng::new(3);
        let u = LengthDist::Uniform { lo: 5, hi: 8 };
        let n = LengthDist::Normal {
            mean: 3.0,
            std: 50.0,
        };
        for _ in 0..10_000 {
            assert!((5..=8).contains(&u.sample(&mut rng)));
            let x = n.sample(&mut rng);
            assert!((1..=13).contains(&x));
        }
    }
}
