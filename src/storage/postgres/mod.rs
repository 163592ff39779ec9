//! The PostgreSQL backend: several Herald nodes share one database.
//!
//! Claims lock candidate rows with `FOR UPDATE SKIP LOCKED`, so nodes never wait on each other
//! and never claim the same delivery while its lease runs. Every write that queues deliveries
//! sends `NOTIFY herald_deliveries` (delivered at commit), which wakes the workers of all nodes.

mod health;

use health::PgHealth;

use super::group::{self, BatchWriter, GroupCommit, InstanceWrite, WriteOutcome};
use super::migrate::{self, POSTGRES};
use super::*;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

/// The channel that announces new due deliveries to every node.
const CHANNEL: &str = "herald_deliveries";

/// Herald's store in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The worker's claims and results, committed without waiting for the WAL flush (see
    /// [`PostgresStore::open`]).
    queue: PgPool,
    /// Claims, on the claim's generic plan (made once per connection), bounded by
    /// [`CLAIM_TIMEOUT`].
    claims: PgPool,
    /// Claims planned afresh on every call, opened only once a generic claim was too slow.
    claims_fresh: PgPool,
    /// Set for the rest of the process when a generic claim was too slow: see `claim_due`.
    claims_planned_afresh: Arc<std::sync::atomic::AtomicBool>,
    /// When a slow claim last had the queue's statistics refreshed (Unix ms; 0: never).
    statistics_refreshed_at: Arc<std::sync::atomic::AtomicI64>,
    /// Instance writes go through one writer task that commits them in groups.
    writes: Arc<GroupCommit>,
}

const INSTANCE_COLUMNS: &str = "instance_id, unique_id, status, version, data, created_at, created_by, modified_at, modified_by, deleted_at";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn instance_from_row(row: &PgRow) -> Result<InstanceRecord> {
    let id_text: String = row.try_get("instance_id")?;
    let id = InstanceId::parse(&id_text).map_err(|e| sqlx::Error::Decode(e.0.into()))?;
    let data: String = row.try_get("data")?;
    Ok(InstanceRecord {
        process_name: id.process_name().to_owned(),
        id,
        unique_id: row.try_get("unique_id")?,
        status: row.try_get("status")?,
        version: row.try_get("version")?,
        data: InstanceData::from_stored(&data),
        created_at: Millis(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        modified_at: Millis(row.try_get("modified_at")?),
        modified_by: row.try_get("modified_by")?,
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(Millis),
    })
}

fn delivery_from_row(row: &PgRow) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        key: row.try_get("id")?,
        test: row.try_get("test")?,
        id: DeliveryId::from_stored(row.try_get("webhook_id")?),
        event_type: event_from_stored(row.try_get("event_type")?),
        instance_id: row.try_get("instance_id")?,
        process_name: row.try_get("process_name")?,
        url: row.try_get("url")?,
        status: status_from_stored(row.try_get("status")?),
        attempts: row.try_get("attempts")?,
        next_attempt_at: row
            .try_get::<Option<i64>, _>("next_attempt_at")?
            .map(Millis),
        last_attempt_at: row
            .try_get::<Option<i64>, _>("last_attempt_at")?
            .map(Millis),
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        created_at: Millis(row.try_get("created_at")?),
    })
}

/// The longest a claim may run (`statement_timeout` on the claims' connections). A claim takes
/// leases that end a callback timeout plus `lease_margin` (5 s) after the claim began; one that
/// ran longer than that margin would hand out deliveries whose leases already ended, which other
/// nodes could claim and send too. Cancelled, the claim's statement takes no lease at all.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);

/// A claim on the generic plan slower than this (or cancelled by [`CLAIM_TIMEOUT`]) switches the
/// node to claims planned afresh for the rest of its life. Measured, a claim on a good plan takes
/// a few milliseconds with a million rows queued.
const SLOW_GENERIC_CLAIM: Duration = Duration::from_secs(1);

/// A claim on the generic plan slower than this has the queue's statistics refreshed
/// (`ANALYZE deliveries`), which makes PostgreSQL plan the claim again on every connection.
/// The generic plan is made at a node's first claims, and on a new database nothing has
/// analyzed the queue yet: the planner then guesses every row count, and its guesses can tie
/// between indexes. Measured at 1,000 events/s with a URL that never answers: in three runs
/// of five, the plan made while the table held some hundred rows checked each candidate's
/// ordering through `deliveries_due_by_host` by its third column, reading every pending row of
/// the hanging URL's host (2,938 rows per candidate, 18,000 buffers per claim), so claims grew
/// to 240 ms as its backlog grew, and the fast URL's callbacks arrived up to 900 ms late until
/// the first vacuum re-planned it, 5 s in (with autovacuum on, its first ANALYZE can take a
/// minute). A claim on a good plan takes a few milliseconds with a million rows queued; the bad
/// plan's claims grow with the backlog, so the lower the threshold, the sooner it is replaced
/// (at 50 ms, callbacks still came up to 300 ms late in one run of three). A refresh set off by
/// a claim that was only slow for want of CPU costs one `ANALYZE` a minute at most.
const STALE_PLAN_CLAIM: Duration = Duration::from_millis(20);

/// At most one refresh of the queue's statistics per this long, per node.
const STATISTICS_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Leases due deliveries (see `claim_due`). $1 lease end, $2 node, $3 now, $4 limit, $5 per-host
/// cap, $6 hosts to skip. Its `hosts` CTE is written out rather than taken from
/// `storage::pending_hosts_cte`: this exact text is the one whose generic plan was checked.
const CLAIM_SQL: &str = "UPDATE deliveries SET lease_until = $1, leased_by = $2
     WHERE ctid = ANY (ARRAY(
        WITH RECURSIVE hosts(host) AS (
            (SELECT host FROM deliveries WHERE status = 'pending' ORDER BY host LIMIT 1)
            UNION ALL
            SELECT (SELECT d.host FROM deliveries d
                    WHERE d.status = 'pending' AND d.host > h.host ORDER BY d.host LIMIT 1)
            FROM hosts h WHERE h.host IS NOT NULL)
        SELECT picked.ctid FROM hosts h
        CROSS JOIN LATERAL (
            SELECT COUNT(*) AS n FROM deliveries l
            WHERE l.host = h.host AND l.lease_until IS NOT NULL AND l.lease_until > $3) b
        CROSS JOIN LATERAL (
            SELECT d.ctid, d.id, d.next_attempt_at FROM deliveries d
            WHERE d.host = h.host AND d.status = 'pending' AND d.next_attempt_at <= $3
              AND (d.lease_until IS NULL OR d.lease_until <= $3)
              AND (SELECT 1 FROM deliveries e
                   WHERE e.status = 'pending' AND e.workspace_id = d.workspace_id
                     AND e.url = d.url AND e.instance_id = d.instance_id AND e.id < d.id
                   LIMIT 1) IS NULL
            ORDER BY d.next_attempt_at, d.id
            LIMIT GREATEST($5 - b.n, 0)
            FOR UPDATE SKIP LOCKED
        ) picked
        WHERE h.host IS NOT NULL AND h.host <> ALL($6::text[])
        ORDER BY picked.next_attempt_at, picked.id
        LIMIT $4))
     RETURNING id, workspace_id, test, webhook_id, event_type, instance_id, process_name, url, host, attempts, created_at, format,
               CASE WHEN format = 'standard' THEN (SELECT ev.instance FROM events ev WHERE ev.id = deliveries.event_id) END AS instance";

