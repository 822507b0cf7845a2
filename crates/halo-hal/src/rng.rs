//! The counter-based random numbers behind sampling.
//!
//! A draw depends only on (seed, counter), never on a mutable stream, so a sequence draws the
//! same numbers alone or in any batch, after preemption and recomputation, and on every backend:
//! CUDA kernels and the Python sidecar implement the same three lines of integer arithmetic.

/// SplitMix64's finalizer: a bijective 64-bit mix with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform number in [0, 1) that sequence `seed` uses for its `counter`-th sampled token.
pub fn uniform(seed: u64, counter: u64) -> f64 {
    let z = mix64(seed.wrapping_add(counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_pin_the_algorithm() {
        // Other backends test against these same numbers.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161D_100B_05E5);
        let u = uniform(42, 0);
        assert!((0.0..1.0).contains(&u));
        assert_eq!(uniform(42, 0), uniform(42, 0));
        assert_ne!(uniform(42, 0), uniform(42, 1));
        assert_ne!(uniform(42, 0), uniform(43, 0));
    }

    #[test]
    fn roughly_uniform() {
        let n = 20_000;
        let mean: f64 = (0..n).map(|i| uniform(7, i)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
