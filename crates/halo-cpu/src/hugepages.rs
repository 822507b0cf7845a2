//! Weight buffers backed by 2 MiB pages (Linux transparent huge pages) where the kernel allows.
//!
//! Why: a batch-1 decode step streams every weight once, and that stream is limited by the page
//! size, not the DRAM: on 4 KiB pages every page boundary costs a TLB walk and restarts the
//! hardware prefetcher. One core of the 2-core Zen 4 machine read a 256 MiB buffer at 12.6 GB/s
//! on 4 KiB pages against 24.3 GB/s on 2 MiB pages (plain AVX-512 loads, best of 8). The
//! system's THP mode here is `madvise`, so a buffer only gets huge pages when it asks.
//!
//! Only whole 2 MiB-aligned extents inside a buffer can be huge; the ragged ends stay on small
//! pages. Everything here is advice: where the kernel refuses (another OS, THP off, no free
//! huge pages) the buffer is simply left as it is.

/// Huge pages are this size (x86-64 and aarch64 with 4 KiB base pages).
#[cfg(target_os = "linux")]
const HUGE: usize = 2 << 20;

/// A zero-filled buffer of `len` bytes, marked for huge pages before its first write so that
/// freshly mapped memory is faulted in 2 MiB at a time (no copy later).
pub(crate) fn zeroed(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    advise(v.as_ptr(), len, libc::MADV_HUGEPAGE);
    v.resize(len, 0);
    v
}

/// Moves `buf`'s already written pages onto huge pages (`MADV_COLLAPSE`, Linux 6.1+): for memory
/// the allocator recycled, which [`zeroed`]'s advice came too late for. Extents that are huge
/// already are left alone, so after [`zeroed`] this is cheap.
pub(crate) fn collapse(buf: &[u8]) {
    #[cfg(target_os = "linux")]
    advise(buf.as_ptr(), buf.len(), libc::MADV_COLLAPSE);
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// `madvise(advice)` over the 2 MiB-aligned extents of `[ptr, ptr + len)`; failures are ignored
/// (the advice is an optimisation only).
#[cfg(target_os = "linux")]
fn advise(ptr: *const u8, len: usize, advice: libc::c_int) {
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside the caller's allocation, and neither advice changes
        // its contents (MADV_COLLAPSE copies them onto the new pages).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, advice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_keep_their_contents() {
        for len in [0, 1, 4095, 5 << 20, (9 << 20) + 17] {
            let mut v = zeroed(len);
            assert!(v.len() == len && v.iter().all(|&b| b == 0));
            for (i, b) in v.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            collapse(&v);
            assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        }
    }
}
