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
//! boundary, asked of the allocator as an alignment (a `Vec` starts anywhere, leaving up to
//! 2 MiB at each end, and all of a matrix under 4 MiB, on small pages). Everything here is advice: where the kernel
//! refuses (another OS, THP off, no free huge pages) the buffer simply stays on small pages.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Huge pages are this size (x86-64 and aarch64 with 4 KiB base pages).
const HUGE: usize = 2 << 20;

/// Element types whose all-zero bytes are the value zero, so a fresh mapping is a zeroed buffer.
///
/// # Safety
/// Every bit pattern, and all zeros in particular, must be a valid value.
pub(crate) unsafe trait ZeroBits: Copy + Default + 'static {}
// SAFETY: plain integers and floats: every bit pattern is a value, zero bits are zero.
unsafe impl ZeroBits for u8 {}
// SAFETY: as above.
unsafe impl ZeroBits for u16 {}
// SAFETY: as above.
unsafe impl ZeroBits for f32 {}

/// `len` values whose first byte sits on a 2 MiB boundary (buffers under 2 MiB, off Linux, or
/// made by [`Aligned::unaligned`]: wherever the allocator put them).
pub(crate) struct Aligned<T: ZeroBits = u8> {
    mem: Memory<T>,
    len: usize,
}

enum Memory<T> {
    /// A plain vector: small buffers, other systems, or bytes handed over as they are.
    Vec(Vec<T>),
    /// A private anonymous mapping of `bytes` bytes made for this buffer alone.
    ///
    /// Why not the allocator: by the time weights are repacked and the pool is made, the heap is
    /// full of load's freed temporaries, already written. Recycled memory keeps its small pages
    /// (the advice only shapes pages faulted after it) and whatever of it the buffer does not
    /// use stays resident: with 2 MiB of slack per matrix that was ~87 MB of llama-1b's steady
    /// RSS, and its 8 MiB pool pieces landed half on small pages. A fresh mapping is faulted in
    /// 2 MiB at a time, holds nothing it does not use, and goes back whole on drop.
    #[cfg(target_os = "linux")]
    Mapped { ptr: NonNull<T>, bytes: usize },
}

// SAFETY: `Memory::Mapped` owns its mapping exclusively, as a `Box<[T]>` would its allocation.
unsafe impl<T: Send> Send for Memory<T> {}
// SAFETY: shared access only reads (`Deref`); writes need `&mut`.
unsafe impl<T: Sync> Sync for Memory<T> {}

impl<T> Drop for Memory<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Memory::Mapped { ptr, bytes } = *self {
            // SAFETY: the mapping was made by `map_fresh` with this length and is unmapped once.
            unsafe { libc::munmap(ptr.as_ptr().cast(), bytes) };
        }
    }
}

/// A fresh, zeroed, 2 MiB-aligned mapping of at least `bytes` bytes, advised for huge pages
/// before anything touches it; `None` if the system refuses one. Its length runs to the end of
/// the last 2 MiB extent when that costs at most a sixteenth more (a 2.4 MB matrix keeps its
/// 0.4 MB tail on small pages rather than take a 2 MiB page for it).
#[cfg(target_os = "linux")]
fn map_fresh(bytes: usize) -> Option<(NonNull<u8>, usize)> {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two() && HUGE.is_multiple_of(*p))?;
    let up = bytes.checked_next_multiple_of(HUGE)?;
    let size = if up - bytes <= bytes / 16 {
        up
    } else {
        bytes.checked_next_multiple_of(page)?
    };
    let reserve = size.checked_add(HUGE)?;
    // SAFETY: a new private anonymous mapping; no existing memory is affected.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserve,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let raw = raw as usize;
    let start = raw.next_multiple_of(HUGE);
    let (head, tail) = (start - raw, raw + reserve - (start + size));
    // SAFETY: both ranges are page-aligned parts of the mapping just made, outside
    // `start .. start + size`; nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
        libc::madvise(
            start as *mut libc::c_void,
            size / HUGE * HUGE,
            libc::MADV_HUGEPAGE,
        );
    }
    Some((NonNull::new(start as *mut u8)?, size))
}

impl<T: ZeroBits> Aligned<T> {
    /// A zeroed buffer of `len` values: from 2 MiB on (Linux) a mapping of its own, faulted in
    /// 2 MiB pages as it is first written (a pool nothing writes costs no memory).
    pub(crate) fn zeroed(len: usize) -> Aligned<T> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("buffer size overflows");
        #[cfg(target_os = "linux")]
        if bytes >= HUGE {
            if let Some((ptr, bytes)) = map_fresh(bytes) {
                return Aligned {
                    mem: Memory::Mapped {
                        ptr: ptr.cast(),
                        bytes,
                    },
                    len,
                };
            }
        }
        Aligned {
            mem: Memory::Vec(vec![T::default(); len]),
            len,
        }
    }

    /// Moves pages already written onto huge pages (`MADV_COLLAPSE`, Linux 6.1+), for extents
    /// the kernel could not give a huge page when they were first written. Extents that are
    /// huge already are left alone, so this is cheap.
    pub(crate) fn collapse(&self) {
        #[cfg(target_os = "linux")]
        if let Memory::Mapped { ptr, bytes } = &self.mem {
            let len = bytes / HUGE * HUGE;
            if len > 0 {
                // SAFETY: the range lies inside the mapping, which starts on a 2 MiB boundary;
                // MADV_COLLAPSE copies the contents onto the new pages.
                unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_COLLAPSE) };
            }
        }
    }

    /// Bytes the buffer holds: its own mapping's length, or the vector's capacity.
    #[cfg(test)]
    fn allocated(&self) -> usize {
        match &self.mem {
            Memory::Vec(v) => v.capacity() * std::mem::size_of::<T>(),
            #[cfg(target_os = "linux")]
            Memory::Mapped { bytes, .. } => *bytes,
        }
    }
}

