//! The command line: `herald serve | migrate | backup | users … | config …`.

mod tokens;
mod users;

use crate::config::{self, FileConfig, Overrides};

use crate::startup::{self, DEFAULT_WORKSPACE};
use crate::storage;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Herald: process instances with durable, signed webhooks (Kianda-compatible callbacks).
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Read if present; an error if named here and missing.
    #[arg(long, global = true, env = "HERALD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// How log lines are written to standard error: `text` for people (coloured only on a
    /// terminal without NO_COLOR), `json` for log collectors, one object per line. What is
    /// logged follows RUST_LOG (default `herald=info,warn`).
    #[arg(long, global = true, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API and the delivery worker.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Copy a running SQLite database to a new file, consistent as of one moment.
    Backup(BackupArgs),
    /// Manage users: add, list, set-role, deactivate, reactivate, reset-password.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Manage a user's API tokens: list, create, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Print an example configuration, or check the one in use without starting.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented herald.toml with every key at its default.
    Example,
    /// Validate herald.toml, HERALD_* variables and these flags as `serve` would, and print
    /// the result (secrets hidden); exits 1 naming what is wrong.
    Check(Box<ServeArgs>),
}

#[derive(Debug, Args)]
struct BackupArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The new file to write (it must not exist).
    file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DbArgs {
    #[arg(long = "database", env = "HERALD_DATABASE_URL", value_name = "URL", help = config::help("database_url"))]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,

    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR", help = config::help("listen"))]
    listen: Option<String>,

    #[arg(long, env = "HERALD_ALLOW_PRIVATE_NETWORK", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(),
          help = config::help("allow_private_network")
    )]
    allow_private_network: Option<bool>,

    #[arg(
        long = "allowed-network",
        env = "HERALD_ALLOWED_NETWORKS",
        value_name = "CIDR",
        value_delimiter = ',',
        help = config::help("allowed_networks")
    )]
    allowed_networks: Option<Vec<String>>,

    #[arg(long, env = "HERALD_CALLBACK_TIMEOUT", value_name = "SECONDS", help = config::help("callback_timeout"))]
    callback_timeout: Option<u64>,

    #[arg(long, env = "HERALD_RETRY_SCHEDULE", value_name = "LIST", help = config::help("retry_schedule"))]
    retry_schedule: Option<String>,

    #[arg(long, env = "HERALD_MAX_IN_FLIGHT", value_name = "N", help = config::help("max_in_flight"))]
    max_in_flight: Option<usize>,

    #[arg(long, env = "HERALD_MAX_PER_HOST", value_name = "N", help = config::help("max_per_host"))]
    max_per_host: Option<usize>,

    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "N", help = config::help("max_connections"))]
    max_connections: Option<usize>,

    #[arg(long, env = "HERALD_RETENTION_DAYS", value_name = "DAYS", help = config::help("retention_days"))]
    retention_days: Option<u64>,

    #[arg(long, env = "HERALD_RECYCLE_BIN_DAYS", value_name = "DAYS", help = config::help("recycle_bin_days"))]
    recycle_bin_days: Option<u64>,

    #[arg(long, env = "HERALD_BACKPRESSURE_LAG", value_name = "DURATION|off", help = config::help("backpressure_lag"))]
    backpressure_lag: Option<String>,

    #[arg(
        long = "trusted-proxy",
        env = "HERALD_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ',',
        help = config::help("trusted_proxies")
    )]
    trusted_proxies: Option<Vec<String>>,

    /// Do not apply migrations at start; refuse to start unless the schema is current.
    #[arg(long)]
    no_migrate: bool,
}