/// Turns TLS off for a server on this machine (a loopback address or a Unix socket) unless the
/// URL or `PGSSLMODE` asks for a TLS mode. The default, like libpq's, is `prefer`: encrypt
/// whenever the server offers TLS, which Debian's PostgreSQL does on 127.0.0.1. Measured
/// (`perf` on PostgreSQL at 1,000 events/s): OpenSSL took 9% of the server's CPU, for traffic
/// that never leaves the machine. Any other host keeps the default.
fn without_tls_on_loopback(url: &str, options: PgConnectOptions) -> PgConnectOptions {
    let chosen = std::env::var_os("PGSSLMODE").is_some()
        || url::Url::parse(url).is_ok_and(|u| {
            u.query_pairs()
                .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
        });
    if chosen || !is_loopback(&options) {
        return options;
    }
    options.ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

/// Whether the options name a server on this machine.
fn is_loopback(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How often a node checks whether its queue tables need the vacuum autovacuum is not doing.
const SELF_VACUUM_CHECK: Duration = Duration::from_secs(5);

/// Dead rows a queue table must have (and 10% of its live rows) before a node vacuums it.
const SELF_VACUUM_MIN_DEAD: i64 = 1_000;

/// Vacuums the queue tables when autovacuum does not (off for the server, or for the table)
/// and their dead rows pile up: every finished delivery leaves a dead row whose entry stays at
/// the head of the per-host index until vacuum runs, and every claim walks those entries.
/// Measured with autovacuum off: claims grew from 8 to 27 ms through the drain of a
/// 1,000,000-row backlog, which fell to 39% of the steady throughput (89% with autovacuum on).
/// The check is one small query every few seconds; `SKIP_LOCKED` leaves a table another node
/// is vacuuming alone.
async fn vacuum_while_autovacuum_is_off(pool: PgPool) {
    let mut tick = tokio::time::interval(SELF_VACUUM_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for table in ["deliveries", "destinations"] {
            let due: Option<bool> = sqlx::query_scalar(
                "SELECT s.n_dead_tup >= $2 AND s.n_dead_tup >= s.n_live_tup / 10
                 FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                 WHERE s.relid = to_regclass($1)
                   AND (current_setting('autovacuum') = 'off'
                        OR COALESCE(c.reloptions @> ARRAY['autovacuum_enabled=false'], false))",
            )
            .bind(table)
            .bind(SELF_VACUUM_MIN_DEAD)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten();
            if due != Some(true) {
                continue;
            }
            let started = std::time::Instant::now();
            match sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM (SKIP_LOCKED) {table}")))
                .execute(&pool)
                .await
            {
                Ok(_) => tracing::info!(
                    table,
                    took_ms = started.elapsed().as_millis() as u64,
                    "vacuumed a queue table (autovacuum is off)"
                ),
                Err(error) => {
                    tracing::warn!(table, error = %crate::error::error_chain(&error), "vacuuming a queue table failed")
                }
            }
        }
    }
}

/// A pool of at most `max` connections with `options`, one opened at once.
async fn connect(options: &PgConnectOptions, max: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?)
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names.
    pub async fn open(url: &str) -> Result<Self> {
        // sqlx prepares statements, and PostgreSQL switches a prepared statement to a generic
        // plan after five runs, keeping it until the table's statistics change. Made while the
        // queue tables were nearly empty, such a plan would read them sequentially, which it
        // would keep at a million rows (measured: claims over a second). Every statement of
        // Herald's is meant to go through an index, so sequential scans are ruled out where an
        // index can serve (`enable_seqscan = off`): a plan made while a table is small stays
        // right as it grows. Planning every statement afresh instead
        // (`plan_cache_mode = force_custom_plan`) cost 40% of the throughput.
        //
        // No JIT compilation: Herald's statements are short, and the claim's estimated cost (the
        // planner cannot know how many rows a host's free slots will take) crosses JIT's
        // threshold once the queue holds some thousands of rows; compiling it then took 20 ms of
        // a 23 ms claim with 18,000 rows pending, 340 ms with 900,000.
        let options = without_tls_on_loopback(url, PgConnectOptions::from_str(url)?)
            .application_name("herald")
            .options([("enable_seqscan", "off"), ("jit", "off")]);
        let pool = connect(&options, 12).await?;
        // Claims (leases) and attempt results do not wait for their commit to reach the disk.
        // What a server crash can lose of them is the last fraction of a second: a lost lease
        // returns its delivery to the queue, and a lost result makes Herald send that delivery
        // again, with the same webhook-id, which delivery at least once allows and receivers
        // already handle for retries. Events and their deliveries are always committed durably
        // before the API answers. Measured: one WAL flush fewer per claim and per result batch.
        //
        // The queue's statements read a few rows each, through an index in order; no bitmap
        // scans: they do not mark index entries of dead rows, so a release that finds nothing
        // re-read the 100,000 rows a URL's pause had held, on every batch of that URL's
        // successes until vacuum ran (measured: 116 ms a batch while a backlog drained).
        let queue_options =
            options.options([("synchronous_commit", "off"), ("enable_bitmapscan", "off")]);
        // The queue's statements find their rows by key through an index whatever their
        // parameters, and keep their first plan: left to choose, PostgreSQL re-planned the
        // results statement on every batch, since a generic plan cannot size its arrays
        // (measured at 1,000 events/s: 0.35 ms of planning per batch, 40% of that statement's
        // server time). The claim too (see `claim_due`), on connections of its own, whose
        // statements are cancelled after `CLAIM_TIMEOUT`.
        let timeout = CLAIM_TIMEOUT.as_millis().to_string();
        let generic = queue_options
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let claims = connect(
            &generic
                .clone()
                .options([("statement_timeout", timeout.as_str())]),
            2,
        )
        .await?;
        let claims_fresh = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(queue_options.options([("statement_timeout", timeout.as_str())]));
        let queue = connect(&generic, 4).await?;
        let autovacuum: Option<String> = sqlx::query_scalar("SELECT current_setting('autovacuum')")
            .fetch_one(&pool)
            .await
            .ok();
        if autovacuum.as_deref() == Some("off") {
            tracing::warn!(
                "PostgreSQL's autovacuum is off: Herald will vacuum its queue tables itself when their dead rows pile up; turn autovacuum on (the default) to leave that to PostgreSQL"
            );
        }
        tokio::spawn(vacuum_while_autovacuum_is_off(pool.clone()));
        let writes = Arc::new(GroupCommit::start(PgWriter { pool: pool.clone() }));
        Ok(Self {
            pool,
            queue,
            claims,
            claims_fresh,
            claims_planned_afresh: Arc::default(),
            statistics_refreshed_at: Arc::default(),
            writes,
        })
    }

    /// Refreshes the queue's statistics in the background after a slow claim (see
    /// [`STALE_PLAN_CLAIM`]), at most once per [`STATISTICS_REFRESH_INTERVAL`].
    fn refresh_queue_statistics(&self, took: Duration) {
        use std::sync::atomic::Ordering;
        let now = Millis::now().0;
        let last = self.statistics_refreshed_at.load(Ordering::Relaxed);
        let interval = STATISTICS_REFRESH_INTERVAL.as_millis() as i64;
        if last != 0 && now - last < interval {
            return;
        }
        if self
            .statistics_refreshed_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        tracing::info!(
            took_ms = took.as_millis() as u64,
            "a claim on its generic plan was slow: refreshing the queue's statistics, so that the claim is planned again"
        );
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(error) = sqlx::query("ANALYZE deliveries").execute(&pool).await {
                tracing::warn!(error = %crate::error::error_chain(&error), "refreshing the queue's statistics failed");
            }
        });
    }

    /// Whether this node's claims are planned afresh on every call, because a claim on the
    /// generic plan was too slow.
    pub fn claims_planned_afresh(&self) -> bool {
        self.claims_planned_afresh
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn schema_version(&self) -> Result<i64> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS herald_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM herald_schema")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Why a compare-and-set on an instance matched no row.
    async fn why_not_written(
        tx: &mut sqlx::PgConnection,
        workspace: WorkspaceId,
        id: &InstanceId,
        want_deleted: bool,
    ) -> Result<Written> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT deleted_at FROM instances WHERE workspace_id = $1 AND instance_id = $2",
        )
        .bind(workspace.0)
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        Ok(match row {
            None => Written::NotFound,
            Some((deleted,)) if deleted.is_some() != want_deleted => Written::WrongState,
            Some(_) => Written::VersionChanged,
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<()> {
        // One transaction under an advisory lock: nodes starting together migrate one at a time,
        // and each re-reads the version inside the lock.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7265726164)")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS herald_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM herald_schema")
            .fetch_one(&mut *tx)
            .await?;
        let found = found.unwrap_or(0);
        migrate::check(found, migrate::latest(POSTGRES), true)?;
        for m in POSTGRES.iter().filter(|m| m.version > found) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO herald_schema (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(Millis::now().0)
            .execute(&mut *tx)
            .await?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
        tx.commit().await?;
        Ok(())
    }

    fn announces_own_writes(&self) -> bool {
        true
    }

    async fn subscribe(&self, wake: Arc<tokio::sync::Notify>) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => wake.notify_one(),
                    Err(error) => {
                        // The listener reconnects on its next call; the idle poll covers the gap.
                        tracing::warn!(%error, "lost the PostgreSQL notification connection; reconnecting");
                        wake.notify_one();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }

    async fn start_node(&self, node: &str) -> Result<u64> {
        // Through the index of leased rows (those in flight), never the whole queue.
        let ended = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, leased_by = NULL
             WHERE lease_until IS NOT NULL AND leased_by = $1",
        )
        .bind(node)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(ended)
    }

    async fn check_schema(&self) -> Result<()> {
        let found = self.schema_version().await?;
        migrate::check(found, migrate::latest(POSTGRES), false)?;
        Ok(())
    }

    async fn bootstrap(&self, name: &str, admin: &NewUser, token: &TokenHash) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Nodes starting together on an empty database: one bootstraps, the others see it done.
        sqlx::query("SELECT pg_advisory_xact_lock(7265726165)")
            .execute(&mut *tx)
            .await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(false);
        }
        let now = Millis::now().0;
        let ws: i64 = sqlx::query_scalar(
            "INSERT INTO workspaces (name, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let user: i64 = sqlx::query_scalar(
            "INSERT INTO users (workspace_id, email, display_name, role, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(ws)
        .bind(admin.email.as_str())
        .bind(&admin.display_name)
        .bind(admin.role.as_str())
        .bind(&admin.password_hash)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(user)
            .bind(token.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn workspace_id(&self, name: &str) -> Result<Option<WorkspaceId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM workspaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(id.map(WorkspaceId))
    }

    async fn create_user(&self, workspace: WorkspaceId, user: &NewUser) -> Result<UserId> {
        let id = sqlx::query_scalar(
            "INSERT INTO users (workspace_id, email, display_name, role, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(workspace.0)
        .bind(user.email.as_str())
        .bind(&user.display_name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(Millis::now().0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::Duplicate("a user with this email")
            } else {
                e.into()
            }
        })?;
        Ok(UserId(id))
    }

    async fn users(&self, workspace: WorkspaceId) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(
            "SELECT email, display_name, role, active, created_at FROM users WHERE workspace_id = $1 ORDER BY email",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserRecord {
                    email: r.try_get("email")?,
                    display_name: r.try_get("display_name")?,
                    role: Role::parse(r.try_get("role")?).unwrap_or(Role::User),
                    active: r.try_get("active")?,
                    created_at: Millis(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn user_for_login(&self, email: &Email) -> Result<Option<LoginRecord>> {
        let row = sqlx::query(
            "SELECT id, workspace_id, email, display_name, role, active, password_hash FROM users WHERE email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LoginRecord {
                caller: caller_from_row(&r)?,
                display_name: r.try_get("display_name")?,
                active: r.try_get("active")?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    async fn change_user(
        &self,
        workspace: WorkspaceId,
        email: &Email,
        change: &UserChange,
    ) -> Result<bool> {
        let query = match change {
            UserChange::Role(role) => {
                sqlx::query("UPDATE users SET role = $1 WHERE workspace_id = $2 AND email = $3")
                    .bind(role.as_str())
            }
            UserChange::Active(active) => {
                sqlx::query("UPDATE users SET active = $1 WHERE workspace_id = $2 AND email = $3")
                    .bind(*active)
            }
            UserChange::PasswordHash(hash) => sqlx::query(
                "UPDATE users SET password_hash = $1 WHERE workspace_id = $2 AND email = $3",
            )
            .bind(hash.clone()),
        };
        let done = query
            .bind(workspace.0)
            .bind(email.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_session(
        &self,
        token: &TokenHash,
        user: UserId,
        csrf: &str,
        now: Millis,
        expires: Millis,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(token.as_str())
            .bind(user.0)
            .bind(csrf)
            .bind(now.0)
            .bind(expires.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, token: &TokenHash, now: Millis) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT u.id, u.workspace_id, u.email, u.role, u.display_name, s.csrf
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.active = TRUE",
        )
        .bind(token.as_str())
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                caller: caller_from_row(&r)?,
                display_name: r.try_get("display_name")?,
                csrf: r.try_get("csrf")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token: &TokenHash) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn hourly_outcomes(
        &self,
        workspace: WorkspaceId,
        since: Millis,
    ) -> Result<Vec<(Millis, i64, i64)>> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT (a.started_at / 3600000) * 3600000 AS hour,
                    SUM(CASE WHEN a.outcome = 'success' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN a.outcome = 'success' THEN 0 ELSE 1 END)
             FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.workspace_id = $1 AND a.started_at >= $2
             GROUP BY hour ORDER BY hour",
        )
        .bind(workspace.0)
        .bind(since.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(h, ok, bad)| (Millis(h), ok, bad))
            .collect())
    }

    async fn add_token(&self, user: UserId, token: &TokenHash) -> Result<()> {
        sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(user.0)
            .bind(token.as_str())
            .bind(Millis::now().0)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StorageError::Duplicate("this API token")
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn caller_by_token(&self, token: &TokenHash) -> Result<Option<Caller>> {
        let row = sqlx::query(
            "SELECT u.id, u.workspace_id, u.email, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND u.active",
        )
        .bind(token.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| caller_from_row(&r)).transpose()
    }

    async fn webhook_settings(&self, workspace: WorkspaceId) -> Result<WebhookSettings> {
        let enabled: Vec<(String, bool)> = sqlx::query_as(
            "SELECT event_type, enabled FROM webhook_events WHERE workspace_id = $1",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await?;
        let urls: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_type, url FROM webhook_urls WHERE workspace_id = $1 ORDER BY event_type, position",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await?;
        let mut settings = super::settings_from_rows(enabled, urls);
        let format: Option<String> =
            sqlx::query_scalar("SELECT webhook_format FROM workspaces WHERE id = $1")
                .bind(workspace.0)
                .fetch_optional(&self.pool)
                .await?;
        settings.format = format
            .as_deref()
            .map(super::format_from_stored)
            .unwrap_or_default();
        Ok(settings)
    }

    async fn save_webhook_settings(
        &self,
        workspace: WorkspaceId,
        settings: &WebhookSettings,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE workspaces SET webhook_format = $1 WHERE id = $2")
            .bind(settings.format.as_str())
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_urls WHERE workspace_id = $1")
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_events WHERE workspace_id = $1")
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        for event in EventType::ALL {
            let s = settings.event(event);
            sqlx::query("INSERT INTO webhook_events (workspace_id, event_type, enabled) VALUES ($1, $2, $3)")
                .bind(workspace.0)
                .bind(event.as_str())
                .bind(s.enabled)
                .execute(&mut *tx)
                .await?;
            for (position, url) in s.urls.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO webhook_urls (workspace_id, event_type, position, url, host) VALUES ($1, $2, $3, $4, $5)",
                )
                    .bind(workspace.0)
                    .bind(event.as_str())
                    .bind(i64::try_from(position).unwrap_or(i64::MAX))
                    .bind(url.as_str())
                    .bind(url.host_key())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Saving a URL says it should be called: one disabled because its receiver was gone is
        // enabled again.
        sqlx::query(super::health::ENABLE_LISTED_SQL)
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signing_keys(&self, workspace: WorkspaceId, now: Millis) -> Result<SigningKeys> {
        // The first secret of a workspace is made on first use; the condition keeps two nodes
        // from each setting a different one.
        sqlx::query(
            "UPDATE workspaces SET signing_secret = $1 WHERE id = $2 AND signing_secret IS NULL",
        )
        .bind(SigningSecret::generate().expose())
        .bind(workspace.0)
        .execute(&self.pool)
        .await?;
        let (current, previous, rotated_at): (String, Option<String>, Option<i64>) = sqlx::query_as(
            "SELECT signing_secret, previous_secret, secret_rotated_at FROM workspaces WHERE id = $1",
        )
        .bind(workspace.0)
        .fetch_one(&self.pool)
        .await?;
        super::keys_from_stored(&current, previous, rotated_at, now)
    }

    async fn rotate_signing_secret(
        &self,
        workspace: WorkspaceId,
        new: &SigningSecret,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE workspaces SET previous_secret = signing_secret, signing_secret = $1, secret_rotated_at = $2
             WHERE id = $3",
        )
        .bind(new.expose())
        .bind(now.0)
        .bind(workspace.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_process(
        &self,
        workspace: WorkspaceId,
        name: &ProcessName,
        title: &ProcessTitle,
        by: &str,
    ) -> Result<ProcessRecord> {
        let now = Millis::now();
        sqlx::query("INSERT INTO processes (workspace_id, name, title, created_at, created_by) VALUES ($1, $2, $3, $4, $5)")
            .bind(workspace.0)
            .bind(name.as_str())
            .bind(title.as_str())
            .bind(now.0)
            .bind(by)
            .execute(&self.pool)
            .await
            .map_err(|e| if is_unique_violation(&e) { StorageError::Duplicate("a process with this name") } else { e.into() })?;
        Ok(ProcessRecord {
            name: name.clone(),
            title: title.as_str().to_owned(),
            created_at: now,
            created_by: by.to_owned(),
            instance_count: 0,
        })
    }

    async fn processes(&self, workspace: WorkspaceId) -> Result<Vec<ProcessRecord>> {
        let rows = sqlx::query(
            "SELECT p.name, p.title, p.created_at, p.created_by,
                    (SELECT COUNT(*) FROM instances i WHERE i.process_id = p.id AND i.deleted_at IS NULL) AS n
             FROM processes p WHERE p.workspace_id = $1 ORDER BY p.name",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(process_from_row).collect()
    }

    async fn process(
        &self,
        workspace: WorkspaceId,
        name: &ProcessName,
    ) -> Result<Option<ProcessRecord>> {
        let row = sqlx::query(
            "SELECT p.name, p.title, p.created_at, p.created_by,
                    (SELECT COUNT(*) FROM instances i WHERE i.process_id = p.id AND i.deleted_at IS NULL) AS n
             FROM processes p WHERE p.workspace_id = $1 AND p.name = $2",
        )
        .bind(workspace.0)
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(process_from_row).transpose()
    }

    async fn create_instance(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        data: &InstanceData,
        status: &InstanceStatus,
        by: &str,
    ) -> Result<Option<InstanceRecord>> {
        self.writes
            .create(workspace, process, data, status, by)
            .await
    }

    async fn instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE workspace_id = $1 AND instance_id = $2"
        )))
        .bind(workspace.0)
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(instance_from_row).transpose()
    }

    async fn instances(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INSTANCE_COLUMNS}, number AS cursor FROM instances
             WHERE process_id = (SELECT id FROM processes WHERE workspace_id = $1 AND name = $2)
               AND deleted_at IS NULL AND ($3 IS NULL OR number < $3)
             ORDER BY number DESC LIMIT $4"
        )))
        .bind(workspace.0)
        .bind(process.as_str())
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        page(rows, limit, instance_from_row)
    }

    async fn recycle_bin(
        &self,
        workspace: WorkspaceId,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INSTANCE_COLUMNS}, id AS cursor FROM instances
             WHERE workspace_id = $1 AND deleted_at IS NOT NULL AND ($2 IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(workspace.0)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        page(rows, limit, instance_from_row)
    }

    async fn update_instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        update: &InstanceUpdate,
        by: &str,
    ) -> Result<Written> {
        self.writes.update(workspace, id, update, by).await
    }

    async fn delete_instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        by: &str,
    ) -> Result<Written> {
        self.writes.delete(workspace, id, by).await
    }

    async fn restore_instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        by: &str,
    ) -> Result<Written> {
        self.writes.restore(workspace, id, by).await
    }

    async fn claim_due(&self, request: ClaimRequest<'_>) -> Result<Vec<ClaimedDelivery>> {
        // One statement, so no explicit transaction (and two round trips fewer per claim).
        // Per destination host with pending deliveries, take as many due rows as the host has
        // free slots, in due order, from the per-host index: a host at its cap costs nothing and
        // never hides the others behind its backlog; a host this node alone keeps at its cap is
        // skipped before its leases are counted (measured with a hanging receiver: counting its 64
        // leases doubled the claim's cost, their rows never settled enough for an index-only
        // scan). The hosts are found by skipping through the
        // per-host index (one probe per host), never by reading the queue, so a claim costs the
        // same with a million rows pending as with ten, whatever the planner's statistics say.
        //
        // On a generic plan, made once per connection (`force_generic_plan`): planning the claim
        // with its parameters cost 0.55 ms of server CPU per claim, a fifth of PostgreSQL's time
        // at 1,000 events/s (`pg_stat_statements`). This form's generic plan is the same on a new
        // empty table, with 3 rows, with 200,000 pending on fresh or stale statistics, and after
        // they were all deleted (checked with `EXPLAIN EXECUTE` in each state): every scan is a
        // nested loop keyed by the host or by the candidate, each on the one index whose leading
        // columns are its keys, and the leases are written through the locked rows' `ctid`s (a
        // TID scan). Two changes made it so. Without them, on a table emptied with stale
        // statistics, the plan found hosts and due rows through `deliveries_due` (sorting every
        // pending row, per host), and found each claimed row through `deliveries_log` by its
        // second column (reading the whole index per row), so migration 4 drops
        // `deliveries_due`, and the update no longer joins by id. Earlier forms of the check
        // failed too: with `min(id)` it walked the primary key, and one claim of another took
        // 25–40 s in the fleet test, so its leases ran out and two nodes sent the same delivery.
        // So the claim is also guarded: `statement_timeout` cancels any claim after
        // `CLAIM_TIMEOUT`, before its leases could end (a cancelled claim leases nothing), a
        // generic claim that was cancelled or slow switches this node to claims planned afresh,
        // and one slower than `STALE_PLAN_CLAIM` has the statistics refreshed, so that the
        // plan is made again: a state the checks above missed (a never-analyzed table of a
        // hundred rows or so) gave a plan whose ordering check read a host's whole backlog.
        //
        // A row updated by another node after this statement's snapshot and then locked here is
        // not leased: its new version is not visible to the TID scan. It is claimed next time.
        //
        // The ordering check is a correlated scalar subquery, which PostgreSQL always runs as an
        // index lookup keyed by the candidate's values. As `NOT EXISTS`, a plan made on the
        // statistics of a new database (before autovacuum's first ANALYZE, up to a minute) turned
        // it into an anti-join that read the whole pending index for each candidate
        // (`auto_explain`: 31,185 rows read to claim 63, claims of 16–20 ms).
        let fresh = self.claims_planned_afresh();
        let started = std::time::Instant::now();
        let query = sqlx::query(CLAIM_SQL)
            .bind(request.lease_until.0)
            .bind(request.node)
            .bind(request.now.0)
            .bind(request.limit)
            .bind(request.per_host_cap)
            .bind(request.full_hosts)
            .persistent(!fresh);
        let result = if fresh {
            query.fetch_all(&self.claims_fresh).await
        } else {
            query.fetch_all(&self.claims).await
        };
        let took = started.elapsed();
        let cancelled = matches!(&result, Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014"));
        if !fresh && took > STALE_PLAN_CLAIM {
            self.refresh_queue_statistics(took);
        }
        if !fresh && (cancelled || took > SLOW_GENERIC_CLAIM) {
            self.claims_planned_afresh
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                cancelled,
                "a claim on its generic plan was too slow: this node now plans every claim afresh"
            );
        }
        let rows = result?;
        let mut claimed = rows
            .iter()
            .map(claimed_from_row)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|c| c.key);
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        breaker: &BreakerPolicy,
    ) -> Result<Vec<Unfinished>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let now = Millis::now();
        let keys: Vec<i64> = results.iter().map(|r| r.key).collect();
        let started: Vec<i64> = results.iter().map(|r| r.attempt.started_at.0).collect();
        let durations: Vec<i64> = results.iter().map(|r| r.attempt.duration_ms).collect();
        let outcomes: Vec<&str> = results.iter().map(|r| r.attempt.outcome.as_str()).collect();
        let codes: Vec<Option<i64>> = results.iter().map(|r| r.attempt.status_code).collect();
        let errors: Vec<Option<&str>> =
            results.iter().map(|r| r.attempt.error.as_deref()).collect();
        let excerpts: Vec<Option<&str>> = results
            .iter()
            .map(|r| r.attempt.response_excerpt.as_deref())
            .collect();
        let nodes: Vec<&str> = results.iter().map(|r| r.attempt.node.as_str()).collect();
        let (statuses, next_at): (Vec<&str>, Vec<Option<i64>>) =
            results.iter().map(|r| r.next.stored()).unzip();
        let all_succeeded = results
            .iter()
            .all(|r| r.attempt.outcome == crate::domain::AttemptOutcome::Success);
        // When every attempt succeeded, the statement also does what `record_health` does for a
        // success: closes the breaker of each URL that has failed before, and makes what that
        // URL's pause held due now. With failures it closes none; the health rules follow.
        let mut urls: Vec<(i64, &str)> = results
            .iter()
            .filter(|r| all_succeeded && !r.test)
            .map(|r| (r.workspace_id.0, r.url.as_str()))
            .collect();
        urls.sort_unstable();
        urls.dedup();
        let (url_workspaces, url_texts): (Vec<i64>, Vec<&str>) = urls.into_iter().unzip();
        let query = sqlx::query_as::<_, (i64, String)>(RECORD_RESULTS_SQL)
            .bind(&keys)
            .bind(&started)
            .bind(&durations)
            .bind(&outcomes)
            .bind(&codes)
            .bind(&errors)
            .bind(&excerpts)
            .bind(&nodes)
            .bind(&statuses)
            .bind(&next_at)
            .bind(now.0)
            .bind(&url_workspaces)
            .bind(&url_texts)
            .bind(BREAKER_CHUNK);
        // URLs whose recovery released a full chunk: the caller releases the rest.
        let released = |rows: Vec<(i64, String)>| {
            rows.into_iter().map(|(workspace, url)| Unfinished {
                workspace_id: WorkspaceId(workspace),
                url,
                step: BreakerStep::Release,
            })
        };
        if all_succeeded {
            // The common case: one statement, so no explicit transaction (four round trips
            // fewer).
            let rows = query.fetch_all(&self.queue).await?;
            return Ok(released(rows).collect());
        }
        let mut tx = self.queue.begin().await?;
        query.fetch_all(&mut *tx).await?;
        let unfinished =
            super::health::record_health(&mut PgHealth(&mut tx), results, breaker, now).await?;
        tx.commit().await?;
        Ok(unfinished)
    }

    async fn resume(&self, work: &Unfinished) -> Result<bool> {
        let mut tx = self.queue.begin().await?;
        let more = super::health::resume(&mut PgHealth(&mut tx), work).await?;
        tx.commit().await?;
        Ok(more)
    }

    async fn promote_probes(&self, now: Millis) -> Result<()> {
        let paused: Vec<(i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(super::pauses_over_sql('$')))
                .bind(now.0)
                .fetch_all(&self.pool)
                .await?;
        // Planned with its parameters each time: the checks must read the host's index,
        // never the URL's backlog, and only the values tell the planner which is small.
        let promote = super::promote_probe_sql('$');
        for (workspace, url) in paused {
            let Some(host) = super::probe_host(&url) else {
                continue;
            };
            sqlx::query(sqlx::AssertSqlSafe(promote.as_str()))
                .bind(now.0)
                .bind(workspace)
                .bind(&url)
                .bind(host)
                .persistent(false)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn stranded_releases(&self) -> Result<Vec<Unfinished>> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(super::stranded_releases_sql('$')))
                .fetch_all(&self.pool)
                .await?;
        Ok(super::stranded(rows))
    }

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
        let row: QueueRow = sqlx::query_as(sqlx::AssertSqlSafe(queue_stats_sql('$')))
            .bind(now.0)
            .fetch_one(&self.pool)
            .await?;
        Ok(QueueStats::from_row(row, now))
    }

    async fn destinations(&self, workspace: WorkspaceId) -> Result<Vec<DestinationRecord>> {
        let rows: Vec<super::health::DestinationRow> =
            sqlx::query_as(super::health::DESTINATIONS_SQL)
                .bind(workspace.0)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn enable_destination(&self, workspace: WorkspaceId, url: &str) -> Result<bool> {
        let n = sqlx::query(super::health::ENABLE_SQL)
            .bind(workspace.0)
            .bind(url)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn create_test_delivery(
        &self,
        workspace: WorkspaceId,
        event: EventType,
        url: &crate::domain::CallbackUrl,
        instance_id: &str,
        request: ClaimRequest<'_>,
    ) -> Result<ClaimedDelivery> {
        let mut tx = self.pool.begin().await?;
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
             VALUES ($1, $2, $3, $4, $5, NULL) RETURNING id",
        )
        .bind(workspace.0)
        .bind(event.as_str())
        .bind(instance_id)
        .bind(TEST_PROCESS)
        .bind(request.now.0)
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query(
            "INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name, url, host,
                                     test, status, attempts, next_attempt_at, lease_until, leased_by, created_at, updated_at, format)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, 'pending', 0, $9, $10, $11, $9, $9,
                     (SELECT webhook_format FROM workspaces WHERE id = $2))
             RETURNING id, workspace_id, test, webhook_id, event_type, instance_id, process_name, url, host, attempts, created_at, format,
                       CASE WHEN format = 'standard' THEN (SELECT ev.instance FROM events ev WHERE ev.id = deliveries.event_id) END AS instance",
        )
        .bind(DeliveryId::generate().as_str())
        .bind(workspace.0)
        .bind(event_id)
        .bind(event.as_str())
        .bind(instance_id)
        .bind(TEST_PROCESS)
        .bind(url.as_str())
        .bind(url.host_key())
        .bind(request.now.0)
        .bind(request.lease_until.0)
        .bind(request.node)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        claimed_from_row(&row)
    }

    async fn prune(&self, before: Millis, batch: i64) -> Result<Pruned> {
        let mut tx = self.pool.begin().await?;
        // A delivery's attempts go with it (no foreign key cascades here: migration 5).
        let done: i64 = sqlx::query_scalar(
            "WITH gone AS (
                DELETE FROM deliveries WHERE id IN (
                    SELECT id FROM deliveries WHERE status <> 'pending' AND updated_at < $1 LIMIT $2)
                RETURNING id),
             attempts AS (
                DELETE FROM delivery_attempts a USING gone WHERE a.delivery_id = gone.id)
             SELECT COUNT(*) FROM gone",
        )
        .bind(before.0)
        .bind(batch)
        .fetch_one(&mut *tx)
        .await?;
        let done = u64::try_from(done).unwrap_or(0);
        let events = sqlx::query(sqlx::AssertSqlSafe(prune_events_sql('$')))
            .bind(before.0)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Pruned {
            deliveries: done,
            events,
        })
    }

    async fn redeliver_matching(
        &self,
        workspace: WorkspaceId,
        filter: &DeliveryFilter,
        now: Millis,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $8, updated_at = $8
             WHERE workspace_id = $1
               AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR event_type = $3)
               AND ($4 IS NULL OR instance_id = $4)
               AND ($5 IS NULL OR strpos(url, $5) > 0)
               AND ($6 IS NULL OR created_at >= $6)
               AND ($7 IS NULL OR created_at < $7)
               AND NOT test",
        )
        .bind(workspace.0)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.event_type.map(|e| e.as_str()))
        .bind(filter.instance_id.as_deref())
        .bind(filter.url.as_deref())
        .bind(filter.since.map(|t| t.0))
        .bind(filter.until.map(|t| t.0))
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            notify(&mut *self.pool.acquire().await?).await?;
        }
        Ok(done.rows_affected())
    }

    async fn deliveries(
        &self,
        workspace: WorkspaceId,
        filter: &DeliveryFilter,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT *, id AS cursor FROM deliveries
             WHERE workspace_id = $1
               AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR event_type = $3)
               AND ($4 IS NULL OR instance_id = $4)
               AND ($5 IS NULL OR strpos(url, $5) > 0)
               AND ($6 IS NULL OR created_at >= $6)
               AND ($7 IS NULL OR created_at < $7)
               AND ($8 IS NULL OR id < $8)
             ORDER BY id DESC LIMIT $9",
        )
        .bind(workspace.0)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.event_type.map(|e| e.as_str()))
        .bind(filter.instance_id.as_deref())
        .bind(filter.url.as_deref())
        .bind(filter.since.map(|t| t.0))
        .bind(filter.until.map(|t| t.0))
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        page(rows, limit, delivery_from_row)
    }

    async fn delivery(
        &self,
        workspace: WorkspaceId,
        id: &DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        // One read transaction, so the delivery and its attempts are one consistent snapshot.
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT * FROM deliveries WHERE workspace_id = $1 AND webhook_id = $2")
                .bind(workspace.0)
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let delivery = delivery_from_row(&row)?;
        let attempts = sqlx::query(
            "SELECT started_at, duration_ms, outcome, status_code, error, response_excerpt, node
             FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(delivery.key)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(AttemptRecord {
                started_at: Millis(r.try_get("started_at")?),
                duration_ms: r.try_get("duration_ms")?,
                outcome: AttemptOutcome::from_stored(r.try_get("outcome")?),
                status_code: r.try_get("status_code")?,
                error: r.try_get("error")?,
                response_excerpt: r.try_get("response_excerpt")?,
                node: r.try_get("node")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Some((delivery, attempts)))
    }

    async fn redeliver(
        &self,
        workspace: WorkspaceId,
        id: &DeliveryId,
        now: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1
             WHERE workspace_id = $2 AND webhook_id = $3",
        )
        .bind(now.0)
        .bind(workspace.0)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            notify(&mut *self.pool.acquire().await?).await?;
        }
        Ok(done.rows_affected() > 0)
    }
}

