//! The delivery queue's upkeep, written once for both backends: the breaker's probes when a
//! pause is over, releases a stopped node left unfinished, the queue's figures, and test
//! callbacks. (The claim, the results and pruning are each backend's own: there the engines
//! differ.)

/// Implements, as inherent methods of a store that implements [`super::Pools`], the parts of
/// [`crate::storage::Queue`] that are the same on both backends; the backend's `Queue` impl
/// calls them.
macro_rules! queue_upkeep {
    ($store:ty) => {
        #[allow(unused_imports)] // Each expansion imports it; one per module is used.
        use $crate::storage::shared::Pools as _;

        impl $store {
            /// See [`Queue::promote_probes`].
            async fn shared_promote_probes(&self, now: Millis) -> Result<()> {
                let paused: Vec<(i64, String)> =
                    sqlx::query_as(sqlx::AssertSqlSafe($crate::storage::pauses_over_sql('$')))
                        .bind(now.0)
                        .fetch_all(self.reads())
                        .await?;
                let promote = $crate::storage::promote_probe_sql('$');
                for (workspace, url) in paused {
                    let Some(host) = $crate::storage::probe_host(&url) else {
                        continue;
                    };
                    // Planned with its parameters each time (PostgreSQL): the checks must read
                    // the host's index, never the URL's backlog, and only the values tell the
                    // planner which is small.
                    sqlx::query(sqlx::AssertSqlSafe(promote.as_str()))
                        .bind(now.0)
                        .bind(workspace)
                        .bind(&url)
                        .bind(host)
                        .persistent(false)
                        .execute(self.writes())
                        .await?;
                }
                Ok(())
            }

            /// See [`Queue::give_back`].
            async fn shared_give_back(&self, node: &str, leases: &[(i64, Millis)]) -> Result<()> {
                if leases.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                for (key, lease_until) in leases {
                    sqlx::query(
                        "UPDATE deliveries SET lease_until = NULL, leased_by = NULL
                         WHERE id = $1 AND leased_by = $2 AND lease_until = $3 AND status = 'pending'",
                    )
                    .bind(key)
                    .bind(node)
                    .bind(lease_until.0)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// See [`Queue::stranded_releases`].
            async fn shared_stranded_releases(&self) -> Result<Vec<Unfinished>> {
                let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(
                    $crate::storage::stranded_releases_sql('$'),
                ))
                .fetch_all(self.reads())
                .await?;
                Ok($crate::storage::stranded(rows))
            }

            /// See [`Queue::queue_stats`].
            async fn shared_queue_stats(&self, now: Millis) -> Result<QueueStats> {
                let row: $crate::storage::QueueRow =
                    sqlx::query_as(sqlx::AssertSqlSafe($crate::storage::queue_stats_sql('$')))
                        .bind(now.0)
                        .fetch_one(self.reads())
                        .await?;
                Ok(QueueStats::from_row(row, now))
            }

            /// See [`Queue::create_test_delivery`].
            async fn shared_create_test_delivery(
                &self,
                workspace: WorkspaceId,
                event: EventType,
                url: &$crate::domain::CallbackUrl,
                instance_id: &str,
                request: ClaimRequest<'_>,
            ) -> Result<ClaimedDelivery> {
                let mut tx = self.begin_write().await?;
                let event_id: i64 = sqlx::query_scalar(
                    "INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
                     VALUES ($1, $2, $3, $4, $5, NULL) RETURNING id",
                )
                .bind(workspace.0)
                .bind(event.as_str())
                .bind(instance_id)
                .bind($crate::storage::shared::TEST_PROCESS)
                .bind(request.now.0)
                .fetch_one(&mut *tx)
                .await?;
                let row: $crate::storage::shared::ClaimedRow = sqlx::query_as(concat!(
                    "INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name, url, host,
                                             test, status, attempts, next_attempt_at, lease_until, leased_by, created_at, updated_at, format)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $12, 'pending', 0, $9, $10, $11, $9, $9,
                             (SELECT webhook_format FROM workspaces WHERE id = $2))",
                    $crate::storage::queue_sql::claimed_columns!()
                ),
                )
                .bind(DeliveryId::created_at(request.now).as_str())
                .bind(workspace.0)
                .bind(event_id)
                .bind(event.as_str())
                .bind(instance_id)
                .bind($crate::storage::shared::TEST_PROCESS)
                .bind(url.as_str())
                .bind(url.host_key())
                .bind(request.now.0)
                .bind(request.lease_until.0)
                .bind(request.node)
                .bind(true)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row.claimed()?)
            }
        }
    };
}

pub(crate) use queue_upkeep;
