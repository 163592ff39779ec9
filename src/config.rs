//! Configuration: defaults, then an optional `herald.toml`, then `HERALD_*` environment
//! variables, then command-line flags; validated once into [`Config`].

use crate::domain::{ApiToken, Backpressure, BreakerPolicy, Email, RetrySchedule};
use anyhow::{Context, bail};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://herald.db";
/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Callback attempts in flight at once on a node, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// The default ceiling of one host's adaptive concurrency over the fleet: high enough for a
/// receiver that serves a few hundred at once to be used fully (decision 0009), while each
/// host starts at 8 and gets more only while it keeps answering quickly.
pub const DEFAULT_MAX_PER_HOST: usize = 256;

/// What `herald serve` runs with, validated.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub allow_private_network: bool,
    /// Non-public networks callbacks may reach all the same.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Fixed DNS answers (tests).
    pub resolve_overrides: Vec<(String, std::net::IpAddr)>,
    pub callback_timeout: Duration,
    pub retry_schedule: RetrySchedule,
    pub max_in_flight: usize,
    /// Attempts in flight at once to one host (`host:port`).
    pub max_per_host: usize,
    pub breaker: BreakerPolicy,
    /// How long finished deliveries stay in the log.
    pub retention: Duration,
    /// How often the log is pruned (and the recycle bin emptied of what is past its time).
    pub prune_interval: Duration,
    /// How long a deleted instance stays in the recycle bin before it is purged.
    pub recycle_bin_retention: Duration,
    /// Apply migrations at start (`--no-migrate` turns it off).
    pub migrate: bool,
    /// The first administrator's token on a fresh database (`HERALD_ADMIN_TOKEN`).
    pub admin_token: Option<ApiToken>,
    pub admin_email: Email,
    /// How long an idle worker sleeps before looking for work other nodes queued.
    pub idle_poll: Duration,
    /// Open connections and the request-head deadline of the HTTP server.
    pub server: crate::server::ServerLimits,
    /// When instance writes wait for the delivery worker (decision 0011).
    pub backpressure: Backpressure,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &crate::storage::redact_db_url(&self.database_url),
            )
            .field("allow_private_network", &self.allow_private_network)
            .field("allowed_networks", &self.allowed_networks)
            .field("callback_timeout", &self.callback_timeout)
            .field("retry_schedule", &self.retry_schedule)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_per_host", &self.max_per_host)
            .field("backpressure", &self.backpressure)
            .field("server", &self.server)
            .field("retention", &self.retention)
            .field("recycle_bin_retention", &self.recycle_bin_retention)
            .field("migrate", &self.migrate)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Config {
    /// A configuration with every default and the given database, for tests and embedding.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            database_url: database_url.into(),
            allow_private_network: false,
            allowed_networks: Vec::new(),
            resolve_overrides: Vec::new(),
            callback_timeout: Duration::from_secs(10),
            retry_schedule: RetrySchedule::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_per_host: DEFAULT_MAX_PER_HOST,
            breaker: BreakerPolicy::default(),
            retention: Duration::from_secs(30 * 86_400),
            prune_interval: Duration::from_secs(60),
            recycle_bin_retention: Duration::from_secs(30 * 86_400),
            migrate: true,
            admin_token: None,
            admin_email: Email::parse("admin@herald.local").expect("valid default"),
            idle_poll: Duration::from_secs(1),
            server: crate::server::ServerLimits::default(),
            backpressure: Backpressure::DEFAULT,
        }
    }
}

/// The optional `herald.toml`. Every key is optional; unknown keys are an error so typos show.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub allow_private_network: Option<bool>,
    /// CIDRs such as `10.20.0.0/16`.
    pub allowed_networks: Option<Vec<String>>,
    /// Seconds.
    pub callback_timeout: Option<u64>,
    pub retry_schedule: Option<String>,
    pub max_in_flight: Option<usize>,
    pub max_per_host: Option<usize>,
    pub max_connections: Option<usize>,
    pub retention_days: Option<u64>,
    pub recycle_bin_days: Option<u64>,
    /// `off` or a duration such as `1s`.
    pub backpressure_lag: Option<String>,
    /// CIDRs of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
}

