//! The `herald` binary: parse the command line and hand over to the library.

use clap::Parser;
use std::process::ExitCode;

// Herald allocates many small, short-lived buffers per event (HTTP requests in and out, JSON,
// rows); glibc's allocator took about 13% of the server's CPU in the benchmark (`perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herald=info,warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match herald::cli::Cli::parse().run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
