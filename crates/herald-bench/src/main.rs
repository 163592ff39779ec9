//! `herald-bench`: Herald's benchmark program (see `bench.rs` and BENCHMARKS.md).
//!
//! ```text
//! cargo build --release && cargo run --release -p herald-bench -- --only 1,2,4
//! ```

mod bench;

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Measures Herald end to end on this machine (starts its own Herald processes and receiver)."
)]
struct Args {
    /// A PostgreSQL server URL (each scenario gets a fresh database on it); SQLite by default.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// A smoke run of a few seconds instead of the full scenarios.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only these scenarios (for example `--only 2,5`), to profile one; all by default.
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=13))]
    only: Vec<u8>,
    /// The `herald` binary to measure [default: the one beside this program, as `cargo build`
    /// leaves it].
    #[arg(long, value_name = "PATH")]
    herald: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let herald = match args.herald {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("herald"),
    };
    if !herald.is_file() {
        anyhow::bail!(
            "no herald binary at {}: build it first (`cargo build --release`) or name one with --herald",
            herald.display()
        );
    }
    bench::run(bench::BenchOptions {
        database: args.database,
        quick: args.quick,
        json: args.json,
        only: args.only,
        herald,
    })
    .await
    .map(|_| ())
}
