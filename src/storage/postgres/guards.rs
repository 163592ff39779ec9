//! PostgreSQL's guards, in one place, with one policy: **every statement of Herald's goes
//! through an index and keeps a plan that stays right as the tables grow; where PostgreSQL can
//! still pick a bad plan or fall behind on upkeep, Herald notices it from the claim's time and
//! repairs it for the node, never by hand.**
//!
//! - Session settings (set in `PostgresStore::open`): no sequential scans where an index can
//!   serve and no JIT on every connection; on the queue's connections generic plans
//!   (`force_generic_plan`), no bitmap scans, commits that do not wait for the WAL flush.
//! - The claim ([`ClaimGuard`]): `statement_timeout` cancels a claim after [`CLAIM_TIMEOUT`],
//!   before its leases could end; a generic claim slower than [`STALE_PLAN_CLAIM`] has the
//!   queue's statistics refreshed (`ANALYZE`, at most once a minute), which makes the plan be
//!   made again; one cancelled or slower than [`SLOW_GENERIC_CLAIM`] switches the node to claims
//!   planned afresh for the rest of its life.
//! - Upkeep: with autovacuum off, the node vacuums its queue tables itself
//!   ([`vacuum_while_autovacuum_is_off`]).
//! - Every background task of the store is held in [`Tasks`] and ends with the store's last
//!   clone (decision 0004).

use crate::domain::Millis;
use sqlx::PgPool;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

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

/// What the claim's guards decided for this node.
#[derive(Default)]
pub(super) struct ClaimGuard {
    /// Set for the rest of the process when a generic claim was too slow or cancelled.
    planned_afresh: AtomicBool,
    /// When a slow claim last had the queue's statistics refreshed (Unix ms; 0: never).
    statistics_refreshed_at: AtomicI64,
}

impl ClaimGuard {
    /// Whether claims are planned afresh on every call.
    pub(super) fn planned_afresh(&self) -> bool {
        self.planned_afresh.load(Ordering::Relaxed)
    }

    /// Applies the policy to a claim that took `took` (planned afresh if `fresh`), or was
    /// `cancelled` by the statement timeout.
    pub(super) fn observe(
        &self,
        fresh: bool,
        took: Duration,
        cancelled: bool,
        pool: &PgPool,
        tasks: &Tasks,
    ) {
        if fresh {
            return;
        }
        if took > STALE_PLAN_CLAIM {
            self.refresh_statistics(took, pool, tasks);
        }
        if cancelled || took > SLOW_GENERIC_CLAIM {
            self.planned_afresh.store(true, Ordering::Relaxed);
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                cancelled,
                "a claim on its generic plan was too slow: this node now plans every claim afresh"
            );
        }
    }

    /// Refreshes the queue's statistics in the background, at most once per
    /// [`STATISTICS_REFRESH_INTERVAL`].
    fn refresh_statistics(&self, took: Duration, pool: &PgPool, tasks: &Tasks) {
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
        let pool = pool.clone();
        tasks.spawn(async move {
            if let Err(error) = sqlx::query("ANALYZE deliveries").execute(&pool).await {
                tracing::warn!(error = %crate::error::error_chain(&error), "refreshing the queue's statistics failed");
            }
        });
    }
}

/// The store's background tasks: each is aborted when this is dropped (with the store's last
/// clone), so a store that is gone leaves no task and no connection behind.
#[derive(Default)]
pub(super) struct Tasks(Mutex<Vec<AbortOnDropHandle<()>>>);

impl Tasks {
    pub(super) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(AbortOnDropHandle::new(tokio::spawn(task)));
    }
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
pub(super) async fn vacuum_while_autovacuum_is_off(pool: PgPool) {
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
