//! Entry point: parse the command line and run it; print errors without a
//! backtrace and exit with the documented code.
use clap::Parser as _;

fn main() {
    let cli = docket::cli::Cli::parse();
    docket::http::activation::collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
