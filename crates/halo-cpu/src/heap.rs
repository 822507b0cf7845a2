//! The heap policy: load's temporaries go back to the system, then freed step buffers stay mapped.
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

/// Below this size load's temporaries come from the heap; from it on they get mappings of their
/// own that go back whole when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const LOAD_MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Where the process's heap policy stands.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static PHASE: std::sync::Mutex<Phase> = std::sync::Mutex::new(Phase::Default);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Default,
    Loading,
    Stepping,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds(mmap: libc::c_int, trim: libc::c_int) {
    // SAFETY: mallopt only changes allocator parameters; a refused value (0 returned) leaves
    // the previous one, which is correct, only slower or larger.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
    }
}

/// Before a model loads: its large temporaries (the file's rows copied for fusing or
/// repacking, dequantized and permuted rows) get mappings of their own and leave no free
/// memory behind. glibc would otherwise raise its mmap threshold as they are freed (to 32 MiB)
/// and keep up to twice that free at the top of each thread's arena, which `malloc_trim` does
/// not return for threads other than the main one: load's rayon threads kept 46 MB of
/// llama-1b's temporaries that way. Fixed values also stop that dynamic raising. A process
/// whose step buffers already stay mapped (a second model) keeps that policy.
pub(crate) fn return_load_temporaries() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut phase = PHASE.lock().unwrap_or_else(|e| e.into_inner());
        if *phase == Phase::Default {
            set_thresholds(LOAD_MMAP_THRESHOLD, LOAD_MMAP_THRESHOLD);
            *phase = Phase::Loading;
        }
    }
}

/// After the model is loaded and the pool allocated: gives the free memory of every heap back
/// (whatever load left in the heaps' free lists), then keeps freed step buffers mapped from
/// here on.
pub(crate) fn start_stepping() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut phase = PHASE.lock().unwrap_or_else(|e| e.into_inner());
        if *phase != Phase::Stepping {
            // SAFETY: malloc_trim only returns free pages to the system; no live allocation
            // moves.
            unsafe { libc::malloc_trim(0) };
            set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD);
            *phase = Phase::Stepping;
        }
    }
}

/// Decides when a burst of large steps has ended, so that the buffers it left in the heap can
/// go back: freed step buffers stay mapped (the next step of that size would fault them in
/// again), but after a long prefill the decode steps that follow need a small part of them.
#[derive(Debug, Default)]
pub(crate) struct BurstWatch {
    /// The largest step, in tokens, since the heap was last trimmed.
    peak: usize,
    /// Steps in a row since then of at most `peak / LIGHT_RATIO` tokens.
    light: u32,
}

/// A step this many times smaller than the peak is light.
const LIGHT_RATIO: usize = 8;

/// Light steps in a row that end a burst (one short pause between prefill chunks does not).
const LIGHT_STEPS: u32 = 8;

impl BurstWatch {
    /// Records a step of `tokens` tokens; true when the heap should give back its free memory
    /// now (then the watch starts over from this step).
    pub(crate) fn after_step(&mut self, tokens: usize) -> bool {
        if tokens.saturating_mul(LIGHT_RATIO) > self.peak {
            self.peak = self.peak.max(tokens);
            self.light = 0;
            return false;
        }
        self.light += 1;
        if self.light < LIGHT_STEPS {
            return false;
        }
        *self = BurstWatch {
            peak: tokens,
            light: 0,
        };
        true
    }
}

/// Below this much free memory at its top, a heap keeps it while [`release_free_memory`] runs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const RELEASE_TRIM_THRESHOLD: libc::c_int = 1 << 20;

/// A block carved from a thread's arena and freed again at once, so that the free runs glibc's
/// trim of that arena's top.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_PROBE_BYTES: usize = 1 << 20;

/// Gives the heaps' free memory back to the system (after a burst, see [`BurstWatch`]): the
/// free chunks of every arena (`malloc_trim`), and the free top of each `pool` thread's own
/// arena, which `malloc_trim` leaves alone and only a free under a low trim threshold returns
/// (after 16 prompts of ~450 tokens llama-1b's two pool threads held 61 and 63 MB there, a
/// prefill pass's buffers each). Sharing one arena instead cost 7% of a 32-sequence run.
pub(crate) fn release_free_memory(pool: &rayon::ThreadPool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Held throughout, so no other device switches the policy meanwhile; before the step
        // thresholds are raised, freed buffers go back by themselves.
        let phase = PHASE.lock().unwrap_or_else(|e| e.into_inner());
        if *phase != Phase::Stepping {
            return;
        }
        set_thresholds(MMAP_THRESHOLD, RELEASE_TRIM_THRESHOLD);
        // SAFETY: malloc_trim only returns free pages to the system; no live allocation moves.
        unsafe { libc::malloc_trim(0) };
        pool.broadcast(|_| {
            drop(std::hint::black_box(Vec::<u8>::with_capacity(
                TRIM_PROBE_BYTES,
            )))
        });
        set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = pool;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_after_a_long_prefill_releases_once() {
        let mut w = BurstWatch::default();
        assert!(!w.after_step(512) && !w.after_step(512));
        let released: Vec<bool> = (0..20).map(|_| w.after_step(16)).collect();
        assert_eq!(released.iter().filter(|&&r| r).count(), 1);
        assert!(released[LIGHT_STEPS as usize - 1]);
    }

    #[test]
    fn steady_decode_and_interleaved_prefill_keep_their_buffers() {
        let mut w = BurstWatch::default();
        assert!((0..100).all(|_| !w.after_step(32)));
        // A prefill chunk every few decode steps: never eight light steps in a row.
        let mut w = BurstWatch::default();
        assert!((0..100).all(|i| !w.after_step(if i % 5 == 0 { 512 } else { 32 })));
    }

    proptest! {
        /// A release needs LIGHT_STEPS light steps since the last release or larger step, and
        /// after one the watch's peak is the step that released.
        #[test]
        fn releases_follow_a_run_of_light_steps(steps in proptest::collection::vec(1usize..4096, 1..200)) {
            let mut w = BurstWatch::default();
            let mut run = 0u32;
            for &t in &steps {
                let peak = w.peak;
                let light = t * LIGHT_RATIO <= peak;
                run = if light { run + 1 } else { 0 };
                let released = w.after_step(t);
                prop_assert_eq!(released, light && run == LIGHT_STEPS);
                if released {
                    run = 0;
                    prop_assert_eq!(w.peak, t);
                }
            }
        }
    }
}
