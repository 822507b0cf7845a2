//! What the halo-cpu benchmarks share.

/// The rayon pool a step runs in: `HALO_BENCH_THREADS` threads, default every core.
pub fn bench_pool() -> rayon::ThreadPool {
    let threads = std::env::var("HALO_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}
