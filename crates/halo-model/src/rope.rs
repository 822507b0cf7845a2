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
    /// Phi-3's LongRoPE: per-frequency divisors, one set for sequences that stay within the
    /// pretraining length and one for longer ones, and a scale on cos/sin for both.
    LongRope(LongRope),
}

/// LongRoPE parameters, resolved: the attention factor is already derived when the config
/// left it out.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    pub short_factor: Vec<f32>,
    pub long_factor: Vec<f32>,
    /// Sequences longer than this (prompt + generated) use the long factors.
    pub original_max_position_embeddings: usize,
    /// Multiplies cos and sin (transformers' `attention_scaling`).
    pub attention_factor: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f32,
    pub scaling: RopeScaling,
    /// Rotated leading dimensions of each head when fewer than the head (partial rotary:
    /// Phi-4-mini, `partial_rotary_factor`); `None` rotates the whole head.
    pub rotary_dim: Option<usize>,
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
    pub partial_rotary_factor: Option<f64>,
    pub short_factor: Option<Vec<f64>>,
    pub long_factor: Option<Vec<f64>>,
    pub attention_factor: Option<f64>,
}

/// Top-level config fields some families keep beside the rope object, which transformers folds
/// into it (Phi-3: `original_max_position_embeddings`, `partial_rotary_factor`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RopeContext {
    /// Needed to resolve a partial rotary factor into a dimension count.
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    /// Wins over the rope object's (transformers gives the top-level field priority).
    pub original_max_position_embeddings: Option<usize>,
    /// Used when the rope object has none.
    pub partial_rotary_factor: Option<f64>,
}

impl RawRope {
    /// The rope type named, `default` when none is.
    pub(crate) fn kind(&self) -> &str {
        self.rope_type
            .as_deref()
            .or(self.legacy_type.as_deref())
            .unwrap_or("default")
    }

    /// Builds the config with the family's top-level fields; `Err` carries a message naming
    /// the unsupported or missing field.
    pub(crate) fn resolve_with(&self, theta: f64, ctx: &RopeContext) -> Result<RopeConfig, String> {
        let kind = self.kind();
        let factor = || {
            self.factor
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(|f| f as f32)
                .ok_or_else(|| format!("rope type '{kind}' needs a positive 'factor'"))
        };
        if !(theta.is_finite() && theta > 0.0) {
            return Err(format!("rope_theta must be positive, got {theta}"));
        }
        let rotary_dim = self.rotary_dim(ctx)?;
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
            // "su" is LongRoPE's name in the first Phi-3 configs
            "longrope" | "su" => RopeScaling::LongRope(self.long_rope(ctx, rotary_dim)?),
            other => {
                return Err(format!(
                    "unsupported rope type '{other}' (supported: default, linear, llama3, longrope)"
                ))
            }
        };
        Ok(RopeConfig {
            theta: theta as f32,
            scaling,
            rotary_dim,
        })
    }

    /// `int(head_dim * partial_rotary_factor)` as transformers computes it; `None` for a whole head.
    fn rotary_dim(&self, ctx: &RopeContext) -> Result<Option<usize>, String> {
        let Some(p) = self.partial_rotary_factor.or(ctx.partial_rotary_factor) else {
            return Ok(None);
        };
        if !(p.is_finite() && p > 0.0 && p <= 1.0) {
            return Err(format!("partial_rotary_factor must be in (0, 1], got {p}"));
        }
        if p == 1.0 {
            return Ok(None);
        }
        let head_dim = ctx
            .head_dim
            .ok_or("partial_rotary_factor is not supported for this architecture")?;
        let dim = (head_dim as f64 * p) as usize;
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(format!(
                "partial_rotary_factor {p} of head_dim {head_dim} gives {dim} rotary dimensions (must be even and positive)"
            ));
        }
        Ok(Some(dim))
    }

    fn long_rope(&self, ctx: &RopeContext, rotary_dim: Option<usize>) -> Result<LongRope, String> {
        let original = ctx
            .original_max_position_embeddings
            .or(self.original_max_position_embeddings)
            .ok_or("longrope needs 'original_max_position_embeddings'")?;
        let half = rotary_dim.or(ctx.head_dim).map(|d| d / 2);
        let factors = |name: &str, v: &Option<Vec<f64>>| -> Result<Vec<f32>, String> {
            let v = v
                .as_ref()
                .ok_or_else(|| format!("longrope needs '{name}'"))?;
            if let Some(half) = half {
                if v.len() != half {
                    return Err(format!(
                        "'{name}' has {} entries, expected {half} (rotary dimensions / 2)",
                        v.len()
                    ));
                }
            }
            if let Some(bad) = v.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                return Err(format!("'{name}' holds {bad}, expected positive numbers"));
            }
            Ok(v.iter().map(|&f| f as f32).collect())
        };
        let short_factor = factors("short_factor", &self.short_factor)?;
        let long_factor = factors("long_factor", &self.long_factor)?;
        if short_factor.len() != long_factor.len() {
            return Err("'short_factor' and 'long_factor' differ in length".into());
        }
        // Without an explicit factor transformers takes the context extension ratio.
        let factor = match self.factor {
            Some(f) => f,
            None => ctx.max_position_embeddings.unwrap_or(original) as f64 / original as f64,
        };
        let attention_factor = match self.attention_factor {
            Some(a) if a.is_finite() && a > 0.0 => a,
            Some(a) => return Err(format!("attention_factor must be positive, got {a}")),
            None if factor <= 1.0 => 1.0,
            None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
        };
        Ok(LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings: original,
            attention_factor: attention_factor as f32,
        })
    }
}

