//! The paged KV pool: per layer, `num_blocks * block_size` slots, each holding one token's keys
//! and values for every KV head. Which slot a token uses is the engine's business (its block
//! table); this type only stores rows.
//!
//! Within a block the layout is head-major, `[block][kv_head][position][head_dim]`: attention
//! reads one head's keys position after position, so each block gives it `block_size` contiguous
//! rows instead of rows a whole slot apart (on a page of their own once slots pass 4 KiB).

use halo_hal::DeviceError;

pub struct KvCache {
    pub block_size: usize,
    /// Floats per slot: num_kv_heads * head_dim.
    pub row: usize,
    pub kv_heads: usize,
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
        kv_heads: usize,
    ) -> Result<KvCache, DeviceError> {
        if kv_heads == 0 || !row.is_multiple_of(kv_heads) {
            return Err(DeviceError::Load(format!(
                "a KV row of {row} floats does not split into {kv_heads} heads"
            )));
        }
        let floats = Self::floats_per_layer(block_size, num_blocks, row)?;
        // vec![0.0; n] maps zeroed pages lazily: a large pool costs memory only as it fills.
        Ok(KvCache {
            block_size,
            row,
            kv_heads,
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

    /// Stores one token's keys and values (each `row` floats, head after head) in `slot` of
    /// `layer`.
    pub fn write(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let hd = self.row / self.kv_heads;
        let (block, offset) = (slot / self.block_size, slot % self.block_size);
        for h in 0..self.kv_heads {
            let at = Self::head_row(block, h, offset, self.kv_heads, self.block_size) * hd;
            self.keys[layer][at..at + hd].copy_from_slice(&k[h * hd..][..hd]);
            self.values[layer][at..at + hd].copy_from_slice(&v[h * hd..][..hd]);
        }
    }

    /// Which `head_dim`-long row of a layer holds head `head` of position `offset` in `block`.
    pub fn head_row(
        block: usize,
        head: usize,
        offset: usize,
        kv_heads: usize,
        block_size: usize,
    ) -> usize {
        (block * kv_heads + head) * block_size + offset
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
        assert!(KvCache::new(4, 1 << 30, 1 << 20, 1 << 12, 1).is_err());
        let c = KvCache::new(2, 4, 3, 8, 2).unwrap();
        assert_eq!(c.layer(1).0.len(), 96);
        assert!(KvCache::new(2, 4, 3, 8, 3).is_err());
    }

    #[test]
    fn a_block_holds_each_head_contiguously() {
        let mut c = KvCache::new(1, 4, 3, 6, 2).unwrap();
        // Slot 5 is block 1, offset 1.
        c.write(0, 5, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[7.0; 6]);
        let (k, v) = c.layer(0);
        let at = |h: usize| KvCache::head_row(1, h, 1, 2, 4) * 3;
        // Block 1 starts after block 0's 2 heads × 4 positions; head 0, offset 1.
        assert_eq!(at(0), (2 * 4 + 1) * 3);
        assert_eq!(at(1), (3 * 4 + 1) * 3);
        assert_eq!(&k[at(0)..at(0) + 3], &[1.0, 2.0, 3.0]);
        assert_eq!(&k[at(1)..at(1) + 3], &[4.0, 5.0, 6.0]);
        assert_eq!(&v[at(1)..at(1) + 3], &[7.0; 3]);
    }
}
