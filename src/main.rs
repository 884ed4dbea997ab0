//! Entry point: parse the command line and run it; print errors without a
//! backtrace and exit with the documented code.
use clap::Parser as _;

/// jemalloc returns freed memory to the system from background threads
/// (dirty pages decay in about ten seconds), where glibc's per-thread arenas
/// keep what a one-off job such as a backup verification used: the soak
/// benchmark measures both (docs/benchmarks.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = docket::cli::Cli::parse();
    docket::http::activation::collect();
    let runtime = match docket::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(failure) = runtime.block_on(docket::cli::run(cli)) {
        eprintln!("error: {}", failure.message);
        std::process::exit(failure.code);
    }
}
