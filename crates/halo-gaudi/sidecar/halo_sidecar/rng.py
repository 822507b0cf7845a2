"""The counter RNG of halo_hal::rng, bit for bit: a draw depends only on (seed, counter)."""

_MASK = (1 << 64) - 1


def mix64(z: int) -> int:
    """SplitMix64's finalizer on a 64-bit integer."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def uniform(seed: int, counter: int) -> float:
    """The number in [0, 1) that sequence `seed` uses for its `counter`-th sampled token."""
    z = mix64((seed + ((counter + 1) & _MASK) * 0x9E3779B97F4A7C15) & _MASK)
    return (z >> 11) * (1.0 / (1 << 53))
