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
            rooms: request
                .room_hosts
                .iter()
                .cloned()
                .zip(request.rooms.iter().copied())
                .collect(),
            default_room: request.default_room,
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
