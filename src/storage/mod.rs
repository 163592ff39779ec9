//! Storage: small traits by role (`roles.rs`, gathered in [`Store`]) with a SQLite and a
//! PostgreSQL implementation. The records they exchange are in `records.rs`; what both
//! backends run is written once (`batch`, `fanout`, `health`, `queue_sql`, `shared`), and each
//! backend keeps only its hot transactions' dialect and its connection settings.
//!
//! Every change to an instance writes, in the same transaction, the event and one pending
//! delivery per enabled URL (the transactional outbox). The delivery queue lives only here:
//! workers claim rows with a lease and write results back in batches.
//!
//! **Architecture Invariant:** callers above this module never see SQL or a backend type; they
//! hold an `Arc<dyn Store>` and both backends pass the same conformance suite
//! (`tests/api/storage.rs`).

mod batch;
mod fanout;
pub mod group;
pub(crate) mod health;
mod migrate;
pub mod postgres;
mod queue_sql;
mod records;
mod roles;
mod shared;
pub mod sqlite;

pub use crate::domain::NextStep;
use crate::domain::{
    BreakerPolicy, CallbackFormat, DeliveryId, Email, EventType, InstanceData, InstanceId,
    InstanceStatus, Millis, ProcessName, ProcessTitle, SigningKeys, SigningSecret, TokenHash,
    WebhookSettings,
};
use async_trait::async_trait;
use std::sync::Arc;

pub use migrate::SchemaError;
pub use queue_sql::{BREAKER_CHUNK, HELD, HOLD_CHUNK};
use queue_sql::{
    hold_sql, pauses_over_sql, pending_hosts_cte, probe_host, promote_probe_sql, prune_events_sql,
    queue_stats_sql, release_held_sql, stranded, stranded_releases_sql,
};
pub use records::*;
pub use roles::{
    Accounts, Cancel, DeliveryLog, IdempotencyKeys, Instances, KeyClaim, Queue, Schema, Settings,
    Store,
};

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique constraint was hit; the string names what already exists.
    #[error("{0} already exists")]
    Duplicate(&'static str),
    /// The database schema cannot be used by this build.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the database writer: {0}")]
    Io(String),
    /// The database server cannot be connected to, said in one sentence (where, and why).
    #[error("{0}")]
    Connect(String),
    /// The group-commit writer task is gone (the store is shutting down).
    #[error("the database writer stopped")]
    WriterStopped,
    /// A write that shared a failed group commit with others, when the database could not be
    /// reached: it is answered with the same verdict, not retried (issue 19, item 15).
    #[error("{0}")]
    SharedFailure(Outage),
}

/// Why the database cannot serve a request now, when that is not the request's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Unreachable, refusing connections, out of connections in time, or shutting down.
    Unavailable,
    /// The disk (or the database's space) is full: reads still work, writes do not.
    Full,
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outage::Unavailable => "the database cannot be reached",
            Outage::Full => "the database's disk is full",
        })
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Whether this is an outage of the database rather than a fault of the request, and which.
    pub fn outage(&self) -> Option<Outage> {
        use sqlx::Error as E;
        match self {
            StorageError::SharedFailure(outage) => Some(*outage),
            StorageError::Connect(_) => Some(Outage::Unavailable),
            StorageError::Database(
                E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed,
            ) => Some(Outage::Unavailable),
            StorageError::Database(E::Database(db)) => {
                match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // 53100: disk full. A FATAL error ends the session (shut down, not
                    // accepting connections, too many clients, the database gone), as do the
                    // connection exceptions of class 08.
                    Some(pg) => match pg.code() {
                        "53100" => Some(Outage::Full),
                        code if code.starts_with("08") => Some(Outage::Unavailable),
                        _ if matches!(
                            pg.severity(),
                            sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
                        ) =>
                        {
                            Some(Outage::Unavailable)
                        }
                        _ => None,
                    },
                    // SQLite through sqlx: SQLITE_FULL is 13.
                    None => (db.code().as_deref() == Some("13")).then_some(Outage::Full),
                }
            }
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => match e.code {
                rusqlite::ErrorCode::DiskFull => Some(Outage::Full),
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    Some(Outage::Unavailable)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the database answered and refused what it was given (a value it cannot hold, a
    /// constraint, a size limit): the same statement will be refused again, so retrying it is
    /// useless, unlike a database that is down, busy or full, which a retry outlasts.
    pub fn is_refusal(&self) -> bool {
        match self {
            StorageError::Database(sqlx::Error::Database(db)) => {
                match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // Data exceptions (22: a NUL in text, a value out of range), integrity
                    // constraints (23), program limits (54: a row too large).
                    Some(pg) => matches!(&pg.code()[..2], "22" | "23" | "54"),
                    // SQLite through sqlx: its constraint errors, by kind.
                    None => !matches!(db.kind(), sqlx::error::ErrorKind::Other),
                }
            }
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            _ => false,
        }
    }
}

/// Opens the store a database URL names: `sqlite://path` or `postgres://…`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    use anyhow::Context;
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url)
            .await
            .with_context(|| format!("opening SQLite database {url}"))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::open(url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact_db_url(url)))?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "unsupported database URL `{}`: use sqlite://FILE or postgres://USER@HOST/DB",
            redact_db_url(url)
        )
    }
}

