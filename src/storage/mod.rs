//! Storage: one trait, [`Store`], with a SQLite and a PostgreSQL implementation.
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
mod roles;
mod shared;
pub mod sqlite;

pub use crate::domain::NextStep;
use crate::domain::{
    AttemptOutcome, BreakerPolicy, CallbackFormat, DeliveryId, DeliveryStatus, Email, EventType,
    InstanceData, InstanceId, InstanceStatus, Millis, ProcessName, ProcessTitle, Role, Signal,
    SigningKeys, SigningSecret, TokenHash, WebhookSettings,
};
use async_trait::async_trait;
use std::sync::Arc;

pub use migrate::SchemaError;
pub use roles::{Accounts, DeliveryLog, Instances, Queue, Schema, Settings, Store};

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
    /// The group-commit writer task is gone (the store is shutting down).
    #[error("the database writer stopped")]
    WriterStopped,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
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

/// Internal numeric key of a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkspaceId(pub i64);

/// Internal numeric key of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

/// Who is calling: resolved from an API token (or, later, a session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub workspace_id: WorkspaceId,
    pub email: String,
    pub role: Role,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub display_name: String,
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// What login needs to know about a user.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub caller: Caller,
    pub display_name: String,
    pub active: bool,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A signed-in browser session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub caller: Caller,
    pub display_name: String,
    /// The session's anti-forgery token, embedded in every form.
    pub csrf: String,
}

/// A change an administrator makes to a user.
#[derive(Debug, Clone)]
pub enum UserChange {
    Role(Role),
    Active(bool),
    /// A new argon2id PHC string.
    PasswordHash(String),
}

/// A user as listings show it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub active: bool,
    pub created_at: Millis,
}

/// A stored process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: ProcessName,
    pub title: String,
    pub created_at: Millis,
    pub created_by: String,
    /// Instances that are not in the recycle bin.
    pub instance_count: i64,
}

/// A stored instance. Its JSON form (camelCase) is what the API returns and what the event
/// snapshot keeps.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub unique_id: String,
    pub process_name: String,
    pub status: String,
    pub version: i64,
    pub data: InstanceData,
    pub created_at: Millis,
    pub created_by: String,
    pub modified_at: Millis,
    pub modified_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Millis>,
}

/// The new state of an instance after an update, written only if the stored version is still
/// `expected_version`.
#[derive(Debug, Clone)]
pub struct InstanceUpdate {
    pub data: InstanceData,
    pub status: InstanceStatus,
    pub expected_version: i64,
}

/// Result of a compare-and-set write on an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Done(Box<InstanceRecord>),
    NotFound,
    /// The instance is in the recycle bin (delete, update) or not in it (restore).
    WrongState,
    /// Another writer changed the version first.
    VersionChanged,
}

/// A page of results and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<EventType>,
    pub instance_id: Option<String>,
    /// Substring of the URL.
    pub url: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

/// One delivery as the log shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub key: i64,
    /// A test callback from `POST /webhooks/test`.
    pub test: bool,
    pub id: DeliveryId,
    pub event_type: EventType,
    pub instance_id: String,
    pub process_name: String,
    /// As configured; may hold credentials, so show it through `domain::webhook::redact`.
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<Millis>,
    pub last_attempt_at: Option<Millis>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Millis,
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: Millis,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// The node that made the attempt.
    pub node: String,
}

/// `next_attempt_at` of a delivery held back by an open circuit breaker: far in the future, so
/// held rows leave the front of the queue; the first successful probe releases them.
pub const HELD: i64 = 4_000_000_000_000_000;

/// Most deliveries one statement releases when a URL's breaker closes (holds go by
/// [`HOLD_CHUNK`]). A URL with a large backlog is held or released chunk by chunk, each chunk in
/// its own transaction ([`Queue::resume`]), so a breaker that opens or closes never stalls the
/// results of other URLs behind one long update. Measured on PostgreSQL: a 25,000-row hold in the results
/// transaction delayed every other callback's results by a second, and a release of a paused
/// URL's whole backlog in one statement took up to 30 s, long enough for the leases of other
/// attempts to run out (and their deliveries to be sent twice).
pub const BREAKER_CHUNK: i64 = 1000;