/// Announces due deliveries to every node; PostgreSQL delivers it when the transaction commits.
/// Stores a batch of attempt results (see `record_attempts`): the attempt rows and the
/// deliveries' new state, and closes the breakers of the URLs in `$12`/`$13` (the workspaces and
/// URLs of a batch of successes; none when `record_health` applies the rules instead), making
/// what their pauses held due now. `$1` keys, `$2` started, `$3` durations, `$4` outcomes, `$5`
/// status codes, `$6` errors, `$7` excerpts, `$8` nodes, `$9` statuses, `$10` next attempt
/// times, `$11` now. The held constant is written out so the partial index of held rows applies;
/// a test checks it equals [`HELD`]. The release reads the held rows of each URL whose breaker
/// closed, one URL at a time (`OFFSET 0` keeps the planner from turning it into a join that
/// reads every held row: measured, 83 ms per batch with 100,000 rows held for another URL).
const RECORD_RESULTS_SQL: &str = "WITH attempts AS (
        INSERT INTO delivery_attempts (delivery_id, started_at, duration_ms, outcome, status_code, error,
                                       response_excerpt, node)
        SELECT k, a, d, o, c, e, x, h
        FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                    $7::text[], $8::text[]) WITH ORDINALITY AS t(k, a, d, o, c, e, x, h, ord)
        ORDER BY ord),
     done AS (
        UPDATE deliveries SET status = j.s, next_attempt_at = j.n, attempts = attempts + 1,
               lease_until = NULL, leased_by = NULL, last_attempt_at = j.a,
               last_status_code = j.c, last_error = j.e, updated_at = $11
        FROM unnest($1::bigint[], $9::text[], $10::bigint[], $2::bigint[], $5::bigint[], $6::text[])
             AS j(k, s, n, a, c, e)
        WHERE deliveries.id = j.k),
     healed AS (
        UPDATE destinations SET state = 'closed', consecutive_failures = 0, paused_until = NULL,
               probe_interval_ms = 0, last_success_at = $11
        FROM unnest($12::bigint[], $13::text[]) AS h(w, u)
        WHERE destinations.workspace_id = h.w AND destinations.url = h.u
        RETURNING destinations.workspace_id, destinations.url),
     released AS (
        UPDATE deliveries SET next_attempt_at = $11
        WHERE id IN (SELECT held.id FROM healed
                     CROSS JOIN LATERAL (
                         SELECT d.id FROM deliveries d
                         WHERE d.workspace_id = healed.workspace_id AND d.url = healed.url
                           AND d.status = 'pending' AND d.next_attempt_at >= 4000000000000000
                           AND d.id <> ALL($1::bigint[])
                         ORDER BY d.id LIMIT $14) held)
        RETURNING workspace_id, url)
     SELECT workspace_id, url FROM released GROUP BY workspace_id, url HAVING COUNT(*) >= $14";

