//! The `herald` binary: parse the command line and hand over to the library.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

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
    // Log lines are events only: the spans are for traces, and stay out of the lines.
    let events_only = tracing_subscriber::filter::filter_fn(|meta| meta.is_event());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(log_writer)
        .log_internal_errors(false);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match cli.log_format {
        herald::cli::LogFormat::Json => {
            Box::new(logs.json().with_filter(filter).with_filter(events_only))
        }
        herald::cli::LogFormat::Text => {
            use std::io::IsTerminal;
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            Box::new(
                logs.with_ansi(colour)
                    .with_filter(filter)
                    .with_filter(events_only),
            )
        }
    };
    let mut layers = vec![logs];
    let telemetry = match herald::telemetry::layer::<Registry>() {
        Ok(Some((layer, telemetry))) => {
            let spans = tracing_subscriber::filter::Targets::new()
                .with_target("herald", tracing::Level::INFO);
            layers.push(Box::new(layer.with_filter(spans)));
            Some(telemetry)
        }
        Ok(None) => None,
        Err(error) => {
            eprintln!("error: OpenTelemetry tracing could not start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::registry().with(layers).init();
    let outcome = cli.run().await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match outcome {
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
