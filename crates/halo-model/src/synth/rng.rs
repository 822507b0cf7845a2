//! The seeded generator behind synthetic weights: SplitMix64, one independent stream per tensor.
//!
//! Each tensor's stream is keyed by the model seed and the tensor's name (not its position), so a
//! tensor's values do not depend on which other tensors a preset has or the order they are written.

/// SplitMix64: tiny, fast, and statistically fine for filler weights (not for cryptography).
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Two independent uniforms in [-1, 1) from one draw (24 bits each, exactly representable).
    pub fn next_pair(&mut self) -> (f32, f32) {
        const SCALE: f32 = 1.0 / (1u32 << 23) as f32;
        let x = self.next_u64();
        let hi = (x >> 40) as f32 * SCALE - 1.0;
        let lo = ((x >> 8) & 0xFF_FFFF) as f32 * SCALE - 1.0;
        (hi, lo)
    }
}

/// The stream seed for one tensor: FNV-1a of its name, mixed with the model seed.
pub fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    SplitMix64::new(seed ^ h.rotate_left(17)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniforms_cover_the_interval_with_the_right_moments() {
        let mut r = SplitMix64::new(7);
        let n = 200_000;
        let (mut sum, mut sq, mut lo, mut hi) = (0f64, 0f64, 1f32, -1f32);
        for _ in 0..n / 2 {
            let (a, b) = r.next_pair();
            for v in [a, b] {
                assert!((-1.0..1.0).contains(&v));
                sum += f64::from(v);
                sq += f64::from(v) * f64::from(v);
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.01, "variance {var}");
        assert!(lo < -0.999 && hi > 0.999);
    }

    #[test]
    fn streams_depend_on_seed_and_name() {
        assert_eq!(tensor_seed(1, "a.weight"), tensor_seed(1, "a.weight"));
        assert_ne!(tensor_seed(1, "a.weight"), tensor_seed(2, "a.weight"));
        assert_ne!(tensor_seed(1, "a.weight"), tensor_seed(1, "b.weight"));
    }
}