async fn notify(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The process name of test callbacks.
const TEST_PROCESS: &str = "herald-test";

fn claimed_from_row(r: &PgRow) -> Result<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        key: r.try_get("id")?,
        workspace_id: WorkspaceId(r.try_get("workspace_id")?),
        test: r.try_get("test")?,
        id: DeliveryId::from_stored(r.try_get("webhook_id")?),
        event_type: event_from_stored(r.try_get("event_type")?),
        instance_id: r.try_get("instance_id")?,
        process_name: r.try_get("process_name")?,
        url: r.try_get("url")?,
        host: r.try_get("host")?,
        attempts: r.try_get("attempts")?,
        occurred_at: Millis(r.try_get("created_at")?),
        format: super::format_from_stored(r.try_get("format")?),
        instance: r.try_get("instance")?,
    })
}

/// A caller from a row with the user's `id`, `workspace_id`, `email` and `role`.
fn caller_from_row(r: &PgRow) -> Result<Caller> {
    Ok(Caller {
        user_id: UserId(r.try_get("id")?),
        workspace_id: WorkspaceId(r.try_get("workspace_id")?),
        email: r.try_get("email")?,
        role: Role::parse(r.try_get("role")?).unwrap_or(Role::User),
    })
}

fn process_from_row(row: &PgRow) -> Result<ProcessRecord> {
    let name: String = row.try_get("name")?;
    Ok(ProcessRecord {
        name: ProcessName::parse(&name).map_err(|e| sqlx::Error::Decode(e.0.into()))?,
        title: row.try_get("title")?,
        created_at: Millis(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        instance_count: row.try_get("n")?,
    })
}

/// Turns `limit + 1` fetched rows into a page and the cursor of the next one.
fn page<T>(rows: Vec<PgRow>, limit: i64, decode: impl Fn(&PgRow) -> Result<T>) -> Result<Page<T>> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut next_cursor = None;
    for row in rows.iter().take(limit) {
        items.push(decode(row)?);
        next_cursor = Some(row.try_get::<i64, _>("cursor")?);
    }
    Ok(Page {
        items,
        next_cursor: if more { next_cursor } else { None },
    })
}