/// What a backend rotates with, for one head size: the inverse frequencies of the rotated
/// dimensions, LongRoPE's second set and when it applies, and the scale on cos/sin.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryTables {
    /// Leading dimensions of each head that rotate (even, at most the head size).
    pub rotary_dim: usize,
    /// `rotary_dim / 2` inverse frequencies: the only set, or LongRoPE's short one.
    pub short: Vec<f32>,
    /// LongRoPE's long set and the sequence length above which it applies.
    pub long: Option<(Vec<f32>, usize)>,
    /// Multiplies cos and sin (1 except for LongRoPE).
    pub attention_factor: f32,
}

impl RotaryTables {
    /// The inverse frequencies for a sequence in the long regime (`long`) or not. The regime is
    /// the sequence's, decided by the engine (transformers: `seq_len >
    /// original_max_position_embeddings` for the forward call), never by one chunk's positions;
    /// tables without a long set ignore it.
    pub fn select(&self, long: bool) -> &[f32] {
        match &self.long {
            Some((set, _)) if long => set,
            _ => &self.short,
        }
    }
}

impl RopeConfig {
    /// The sequence length above which this RoPE switches to its long-context set (LongRoPE's
    /// `original_max_position_embeddings`); `None` when it has a single set.
    pub fn long_regime_above(&self) -> Option<usize> {
        match &self.scaling {
            RopeScaling::LongRope(lr) => Some(lr.original_max_position_embeddings),
            _ => None,
        }
    }

