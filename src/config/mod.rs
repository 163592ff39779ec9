//! Configuration: defaults, then an optional `herald.toml`, then `HERALD_*` environment
//! variables, then command-line flags ([`layers`]); validated once into [`Config`].

mod layers;

pub use layers::{FileConfig, KEYS, Overrides, Settings, example, help};

use crate::domain::{ApiToken, Backpressure, BreakerPolicy, Email, RetrySchedule};
use anyhow::{Context, bail};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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
        let settings = Settings {
            database_url: database_url.into(),
            ..Settings::default()
        };
        validate(settings, &Overrides::default()).expect("the defaults are valid")
    }
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
    let settings = file.settings(&over)?;
    validate(settings, &over)
}

/// Checks each setting and builds the configuration Herald runs with.
fn validate(s: Settings, over: &Overrides) -> anyhow::Result<Config> {
    let mut allowed_networks = Vec::new();
    for cidr in &s.allowed_networks {
        let net: ipnet::IpNet = cidr.trim().parse().with_context(|| {
            format!("allowed network `{cidr}` is not a CIDR such as 10.20.0.0/16")
        })?;
        allowed_networks.push(net.trunc());
    }
    let timeout = s.callback_timeout;
    if !(1..=300).contains(&timeout) {
        bail!("callback timeout must be 1 to 300 seconds, not {timeout}");
    }
    let retry_schedule =
        RetrySchedule::parse(&s.retry_schedule).context("invalid retry schedule")?;
    let in_flight = s.max_in_flight;
    if !(1..=10_000).contains(&in_flight) {
        bail!("max in flight must be 1 to 10000, not {in_flight}");
    }
    let per_host = s.max_per_host;
    if !(1..=10_000).contains(&per_host) {
        bail!("max per host must be 1 to 10000, not {per_host}");
    }
    let connections = s.max_connections;
    if !(1..=100_000).contains(&connections) {
        bail!("max connections must be 1 to 100000, not {connections}");
    }
    let days = s.retention_days;
    if !(1..=3650).contains(&days) {
        bail!("retention must be 1 to 3650 days, not {days}");
    }
    let bin_days = s.recycle_bin_days;
    if !(1..=3650).contains(&bin_days) {
        bail!("the recycle bin must keep instances 1 to 3650 days, not {bin_days}");
    }
    let mut proxies = Vec::new();
    for cidr in &s.trusted_proxies {
        let net: ipnet::IpNet = cidr.trim().parse().with_context(|| {
            format!("trusted proxy `{cidr}` is not a CIDR such as 10.0.0.0/8 or 127.0.0.1/32")
        })?;
        proxies.push(net.trunc());
    }
    let admin_token = match over.admin_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => Some(ApiToken::parse(token).context("HERALD_ADMIN_TOKEN is not usable")?),
        None => None,
    };
    Ok(Config {
        listen: parse_listen(&s.listen)?,
        database_url: s.database_url,
        allow_private_network: s.allow_private_network,
        allowed_networks,
        resolve_overrides: Vec::new(),
        callback_timeout: Duration::from_secs(timeout),
        retry_schedule,
        max_in_flight: in_flight,
        max_per_host: per_host,
        breaker: BreakerPolicy::default(),
        retention: Duration::from_secs(days * 86_400),
        prune_interval: Duration::from_secs(60),
        recycle_bin_retention: Duration::from_secs(bin_days * 86_400),
        migrate: !over.no_migrate,
        admin_token,
        admin_email: Email::parse("admin@herald.local").expect("valid default"),
        idle_poll: Duration::from_secs(1),
        server: crate::server::ServerLimits {
            max_connections: connections,
            trusted_proxies: proxies.into(),
            ..crate::server::ServerLimits::default()
        },
        backpressure: Backpressure::parse(&s.backpressure_lag)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file = FileConfig::from_toml(
            "listen = \"0.0.0.0:9000\"\ncallback_timeout = 5\nretry_schedule = \"1s\"",
        );
        let over = Overrides {
            callback_timeout: Some(7),
            ..Default::default()
        };
        let c = resolve(file, over).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.callback_timeout, Duration::from_secs(7));
        assert_eq!(c.retry_schedule.max_attempts(), 2);
        assert_eq!(c.database_url, Settings::default().database_url);
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
        assert!(resolve(FileConfig::from_toml("listn = \"x\""), Overrides::default()).is_err());
    }

    #[test]
    fn allowed_networks_come_from_the_file_or_the_flags() {
        let file = FileConfig::from_toml("allowed_networks = [\"10.20.0.0/16\"]");
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
        let file = FileConfig::from_toml("backpressure_lag = \"off\"");
        let c = resolve(file, Overrides::default()).unwrap();
        assert_eq!(c.backpressure, Backpressure::Off);
        let over = Overrides {
            backpressure_lag: Some("250ms".into()),
            ..Default::default()
        };
        let file = FileConfig::from_toml("backpressure_lag = \"off\"");
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
        let file = FileConfig::from_toml("trusted_proxies = [\"127.0.0.1/32\", \"10.1.2.3/8\"]");
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
