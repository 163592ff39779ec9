//! The delivery queue, as the worker sees it: claims under a lease, results, the breaker's unfinished steps, probes, pruning. (PostgreSQL)

use super::*;

#[async_trait]
impl Queue for PostgresStore {
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
            .bind(request.room_hosts)
            .bind(request.rooms)
            .bind(request.default_room)
            .persistent(!fresh);
        let result = if fresh {
            query.fetch_all(&self.claims_fresh).await
        } else {
            query.fetch_all(&self.claims).await
        };
        let cancelled = matches!(&result, Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014"));
        self.claim_guard
            .observe(fresh, started.elapsed(), cancelled, &self.pool, &self.tasks);
        let rows = result?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let decoded =
                <super::super::shared::ClaimedRow as sqlx::FromRow<PgRow>>::from_row(row)?;
            let key = decoded.key();
            if let Some(delivery) = super::super::usable(decoded.claimed().map_err(|e| (key, e))) {
                claimed.push(delivery);
            }
        }
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
            crate::storage::health::record_health(&mut PgHealth(&mut tx), results, breaker, now)
                .await?;
        tx.commit().await?;
        Ok(unfinished)
    }

    async fn resume(&self, work: &Unfinished) -> Result<bool> {
        let mut tx = self.queue.begin().await?;
        let more = crate::storage::health::resume(&mut PgHealth(&mut tx), work).await?;
        tx.commit().await?;
        Ok(more)
    }

    async fn give_back(&self, node: &str, leases: &[(i64, Millis)]) -> Result<()> {
        self.shared_give_back(node, leases).await
    }

    async fn promote_probes(&self, now: Millis) -> Result<()> {
        self.shared_promote_probes(now).await
    }

    async fn stranded_releases(&self) -> Result<Vec<Unfinished>> {
        self.shared_stranded_releases().await
    }

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
        self.shared_queue_stats(now).await
    }

    async fn create_test_delivery(
        &self,
        workspace: WorkspaceId,
        event: EventType,
        url: &crate::domain::CallbackUrl,
        instance_id: &str,
        request: ClaimRequest<'_>,
    ) -> Result<ClaimedDelivery> {
        self.shared_create_test_delivery(workspace, event, url, instance_id, request)
            .await
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
}

/// Leases due deliveries (see `claim_due`). $1 lease end, $2 node, $3 now, $4 limit, $5 per-host
/// cap, $6 hosts to skip. Its `hosts` CTE is written out rather than taken from
/// `storage::pending_hosts_cte`: this exact text is the one whose generic plan was checked.
const CLAIM_SQL: &str = concat!(
    "UPDATE deliveries SET lease_until = $1, leased_by = $2
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
              AND ",
    crate::storage::queue_sql::not_behind_an_earlier!(),
    "
            ORDER BY d.next_attempt_at, d.id
            LIMIT LEAST(GREATEST($5 - b.n, 0),
                        COALESCE((SELECT r.room FROM unnest($7::text[], $8::bigint[]) AS r(host, room)
                                  WHERE r.host = h.host LIMIT 1), $9))
            FOR UPDATE SKIP LOCKED
        ) picked
        WHERE h.host IS NOT NULL AND h.host <> ALL($6::text[])
        ORDER BY picked.next_attempt_at, picked.id
        LIMIT $4))",
    crate::storage::queue_sql::claimed_columns!()
);

/// Stores a batch of attempt results (see `record_attempts`): the attempt rows and the
/// deliveries' new state, and closes the breakers of the URLs in `$12`/`$13` (the workspaces and
/// URLs of a batch of successes; none when `record_health` applies the rules instead), making
/// what their pauses held due now. `$1` keys, `$2` started, `$3` durations, `$4` outcomes, `$5`
/// status codes, `$6` errors, `$7` excerpts, `$8` nodes, `$9` statuses, `$10` next attempt
/// times, `$11` now. The held constant is written out so the partial index of held rows applies;
/// a test checks it equals [`HELD`]. The release reads the held rows of each URL whose breaker
/// closed, one URL at a time (`OFFSET 0` keeps the planner from turning it into a join that
/// reads every held row: measured, 83 ms per batch with 100,000 rows held for another URL).
pub(super) const RECORD_RESULTS_SQL: &str = "WITH attempts AS (
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