impl Cli {
    /// Runs the chosen command.
    pub async fn run(self) -> anyhow::Result<()> {
        let explicit = self.config.is_some();
        let path = self.config.unwrap_or_else(|| PathBuf::from("herald.toml"));
        let file = FileConfig::load(&path, explicit)?;
        if path.exists() {
            tracing::info!(file = %path.display(), "configuration file read");
        } else {
            tracing::info!(file = %path.display(), "no configuration file: defaults, HERALD_* variables and flags");
        }
        match self.command {
            Command::Serve(args) => serve(file, args).await,
            Command::Migrate(db) => migrate(file, db).await,
            Command::Users(command) => command.run(file).await,
            Command::Tokens(command) => command.run(file).await,
            Command::Config(ConfigCommand::Example) => {
                print!("{}", config::example());
                Ok(())
            }
            Command::Config(ConfigCommand::Check(args)) => {
                let config = config::resolve(file, overrides(*args))?;
                println!("the configuration is valid: {config:#?}");
                Ok(())
            }
            Command::Backup(args) => {
                let url = database_url(&file, args.db)?;
                let bytes = storage::backup(&url, &args.file).await?;
                println!(
                    "backed up {} to {} ({bytes} bytes)",
                    storage::redact_db_url(&url),
                    args.file.display()
                );
                Ok(())
            }
        }
    }
}

/// The database a command other than `serve` works on: the flag or variable, else the file's,
/// else the default.
pub(crate) fn database_url(file: &FileConfig, db: DbArgs) -> anyhow::Result<String> {
    let over = Overrides {
        database_url: db.database_url,
        ..Overrides::default()
    };
    Ok(file.settings(&over)?.database_url)
}

/// What `serve`'s flags and `HERALD_*` variables set.
fn overrides(args: ServeArgs) -> Overrides {
    Overrides {
        listen: args.listen,
        database_url: args.db.database_url,
        allow_private_network: args.allow_private_network,
        allowed_networks: args.allowed_networks,
        callback_timeout: args.callback_timeout,
        retry_schedule: args.retry_schedule,
        max_in_flight: args.max_in_flight,
        max_per_host: args.max_per_host,
        max_connections: args.max_connections,
        retention_days: args.retention_days,
        recycle_bin_days: args.recycle_bin_days,
        backpressure_lag: args.backpressure_lag,
        trusted_proxies: args.trusted_proxies,
        no_migrate: args.no_migrate,
        admin_token: std::env::var("HERALD_ADMIN_TOKEN").ok(),
    }
}

async fn serve(file: FileConfig, args: ServeArgs) -> anyhow::Result<()> {
    let config = config::resolve(file, overrides(args))?;
    let signal = startup::termination_signal()?;
    let running = startup::start(config).await?;
    // A closed standard output loses these lines, never the server (issue 19, item 18).
    let say = |line: std::fmt::Arguments<'_>| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    if let Some(b) = &running.bootstrapped {
        say(format_args!(
            "Herald created the workspace `{DEFAULT_WORKSPACE}` and its first administrator (shown once):"
        ));
        say(format_args!("  email:     {}", b.email));
        say(format_args!("  password:  {}", b.password.expose()));
        match &b.generated_token {
            Some(token) => say(format_args!("  API token: {}", token.expose())),
            None => say(format_args!("  API token: the one in HERALD_ADMIN_TOKEN")),
        }
    }
    say(format_args!(
        "Herald is listening on http://{}",
        running.addr
    ));
    let stop = running.shutdown_token();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down: no new work; finishing callbacks in flight");
        stop.cancel();
    });
    running.wait().await
}

async fn migrate(file: FileConfig, db: DbArgs) -> anyhow::Result<()> {
    startup::install_tls_provider();
    let url = database_url(&file, db)?;
    let store = storage::open(&url).await?;
    let (applied, version) = store.migrate().await.context("migrating the database")?;
    let url = storage::redact_db_url(&url);
    match applied.len() {
        0 => println!("{url} is already at version {version}"),
        1 => println!("applied 1 migration to {url}, now at version {version}"),
        n => println!("applied {n} migrations to {url}, now at version {version}"),
    }
    Ok(())
}