/// Applies batches of instance writes for [`GroupCommit`]: one transaction (one commit, one
/// fsync) per batch, one counter update per process (locked in a fixed order), one statement for
/// all new instances, one for all events with their deliveries, one per update, delete or
/// restore, and one `NOTIFY`.
struct PgWriter {
    pool: PgPool,
}

/// New instances of a batch, column by column, for `unnest`.
#[derive(Default)]
struct NewInstances {
    workspace: Vec<i64>,
    process: Vec<i64>,
    number: Vec<i64>,
    instance_id: Vec<String>,
    unique_id: Vec<String>,
    data: Vec<String>,
    status: Vec<String>,
    by: Vec<String>,
}

#[async_trait]
impl BatchWriter for PgWriter {
    async fn apply(&self, writes: &[InstanceWrite]) -> Result<Vec<WriteOutcome>> {
        let now = Millis::now();
        if let Some((workspace, process)) = creates_of_one_process(writes)
            && let Some(outcomes) = self
                .create_in_one_statement(workspace, process, writes, now)
                .await?
        {
            return Ok(outcomes);
        }
        let mut tx = self.pool.begin().await?;
        // Reserve the numbers of the creates: (process key, next number) per process.
        let mut numbers = std::collections::HashMap::new();
        for (workspace, process, count) in group::creates_per_process(writes) {
            let reserved: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE processes SET next_number = next_number + $3 WHERE workspace_id = $1 AND name = $2
                 RETURNING id, next_number",
            )
            .bind(workspace.0)
            .bind(process.as_str())
            .bind(count)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((key, last)) = reserved {
                numbers.insert((workspace.0, process.as_str()), (key, last - count + 1));
            }
        }
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut new = NewInstances::default();
        for write in writes {
            let outcome = match write {
                InstanceWrite::Create {
                    workspace,
                    process,
                    data,
                    status,
                    by,
                } => match numbers.get_mut(&(workspace.0, process.as_str())) {
                    None => WriteOutcome::Created(None),
                    Some((key, next)) => {
                        let record = group::new_record(process, *next, data, status, by, now);
                        new.workspace.push(workspace.0);
                        new.process.push(*key);
                        new.number.push(*next);
                        new.instance_id.push(record.id.as_str().to_owned());
                        new.unique_id.push(record.unique_id.clone());
                        new.data.push(data.to_json());
                        new.status.push(status.as_str().to_owned());
                        new.by.push(by.clone());
                        *next += 1;
                        WriteOutcome::Created(Some(record))
                    }
                },
                InstanceWrite::Update {
                    workspace,
                    id,
                    update,
                    by,
                } => {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE instances SET data = $1, status = $2, version = version + 1, modified_at = $3, modified_by = $4
                         WHERE workspace_id = $5 AND instance_id = $6 AND version = $7 AND deleted_at IS NULL
                         RETURNING {INSTANCE_COLUMNS}"
                    )))
                    .bind(update.data.to_json())
                    .bind(update.status.as_str())
                    .bind(now.0)
                    .bind(by)
                    .bind(workspace.0)
                    .bind(id.as_str())
                    .bind(update.expected_version)
                    .fetch_optional(&mut *tx)
                    .await?;
                    written(&mut tx, row, *workspace, id, false).await?
                }
                InstanceWrite::Delete { workspace, id, by } => {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE instances SET deleted_at = $1, deleted_by = $2
                         WHERE workspace_id = $3 AND instance_id = $4 AND deleted_at IS NULL
                         RETURNING {INSTANCE_COLUMNS}"
                    )))
                    .bind(now.0)
                    .bind(by)
                    .bind(workspace.0)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    written(&mut tx, row, *workspace, id, false).await?
                }
                InstanceWrite::Restore { workspace, id, .. } => {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE instances SET deleted_at = NULL, deleted_by = NULL
                         WHERE workspace_id = $1 AND instance_id = $2 AND deleted_at IS NOT NULL
                         RETURNING {INSTANCE_COLUMNS}"
                    )))
                    .bind(workspace.0)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    written(&mut tx, row, *workspace, id, true).await?
                }
            };
            outcomes.push(outcome);
        }
        fire(&mut tx, &new, &group::fired(writes, &outcomes), now).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// The workspace and process of a batch made only of creates of one process (the usual batch:
