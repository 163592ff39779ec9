//! The PostgreSQL backend: several Herald nodes share one database.
//!
//! Claims lock candidate rows with `FOR UPDATE SKIP LOCKED`, so nodes never wait on each other
//! and never claim the same delivery while its lease runs. Every write that queues deliveries
//! sends `NOTIFY herald_deliveries` (delivered at commit), which wakes the workers of all nodes.

mod guards;
mod health;
mod queue;
mod writer;

pub use guards::CLAIM_TIMEOUT;

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
    /// What the claim's guards decided (`guards.rs`).
    claim_guard: Arc<guards::ClaimGuard>,
    /// The store's background tasks, which end with its last clone.
    tasks: Arc<guards::Tasks>,
    /// Instance writes go through one writer task that commits them in groups.
    writes: Arc<GroupCommit>,
}

/// An instance from a row holding its [`INSTANCE_COLUMNS`], decoded as the shared reads do.
fn instance_from_row(row: &PgRow) -> Result<InstanceRecord> {
    <super::shared::InstanceRow as sqlx::FromRow<PgRow>>::from_row(row)?.record()
}

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

/// How long a request waits for a connection: an unreachable database answers 503 within
/// about this (issue 19, item 15), not after a client has given up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection of its own before the pools, so that a server that cannot be reached or
/// refuses says why at once; a pool would retry until its timeout and report only that.
async fn first_contact(options: &PgConnectOptions) -> Result<()> {
    use sqlx::ConnectOptions;
    let at = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let wait = Duration::from_secs(5);
    match tokio::time::timeout(wait, options.connect()).await {
        Ok(Ok(connection)) => {
            let _ = sqlx::Connection::close(connection).await;
            Ok(())
        }
        Ok(Err(error)) => Err(StorageError::Connect(match &error {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("connection refused at {at}")
            }
            sqlx::Error::Io(io) => format!("cannot reach {at}: {io}"),
            sqlx::Error::Database(db) => format!("{at} refused the connection: {}", db.message()),
            sqlx::Error::Tls(tls) => format!("TLS with {at} failed: {tls}"),
            other => format!("connecting to {at} failed: {other}"),
        })),
        Err(_) => Err(StorageError::Connect(format!(
            "no answer from {at} within {} s",
            wait.as_secs()
        ))),
    }
}

/// A pool of at most `max` connections with `options`, one opened at once.
async fn connect(options: &PgConnectOptions, max: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
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
        first_contact(&options).await?;
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
            .acquire_timeout(ACQUIRE_TIMEOUT)
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
        let tasks = Arc::new(guards::Tasks::default());
        tasks.spawn(guards::vacuum_while_autovacuum_is_off(pool.clone()));
        let writes = Arc::new(GroupCommit::start(PgWriter::new(pool.clone())));
        Ok(Self {
            pool,
            queue,
            claims,
            claims_fresh,
            claim_guard: Arc::default(),
            tasks,
            writes,
        })
    }

    /// Whether this node's claims are planned afresh on every call, because a claim on the
    /// generic plan was too slow.
    pub fn claims_planned_afresh(&self) -> bool {
        self.claim_guard.planned_afresh()
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
super::shared::idempotency_keys!(PostgresStore);

#[async_trait]
impl Schema for PostgresStore {
    async fn migrate(&self) -> Result<(Vec<i64>, i64)> {
        let applied = self
            .under_migration_lock(migrate::run(&self.pool, &POSTGRES))
            .await?;
        Ok((applied, migrate::latest(&POSTGRES)))
    }

    fn announces_own_writes(&self) -> bool {
        true
    }

    async fn subscribe(&self, wake: Arc<tokio::sync::Notify>) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        self.tasks.spawn(async move {
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
