//! Weight buffers and the KV pool backed by 2 MiB pages (Linux transparent huge pages) where
//! the kernel allows.
//!
//! Why: a batch-1 decode step streams every weight once, and that stream is limited by the page
//! size, not the DRAM: on 4 KiB pages every page boundary costs a TLB walk and restarts the
//! hardware prefetcher. One core of the 2-core Zen 4 machine read a 256 MiB buffer at 12.6 GB/s
//! on 4 KiB pages against 24.3 GB/s on 2 MiB pages (plain AVX-512 loads, best of 8). The
//! system's THP mode here is `madvise`, so a buffer only gets huge pages when it asks.
//!
//! Only whole 2 MiB-aligned extents can be huge, so an [`Aligned`] buffer starts on a 2 MiB
//! boundary (a `Vec` from the allocator starts anywhere, leaving up to 2 MiB at each end, and
//! all of a matrix under 4 MiB, on small pages). Everything here is advice: where the kernel
//! refuses (another OS, THP off, no free huge pages) the buffer simply stays on small pages.

use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};

/// Huge pages are this size (x86-64 and aarch64 with 4 KiB base pages).
const HUGE: usize = 2 << 20;

/// `len` bytes whose first byte sits on a 2 MiB boundary (buffers under 2 MiB, off Linux, or
/// made by [`Aligned::unaligned`]: wherever the allocator put them).
pub(crate) struct Aligned {
    /// The allocation; only `buf[off..off + len]` is ever written (the slack around it stays
    /// untouched, so a fresh mapping's slack costs address space, not memory).
    buf: Vec<MaybeUninit<u8>>,
    off: usize,
    len: usize,
}

impl Aligned {
    /// A zero-filled buffer, marked for huge pages before its first write so that freshly mapped
    /// memory is faulted in 2 MiB at a time (no copy later).
    pub(crate) fn zeroed(len: usize) -> Aligned {
        let slack = if cfg!(target_os = "linux") && len >= HUGE {
            HUGE
        } else {
            0
        };
        let mut buf: Vec<MaybeUninit<u8>> = Vec::with_capacity(len + slack);
        // SAFETY: MaybeUninit needs no initialization.
        unsafe { buf.set_len(len + slack) };
        let off = if slack > 0 {
            buf.as_ptr().align_offset(HUGE)
        } else {
            0
        };
        let mut a = Aligned { buf, off, len };
        #[cfg(target_os = "linux")]
        a.advise(libc::MADV_HUGEPAGE);
        a.buf[off..off + len].fill(MaybeUninit::new(0));
        a
    }

    /// A copy of `bytes` in a [`zeroed`](Aligned::zeroed) buffer.
    pub(crate) fn copied(bytes: &[u8]) -> Aligned {
        let mut a = Aligned::zeroed(bytes.len());
        a.copy_from_slice(bytes);
        a
    }

    /// `v` as it is, wherever the allocator put it (no copy, no advice).
    pub(crate) fn unaligned(v: Vec<u8>) -> Aligned {
        let mut v = std::mem::ManuallyDrop::new(v);
        let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
        // SAFETY: the allocation is handed over whole (`v` is never dropped), and
        // MaybeUninit<u8> has u8's size and alignment, so the layout is unchanged.
        let buf = unsafe { Vec::from_raw_parts(ptr.cast::<MaybeUninit<u8>>(), len, cap) };
        Aligned { buf, off: 0, len }
    }

    /// Moves pages already written onto huge pages (`MADV_COLLAPSE`, Linux 6.1+): for memory the
    /// allocator recycled, which [`zeroed`](Aligned::zeroed)'s advice came too late for.
    /// Extents that are huge already are left alone, so this is cheap after a fresh mapping.
    pub(crate) fn collapse(&self) {
        #[cfg(target_os = "linux")]
        self.advise(libc::MADV_COLLAPSE);
    }

    /// Bytes from the start to advise: the whole 2 MiB extents, and the last partial one too
    /// when filling it out costs at most a sixteenth of the buffer in memory (a 2.4 MB matrix
    /// keeps its 0.4 MB tail on small pages rather than take a 2 MiB page for it).
    fn huge_len(&self) -> usize {
        let up = self.len.next_multiple_of(HUGE);
        if up - self.len <= self.len / 16 && self.off + up <= self.buf.len() {
            up
        } else {
            self.len / HUGE * HUGE
        }
    }

    /// `madvise(advice)` over [`Aligned::huge_len`]; failures are ignored (the advice is an
    /// optimisation only).
    #[cfg(target_os = "linux")]
    fn advise(&self, advice: libc::c_int) {
        let len = self.huge_len();
        if len == 0 {
            return;
        }
        // SAFETY: the range lies inside `buf` and starts on a 2 MiB boundary (len > 0 implies
        // the buffer was aligned); neither advice changes its contents (MADV_COLLAPSE copies
        // them onto the new pages).
        unsafe {
            libc::madvise(
                self.buf.as_ptr().add(self.off) as *mut libc::c_void,
                len,
                advice,
            );
        }
    }
}

impl Deref for Aligned {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `buf[off..off + len]` was initialized by `zeroed`.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().add(self.off).cast(), self.len) }
    }
}

impl DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().add(self.off).cast(), self.len)
        }
    }
}

impl Clone for Aligned {
    fn clone(&self) -> Aligned {
        Aligned::copied(self)
    }
}

impl std::fmt::Debug for Aligned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} bytes)", self.len)
    }
}

/// Advises huge pages for the whole 2 MiB extents inside `buf`, an allocation that is still
/// untouched (the KV pool: `vec![0; n]` maps zeroed pages lazily, so the advice comes before
/// the first write and each extent is faulted in whole). Decode attention reads each
/// sequence's blocks (tens of KiB each, scattered over a pool of hundreds of MB) once per step:
/// on 4 KiB pages nearly every block starts with a TLB miss. The attention bench's step
/// (bench-110m, 32 sequences x 192 positions, f16 KV, one thread) measured 24.2-25.6 ms with
/// this against 26.9-29.2 ms without, three alternated runs each.
pub(crate) fn advise_untouched<T>(buf: &[T]) {
    #[cfg(target_os = "linux")]
    {
        let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (buf.as_ptr() as usize + std::mem::size_of_val(buf)) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside `buf`'s allocation, and MADV_HUGEPAGE changes
            // neither its contents nor its mapping; a failure leaves the pages as they were.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_keep_their_contents_and_large_ones_start_on_a_huge_page() {
        for len in [0, 1, 4095, HUGE + 3, 5 << 20, (9 << 20) + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let a = Aligned::zeroed(len);
            assert!(a.len() == len && a.iter().all(|&b| b == 0));
            assert_eq!(&Aligned::unaligned(bytes.clone())[..], &bytes[..]);
            let a = Aligned::copied(&bytes);
            a.collapse();
            assert_eq!(&a[..], &bytes[..]);
            assert_eq!(&a.clone()[..], &bytes[..]);
            if cfg!(target_os = "linux") && len >= HUGE {
                assert_eq!(a.as_ptr() as usize % HUGE, 0, "{len}");
            }
        }
    }

    #[test]
    fn advice_on_an_untouched_pool_keeps_it_usable() {
        let small = vec![7u16; 100];
        advise_untouched(&small);
        assert!(small.iter().all(|&v| v == 7));
        let mut big = vec![0u16; 3 << 20];
        advise_untouched(&big);
        big.iter_mut().enumerate().for_each(|(i, v)| *v = i as u16);
        assert!(big.iter().enumerate().all(|(i, &v)| v == i as u16));
    }
}
