//! The PostgreSQL backend: several Herald nodes share one database.
//!
//! Claims lock candidate rows with `FOR UPDATE SKIP LOCKED`, so nodes never wait on each other
//! and never claim the same delivery while its lease runs. Every write that queues deliveries
//! sends `NOTIFY herald_deliveries` (delivered at commit), which wakes the workers of all nodes.

mod health;
mod queue;
mod writer;

use health::PgHealth;
use writer::PgWriter;

use super::group::{self, BatchWriter, GroupCommit, InstanceWrite, WriteOutcome};
use super::migrate::{self, POSTGRES};
use super::*;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
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

use super::shared::INSTANCE_COLUMNS;

/// An instance from a row holding its [`INSTANCE_COLUMNS`], decoded as the shared reads do.
fn instance_from_row(row: &PgRow) -> Result<InstanceRecord> {
    <super::shared::InstanceRow as sqlx::FromRow<PgRow>>::from_row(row)?.record()
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
        let writes = Arc::new(GroupCommit::start(PgWriter::new(pool.clone())));
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

    /// Runs `work` holding the migration lock, so nodes starting together migrate (and make the
    /// migration tables) one at a time; sqlx's migrator takes its own lock inside it.
    async fn under_migration_lock<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut lock = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(7265726164)")
            .execute(&mut *lock)
            .await?;
        let outcome = work.await;
        if sqlx::query("SELECT pg_advisory_unlock(7265726164)")
            .execute(&mut *lock)
            .await
            .is_err()
        {
            // Never back to the pool still holding the lock: closing the session ends it.
            drop(lock.detach());
        }
        outcome
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

impl super::shared::Pools for PostgresStore {
    type Db = sqlx::Postgres;

    fn reads(&self) -> &PgPool {
        &self.pool
    }

    fn group_commit(&self) -> &GroupCommit {
        &self.writes
    }

    fn writes(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn serialize_bootstrap(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(7265726165)")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn announce_due(&self) -> Result<()> {
        notify(&mut *self.pool.acquire().await?).await
    }
}

super::shared::accounts!(PostgresStore);
super::shared::instances!(PostgresStore);
super::shared::settings!(PostgresStore);
super::shared::delivery_log!(PostgresStore);
super::shared::queue_upkeep!(PostgresStore);

#[async_trait]
impl Schema for PostgresStore {
    async fn migrate(&self) -> Result<()> {
        self.under_migration_lock(migrate::run(&self.pool, &POSTGRES))
            .await?;
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
        self.under_migration_lock(migrate::check_current(&self.pool, &POSTGRES))
            .await
    }
}

/// Announces due deliveries to every node; PostgreSQL delivers it when the transaction commits.
async fn notify(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
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
        assert!(queue::RECORD_RESULTS_SQL.contains(&format!("next_attempt_at >= {HELD}")));
    }
}
