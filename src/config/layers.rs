//! Every setting, its default (here and nowhere else) and what it means, layered by figment:
//! defaults < `herald.toml` < `HERALD_*` variables and flags (clap lets a flag win over its
//! variable). [`super::resolve`] then validates the result into a `Config`.

use anyhow::Context;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The settings as layered, before validation. Unknown keys in a file are an error, so typos
/// show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: String,
    pub database_url: String,
    pub allow_private_network: bool,
    pub allowed_networks: Vec<String>,
    pub callback_timeout: u64,
    pub retry_schedule: String,
    pub max_in_flight: usize,
    pub max_per_host: usize,
    pub max_connections: usize,
    pub retention_days: u64,
    pub recycle_bin_days: u64,
    pub backpressure_lag: String,
    pub trusted_proxies: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            database_url: "sqlite://herald.db".to_owned(),
            allow_private_network: false,
            allowed_networks: Vec::new(),
            callback_timeout: 10,
            retry_schedule: crate::domain::RetrySchedule::DEFAULT.to_owned(),
            max_in_flight: 1024,
            // High enough for a receiver that serves a few hundred at once to be used fully
            // (decision 0009); each host starts at 8 and gets more only while it keeps up.
            max_per_host: 256,
            max_connections: 1024,
            retention_days: 30,
            recycle_bin_days: 30,
            backpressure_lag: "1s".to_owned(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// What each key means, in the order `herald config example` prints them. A test checks that
/// every key of [`Settings`] is here.
pub const KEYS: &[(&str, &str)] = &[
    (
        "listen",
        "Address to listen on: IP:port, localhost:port, or :port for every interface.",
    ),
    (
        "database_url",
        "sqlite://FILE (one node) or postgres://USER@HOST/DB (one node or a fleet).",
    ),
    (
        "allow_private_network",
        "Allow callbacks to loopback, private and other non-public addresses (development).",
    ),
    (
        "allowed_networks",
        "Non-public networks callbacks may reach all the same, as CIDRs such as \"10.20.0.0/16\".",
    ),
    (
        "callback_timeout",
        "Seconds a callback attempt may take, connection included (1 to 300).",
    ),
    (
        "retry_schedule",
        "Delays between attempts after a failure (ms, s, m, h, d), comma-separated.",
    ),
    (
        "max_in_flight",
        "Callback attempts in flight at once on this node.",
    ),
    (
        "max_per_host",
        "The most callback attempts in flight at once to one host:port over all nodes: the ceiling of each host's adaptive limit.",
    ),
    (
        "max_connections",
        "HTTP connections open at once; a client has 10 s to send each request's head.",
    ),
    (
        "retention_days",
        "Days finished deliveries stay in the delivery log.",
    ),
    (
        "recycle_bin_days",
        "Days a deleted instance stays in the recycle bin before it is purged.",
    ),
    (
        "backpressure_lag",
        "Instance writes wait while a callback queued now would start later than this (\"off\": never wait).",
    ),
    (
        "trusted_proxies",
        "Reverse proxies (CIDRs) whose X-Forwarded-For names the client, such as \"127.0.0.1/32\".",
    ),
];

/// `herald.toml`, if there is one: a missing file is only an error when the operator named it.
#[derive(Debug, Default, Clone)]
pub struct FileConfig {
    /// Where it was read, and its text.
    source: Option<(String, String)>,
}

impl FileConfig {
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self {
                source: Some((path.display().to_string(), text)),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// A file with this text (tests).
    pub fn from_toml(text: &str) -> Self {
        Self {
            source: Some(("herald.toml".to_owned(), text.to_owned())),
        }
    }

    /// The defaults, this file and `over` layered.
    pub fn settings(&self, over: &Overrides) -> anyhow::Result<Settings> {
        let mut layers = Figment::from(Serialized::defaults(Settings::default()));
        if let Some((_, text)) = &self.source {
            layers = layers.merge(Toml::string(text));
        }
        let layered = layers.merge(Serialized::defaults(over)).extract();
        match (&self.source, layered) {
            (_, Ok(settings)) => Ok(settings),
            (Some((name, _)), Err(e)) => Err(anyhow::anyhow!("{name}: {e}")),
            (None, Err(e)) => Err(anyhow::anyhow!("{e}")),
        }
    }
}

/// Values from `HERALD_*` variables and flags; `None` leaves the layer below.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private_network: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_networks: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_host: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recycle_bin_days: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backpressure_lag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    /// `--no-migrate`: not a setting of the file.
    #[serde(skip)]
    pub no_migrate: bool,
    /// `HERALD_ADMIN_TOKEN`, read only from the environment (a secret stays out of files).
    #[serde(skip)]
    pub admin_token: Option<String>,
}

/// A commented `herald.toml` with every key at its default.
pub fn example() -> String {
    let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
    let mut out = String::from(
        "# herald.toml: every key with its default. Delete what you do not change; HERALD_*\n\
         # variables (HERALD_MAX_PER_HOST for max_per_host) and flags win over this file.\n",
    );
    for (key, doc) in KEYS {
        out.push('\n');
        out.push_str(&format!("# {doc}\n"));
        out.push_str(&format!("{key} = {}\n", toml_value(&defaults[*key])));
    }
    out
}

/// A setting's text for `--help`: what it means and its default.
pub fn help(key: &str) -> String {
    let doc = KEYS.iter().find(|(k, _)| *k == key).map_or("", |(_, d)| *d);
    let value = serde_json::to_value(Settings::default())
        .ok()
        .and_then(|v| v.get(key).cloned())
        .unwrap_or_default();
    let shown = match &value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) if items.is_empty() => "none".to_owned(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let list = if value.is_array() {
        " Repeat the flag, or separate with commas in the variable."
    } else {
        ""
    };
    format!("{doc}{list} [default: {shown}]")
}

/// A JSON value of the kinds [`Settings`] holds, as TOML.
fn toml_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        // A JSON string is a valid TOML basic string for the characters settings hold.
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_names_every_key_and_reads_back_as_the_defaults() {
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let keys: Vec<&str> = defaults
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let documented: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        let mut sorted = documented.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "every setting documented once, nothing else");
        let text = example();
        let read = FileConfig::from_toml(&text)
            .settings(&Overrides::default())
            .unwrap();
        assert_eq!(read, Settings::default());
        assert!(text.contains(
            "# Days finished deliveries stay in the delivery log.\nretention_days = 30\n"
        ));
        assert!(text.contains("allowed_networks = []"));
    }

    #[test]
    fn help_shows_each_default_from_the_one_place_it_lives() {
        assert_eq!(
            help("max_per_host"),
            "The most callback attempts in flight at once to one host:port over all nodes: the ceiling of each host's adaptive limit. [default: 256]"
        );
        assert!(help("backpressure_lag").ends_with("[default: 1s]"));
        assert!(help("trusted_proxies").ends_with("variable. [default: none]"));
    }

    #[test]
    fn overrides_beat_the_file_which_beats_the_defaults() {
        let file = FileConfig::from_toml("max_per_host = 64\nretention_days = 7");
        let over = Overrides {
            max_per_host: Some(32),
            ..Overrides::default()
        };
        let s = file.settings(&over).unwrap();
        assert_eq!((s.max_per_host, s.retention_days), (32, 7));
        assert_eq!(s.callback_timeout, 10);
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_file_and_the_key() {
        let e = FileConfig::from_toml("max_per_host = \"many\"")
            .settings(&Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("herald.toml") && e.contains("max_per_host"),
            "{e}"
        );
        let e = FileConfig::from_toml("listn = \"x\"")
            .settings(&Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
    }
}