/// a burst of new instances), which one statement can write.
fn creates_of_one_process(writes: &[InstanceWrite]) -> Option<(WorkspaceId, &ProcessName)> {
    let mut one = None;
    for write in writes {
        let InstanceWrite::Create {
            workspace, process, ..
        } = write
        else {
            return None;
        };
        match one {
            None => one = Some((*workspace, process)),
            Some((w, p)) if w == *workspace && p == process => {}
            Some(_) => return None,
        }
    }
    one
}

impl PgWriter {
    /// Writes a batch of creates of one process in one statement, committed on its own: the
    /// number reservation, the instances, their events and deliveries, and the announcement.
    /// The general path takes four round trips (`BEGIN`, the reservation, the rest, `COMMIT`),
    /// each a wake-up of both processes; measured at 1,000 events/s, where most batches hold
    /// one create, the write took 4–5 ms of every event's latency.
    ///
    /// The instance IDs depend on the numbers reserved in the same statement, so PostgreSQL
    /// builds them (`<process>-<n>`, as `InstanceId::new`) and splices each into its event's
    /// snapshot, which Rust serialised with the ID left out: the ID is the snapshot's first
    /// field, and a process name needs no JSON escaping (lowercase letters, digits, dashes).
    async fn create_in_one_statement(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        writes: &[InstanceWrite],
        now: Millis,
    ) -> Result<Option<Vec<WriteOutcome>>> {
        let mut records = Vec::with_capacity(writes.len());
        let mut snapshot_tails = Vec::with_capacity(writes.len());
        let placeholder = InstanceId::new(process, 0);
        let id_prefix = format!(
            "{{\"id\":{}",
            serde_json::to_string(placeholder.as_str()).unwrap_or_default()
        );
        for write in writes {
            let InstanceWrite::Create {
                data, status, by, ..
            } = write
            else {
                unreachable!("creates_of_one_process checked the batch");
            };
            let record = group::new_record(process, 0, data, status, by, now);
            let snapshot = group::snapshot(EventType::Created, &record).unwrap_or_default();
            // Not expected: then the general path writes the batch.
            let Some(tail) = snapshot.strip_prefix(&id_prefix) else {
                return Ok(None);
            };
            snapshot_tails.push(tail.to_owned());
            records.push(record);
        }
        let unique_ids: Vec<&str> = records.iter().map(|r| r.unique_id.as_str()).collect();
        let data: Vec<String> = records.iter().map(|r| r.data.to_json()).collect();
        let statuses: Vec<&str> = records.iter().map(|r| r.status.as_str()).collect();
        let by: Vec<&str> = records.iter().map(|r| r.created_by.as_str()).collect();
        let count = i64::try_from(writes.len()).unwrap_or(i64::MAX);
        let first: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(&**CREATE_ONE_PROCESS_SQL))
            .bind(workspace.0)
            .bind(process.as_str())
            .bind(count)
            .bind(&unique_ids)
            .bind(&data)
            .bind(&statuses)
            .bind(&by)
            .bind(&snapshot_tails)
            .bind(now.0)
            .bind(HELD)
            .bind(CHANNEL)
            .fetch_optional(&self.pool)
            .await?;
        let Some(first) = first else {
            // No such process: nothing was written.
            return Ok(Some(
                writes.iter().map(|_| WriteOutcome::Created(None)).collect(),
            ));
        };
        Ok(Some(
            records
                .into_iter()
                .zip(first..)
                .map(|(mut record, number)| {
                    record.id = InstanceId::new(process, number);
                    WriteOutcome::Created(Some(record))
                })
                .collect(),
        ))
    }
}

