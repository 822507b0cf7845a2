//! The paged KV pool: per layer, `num_blocks * block_size` slots, each holding one token's keys
//! and values for every KV head. Which slot a token uses is the engine's business (its block
//! table); this type only stores rows.
//!
//! Within a block the layout is head-major, `[block][kv_head][position][head_dim]`: attention
//! reads one head's keys position after position, so each block gives it `block_size` contiguous
//! rows instead of rows a whole slot apart (on a page of their own once slots pass 4 KiB).
//!
//! Rows are stored in f32, f16 or bf16 ([`DType`]). At 32 sequences attention reads every
//! sequence's whole context each step, several times the bytes of a quantized model's weights in
//! f32: a half-width cache halves that traffic. Writes round to nearest (even); reads widen
//! exactly, so attention's arithmetic is the same f32 chain whatever the storage.

use crate::hugepages::Aligned;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};
use halo_hal::{DType, DeviceError};

pub struct KvCache {
    pub block_size: usize,
    /// Values per slot: num_kv_heads * head_dim.
    pub row: usize,
    pub kv_heads: usize,
    store: Store,
}

/// Per layer, keys and values, each a mapping of its own on huge pages where the kernel allows
/// ([`Aligned`]). Half-width rows are kept as their bits so a fresh pool is zeroed memory the
/// OS maps lazily. Decode attention reads each sequence's blocks (tens of KiB each, scattered
/// over a pool of hundreds of MB) once per step: on 4 KiB pages nearly every block starts with
/// a TLB miss. The attention bench's step (bench-110m, 32 sequences x 192 positions, f16 KV,
/// one thread) measured 24.2-25.6 ms on huge pages against 26.9-29.2 ms without, three
/// alternated runs each.
enum Store {
    F32 {
        keys: Vec<Aligned<f32>>,
        values: Vec<Aligned<f32>>,
    },
    Half {
        is_bf16: bool,
        keys: Vec<Aligned<u16>>,
        values: Vec<Aligned<u16>>,
    },
}

/// One layer's keys and values in their stored type.
#[derive(Clone, Copy)]
pub enum KvLayer<'a> {
    F32(&'a [f32], &'a [f32]),
    F16(&'a [f16], &'a [f16]),
    BF16(&'a [bf16], &'a [bf16]),
}

impl KvCache {
    /// A zeroed pool of `dtype` rows. Fails, without allocating, when
    /// [`KvCache::floats_per_layer`] does.
    pub fn new(
        layers: usize,
        block_size: usize,
        num_blocks: usize,
        row: usize,
        kv_heads: usize,
        dtype: DType,
    ) -> Result<KvCache, DeviceError> {
        if kv_heads == 0 || !row.is_multiple_of(kv_heads) {
            return Err(DeviceError::Load(format!(
                "a KV row of {row} floats does not split into {kv_heads} heads"
            )));
        }
        let floats = Self::floats_per_layer(block_size, num_blocks, row)?;
        // Fresh zeroed mappings: a large pool costs memory only as it fills.
        let store = match dtype {
            DType::F32 => Store::F32 {
                keys: (0..layers).map(|_| Aligned::zeroed(floats)).collect(),
                values: (0..layers).map(|_| Aligned::zeroed(floats)).collect(),
            },
            DType::F16 | DType::BF16 => Store::Half {
                is_bf16: dtype == DType::BF16,
                keys: (0..layers).map(|_| Aligned::zeroed(floats)).collect(),
                values: (0..layers).map(|_| Aligned::zeroed(floats)).collect(),
            },
        };
        Ok(KvCache {
            block_size,
            row,
            kv_heads,
            store,
        })
    }

    /// Values in one layer's keys (or values): `block_size * num_blocks * row`. A pool whose
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

    /// Bytes one block of `dtype` rows takes over every layer (keys and values); `None` when
    /// that overflows.
    pub fn bytes_per_block(
        layers: usize,
        block_size: usize,
        row: usize,
        dtype: DType,
    ) -> Option<u64> {
        (2 * dtype.size_in_bytes() as u64)
            .checked_mul(layers as u64)?
            .checked_mul(block_size as u64)?
            .checked_mul(row as u64)
    }

