//! Warmup arithmetic: how many KV blocks fit in free memory, and which CUDA-graph bucket a
//! decode batch replays. Pure functions, tested without a GPU.
//!
//! Warmup allocates every activation buffer for the largest step and runs that step before it
//! reads free memory, so what is measured already excludes the step's peak; the headroom kept
//! on top covers graph instantiation and allocator fragmentation. A batch at the full budget
//! then cannot run out of memory after warmup.

use halo_hal::{DeviceError, WarmupRequest};

/// Memory left untouched after the KV pool: the larger of 5% of the card and 512 MiB.
pub fn headroom_bytes(total_bytes: u64) -> u64 {
    (total_bytes / 20).max(512 << 20)
}

/// The number of KV blocks warmup allocates.
///
/// `free_bytes` is read after the activations, cuBLAS workspace and weights are resident.
/// An explicit `num_blocks` or `kv_cache_bytes` in the request wins, but must still fit.
pub fn kv_pool_blocks(
    request: &WarmupRequest,
    free_bytes: u64,
    total_bytes: u64,
    bytes_per_block: u64,
) -> Result<usize, DeviceError> {
    if request.block_size == 0 || bytes_per_block == 0 {
        return Err(DeviceError::BadBatch("block size must be positive".into()));
    }
    let usable = free_bytes.saturating_sub(headroom_bytes(total_bytes));
    let fit = (usable / bytes_per_block) as usize;
    let wanted = match (request.num_blocks, request.kv_cache_bytes) {
        (Some(n), _) => n,
        (None, Some(bytes)) => (bytes / bytes_per_block) as usize,
        (None, None) => fit,
    };
    let one_sequence = request.max_seq_len.div_ceil(request.block_size);
    if wanted > fit {
        return Err(DeviceError::OutOfMemory(format!(
            "{wanted} KV blocks of {bytes_per_block} bytes do not fit: {free_bytes} bytes free, {} kept as headroom",
            headroom_bytes(total_bytes)
        )));
    }
    if wanted < one_sequence {
        return Err(DeviceError::OutOfMemory(format!(
            "the KV pool holds {wanted} blocks, fewer than the {one_sequence} one sequence of {} tokens needs",
            request.max_seq_len
        )));
    }
    Ok(wanted)
}

/// Decode batch sizes a CUDA graph is captured for: powers of two up to 8, then steps of 8 up
/// to 64, then of 32; always ending at `max_seqs`. Padding waste stays under ~25% past 8.
pub fn graph_buckets(max_seqs: usize) -> Vec<usize> {
    let mut b = Vec::new();
    let mut n = 1;
    while n <= max_seqs {
        b.push(n);
        n = match n {
            0..=4 => n * 2,
            8..=63 => n + 8,
            _ => n + 32,
        };
    }
    if b.last() != Some(&max_seqs) && max_seqs > 0 {
        b.push(max_seqs);
    }
    b
}

/// The smallest captured bucket that holds `n` sequences; `None` runs the step eagerly.
pub fn choose_bucket(buckets: &[usize], n: usize) -> Option<usize> {
    buckets.iter().copied().filter(|&b| b >= n).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn req() -> WarmupRequest {
        WarmupRequest {
            block_size: 16,
            max_seq_len: 2048,
            ..Default::default()
        }
    }

    #[test]
    fn sizes_from_free_memory_minus_headroom() {
        // 80 GiB card, 60 GiB free: 4 GiB headroom, 56 GiB of 2 MiB blocks.
        let n = kv_pool_blocks(&req(), 60 * GIB, 80 * GIB, 2 << 20).unwrap();
        assert_eq!(n, 56 * 512);
        // Small card: the 512 MiB floor applies.
        assert_eq!(headroom_bytes(4 * GIB), 512 << 20);
    }

    #[test]
    fn explicit_requests_win_but_must_fit() {
        let mut r = req();
        r.num_blocks = Some(200);
        assert_eq!(
            kv_pool_blocks(&r, 60 * GIB, 80 * GIB, 1 << 20).unwrap(),
            200
        );
        r.num_blocks = None;
        r.kv_cache_bytes = Some(GIB);
        assert_eq!(
            kv_pool_blocks(&r, 60 * GIB, 80 * GIB, 1 << 20).unwrap(),
            1024
        );
        r.kv_cache_bytes = Some(70 * GIB);
        assert!(matches!(
            kv_pool_blocks(&r, 60 * GIB, 80 * GIB, 1 << 20),
            Err(DeviceError::OutOfMemory(_))
        ));
    }

    #[test]
    fn a_pool_smaller_than_one_sequence_is_out_of_memory() {
        // 128 blocks needed for 2048 tokens; only ~100 fit.
        let free = headroom_bytes(8 * GIB) + 100 * (1 << 20);
        assert!(matches!(
            kv_pool_blocks(&req(), free, 8 * GIB, 1 << 20),
            Err(DeviceError::OutOfMemory(_))
        ));
    }

    #[test]
    fn buckets_cover_every_batch_size() {
        assert_eq!(graph_buckets(1), vec![1]);
        assert_eq!(graph_buckets(6), vec![1, 2, 4, 6]);
        assert_eq!(
            graph_buckets(64),
            vec![1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
        );
        assert_eq!(*graph_buckets(100).last().unwrap(), 100);
        assert_eq!(choose_bucket(&graph_buckets(64), 9), Some(16));
        assert_eq!(choose_bucket(&graph_buckets(64), 65), None);
    }

    proptest! {
        #[test]
        fn chosen_bucket_is_the_tightest_fit(max in 1usize..300, n in 1usize..300) {
            let b = graph_buckets(max);
            prop_assert!(b.windows(2).all(|w| w[0] < w[1]));
            match choose_bucket(&b, n) {
                Some(c) => {
                    prop_assert!(c >= n && n <= max);
                    prop_assert!(b.iter().all(|&x| x < n || x >= c));
                }
                None => prop_assert!(n > max),
            }
        }

        #[test]
        fn pool_never_exceeds_free_minus_headroom(free in 0u64..(200 * GIB), bpb in 1u64..(64 << 20)) {
            let total = 200 * GIB;
            if let Ok(n) = kv_pool_blocks(&req(), free, total, bpb) {
                prop_assert!(n as u64 * bpb + headroom_bytes(total) <= free);
            }
        }
    }
}
