//! The hot write transactions of the SQLite backend, run synchronously on one dedicated thread.
//!
//! Through sqlx, every SQLite statement is a round trip between the async runtime and the
//! driver's connection thread (about 100–150 µs of mostly thread wake-ups on this kind of
//! machine), while the SQLite engine needs a few microseconds for the same statement. SQLite runs
//! one writer at a time anyway, so the three transactions every event goes through (the group
//! commit of instance writes, the claim of due deliveries, the results of attempts) run here, as
//! plain function calls on a thread that owns its own connection: one round trip per transaction
//! instead of one per statement.
//!
//! **Invariant:** the store holds its sqlx write connection while a job runs here, so this
//! thread and the store's other (rare) writes never meet on SQLite's lock.

use super::super::batch;
use super::super::group::{InstanceWrite, WriteOutcome};
use super::super::health;
use super::super::{AttemptResult, ClaimedDelivery, StorageError, Unfinished, WorkspaceId};
use super::batch::SqliteBatch;
use super::health::{SqliteHealth, run_ready};
use crate::domain::{BreakerPolicy, DeliveryId, Millis};
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The thread and its queue of jobs. Dropping it ends the thread after the queued jobs.
pub(super) struct WriteThread {
    jobs: mpsc::Sender<Job>,
}

impl WriteThread {
    /// Opens a connection to the database file and starts the thread.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "normal")?;
        conn.pragma_update(None, "foreign_keys", "on")?;
        conn.set_prepared_statement_cache_capacity(64);
        // Plans that never depend on bound values. Without this SQLite plans `LIMIT ?` with the
        // value bound, marks the statement expired whenever that parameter is bound again, and
        // parses and plans it anew on the next step: the claim's per-host query was re-prepared
        // on every run (11% of this thread's time, `perf`).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StorageError::Io(e.to_string()))?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the thread and waits for its result.
    pub async fn run<R: Send + 'static, E: Into<StorageError> + Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(job(conn));
            }))
            .map_err(|_| StorageError::WriterStopped)?;
        answer
            .await
            .map_err(|_| StorageError::WriterStopped)?
            .map_err(Into::into)
    }
}

// --- group commit -------------------------------------------------------------------------------

/// Applies a batch of instance writes in one `BEGIN IMMEDIATE` transaction, through the loop
/// both backends share (`storage::batch`).
pub(super) fn apply(
    conn: &mut Connection,
    writes: &[InstanceWrite],
    traces: &[Option<String>],
) -> Result<Vec<WriteOutcome>, StorageError> {
    let now = Millis::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcomes = run_ready(batch::apply(&mut SqliteBatch(&tx), writes, traces, now))?;
    tx.commit()?;
    Ok(outcomes)
}

// --- claims -------------------------------------------------------------------------------------

/// What a claim asks for, owned so it can travel to the thread.
pub(super) struct Claim {
    pub node: String,
    pub now: i64,
    pub lease_until: i64,
    pub limit: i64,
    pub per_host_cap: i64,
    pub full_hosts: Vec<String>,
    /// This node's room per host (see `ClaimRequest`), and for other hosts.
    pub rooms: std::collections::HashMap<String, i64>,
    pub default_room: i64,
}

/// The hosts a claim visits (see `storage::pending_hosts_cte`).
static PENDING_HOSTS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH RECURSIVE {} SELECT host FROM hosts WHERE host IS NOT NULL",
        super::super::pending_hosts_cte('?')
    )
});

