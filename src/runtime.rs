//! The async runtime every command runs on, sized for the small machines
//! docket is made for (see ARCHITECTURE.md, "What runs where").
//!
//! Request handlers and background tasks run on one worker thread per core.
//! Store reads that can scan, store writes of jobs, search queries, the
//! indexer's steps and the shipper run on the blocking pool, which is
//! bounded: on 2 cores more threads than this only queue for the same CPUs
//! while each keeps its stack and allocator cache, and a burst of 200
//! parallel searches would otherwise leave 200 idle threads behind it.
//! Idle blocking threads exit after [`KEEP_ALIVE`].
use std::time::Duration;

/// Blocking threads per core (jobs such as a backup or a verification hold
/// one for their whole run, so the pool keeps room beside them).
const BLOCKING_PER_CORE: usize = 4;
/// Blocking threads on top of the per-core share, for long jobs.
const BLOCKING_SPARE: usize = 4;
/// How long an idle blocking thread waits for work before it exits.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The cores this process may use (cgroup and affinity limits included).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// The bound of the blocking pool on this machine.
pub fn max_blocking_threads() -> usize {
    cores() * BLOCKING_PER_CORE + BLOCKING_SPARE
}

/// The multi-threaded runtime with the bounds above.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .max_blocking_threads(max_blocking_threads())
        .thread_keep_alive(KEEP_ALIVE)
        .enable_all()
        .build()
}
