//! The command line: `herald serve | migrate | users …`.

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
    /// Database URL: sqlite://FILE (default sqlite://herald.db).
    #[arg(long = "database", env = "HERALD_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,

    /// Address to listen on: IP:port, localhost:port, or :port for every interface
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    listen: Option<String>,

    /// Allow callbacks to loopback, private and other non-public addresses (for local
    /// development and tests; off by default).
    #[arg(long, env = "HERALD_ALLOW_PRIVATE_NETWORK", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    allow_private_network: Option<bool>,

    /// A non-public network callbacks may reach all the same, as a CIDR (repeat the flag, or
    /// separate with commas in the variable), e.g. 10.20.0.0/16.
    #[arg(
        long = "allowed-network",
        env = "HERALD_ALLOWED_NETWORKS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    allowed_networks: Option<Vec<String>>,

    /// Seconds a callback attempt may take, connection included [default: 10].
    #[arg(long, env = "HERALD_CALLBACK_TIMEOUT", value_name = "SECONDS")]
    callback_timeout: Option<u64>,

    /// Delays between attempts after a failure, e.g. 0s,5s,5m,30m,2h,5h,10h,10h (the default).
    #[arg(long, env = "HERALD_RETRY_SCHEDULE", value_name = "LIST")]
    retry_schedule: Option<String>,

    /// Callback attempts in flight at once [default: 1024].
    #[arg(long, env = "HERALD_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: Option<usize>,

    /// The most callback attempts in flight at once to one host:port, over all nodes: the
    /// ceiling of each host's adaptive limit [default: 256].
    #[arg(long, env = "HERALD_MAX_PER_HOST", value_name = "N")]
    max_per_host: Option<usize>,

    /// HTTP connections open at once; more wait until one closes. A client has 10 s to send
    /// each request's head, idle keep-alive time included [default: 1024].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,

    /// Days finished deliveries stay in the delivery log [default: 30].
    #[arg(long, env = "HERALD_RETENTION_DAYS", value_name = "DAYS")]
    retention_days: Option<u64>,

    /// Days a deleted instance stays in the recycle bin before it is purged [default: 30].
    #[arg(long, env = "HERALD_RECYCLE_BIN_DAYS", value_name = "DAYS")]
    recycle_bin_days: Option<u64>,

    /// Instance writes wait while the delivery worker is further behind than this (its own
    /// backlog, not a slow receiver's), so callbacks stay this close to their events instead of
    /// queuing for minutes; `off` accepts writes however far behind it falls [default: 1s].
    #[arg(long, env = "HERALD_BACKPRESSURE_LAG", value_name = "DURATION|off")]
    backpressure_lag: Option<String>,

    /// A reverse proxy (CIDR) whose X-Forwarded-For names the client, for the per-address
    /// login budgets (repeat the flag, or separate with commas in the variable); without it the
    /// header is ignored, e.g. 127.0.0.1/32.
    #[arg(
        long = "trusted-proxy",
        env = "HERALD_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
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
            Command::Backup(args) => {
                let url = database_url(&file, args.db);
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

pub(crate) fn database_url(file: &FileConfig, db: DbArgs) -> String {
    db.database_url
        .or_else(|| file.database_url.clone())
        .unwrap_or_else(|| config::DEFAULT_DATABASE_URL.to_owned())
}

async fn serve(file: FileConfig, args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
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
    };
    let config = config::resolve(file, overrides)?;
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
    let url = database_url(&file, db);
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