/// Makes a consistent copy of a running SQLite database in the new file `to` (see the README
/// for restoring it); PostgreSQL is backed up with its own tools.
pub async fn backup(url: &str, to: &std::path::Path) -> anyhow::Result<u64> {
    use anyhow::Context;
    if !url.starts_with("sqlite:") {
        anyhow::bail!(
            "herald backup copies SQLite databases; back up PostgreSQL with pg_dump (see the README)"
        );
    }
    sqlite::backup(url, to)
        .await
        .with_context(|| format!("backing up {url} to {}", to.display()))
}

/// A database URL without its password, for messages.
pub fn redact_db_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => url.split('@').next_back().unwrap_or_default().to_owned(),
    }
}

/// A claimed delivery, or why it cannot be sent: one holding a value this build does not know
/// (written by a newer Herald) is left leased and logged, so it never stops the rest of a claim;
/// a node that knows the value sends it once the lease ends.
fn usable(
    decoded: std::result::Result<ClaimedDelivery, (i64, sqlx::Error)>,
) -> Option<ClaimedDelivery> {
    match decoded {
        Ok(delivery) => Some(delivery),
        Err((key, error)) => {
            tracing::error!(delivery = key, %error, "a claimed delivery holds a value this Herald does not know; leaving it to a node that does");
            None
        }
    }
}

/// A stored event type; one the code does not know is a decode error.
fn event_from_stored(text: &str) -> Result<EventType, sqlx::Error> {
    EventType::parse(text).map_err(|e| shared::unknown("event type", e))
}

/// A stored callback format; one the code does not know is a decode error.
fn format_from_stored(text: &str) -> Result<CallbackFormat, sqlx::Error> {
    CallbackFormat::parse(text).map_err(|e| shared::unknown("callback format", e))
}

/// Builds the keys from stored columns; a previous secret older than the overlap is dropped.
fn keys_from_stored(
    current: &str,
    previous: Option<String>,
    rotated_at: Option<i64>,
    now: Millis,
) -> Result<SigningKeys> {
    let decode =
        |text: &str| SigningSecret::parse(text).map_err(|e| sqlx::Error::Decode(e.0.into()));
    let overlap = i64::try_from(SigningKeys::OVERLAP.as_millis()).unwrap_or(i64::MAX);
    let previous = match (previous, rotated_at) {
        (Some(p), Some(at)) if now.0 < at.saturating_add(overlap) => Some(decode(&p)?),
        _ => None,
    };
    Ok(SigningKeys {
        current: decode(current)?,
        previous,
    })
}

/// Rebuilds settings from `(event, enabled)` and ordered `(event, url)` rows.
fn settings_from_rows(
    enabled: Vec<(String, bool)>,
    urls: Vec<(String, String)>,
) -> WebhookSettings {
    use crate::domain::CallbackUrl;
    let mut settings = WebhookSettings::default();
    for (event, on) in enabled {
        if let Ok(e) = EventType::parse(&event) {
            settings.event_mut(e).enabled = on;
        }
    }
    for (event, url) in urls {
        if let (Ok(e), Ok(u)) = (EventType::parse(&event), CallbackUrl::parse(&url)) {
            settings.event_mut(e).urls.push(u);
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_constant_is_the_one_the_held_index_and_its_query_use() {
        let held = HELD.to_string();
        assert!(release_held_sql('?').contains(&format!(">= {held}")));
        assert!(stranded_releases_sql('?').contains(&format!(">= {held}")));
        assert!(promote_probe_sql('?').contains(&format!(">= {held}")));
        assert!(hold_sql('$').contains(&format!("= {held}")));
        assert!(hold_sql('?').contains(&format!("< {held}")));
        for sql in [
            include_str!("../../migrations/sqlite/0002_held_index.sql"),
            include_str!("../../migrations/postgres/0002_held_index.sql"),
            include_str!("../../migrations/sqlite/0003_held_by_id.sql"),
            include_str!("../../migrations/postgres/0003_held_by_id.sql"),
        ] {
            assert!(sql.contains(&format!("next_attempt_at >= {held}")));
        }
    }

    /// The events prune reads old events through their time index and checks each through
    /// the deliveries' event index: no full scan of either table (one pass over 50,000 events
    /// and 100,000 deliveries took 287 s before migration 6).
    #[test]
    fn pruning_events_scans_neither_table_on_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for m in migrate::SQLITE.iter() {
            conn.execute_batch(m.sql.as_str()).unwrap();
        }
        let sql = format!("EXPLAIN QUERY PLAN {}", prune_events_sql('?'));
        let plan: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(rusqlite::params![0, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("INDEX events_by_time"), "{plan}");
        assert!(plan.contains("INDEX deliveries_by_event"), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
    }

    #[test]
    fn the_previous_secret_signs_for_24_hours_only() {
        let (a, b) = (SigningSecret::generate(), SigningSecret::generate());
        let rotated = Millis(1_000_000);
        let keys = keys_from_stored(
            a.expose(),
            Some(b.expose().to_owned()),
            Some(rotated.0),
            rotated.plus(std::time::Duration::from_secs(23 * 3600)),
        )
        .unwrap();
        assert_eq!(keys.previous, Some(b.clone()));
        let later = keys_from_stored(
            a.expose(),
            Some(b.expose().to_owned()),
            Some(rotated.0),
            rotated.plus(std::time::Duration::from_secs(24 * 3600)),
        )
        .unwrap();
        assert!(later.previous.is_none());
        assert_eq!(later.current, a);
    }
}