/// The outcome of a compare-and-set write on an instance: the updated row, or why nothing
/// matched.
async fn written(
    tx: &mut sqlx::PgConnection,
    row: Option<PgRow>,
    workspace: WorkspaceId,
    id: &InstanceId,
    want_deleted: bool,
) -> Result<WriteOutcome> {
    let written = match row {
        Some(row) => Written::Done(Box::new(instance_from_row(&row)?)),
        None => PostgresStore::why_not_written(tx, workspace, id, want_deleted).await?,
    };
    Ok(WriteOutcome::Written(written))
}

/// The one-statement write of a batch of creates of one process (see
/// `PgWriter::create_in_one_statement`). `next_number` holds the last number given, as in the
/// general path. $1 workspace, $2 process name, $3 count, $4–$8 per create: unique ID, data,
/// status, author, snapshot without its ID; $9 now, $10 `HELD`, $11 channel.
static CREATE_ONE_PROCESS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH reserved AS (
                UPDATE processes SET next_number = next_number + $3
                WHERE workspace_id = $1 AND name = $2
                RETURNING id, next_number - $3 + 1 AS first),
             req AS (
                SELECT r.id AS process_id, r.first + t.ord - 1 AS n, $2 || '-' || (r.first + t.ord - 1) AS i,
                       t.u, t.d, t.s, t.b, t.tail, t.ord
                FROM reserved r,
                     unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
                         WITH ORDINALITY AS t(u, d, s, b, tail, ord)),
             inst AS (
                INSERT INTO instances (workspace_id, process_id, number, instance_id, unique_id, data, status, version,
                                       created_at, created_by, modified_at, modified_by)
                SELECT $1, process_id, n, i, u, d, s, 1, $9, b, $9, b FROM req),
             ev AS (
                INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
                SELECT $1, 'created', i, $2, $9, '{{\"id\":' || to_json(i)::text || tail FROM req
                WHERE {has_urls}
                ORDER BY ord
                RETURNING id, workspace_id, event_type, instance_id, process_name),
             {queued},
             announced AS (
                SELECT pg_notify($11, '') WHERE EXISTS (SELECT 1 FROM queued))
             SELECT r.first FROM reserved r WHERE (SELECT COUNT(*) FROM announced) >= 0",
        queued = queued_deliveries_cte("$9", "$10"),
        has_urls = has_urls_sql("$1", "'created'")
    )
});