/// Most deliveries one transaction holds when a URL's breaker opens: the results transaction
/// that opens it (or records a failure while its pause runs) holds that many itself, so a small
/// backlog is held with the pause, at once, and a task of the worker holds the rest, that many at
/// a time. Each chunk locks the URL's breaker row, which the results of the URL's attempts wait
/// for, with the results of every other URL in their batch. Measured on PostgreSQL at 1,000
/// events/s with a URL that never answers, when its first attempts timed out: results
/// transactions holding 1,000 rows each took 100–170 ms, one after another for over a second, and
/// then chunks of 1,000 in the task still held the breaker row for about 100 ms each; the fast
/// URL's results waited, its attempts in flight reached the per-host cap, and its callbacks
/// arrived up to 300 ms late.
pub const HOLD_CHUNK: i64 = 100;

/// Holds up to `?4`/`$4` pending deliveries of one URL (`?1`/`$1`: its host, `?2`/`$2`:
/// workspace, `?3`/`$3`: URL) that are not held yet. They are found among the host's rows that
/// are not held, in due order, through the per-host index (SQLite is told to use it; PostgreSQL
/// takes it for the order, which only that index gives), so holding again while a pause runs
/// never reads the rows already held (measured on PostgreSQL: through the per-URL index instead,
/// each chunk read the URL's 100,000 held rows again, 60–90 ms a chunk). Rows leased by attempts
/// in flight keep their lease.
fn hold_sql(placeholder: char) -> String {
    let indexed = if placeholder == '?' {
        "INDEXED BY deliveries_due_by_host"
    } else {
        ""
    };
    format!(
        "UPDATE deliveries SET next_attempt_at = 4000000000000000
         WHERE id IN (SELECT id FROM deliveries {indexed}
                      WHERE host = {p}1 AND status = 'pending' AND next_attempt_at < 4000000000000000
                        AND workspace_id = {p}2 AND url = {p}3
                      ORDER BY host, next_attempt_at, id
                      LIMIT {p}4)",
        p = placeholder
    )
}

/// Up to `?4`/`$4` deliveries of one URL that its breaker holds, oldest first, made due at
/// `?1`/`$1` (`?2`/`$2`: workspace, `?3`/`$3`: URL). The constant is written out so the partial
/// index on held rows (`deliveries_held`, migration 3: by URL and id) applies; a test checks it
/// equals [`HELD`].
fn release_held_sql(placeholder: char) -> String {
    format!(
        "UPDATE deliveries SET next_attempt_at = {p}1
         WHERE id IN (SELECT id FROM deliveries {held}
                      WHERE workspace_id = {p}2 AND url = {p}3 AND status = 'pending'
                        AND next_attempt_at >= 4000000000000000
                      ORDER BY id LIMIT {p}4)",
        p = placeholder,
        held = held_index(placeholder)
    )
}

/// SQLite, which has no statistics to choose by, is told to read held rows through their own
/// index; PostgreSQL picks it by itself.
fn held_index(placeholder: char) -> &'static str {
    if placeholder == '?' {
        "INDEXED BY deliveries_held"
    } else {
        ""
    }
}

/// Up to `?2`/`$2` events from before `?1`/`$1` that no delivery refers to (an event is kept
/// only for its deliveries: their payload and their log). Found through `events_by_time` and
/// checked through `deliveries_by_event` (migration 6), so a pass reads the old events and
/// nothing else, however long the log.
fn prune_events_sql(placeholder: char) -> String {
    format!(
        "DELETE FROM events WHERE id IN (
            SELECT ev.id FROM events ev WHERE ev.occurred_at < {p}1
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = ev.id)
            LIMIT {p}2)",
        p = placeholder
    )
}

/// What one pass of [`Queue::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
}

impl Pruned {
    /// Whether a pass of `batch` filled either of its batches, so more may be left to prune.
    pub fn filled(&self, batch: i64) -> bool {
        let batch = u64::try_from(batch).unwrap_or(0);
        self.deliveries >= batch || self.events >= batch
    }
}

/// Paused URLs whose pause is over, the candidates for a probe (`?1`/`$1`: now), each with the
/// host its probe checks.
fn pauses_over_sql(placeholder: char) -> String {
    format!(
        "SELECT workspace_id, url FROM destinations WHERE state = 'open' AND paused_until <= {placeholder}1"
    )
}

/// The host of a paused URL, for [`promote_probe_sql`]; none for a URL that does not parse
/// (stored URLs were validated when saved: this only guards against hand-edited rows).
fn probe_host(url: &str) -> Option<String> {
    crate::domain::CallbackUrl::parse(url)
        .ok()
        .map(|u| u.host_key())
}