    /// Maps every page of the pool now: writes a zero (what it already holds) once per 4 KiB,
    /// so no step pays for a block's first touch. Volatile, so the stores are kept although
    /// they change no value.
    pub fn make_resident(&mut self) {
        match &mut self.store {
            Store::F32 { keys, values } => keys.iter_mut().chain(values).for_each(|v| touch(v)),
            Store::Half { keys, values, .. } => {
                keys.iter_mut().chain(values).for_each(|v| touch(v))
            }
        }
    }

    /// Bytes of a whole pool; `None` when that overflows `u64`.
    pub fn pool_bytes(bytes_per_block: u64, num_blocks: usize) -> Option<u64> {
        bytes_per_block.checked_mul(num_blocks as u64)
    }

    /// The type rows are stored in.
    #[cfg(test)]
    pub fn dtype(&self) -> DType {
        match self.store {
            Store::F32 { .. } => DType::F32,
            Store::Half { is_bf16: false, .. } => DType::F16,
            Store::Half { is_bf16: true, .. } => DType::BF16,
        }
    }

    /// Stores one token's keys and values (each `row` floats, head after head) in `slot` of
    /// `layer`, rounded to the pool's type.
    pub fn write(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let hd = self.row / self.kv_heads;
        let (block, offset) = (slot / self.block_size, slot % self.block_size);
        for h in 0..self.kv_heads {
            let at = Self::head_row(block, h, offset, self.kv_heads, self.block_size) * hd;
            let (k, v) = (&k[h * hd..][..hd], &v[h * hd..][..hd]);
            match &mut self.store {
                Store::F32 { keys, values } => {
                    keys[layer][at..at + hd].copy_from_slice(k);
                    values[layer][at..at + hd].copy_from_slice(v);
                }
                Store::Half {
                    is_bf16,
                    keys,
                    values,
                } => {
                    let put = |dst: &mut [u16], src: &[f32]| {
                        if *is_bf16 {
                            dst.reinterpret_cast_mut::<bf16>()
                                .convert_from_f32_slice(src)
                        } else {
                            dst.reinterpret_cast_mut::<f16>()
                                .convert_from_f32_slice(src)
                        }
                    };
                    put(&mut keys[layer][at..at + hd], k);
                    put(&mut values[layer][at..at + hd], v);
                }
            }
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

    pub fn layer(&self, layer: usize) -> KvLayer<'_> {
        match &self.store {
            Store::F32 { keys, values } => KvLayer::F32(&keys[layer], &values[layer]),
            Store::Half {
                is_bf16: false,
                keys,
                values,
            } => KvLayer::F16(
                keys[layer].reinterpret_cast(),
                values[layer].reinterpret_cast(),
            ),
            Store::Half {
                is_bf16: true,
                keys,
                values,
            } => KvLayer::BF16(
                keys[layer].reinterpret_cast(),
                values[layer].reinterpret_cast(),
            ),
        }
    }
}

/// Writes `T::default()` to one element of every 4 KiB of `v`, and to its last (`v` need not
/// start on a page, so its last page may begin after the last 4 KiB stride).
fn touch<T: Default>(v: &mut [T]) {
    let step = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    let last = v.len().checked_sub(1);
    for i in (0..v.len()).step_by(step).chain(last) {
        // SAFETY: `i < v.len()`, so the element is inside `v` and ours to write.
        unsafe { std::ptr::write_volatile(v.as_mut_ptr().add(i), T::default()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hugepages::resident_fraction;

    #[test]
    fn sizes_are_checked() {
        assert_eq!(KvCache::floats_per_layer(16, 10, 64).unwrap(), 10240);
        assert_eq!(KvCache::bytes_per_block(2, 16, 64, DType::F32), Some(16384));
        assert_eq!(KvCache::bytes_per_block(2, 16, 64, DType::F16), Some(8192));
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
        assert_eq!(
            KvCache::bytes_per_block(usize::MAX, usize::MAX, 2, DType::F32),
            None
        );
        assert_eq!(KvCache::pool_bytes(u64::MAX / 2, 3), None);
    }

    #[test]
    fn a_pool_made_after_the_heap_was_written_stays_unmapped_until_used() {
        // As in a worker: the step thresholds raised, and load's written temporaries freed
        // just before the pool is made (8 MiB a layer, which the heap would have served).
        crate::heap::start_stepping();
        let junk: Vec<Vec<u8>> = (0..8).map(|_| vec![1u8; 9 << 20]).collect();
        drop(std::hint::black_box(junk));
        let c = KvCache::new(4, 16, 512, 512, 8, DType::F16).unwrap();
        for layer in 0..4 {
            let KvLayer::F16(k, v) = c.layer(layer) else {
                panic!("an f16 pool")
            };
            assert!(resident_fraction(k) < 0.1, "layer {layer} keys");
            assert!(resident_fraction(v) < 0.1, "layer {layer} values");
            assert!(k.iter().chain(v).all(|x| x.to_bits() == 0));
        }
    }

    #[test]
    fn make_resident_maps_every_page_and_keeps_the_zeros() {
        // 40 MiB a layer, past any allocator's mmap threshold: a fresh, untouched mapping.
        let mut c = KvCache::new(1, 16, 1280, 1024, 8, DType::F16).unwrap();
        let KvLayer::F16(k, v) = c.layer(0) else {
            panic!("an f16 pool")
        };
        assert!(resident_fraction(k) < 0.5 && resident_fraction(v) < 0.5);
        c.make_resident();
        let KvLayer::F16(k, v) = c.layer(0) else {
            panic!("an f16 pool")
        };
        assert_eq!(resident_fraction(k), 1.0);
        assert_eq!(resident_fraction(v), 1.0);
        assert!(k.iter().chain(v).all(|x| x.to_bits() == 0));
    }

    #[test]
    fn a_refused_pool_allocates_nothing() {
        for dtype in [DType::F32, DType::F16] {
            assert!(KvCache::new(4, 1 << 30, 1 << 20, 1 << 12, 1, dtype).is_err());
            let c = KvCache::new(2, 4, 3, 8, 2, dtype).unwrap();
            let len = match c.layer(1) {
                KvLayer::F32(k, _) => k.len(),
                KvLayer::F16(k, _) => k.len(),
                KvLayer::BF16(k, _) => k.len(),
            };
            assert_eq!(len, 96);
            assert!(KvCache::new(2, 4, 3, 8, 3, dtype).is_err());
        }
    }

    #[test]
    fn a_block_holds_each_head_contiguously() {
        let mut c = KvCache::new(1, 4, 3, 6, 2, DType::F32).unwrap();
        // Slot 5 is block 1, offset 1.
        c.write(0, 5, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[7.0; 6]);
        let KvLayer::F32(k, v) = c.layer(0) else {
            panic!("an f32 pool")
        };
        let at = |h: usize| KvCache::head_row(1, h, 1, 2, 4) * 3;
        // Block 1 starts after block 0's 2 heads × 4 positions; head 0, offset 1.
        assert_eq!(at(0), (2 * 4 + 1) * 3);
        assert_eq!(at(1), (3 * 4 + 1) * 3);
        assert_eq!(&k[at(0)..at(0) + 3], &[1.0, 2.0, 3.0]);
        assert_eq!(&k[at(1)..at(1) + 3], &[4.0, 5.0, 6.0]);
        assert_eq!(&v[at(1)..at(1) + 3], &[7.0; 3]);
    }

    /// A half-width pool stores each value rounded to nearest (ties to even) and gives back
    /// exactly that value, at the same place as an f32 pool.
    #[test]
    fn half_pools_round_each_value_once() {
        let k = [1.0f32, 1.0 + 1.0 / 4096.0, -3.5, 65504.0, 1e-8, 0.1];
        let v = [0.3f32; 6];
        for dtype in [DType::F16, DType::BF16] {
            let mut c = KvCache::new(1, 4, 3, 6, 2, dtype).unwrap();
            c.write(0, 5, &k, &v);
            let at = KvCache::head_row(1, 1, 1, 2, 4) * 3;
            let (got, want): (Vec<f32>, Vec<f32>) = match c.layer(0) {
                KvLayer::F16(keys, _) => (
                    keys[at..at + 3].iter().map(|x| x.to_f32()).collect(),
                    k[3..].iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
                ),
                KvLayer::BF16(keys, _) => (
                    keys[at..at + 3].iter().map(|x| x.to_f32()).collect(),
                    k[3..].iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
                ),
                KvLayer::F32(..) => panic!("{dtype} pool came back as f32"),
            };
            assert_eq!(got, want, "{dtype}");
            assert_eq!(c.dtype(), dtype);
        }
    }
}