/// The CTE `queued` that inserts, for each row of the CTE `ev` (inserted events), one pending
/// delivery per URL its event has enabled, held at once (`next_attempt_at` = `held`) if the URL
/// is paused, in the order of the events and the URLs. `now` and `held` are placeholders.
fn queued_deliveries_cte(now: &str, held: &str) -> String {
    format!(
        "queued AS (
            INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name, url, host,
                                    status, attempts, next_attempt_at, created_at, updated_at, format)
            SELECT 'msg_' || lpad(to_hex({now}::bigint), 12, '0') || '7' || substr(replace(gen_random_uuid()::text, '-', ''), 14, 19),
                   u.workspace_id, ev.id, u.event_type,
                   ev.instance_id, ev.process_name, u.url, u.host,
                   'pending', 0, CASE WHEN x.state = 'open' THEN {held} ELSE {now} END, {now}, {now}, w.webhook_format
            FROM ev
            JOIN webhook_urls u ON u.workspace_id = ev.workspace_id AND u.event_type = ev.event_type
            JOIN webhook_events e ON e.workspace_id = u.workspace_id AND e.event_type = u.event_type
            JOIN workspaces w ON w.id = u.workspace_id
            LEFT JOIN destinations x ON x.workspace_id = u.workspace_id AND x.url = u.url
            WHERE e.enabled AND x.disabled_at IS NULL
            ORDER BY ev.id, u.position
            RETURNING 1)"
    )
}

/// The general write's last statement (see `fire`).
static FIRE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH inst AS (
            INSERT INTO instances (workspace_id, process_id, number, instance_id, unique_id, data, status, version,
                                   created_at, created_by, modified_at, modified_by)
            SELECT w, p, n, i, u, d, s, 1, $6, b, $6, b
            FROM unnest($9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::text[],
                        $15::text[], $16::text[]) AS t(w, p, n, i, u, d, s, b)),
         ev AS (
            INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
            SELECT w, e, i, p, $6, s
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
                 WITH ORDINALITY AS t(w, e, i, p, s, ord)
            WHERE {has_urls}
            ORDER BY ord
            RETURNING id, workspace_id, event_type, instance_id, process_name),
         {queued}
         SELECT pg_notify($8, '') WHERE EXISTS (SELECT 1 FROM queued)",
        queued = queued_deliveries_cte("$6", "$7"),
        has_urls = has_urls_sql("t.w", "t.e")
    )
});

/// Writes the new instances of a batch, its events and, for each event, one pending delivery
/// per URL its event has enabled at this moment (held at once if the URL is paused), in the
/// order of the events and of the URLs, and announces them: one statement, one round trip.
async fn fire(
    tx: &mut sqlx::PgConnection,
    new: &NewInstances,
    fired: &[(WorkspaceId, EventType, &InstanceRecord)],
    now: Millis,
) -> Result<()> {
    if fired.is_empty() && new.number.is_empty() {
        return Ok(());
    }
    let workspaces: Vec<i64> = fired.iter().map(|(w, _, _)| w.0).collect();
    let events: Vec<&str> = fired.iter().map(|(_, e, _)| e.as_str()).collect();
    let ids: Vec<&str> = fired.iter().map(|(_, _, r)| r.id.as_str()).collect();
    let processes: Vec<&str> = fired
        .iter()
        .map(|(_, _, r)| r.process_name.as_str())
        .collect();
    let snapshots: Vec<Option<String>> = fired
        .iter()
        .map(|(_, e, r)| group::snapshot(*e, r))
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(&**FIRE_SQL))
        .bind(&workspaces)
        .bind(&events)
        .bind(&ids)
        .bind(&processes)
        .bind(&snapshots)
        .bind(now.0)
        .bind(HELD)
        .bind(CHANNEL)
        .bind(&new.workspace)
        .bind(&new.process)
        .bind(&new.number)
        .bind(&new.instance_id)
        .bind(&new.unique_id)
        .bind(&new.data)
        .bind(&new.status)
        .bind(&new.by)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_for_a_server_on_this_machine_unless_asked_for() {
        use sqlx::postgres::PgSslMode;
        // PGSSLMODE in the environment would make every case explicit.
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        let cases = [
            ("postgres://u@127.0.0.1:5432/db", PgSslMode::Disable),
            ("postgres://u@localhost/db", PgSslMode::Disable),
            ("postgres://u@[::1]:5432/db", PgSslMode::Disable),
            (
                "postgres://u@127.0.0.1/db?sslmode=require",
                PgSslMode::Require,
            ),
            ("postgres://u@db.example.com/db", PgSslMode::Prefer),
            ("postgres://u@10.1.2.3/db", PgSslMode::Prefer),
        ];
        for (url, want) in cases {
            let got = without_tls_on_loopback(url, PgConnectOptions::from_str(url).unwrap())
                .get_ssl_mode();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{url}: {got:?}"
            );
        }
    }

    #[test]
    fn releasing_held_rows_after_successes_uses_the_held_constant() {
        assert!(RECORD_RESULTS_SQL.contains(&format!("next_attempt_at >= {HELD}")));
    }
}