    /// Leading dimensions of a `head_dim` head that rotate.
    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        self.rotary_dim.unwrap_or(head_dim).min(head_dim)
    }

    /// Everything a backend needs to rotate heads of `head_dim`.
    pub fn tables(&self, head_dim: usize) -> RotaryTables {
        let dim = self.rotary_dim(head_dim);
        match &self.scaling {
            RopeScaling::LongRope(lr) => RotaryTables {
                rotary_dim: dim,
                short: self.long_rope_freq(dim, &lr.short_factor),
                long: Some((
                    self.long_rope_freq(dim, &lr.long_factor),
                    lr.original_max_position_embeddings,
                )),
                attention_factor: lr.attention_factor,
            },
            _ => RotaryTables {
                rotary_dim: dim,
                short: self.inv_freq(head_dim),
                long: None,
                attention_factor: 1.0,
            },
        }
    }

    /// transformers' order: `1 / (factor * theta^(i / dim))`, all in f32.
    fn long_rope_freq(&self, dim: usize, factors: &[f32]) -> Vec<f32> {
        (0..dim)
            .step_by(2)
            .enumerate()
            .map(|(k, i)| {
                let f = factors.get(k).copied().unwrap_or(1.0);
                1.0f32 / (f * self.theta.powf(i as f32 / dim as f32))
            })
            .collect()
    }

    /// Inverse frequencies of the rotated dimensions of a `head_dim` head (length
    /// `rotary_dim / 2`); for LongRoPE the short set (see [`RopeConfig::tables`]).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let dim = self.rotary_dim(head_dim);
        let base: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0f32 / self.theta.powf(i as f32 / dim as f32))
            .collect();
        match self.scaling {
            RopeScaling::Default => base,
            RopeScaling::LongRope(ref lr) => self.long_rope_freq(dim, &lr.short_factor),
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
            rotary_dim: None,
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
            rotary_dim: None,
        }
        .inv_freq(16);
        let l = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Linear { factor: 2.0 },
            rotary_dim: None,
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
            rotary_dim: None,
        }
        .inv_freq(32);
        let s = RopeConfig {
            theta: 10000.0,
            scaling,
            rotary_dim: None,
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
            rotary_dim: None,
        }
        .inv_freq(8);
        let s = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Factors(vec![1.0, 2.0, 4.0, 8.0]),
            rotary_dim: None,
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
        assert!(raw
            .resolve_with(10000.0, &RopeContext::default())
            .unwrap_err()
            .contains("yarn"));
    }

    fn phi3_raw() -> RawRope {
        RawRope {
            rope_type: Some("longrope".into()),
            short_factor: Some(vec![1.0, 1.25, 1.5, 2.0, 3.0, 4.0]),
            long_factor: Some(vec![1.5, 2.5, 4.0, 8.0, 16.0, 32.0]),
            ..Default::default()
        }
    }

    fn phi3_ctx() -> RopeContext {
        RopeContext {
            head_dim: Some(16),
            max_position_embeddings: Some(128),
            original_max_position_embeddings: Some(32),
            partial_rotary_factor: Some(0.75),
        }
    }

    /// transformers 5.24's Phi3RotaryEmbedding for the same config (theta 1e4, head_dim 16,
    /// partial_rotary_factor 0.75, max 128, original 32): `original_inv_freq`, the set
    /// `_compute_longrope_parameters` gives past the original length, and `attention_scaling`,
    /// as f32 bit patterns.
    #[test]
    fn long_rope_matches_transformers_bit_for_bit() {
        let r = phi3_raw().resolve_with(10000.0, &phi3_ctx()).unwrap();
        assert_eq!(r.rotary_dim, Some(12));
        let t = r.tables(16);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&t.short),
            [0x3f800000, 0x3e307dc4, 0x3cfd7e1b, 0x3ba3d70a, 0x3a3c41e1, 0x38f35a5c]
        );
        let (long, from) = t.long.clone().unwrap();
        assert_eq!(
            bits(&long),
            [0x3f2aaaab, 0x3db07dc4, 0x3c3e1e95, 0x3aa3d70a, 0x390d3169, 0x37735a5c]
        );
        assert_eq!(from, 32);
        assert_eq!(t.attention_factor, 1.183_215_956_619_923_2_f64 as f32);
        assert_eq!(r.inv_freq(16), t.short);
    }

    #[test]
    fn the_long_set_is_the_regime_the_caller_names() {
        let r = phi3_raw().resolve_with(10000.0, &phi3_ctx()).unwrap();
        // transformers: seq_len = max(position_ids) + 1 > 32
        assert_eq!(r.long_regime_above(), Some(32));
        let t = r.tables(16);
        assert_eq!(t.select(false), t.short.as_slice());
        assert_eq!(t.select(true), t.long.as_ref().unwrap().0.as_slice());
        // a single-set RoPE has no long regime and ignores the flag
        let plain = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
            rotary_dim: None,
        };
        assert_eq!(plain.long_regime_above(), None);
        let t = plain.tables(16);
        assert_eq!(t.select(true), t.short.as_slice());
    }

    #[test]
    fn explicit_factor_and_attention_factor_win() {
        let mut raw = phi3_raw();
        raw.attention_factor = Some(1.5);
        let lr = match raw.resolve_with(10000.0, &phi3_ctx()).unwrap().scaling {
            RopeScaling::LongRope(lr) => lr,
            other => panic!("{other:?}"),
        };
        assert_eq!(lr.attention_factor, 1.5);
        let mut raw = phi3_raw();
        raw.factor = Some(1.0);
        let t = raw.resolve_with(10000.0, &phi3_ctx()).unwrap().tables(16);
        assert_eq!(t.attention_factor, 1.0);
    }

    #[test]
    fn bad_long_rope_fields_are_named() {
        let mut raw = phi3_raw();
        raw.short_factor = Some(vec![1.0; 8]);
        let e = raw.resolve_with(10000.0, &phi3_ctx()).unwrap_err();
        assert!(e.contains("short_factor") && e.contains("6"), "{e}");
        let mut raw = phi3_raw();
        raw.long_factor = None;
        assert!(raw
            .resolve_with(10000.0, &phi3_ctx())
            .unwrap_err()
            .contains("long_factor"));
        let mut raw = phi3_raw();
        raw.long_factor = Some(vec![1.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!(raw
            .resolve_with(10000.0, &phi3_ctx())
            .unwrap_err()
            .contains("positive"));
        let ctx = RopeContext {
            original_max_position_embeddings: None,
            ..phi3_ctx()
        };
        assert!(phi3_raw()
            .resolve_with(10000.0, &ctx)
            .unwrap_err()
            .contains("original_max_position_embeddings"));
    }

    #[test]
    fn partial_rotary_needs_an_even_positive_dimension() {
        let raw = RawRope {
            partial_rotary_factor: Some(0.5),
            ..Default::default()
        };
        let ctx = RopeContext {
            head_dim: Some(16),
            ..Default::default()
        };
        let r = raw.resolve_with(10000.0, &ctx).unwrap();
        assert_eq!(r.rotary_dim(16), 8);
        // frequencies are those of an 8-wide head
        let plain = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Default,
            rotary_dim: None,
        };
        assert_eq!(r.inv_freq(16), plain.inv_freq(8));
        let odd = RawRope {
            partial_rotary_factor: Some(0.1875),
            ..Default::default()
        };
        assert!(odd.resolve_with(10000.0, &ctx).is_err());
        // without a head size the generic path cannot honour it
        assert!(raw.resolve_with(10000.0, &RopeContext::default()).is_err());
        let full = RawRope {
            partial_rotary_factor: Some(1.0),
            ..Default::default()
        };
        assert_eq!(
            full.resolve_with(10000.0, &RopeContext::default())
                .unwrap()
                .rotary_dim,
            None
        );
    }
}