impl FileConfig {
    /// Reads `path`; a missing file is only an error when the operator named it explicitly.
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Values from the environment and flags (clap already let flags win over `HERALD_*`).
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub allow_private_network: Option<bool>,
    pub allowed_networks: Option<Vec<String>>,
    pub callback_timeout: Option<u64>,
    pub retry_schedule: Option<String>,
    pub max_in_flight: Option<usize>,
    pub max_per_host: Option<usize>,
    pub max_connections: Option<usize>,
    pub retention_days: Option<u64>,
    pub recycle_bin_days: Option<u64>,
    pub backpressure_lag: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub no_migrate: bool,
    pub admin_token: Option<String>,
}

/// A listen address: `IP:port`, `[IPv6]:port`, `localhost:port` (127.0.0.1) or `:port` (every
/// interface, as Go and Caddy read it).
fn parse_listen(text: &str) -> anyhow::Result<SocketAddr> {
    let text = text.trim();
    let bad = || {
        anyhow::anyhow!(
            "listen address `{text}` is not IP:port, localhost:port or :port (such as 127.0.0.1:8080)"
        )
    };
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip: std::net::IpAddr = match host {
        "" => std::net::Ipv4Addr::UNSPECIFIED.into(),
        h if h.eq_ignore_ascii_case("localhost") => std::net::Ipv4Addr::LOCALHOST.into(),
        _ => return Err(bad()),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Layers overrides over the file over defaults, and validates the result.
pub fn resolve(file: FileConfig, over: Overrides) -> anyhow::Result<Config> {
    let mut config = Config::with_database(
        over.database_url
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
    );
    let listen = over
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    config.listen = parse_listen(&listen)?;
    config.allow_private_network = over
        .allow_private_network
        .or(file.allow_private_network)
        .unwrap_or(false);
    for cidr in over
        .allowed_networks
        .or(file.allowed_networks)
        .unwrap_or_default()
    {
        let net: ipnet::IpNet = cidr.trim().parse().with_context(|| {
            format!("allowed network `{cidr}` is not a CIDR such as 10.20.0.0/16")
        })?;
        config.allowed_networks.push(net.trunc());
    }
    let timeout = over
        .callback_timeout
        .or(file.callback_timeout)
        .unwrap_or(10);
    if !(1..=300).contains(&timeout) {
        bail!("callback timeout must be 1 to 300 seconds, not {timeout}");
    }
    config.callback_timeout = Duration::from_secs(timeout);
    if let Some(schedule) = over.retry_schedule.or(file.retry_schedule) {
        config.retry_schedule =
            RetrySchedule::parse(&schedule).context("invalid retry schedule")?;
    }
    let in_flight = over
        .max_in_flight
        .or(file.max_in_flight)
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if !(1..=10_000).contains(&in_flight) {
        bail!("max in flight must be 1 to 10000, not {in_flight}");
    }
    config.max_in_flight = in_flight;
    let per_host = over
        .max_per_host
        .or(file.max_per_host)
        .unwrap_or(DEFAULT_MAX_PER_HOST);
    if !(1..=10_000).contains(&per_host) {
        bail!("max per host must be 1 to 10000, not {per_host}");
    }
    config.max_per_host = per_host;
    let connections = over
        .max_connections
        .or(file.max_connections)
        .unwrap_or(config.server.max_connections);
    if !(1..=100_000).contains(&connections) {
        bail!("max connections must be 1 to 100000, not {connections}");
    }
    config.server.max_connections = connections;
    let days = over.retention_days.or(file.retention_days).unwrap_or(30);
    if !(1..=3650).contains(&days) {
        bail!("retention must be 1 to 3650 days, not {days}");
    }
    config.retention = Duration::from_secs(days * 86_400);
    let bin_days = over
        .recycle_bin_days
        .or(file.recycle_bin_days)
        .unwrap_or(30);
    if !(1..=3650).contains(&bin_days) {
        bail!("the recycle bin must keep instances 1 to 3650 days, not {bin_days}");
    }
    config.recycle_bin_retention = Duration::from_secs(bin_days * 86_400);
    let mut proxies = Vec::new();
    for cidr in over
        .trusted_proxies
        .or(file.trusted_proxies)
        .unwrap_or_default()
    {
        let net: ipnet::IpNet = cidr.trim().parse().with_context(|| {
            format!("trusted proxy `{cidr}` is not a CIDR such as 10.0.0.0/8 or 127.0.0.1/32")
        })?;
        proxies.push(net.trunc());
    }
    config.server.trusted_proxies = proxies.into();
    if let Some(lag) = over.backpressure_lag.or(file.backpressure_lag) {
        config.backpressure = Backpressure::parse(&lag)?;
    }
    config.migrate = !over.no_migrate;
    if let Some(token) = over.admin_token.filter(|t| !t.is_empty()) {
        config.admin_token =
            Some(ApiToken::parse(&token).context("HERALD_ADMIN_TOKEN is not usable")?);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"0.0.0.0:9000\"\ncallback_timeout = 5\nretry_schedule = \"1s\"",
        )
        .unwrap();
        let over = Overrides {
            callback_timeout: Some(7),
            ..Default::default()
        };
        let c = resolve(file, over).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.callback_timeout, Duration::from_secs(7));
        assert_eq!(c.retry_schedule.max_attempts(), 2);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn listen_addresses_in_the_usual_forms() {
        for (text, want) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:9000", "[::1]:9000"),
            ("localhost:8080", "127.0.0.1:8080"),
            (":8080", "0.0.0.0:8080"),
        ] {
            assert_eq!(parse_listen(text).unwrap().to_string(), want, "{text}");
        }
        for bad in ["nope", "8080", "example.com:80", ":http", "localhost:99999"] {
            let err = parse_listen(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(":port"), "{err}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = resolve(
            FileConfig::default(),
            Overrides {
                listen: Some("nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"));
        let err = resolve(
            FileConfig::default(),
            Overrides {
                callback_timeout: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("timeout"));
        assert!(toml::from_str::<FileConfig>("listn = \"x\"").is_err());
    }

    #[test]
    fn allowed_networks_come_from_the_file_or_the_flags() {
        let file: FileConfig = toml::from_str("allowed_networks = [\"10.20.0.0/16\"]").unwrap();
        let c = resolve(file, Overrides::default()).unwrap();
        assert_eq!(
            c.allowed_networks,
            vec!["10.20.0.0/16".parse::<ipnet::IpNet>().unwrap()]
        );
        let over = Overrides {
            allowed_networks: Some(vec!["192.168.1.7/24".into()]),
            ..Default::default()
        };
        let c = resolve(FileConfig::default(), over).unwrap();
        assert_eq!(c.allowed_networks[0].to_string(), "192.168.1.0/24");
        let bad = Overrides {
            allowed_networks: Some(vec!["10.0.0.0/33".into()]),
            ..Default::default()
        };
        assert!(
            resolve(FileConfig::default(), bad)
                .unwrap_err()
                .to_string()
                .contains("10.0.0.0/33")
        );
    }

    #[test]
    fn backpressure_is_on_by_default_and_layered_like_the_rest() {
        let c = resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(c.backpressure, Backpressure::DEFAULT);
        let file: FileConfig = toml::from_str("backpressure_lag = \"off\"").unwrap();
        let c = resolve(file, Overrides::default()).unwrap();
        assert_eq!(c.backpressure, Backpressure::Off);
        let over = Overrides {
            backpressure_lag: Some("250ms".into()),
            ..Default::default()
        };
        let file: FileConfig = toml::from_str("backpressure_lag = \"off\"").unwrap();
        assert_eq!(
            resolve(file, over).unwrap().backpressure,
            Backpressure::AtLag(Duration::from_millis(250))
        );
        let bad = Overrides {
            backpressure_lag: Some("soon".into()),
            ..Default::default()
        };
        let e = resolve(FileConfig::default(), bad).unwrap_err().to_string();
        assert!(e.contains("backpressure lag") && e.contains("soon"), "{e}");
    }

    #[test]
    fn trusted_proxies_are_cidrs_and_a_bad_one_is_named() {
        let file: FileConfig =
            toml::from_str("trusted_proxies = [\"127.0.0.1/32\", \"10.1.2.3/8\"]").unwrap();
        let c = resolve(file, Overrides::default()).unwrap();
        assert_eq!(
            c.server.trusted_proxies.to_vec(),
            vec![
                "127.0.0.1/32".parse::<ipnet::IpNet>().unwrap(),
                "10.0.0.0/8".parse().unwrap()
            ]
        );
        let bad = Overrides {
            trusted_proxies: Some(vec!["proxy.local".into()]),
            ..Default::default()
        };
        let e = resolve(FileConfig::default(), bad).unwrap_err().to_string();
        assert!(e.contains("proxy.local"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = Config::with_database("postgres://u:hunter2@db/h");
        c.admin_token = Some(ApiToken::parse("a-very-secret-admin-token").unwrap());
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2") && !text.contains("a-very-secret"));
    }
}