/// Claims due deliveries under a lease (see `Queue::claim_due`). Per destination host with
/// pending deliveries (except those the worker knows to be full), takes as many due rows as the host has free
/// slots, in due order, from the per-host index: a host at its cap costs nothing and never hides
/// the others behind its backlog. SQLite has no LATERAL join, so this is one small query per
/// host, all in one transaction.
pub(super) fn claim(conn: &mut Connection, c: &Claim) -> rusqlite::Result<Vec<ClaimedDelivery>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Every host with pending rows, by skipping through the per-host index (one descent per
    // host). Reading the front of the due queue for hosts instead read `4 × limit` rows per claim,
    // all of one host when a receiver that never answers has a backlog there: that doubled the
    // claim's cost (measured with `perf`).
    let hosts: Vec<String> = tx
        .prepare_cached(&PENDING_HOSTS_SQL)?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let busy: std::collections::HashMap<String, i64> = tx
        .prepare_cached(
            "SELECT host, COUNT(*) FROM deliveries
             WHERE lease_until IS NOT NULL AND lease_until > ?1 GROUP BY host",
        )?
        .query_map(params![c.now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut picked: Vec<(i64, i64)> = Vec::new();
    {
        let mut due = tx.prepare_cached(concat!(
            "SELECT d.id, d.next_attempt_at FROM deliveries d
             WHERE d.host = ?1 AND d.status = 'pending' AND d.next_attempt_at <= ?2
               AND (d.lease_until IS NULL OR d.lease_until <= ?2)
               AND ",
            crate::storage::queue_sql::not_behind_an_earlier!(),
            "
             ORDER BY d.next_attempt_at, d.id
             LIMIT ?3"
        ))?;
        for host in hosts.iter().filter(|h| !c.full_hosts.contains(h)) {
            let room = c.rooms.get(host).copied().unwrap_or(c.default_room);
            let free = (c.per_host_cap - busy.get(host).copied().unwrap_or(0))
                .min(room)
                .min(c.limit);
            if free <= 0 {
                continue;
            }
            for row in due.query_map(params![host, c.now, free], |r| Ok((r.get(0)?, r.get(1)?)))? {
                picked.push(row?);
            }
        }
    }
    picked.sort_by_key(|(id, at)| (*at, *id));
    picked.truncate(usize::try_from(c.limit).unwrap_or(0));
    if picked.is_empty() {
        tx.commit()?;
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&picked.iter().map(|(id, _)| id).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut claimed = tx
        .prepare_cached(concat!(
            "UPDATE deliveries SET lease_until = ?1, leased_by = ?2
                 WHERE id IN (SELECT value FROM json_each(?3))",
            crate::storage::queue_sql::claimed_columns!()
        ))?
        .query_map(params![c.lease_until, c.node, ids], |r| {
            let key: i64 = r.get("id")?;
            let event_type = super::super::event_from_stored(&r.get::<_, String>("event_type")?);
            let format = super::super::format_from_stored(&r.get::<_, String>("format")?);
            let (event_type, format) = match (event_type, format) {
                (Ok(e), Ok(f)) => (e, f),
                (Err(e), _) | (_, Err(e)) => return Ok(Err((key, e))),
            };
            Ok(Ok(ClaimedDelivery {
                key,
                workspace_id: WorkspaceId(r.get("workspace_id")?),
                test: r.get("test")?,
                id: DeliveryId::from_stored(r.get("webhook_id")?),
                event_type,
                instance_id: r.get("instance_id")?,
                process_name: r.get("process_name")?,
                url: r.get("url")?,
                host: r.get("host")?,
                attempts: r.get("attempts")?,
                due_at: Millis(r.get("next_attempt_at")?),
                occurred_at: Millis(r.get("created_at")?),
                format,
                instance: r.get("instance")?,
                trace_parent: r.get("trace_parent")?,
            }))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter_map(super::super::usable)
        .collect::<Vec<_>>();
    tx.commit()?;
    claimed.sort_by_key(|c| c.key);
    Ok(claimed)
}

// --- results ------------------------------------------------------------------------------------

/// Writes the results of attempts in one transaction (one statement for all attempts, one for
/// all deliveries) and updates the health of their destinations under `breaker`.
pub(super) fn record(
    conn: &mut Connection,
    results: &[AttemptResult],
    breaker: &BreakerPolicy,
) -> Result<Vec<Unfinished>, StorageError> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let now = Millis::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // One statement per row, as in `apply`.
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO delivery_attempts (delivery_id, started_at, duration_ms, outcome, status_code, error, response_excerpt, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut update = tx.prepare_cached(
            "UPDATE deliveries SET status = ?1, next_attempt_at = ?2, attempts = attempts + 1,
                    lease_until = NULL, leased_by = NULL, last_attempt_at = ?3,
                    last_status_code = ?4, last_error = ?5, updated_at = ?6
             WHERE id = ?7",
        )?;
        for r in results {
            let a = &r.attempt;
            let (status, next_at) = r.next.stored();
            insert.execute(params![
                r.key,
                a.started_at.0,
                a.duration_ms,
                a.outcome.as_str(),
                a.status_code,
                a.error,
                a.response_excerpt,
                a.node
            ])?;
            update.execute(params![
                status,
                next_at,
                a.started_at.0,
                a.status_code,
                a.error,
                now.0,
                r.key
            ])?;
        }
    }
    let unfinished = run_ready(health::record_health(
        &mut SqliteHealth(&tx),
        results,
        breaker,
        now,
    ))?;
    tx.commit()?;
    Ok(unfinished)
}

/// Runs the next chunk of a URL's unfinished breaker step, if the URL is still in the state it
/// was for (see [`Queue::resume`]).
pub(super) fn resume(conn: &mut Connection, work: &Unfinished) -> Result<bool, StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let more = run_ready(health::resume(&mut SqliteHealth(&tx), work))?;
    tx.commit()?;
    Ok(more)
}
