//! The `herald` binary: parse the command line and hand over to the library.

use clap::Parser;
use std::process::ExitCode;

// Herald allocates many small, short-lived buffers per event (HTTP requests in and out, JSON,
// rows); glibc's allocator took about 13% of the server's CPU in the benchmark (`perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = herald::cli::Cli::parse();
    // Log lines go to standard error through a dedicated thread that drops what it cannot
    // write: a closed or stalled pipe (`herald serve 2>&1 | head`) must never panic or block a
    // task, or signals and requests stop being served (issue 19, item 18).
    let (log_writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herald=info,warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_writer)
        .log_internal_errors(false);
    match cli.log_format {
        herald::cli::LogFormat::Json => logs.json().init(),
        herald::cli::LogFormat::Text => {
            use std::io::IsTerminal;
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            logs.with_ansi(colour).init()
        }
    }
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                herald::error::error_chain(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}