/// Makes one paused URL's probe due (`?1`/`$1`: now, `?2`/`$2`: workspace, `?3`/`$3`: URL,
/// `?4`/`$4`: its host), unless a delivery of that URL is due or in flight already. The probe is
/// the URL's oldest held delivery (one descent of `deliveries_held`), or when none is held its
/// oldest pending one. The two checks read the host's due rows and its leases (bounded by the
/// per-host cap), never the paused backlog; SQLite is told which index to use, having no
/// statistics to choose by.
fn promote_probe_sql(placeholder: char) -> String {
    let (due, leased) = if placeholder == '?' {
        (
            "INDEXED BY deliveries_due_by_host",
            "INDEXED BY deliveries_leased",
        )
    } else {
        ("", "")
    };
    format!(
        "UPDATE deliveries SET next_attempt_at = {p}1
         WHERE id = COALESCE(
                 (SELECT h.id FROM deliveries h {held}
                  WHERE h.workspace_id = {p}2 AND h.url = {p}3 AND h.status = 'pending'
                    AND h.next_attempt_at >= 4000000000000000
                  ORDER BY h.id LIMIT 1),
                 (SELECT MIN(a.id) FROM deliveries a
                  WHERE a.workspace_id = {p}2 AND a.url = {p}3 AND a.status = 'pending'))
           AND (SELECT 1 FROM deliveries d {due}
                WHERE d.host = {p}4 AND d.status = 'pending' AND d.next_attempt_at <= {p}1
                  AND d.workspace_id = {p}2 AND d.url = {p}3
                LIMIT 1) IS NULL
           AND (SELECT 1 FROM deliveries l {leased}
                WHERE l.host = {p}4 AND l.lease_until > {p}1
                  AND l.workspace_id = {p}2 AND l.url = {p}3
                LIMIT 1) IS NULL",
        p = placeholder,
        held = held_index(placeholder)
    )
}

/// URLs whose breaker is closed but which still have held deliveries (see
/// [`Queue::stranded_releases`]); the held check is one descent of `deliveries_held`.
fn stranded_releases_sql(placeholder: char) -> String {
    format!(
        "SELECT x.workspace_id, x.url FROM destinations x
         WHERE x.state = 'closed'
           AND (SELECT 1 FROM deliveries d {held}
                WHERE d.workspace_id = x.workspace_id AND d.url = x.url AND d.status = 'pending'
                  AND d.next_attempt_at >= 4000000000000000
                LIMIT 1) IS NOT NULL",
        held = held_index(placeholder)
    )
}

/// Rows of [`stranded_releases_sql`] as work for [`Queue::resume`].
fn stranded(rows: Vec<(i64, String)>) -> Vec<Unfinished> {
    rows.into_iter()
        .map(|(workspace, url)| Unfinished {
            workspace_id: WorkspaceId(workspace),
            url,
            step: BreakerStep::Release,
        })
        .collect()
}

/// What a results write left to do on a URL whose breaker opened or closed, one [`HOLD_CHUNK`]
/// or [`BREAKER_CHUNK`] at a time ([`Queue::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerStep {
    /// The breaker opened: hold the URL's pending deliveries.
    Hold,
    /// The breaker closed: release what it held.
    Release,
    /// The receiver is gone: fail what is pending to the disabled URL.
    FailGone,
}

/// A URL whose breaker opened or closed with more deliveries to hold or release than one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unfinished {
    pub workspace_id: WorkspaceId,
    pub url: String,
    pub step: BreakerStep,
}

/// What a worker asks for when it claims work.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub node: &'a str,
    pub now: Millis,
    pub lease_until: Millis,
    /// Most deliveries to return.
    pub limit: i64,
    /// Most attempts in flight to one host (`host:port`) across all nodes.
    pub per_host_cap: i64,
    /// Hosts at their cap on this node alone: the claim need not count their leases.
    pub full_hosts: &'a [String],
}

/// The state of the whole delivery queue (every workspace), for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Pending deliveries, held ones included.
    pub pending: u64,
    /// Pending deliveries whose time has come and that no lease holds.
    pub due: u64,
    /// How long the oldest due delivery has waited past its time.
    pub oldest_due_lag: std::time::Duration,
    /// Destination URLs whose breaker is open.
    pub paused_urls: u64,
}

/// The answer of the queue-statistics query: pending, due, oldest due time, paused URLs.
pub(crate) type QueueRow = (i64, i64, Option<i64>, i64);

