//! Rotary position embedding parameters and the inverse frequencies derived from them, computed
//! in f32 in the same order as Hugging Face transformers so that positions rotate identically.

use serde::Deserialize;

/// How the base frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Positions divided by `factor` (inv_freq / factor).
    Linear {
        factor: f32,
    },
    /// Llama 3's wavelength-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// Explicit per-frequency divisors (`inv_freq[i] / factors[i]`), one per frequency: how
    /// llama.cpp's converter stores llama3 scaling in a GGUF (`rope_freqs.weight`).
    Factors(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f32,
    pub scaling: RopeScaling,
}

/// The raw JSON of either layout: `rope_parameters` (transformers 5) or a classic
/// `rope_scaling` object (`rope_type` or the older `type` key).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawRope {
    pub rope_theta: Option<f64>,
    pub rope_type: Option<String>,
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
}

impl RawRope {
    /// Builds the config; `Err` carries a message naming the unsupported or missing field.
    pub(crate) fn resolve(&self, theta: f64) -> Result<RopeConfig, String> {
        let kind = self
            .rope_type
            .as_deref()
            .or(self.legacy_type.as_deref())
            .unwrap_or("default");
        let factor = || {
            self.factor
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(|f| f as f32)
                .ok_or_else(|| format!("rope type '{kind}' needs a positive 'factor'"))
        };
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "llama3" => RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: self.low_freq_factor.unwrap_or(1.0) as f32,
                high_freq_factor: self.high_freq_factor.unwrap_or(4.0) as f32,
                original_max_position_embeddings: self
                    .original_max_position_embeddings
                    .ok_or("llama3 rope needs 'original_max_position_embeddings'")?,
            },
            other => {
                return Err(format!(
                    "unsupported rope type '{other}' (supported: default, linear, llama3)"
                ))
            }
        };
        if !(theta.is_finite() && theta > 0.0) {
            return Err(format!("rope_theta must be positive, got {theta}"));
        }
        Ok(RopeConfig {
            theta: theta as f32,
            scaling,
        })
    }
}

impl RopeConfig {
    /// Inverse frequencies for a head of `head_dim` (length head_dim / 2).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let base: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0f32 / self.theta.powf(i as f32 / head_dim as f32))
            .collect();
        match self.scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            // A length mismatch is refused when the config is read; extra frequencies would
            // keep their base value.
            RopeScaling::Factors(ref factors) => base
                .iter()
                .enumerate()
                .map(|(i, &f)| factors.get(i).map_or(f, |d| f / d))
                .collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old_ctx = original_max_position_embeddings as f32;
                let low_freq_wavelen = old_ctx / low_freq_factor;
                let high_freq_wavelen = old_ctx / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            f
                        };
                        let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                        if medium {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies_start_at_one_and_fall() {
        let r = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
        };
        let f = r.inv_freq(32);
        assert_eq!(f.len(), 16);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 10000f32.powf(-2.0 / 32.0)).abs() < 1e-7);
        assert!(f.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn linear_divides_every_frequency() {
        let d = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
        }
        .inv_freq(16);
        let l = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Linear { factor: 2.0 },
        }
        .inv_freq(16);
        for (a, b) in d.iter().zip(&l) {
            assert_eq!(a / 2.0, *b);
        }
    }

    #[test]
    fn llama3_keeps_high_frequencies_and_scales_low_ones() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let d = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
        }
        .inv_freq(32);
        let s = RopeConfig {
            theta: 10000.0,
            scaling,
        }
        .inv_freq(32);
        assert_eq!(d[0], s[0]);
        assert!((s[15] - d[15] / 8.0).abs() < 1e-12);
    }

    #[test]
    fn explicit_factors_divide_each_frequency() {
        let d = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
        }
        .inv_freq(8);
        let s = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Factors(vec![1.0, 2.0, 4.0, 8.0]),
        }
        .inv_freq(8);
        assert_eq!(s, vec![d[0], d[1] / 2.0, d[2] / 4.0, d[3] / 8.0]);
    }

    #[test]
    fn unknown_rope_type_is_an_error() {
        let raw = RawRope {
            rope_type: Some("yarn".into()),
            ..Default::default()
        };
        assert!(raw.resolve(10000.0).unwrap_err().contains("yarn"));
    }
}
