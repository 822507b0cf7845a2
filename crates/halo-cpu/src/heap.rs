//! Keeps the heap's freed step buffers mapped between steps.
//!
//! A step allocates its activations afresh (the logits of 32 rows of a 32k vocabulary are
//! 4 MB, an FFN's hidden rows 0.5 MB). glibc serves blocks past its mmap threshold (128 KiB,
//! raised only after such a block is freed) with their own mapping, unmaps them on free and
//! trims the heap's top once 128 KiB of it is free, so the next step faults every page back in:
//! on this project's VM that was 8% of a 32-sequence decode step (`perf`: `exc_page_fault` under
//! the projections' output writes, `munmap` under frees). Raising both thresholds keeps those
//! pages in the process; what it holds is bounded by the largest step's working set.

/// Blocks up to this size come from the heap (glibc's ceiling for the threshold on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory at the heap's top up to this much stays mapped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Gives the free memory of every heap back to the system, once the model is loaded and the
/// pool allocated: loading frees large temporaries (dequantized and permuted rows, the file's
/// copies before repacking) that the raised trim threshold would otherwise keep resident for
/// the process's life (a 64 MB arena for llama-1b). The step buffers come back on the first
/// steps and then stay.
pub(crate) fn release_load_leftovers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system; no live allocation moves.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets the thresholds once per process. Only glibc has these knobs; elsewhere the allocator
/// keeps its own policy.
pub(crate) fn keep_step_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator parameters; a refused value (0 returned)
        // leaves the defaults, which are correct, only slower.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        });
    }
}