impl QueueStats {
    fn from_row((pending, due, oldest, paused): QueueRow, now: Millis) -> Self {
        let lag = oldest.map_or(0, |at| now.0.saturating_sub(at).max(0));
        Self {
            pending: u64::try_from(pending).unwrap_or(0),
            due: u64::try_from(due).unwrap_or(0),
            oldest_due_lag: std::time::Duration::from_millis(u64::try_from(lag).unwrap_or(0)),
            paused_urls: u64::try_from(paused).unwrap_or(0),
        }
    }
}

/// The queue-statistics query (`?1`/`$1`: now). Counting reads the pending rows' index: about
/// a tenth of a second with a million pending, once per scrape.
fn queue_stats_sql(placeholder: char) -> String {
    // Due rows are counted and the oldest found host by host, through the per-host index (the
    // hosts found by skipping through it, as claims do): the due part of each host's range, and
    // its first unleased entry, never the paused backlogs held at the far end of the range.
    format!(
        "WITH RECURSIVE {hosts}
         SELECT (SELECT COUNT(*) FROM deliveries WHERE status = 'pending'),
                (SELECT COUNT(*) FROM hosts h JOIN deliveries d ON d.host = h.host
                 WHERE d.status = 'pending' AND d.next_attempt_at <= {p}1
                   AND (d.lease_until IS NULL OR d.lease_until <= {p}1)),
                (SELECT MIN((SELECT d.next_attempt_at FROM deliveries d
                             WHERE d.host = h.host AND d.status = 'pending' AND d.next_attempt_at <= {p}1
                               AND (d.lease_until IS NULL OR d.lease_until <= {p}1)
                             ORDER BY d.next_attempt_at LIMIT 1))
                 FROM hosts h WHERE h.host IS NOT NULL),
                (SELECT COUNT(*) FROM destinations WHERE state = 'open')",
        hosts = pending_hosts_cte(placeholder),
        p = placeholder
    )
}

/// The CTE `hosts(host)`: every destination host with pending deliveries, found by skipping
/// through the per-host index (one descent per host, never a read of the queue), then one NULL
/// row. SQLite is told the index (`INDEXED BY`); the placeholder names the backend.
fn pending_hosts_cte(placeholder: char) -> String {
    let index = if placeholder == '?' {
        "INDEXED BY deliveries_due_by_host"
    } else {
        ""
    };
    format!(
        "hosts(host) AS (
            SELECT (SELECT host FROM deliveries {index}
                    WHERE status = 'pending' ORDER BY host LIMIT 1)
            UNION ALL
            SELECT (SELECT d.host FROM deliveries d {index}
                    WHERE d.status = 'pending' AND d.host > h.host ORDER BY d.host LIMIT 1)
            FROM hosts h WHERE h.host IS NOT NULL)"
    )
}

/// The health of one destination URL, as `GET /api/v1/webhooks/health` shows it.
#[derive(Debug, Clone)]
pub struct DestinationRecord {
    /// As configured; show it through `domain::webhook::redact`.
    pub url: String,
    pub open: bool,
    pub consecutive_failures: i64,
    pub paused_until: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_failure_at: Option<Millis>,
    pub last_error: Option<String>,
    /// When and why the URL was disabled (its receiver answered 410 Gone); `None` while enabled.
    pub disabled: Option<(Millis, String)>,
}

/// A delivery handed to a worker under a lease.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub key: i64,
    pub workspace_id: WorkspaceId,
    /// A test callback (`POST /webhooks/test`): marked with `webhook-test: true`, never retried.
    pub test: bool,
    pub id: DeliveryId,
    pub event_type: EventType,
    pub instance_id: String,
    pub process_name: String,
    pub url: String,
    /// The URL's `host:port`, the unit of the per-host cap.
    pub host: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub occurred_at: Millis,
    pub format: CallbackFormat,
    /// The instance as the API showed it at the event (JSON), for the standard format; `None`
    /// for `deleted` events and for the Kianda format.
    pub instance: Option<String>,
}

/// The result of one attempt, to be written back.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub key: i64,
    pub workspace_id: WorkspaceId,
    /// The destination URL as configured (the circuit breaker's key).
    pub url: String,
    /// Test callbacks do not count towards a destination's health.
    pub test: bool,
    pub attempt: AttemptRecord,
    /// What the attempt said about its receiver, for the circuit breaker.
    pub signal: Signal,
    pub next: NextStep,
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
