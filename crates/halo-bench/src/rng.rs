//! The seeded random source behind every workload and arrival schedule.
//!
//! The generator is written here (SplitMix64) instead of taken from `rand` so that a seed means the
//! same workload forever: a dependency upgrade must never change the requests, because the workload
//! hash is how two runs prove they ran the same thing.

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, full period, good enough statistics for
/// load generation and trivially portable.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// Independent streams derived from one user seed, so that adding warmup requests or changing the
/// arrival process never shifts the measured requests.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Workload = 1,
    Warmup = 2,
    Arrivals = 3,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator for one purpose, decorrelated from the others by hashing the stream id in.
    pub fn for_stream(seed: u64, stream: Stream) -> Self {
        let mut mix = Rng::new(seed ^ (stream as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        let s = mix.next_u64();
        Rng::new(s)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    fn next_open_f64(&mut self) -> f64 {
        1.0 - self.next_f64()
    }

    /// Uniform integer in [lo, hi] (inclusive). Multiply-shift keeps the bias below 2^-32 for the
    /// small ranges used here.
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        if span == 0 {
            return self.next_u64();
        }
        lo + ((self.next_u64() as u128 * span as u128) >> 64) as u64
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        self.range_inclusive(0, n as u64 - 1) as usize
    }

    /// Standard normal by Box-Muller (one of the pair is discarded: determinism matters more than
    /// the spare draw).
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = self.next_open_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Exponential with mean 1.
    pub fn exponential(&mut self) -> f64 {
        -self.next_open_f64().ln()
    }

    /// Gamma(shape, scale 1) by Marsaglia and Tsang (2000); shapes below 1 use the boost
    /// `G(a) = G(a + 1) * U^(1/a)`.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let g = self.gamma(shape + 1.0);
            return g * self.next_open_f64().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.standard_normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.next_open_f64();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let a: Vec<u64> = (0..5)
            .map(|_| 0)
            .scan(Rng::new(7), |r, _: u64| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .map(|_| 0)
            .scan(Rng::new(7), |r, _: u64| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        let mut w = Rng::for_stream(7, Stream::Workload);
        let mut x = Rng::for_stream(7, Stream::Warmup);
        assert_ne!(w.next_u64(), x.next_u64());
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0, as published with the algorithm.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn moments_are_right() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let mean_exp: f64 = (0..n).map(|_| r.exponential()).sum::<f64>() / n as f64;
        assert!((mean_exp - 1.0).abs() < 0.02, "{mean_exp}");
        for shape in [0.5, 2.0] {
            let xs: Vec<f64> = (0..n).map(|_| r.gamma(shape)).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
            assert!(
                (m - shape).abs() < 0.03 * shape.max(1.0),
                "shape {shape}: mean {m}"
            );
            assert!(
                (v - shape).abs() < 0.06 * shape.max(1.0),
                "shape {shape}: var {v}"
            );
        }
        let zs: Vec<f64> = (0..n).map(|_| r.standard_normal()).collect();
        let m = zs.iter().sum::<f64>() / n as f64;
        let v = zs.iter().map(|z| z * z).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.02, "{m} {v}");
        for _ in 0..1000 {
            let k = r.range_inclusive(3, 5);
            assert!((3..=5).contains(&k));
        }
    }
}
