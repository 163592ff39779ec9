//! The delivery queue, as the worker sees it: claims under a lease, results, the breaker's unfinished steps, probes, pruning. (SQLite)

use super::*;

#[async_trait]
impl Queue for SqliteStore {
    async fn claim_due(&self, request: ClaimRequest<'_>) -> Result<Vec<ClaimedDelivery>> {
        let claim = writer::Claim {
            node: request.node.to_owned(),
            now: request.now.0,
            lease_until: request.lease_until.0,
            limit: request.limit,
            per_host_cap: request.per_host_cap,
            full_hosts: request.full_hosts.to_vec(),
        };
        let _writing = self.write.acquire().await?;
        self.thread
            .run(move |conn| writer::claim(conn, &claim))
            .await
    }

    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        breaker: &BreakerPolicy,
    ) -> Result<Vec<Unfinished>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let (results, breaker) = (results.to_vec(), *breaker);
        let _writing = self.write.acquire().await?;
        self.thread
            .run(move |conn| writer::record(conn, &results, &breaker))
            .await
    }

    async fn resume(&self, work: &Unfinished) -> Result<bool> {
        let work = work.clone();
        let _writing = self.write.acquire().await?;
        self.thread
            .run(move |conn| writer::resume(conn, &work))
            .await
    }

    async fn promote_probes(&self, now: Millis) -> Result<()> {
        let paused: Vec<(i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(crate::storage::pauses_over_sql('?')))
                .bind(now.0)
                .fetch_all(&self.pool)
                .await?;
        let promote = crate::storage::promote_probe_sql('?');
        for (workspace, url) in paused {
            let Some(host) = crate::storage::probe_host(&url) else {
                continue;
            };
            sqlx::query(sqlx::AssertSqlSafe(promote.as_str()))
                .bind(now.0)
                .bind(workspace)
                .bind(&url)
                .bind(host)
                .execute(&self.write)
                .await?;
        }
        Ok(())
    }

    async fn stranded_releases(&self) -> Result<Vec<Unfinished>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(
            crate::storage::stranded_releases_sql('?'),
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(crate::storage::stranded(rows))
    }

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
        let row: QueueRow = sqlx::query_as(sqlx::AssertSqlSafe(queue_stats_sql('?')))
            .bind(now.0)
            .fetch_one(&self.pool)
            .await?;
        Ok(QueueStats::from_row(row, now))
    }

    async fn create_test_delivery(
        &self,
        workspace: WorkspaceId,
        event: EventType,
        url: &crate::domain::CallbackUrl,
        instance_id: &str,
        request: ClaimRequest<'_>,
    ) -> Result<ClaimedDelivery> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL) RETURNING id",
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, 'pending', 0, ?9, ?10, ?11, ?9, ?9,
                     (SELECT webhook_format FROM workspaces WHERE id = ?2))
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
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "DELETE FROM deliveries WHERE id IN (
                SELECT id FROM deliveries WHERE status <> 'pending' AND updated_at < ?1 LIMIT ?2)",
        )
        .bind(before.0)
        .bind(batch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query(sqlx::AssertSqlSafe(prune_events_sql('?')))
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
