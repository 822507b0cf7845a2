//! The paged KV pool: per layer, `num_blocks * block_size` slots, each holding one token's keys
//! and values for every KV head. Which slot a token uses is the engine's business (its block
//! table); this type only stores rows.

use halo_hal::DeviceError;

pub struct KvCache {
    pub block_size: usize,
    /// Floats per slot: num_kv_heads * head_dim.
    pub row: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvCache {
    /// A zeroed pool. Fails, without allocating, when [`KvCache::floats_per_layer`] does.
    pub fn new(
        layers: usize,
        block_size: usize,
        num_blocks: usize,
        row: usize,
    ) -> Result<KvCache, DeviceError> {
        let floats = Self::floats_per_layer(block_size, num_blocks, row)?;
        // vec![0.0; n] maps zeroed pages lazily: a large pool costs memory only as it fills.
        Ok(KvCache {
            block_size,
            row,
            keys: (0..layers).map(|_| vec![0.0; floats]).collect(),
            values: (0..layers).map(|_| vec![0.0; floats]).collect(),
        })
    }

    /// Floats in one layer's keys (or values): `block_size * num_blocks * row`. A pool whose
    /// block ids do not fit the batch's `u32`, or whose size overflows `usize` or the largest
    /// allocation (`isize::MAX` bytes), is refused with a typed error instead of wrapping or
    /// aborting.
    pub fn floats_per_layer(
        block_size: usize,
        num_blocks: usize,
        row: usize,
    ) -> Result<usize, DeviceError> {
        if num_blocks > u32::MAX as usize + 1 {
            return Err(DeviceError::OutOfMemory(format!(
                "a KV pool of {num_blocks} blocks: block ids are 32-bit (at most {})",
                u32::MAX as u64 + 1
            )));
        }
        let too_big = || {
            DeviceError::OutOfMemory(format!(
                "a KV pool of {num_blocks} blocks × {block_size} tokens × {row} floats per layer \
                 does not fit the address space"
            ))
        };
        let floats = block_size
            .checked_mul(num_blocks)
            .and_then(|slots| slots.checked_mul(row))
            .ok_or_else(too_big)?;
        if floats > isize::MAX as usize / std::mem::size_of::<f32>() {
            return Err(too_big());
        }
        Ok(floats)
    }

    /// Bytes one block takes over every layer (keys and values); `None` when that overflows.
    pub fn bytes_per_block(layers: usize, block_size: usize, row: usize) -> Option<u64> {
        (2 * std::mem::size_of::<f32>() as u64)
            .checked_mul(layers as u64)?
            .checked_mul(block_size as u64)?
            .checked_mul(row as u64)
    }

    /// Bytes of a whole pool; `None` when that overflows `u64`.
    pub fn pool_bytes(bytes_per_block: u64, num_blocks: usize) -> Option<u64> {
        bytes_per_block.checked_mul(num_blocks as u64)
    }

    /// Stores one token's keys and values (each `row` floats) in `slot` of `layer`.
    pub fn write(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let at = slot * self.row;
        self.keys[layer][at..at + self.row].copy_from_slice(k);
        self.values[layer][at..at + self.row].copy_from_slice(v);
    }

    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert_eq!(KvCache::floats_per_layer(16, 10, 64).unwrap(), 10240);
        assert_eq!(KvCache::bytes_per_block(2, 16, 64), Some(16384));
        assert_eq!(KvCache::pool_bytes(16384, 10), Some(163840));
        // Block ids are u32: one past 2^32 blocks is refused even when the bytes would fit.
        let e = KvCache::floats_per_layer(1, (u32::MAX as usize) + 2, 1).unwrap_err();
        assert!(matches!(e, DeviceError::OutOfMemory(_)), "{e}");
        assert!(e.to_string().contains("32-bit"), "{e}");
        // block_size × num_blocks × row past usize, and past the largest allocation.
        for (bs, nb, row) in [
            (usize::MAX, 2, 1),
            (1 << 20, 1 << 22, 1 << 30),
            (1 << 30, 1 << 20, 1 << 12),
        ] {
            let e = KvCache::floats_per_layer(bs, nb, row).unwrap_err();
            assert!(e.to_string().contains("address space"), "{e}");
        }
        assert_eq!(KvCache::bytes_per_block(usize::MAX, usize::MAX, 2), None);
        assert_eq!(KvCache::pool_bytes(u64::MAX / 2, 3), None);
    }

    #[test]
    fn a_refused_pool_allocates_nothing() {
        assert!(KvCache::new(4, 1 << 30, 1 << 20, 1 << 12).is_err());
        let c = KvCache::new(2, 4, 3, 8).unwrap();
        assert_eq!(c.layer(1).0.len(), 96);
    }
}