impl Aligned<u8> {
    /// `v` as it is, wherever the allocator put it (no copy, no advice).
    pub(crate) fn unaligned(v: Vec<u8>) -> Aligned {
        let len = v.len();
        Aligned {
            mem: Memory::Vec(v),
            len,
        }
    }
}

impl<T: ZeroBits> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.mem {
            Memory::Vec(v) => v,
            // SAFETY: the mapping holds at least `len` values (zero bits are a value), starts
            // on a 2 MiB boundary (aligned for T) and lives as long as `self`.
            #[cfg(target_os = "linux")]
            Memory::Mapped { ptr, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), self.len)
            },
        }
    }
}

impl<T: ZeroBits> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.mem {
            Memory::Vec(v) => v,
            // SAFETY: as in `deref`, and `&mut self` is exclusive.
            #[cfg(target_os = "linux")]
            Memory::Mapped { ptr, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), self.len)
            },
        }
    }
}

impl<T: ZeroBits> Clone for Aligned<T> {
    fn clone(&self) -> Aligned<T> {
        let mut a = Aligned::zeroed(self.len);
        a.copy_from_slice(self);
        a
    }
}

impl<T: ZeroBits> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} values)", self.len)
    }
}

/// Fraction of the 4 KiB pages under `v` that are in memory (`mincore`).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn resident_fraction<T>(v: &[T]) -> f64 {
    let page = 4096usize;
    let start = v.as_ptr() as usize / page * page;
    let end = (v.as_ptr() as usize + std::mem::size_of_val(v)).div_ceil(page) * page;
    let mut map = vec![0u8; (end - start) / page];
    // SAFETY: the range covers pages of one live allocation; `map` has a byte per page.
    let rc = unsafe { libc::mincore(start as *mut _, end - start, map.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    map.iter().filter(|&&b| b & 1 == 1).count() as f64 / map.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_keep_their_contents_and_large_ones_start_on_a_huge_page() {
        for len in [0, 1, 4095, HUGE + 3, 5 << 20, (9 << 20) + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let a = Aligned::<u8>::zeroed(len);
            assert!(a.len() == len && a.iter().all(|&b| b == 0));
            assert_eq!(&Aligned::unaligned(bytes.clone())[..], &bytes[..]);
            let mut a = Aligned::<u8>::zeroed(len);
            a.copy_from_slice(&bytes);
            a.collapse();
            assert_eq!(&a[..], &bytes[..]);
            assert_eq!(&a.clone()[..], &bytes[..]);
            if cfg!(target_os = "linux") && len >= HUGE {
                assert_eq!(a.as_ptr() as usize % HUGE, 0, "{len}");
            }
        }
    }

    #[test]
    fn large_buffers_hold_no_slack_beyond_their_last_extent() {
        for len in [
            HUGE,
            HUGE + 3,
            5 << 20,
            (9 << 20) + 17,
            (31 << 20) - 5,
            (40 << 20) + 1,
        ] {
            // Written and freed first, as load's temporaries are: none of it may be reused.
            drop(std::hint::black_box(vec![1u8; len + 3 * HUGE]));
            let a = Aligned::<u8>::zeroed(len);
            let held = a.allocated();
            #[cfg(target_os = "linux")]
            assert_eq!(
                resident_fraction(&a),
                0.0,
                "{len}: recycled or written memory"
            );
            if cfg!(target_os = "linux") {
                // The last extent whole, or the bytes rounded to (at most 64 KiB) pages.
                let whole = held == len.next_multiple_of(HUGE) && held - len <= len / 16;
                assert!(
                    whole || (held >= len && held - len < 64 << 10),
                    "{len}: {held}"
                );
            }
            assert!(a.iter().all(|&b| b == 0), "{len}");
        }
    }

    #[test]
    fn typed_buffers_start_zeroed_and_keep_what_is_written() {
        for len in [0, 3, (1 << 20) + 1, 3 << 20] {
            let mut halves = Aligned::<u16>::zeroed(len);
            let mut floats = Aligned::<f32>::zeroed(len);
            assert!(halves.iter().all(|&v| v == 0) && floats.iter().all(|&v| v == 0.0));
            halves
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as u16);
            floats
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as f32);
            assert!(halves.iter().enumerate().all(|(i, &v)| v == i as u16));
            assert!(floats.iter().enumerate().all(|(i, &v)| v == i as f32));
            assert_eq!(&floats.clone()[..], &floats[..]);
            if cfg!(target_os = "linux") && len * 2 >= HUGE {
                assert_eq!(halves.as_ptr() as usize % HUGE, 0, "{len}");
            }
        }
    }
}
