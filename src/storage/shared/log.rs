//! The delivery log and the health of destinations, written once for both backends.

/// Implements [`crate::storage::DeliveryLog`] for a store that implements [`super::Pools`].
macro_rules! delivery_log {
    ($store:ty) => {
        #[allow(unused_imports)] // Each expansion imports it; one per module is used.
        use $crate::storage::shared::Pools as _;

        impl $store {
            /// Runs `sql`, an update of the deliveries the log's filter matches (`$1`–`$7`, now
            /// as `$8`), and wakes the workers when it changed any; how many.
            async fn update_matching(
                &self,
                sql: &'static str,
                workspace: WorkspaceId,
                filter: &DeliveryFilter,
                now: Millis,
            ) -> Result<u64> {
                let done = sqlx::query(sql)
                    .bind(workspace.0)
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(filter.event_type.map(|e| e.as_str()))
                    .bind(filter.instance_id.as_deref())
                    .bind(filter.urls.as_ref().map(|u| u.as_str()))
                    .bind(filter.since.map(|t| t.0))
                    .bind(filter.until.map(|t| t.0))
                    .bind(now.0)
                    .execute(self.writes())
                    .await?;
                if done.rows_affected() > 0 {
                    self.announce_due().await?;
                }
                Ok(done.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::storage::DeliveryLog for $store {
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
                .fetch_all(self.reads())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(h, ok, bad)| (Millis(h), ok, bad))
                    .collect())
            }

            async fn destinations(&self, workspace: WorkspaceId) -> Result<Vec<DestinationRecord>> {
                let rows: Vec<$crate::storage::health::DestinationRow> =
                    sqlx::query_as($crate::storage::health::DESTINATIONS_SQL)
                        .bind(workspace.0)
                        .fetch_all(self.reads())
                        .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn enable_destination(&self, workspace: WorkspaceId, url: &str) -> Result<bool> {
                let n = sqlx::query($crate::storage::health::ENABLE_SQL)
                    .bind(workspace.0)
                    .bind(url)
                    .execute(self.writes())
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn delivery_urls(&self, workspace: WorkspaceId) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT DISTINCT url FROM deliveries WHERE workspace_id = $1")
                    .bind(workspace.0)
                    .fetch_all(self.reads())
                    .await?)
            }

            async fn redeliver_matching(
                &self,
                workspace: WorkspaceId,
                filter: &DeliveryFilter,
                now: Millis,
            ) -> Result<u64> {
                self.update_matching(
                    concat!(
                        "UPDATE deliveries SET status = 'pending', next_attempt_at = $8, updated_at = $8 WHERE ",
                        $crate::storage::queue_sql::log_filter!(),
                        " AND NOT test"
                    ),
                    workspace,
                    filter,
                    now,
                )
                .await
            }

            async fn deliveries(
                &self,
                workspace: WorkspaceId,
                filter: &DeliveryFilter,
                cursor: Option<i64>,
                limit: i64,
            ) -> Result<Page<DeliveryRecord>> {
                let rows: Vec<$crate::storage::shared::DeliveryRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::shared::delivery_columns!(),
                    " FROM deliveries WHERE ",
                    $crate::storage::queue_sql::log_filter!(),
                    " AND ($8 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9"
                ))
                .bind(workspace.0)
                .bind(filter.status.map(|s| s.as_str()))
                .bind(filter.event_type.map(|e| e.as_str()))
                .bind(filter.instance_id.as_deref())
                .bind(filter.urls.as_ref().map(|u| u.as_str()))
                .bind(filter.since.map(|t| t.0))
                .bind(filter.until.map(|t| t.0))
                .bind(cursor)
                .bind(limit + 1)
                .fetch_all(self.reads())
                .await?;
                let items = rows
                    .into_iter()
                    .map($crate::storage::shared::DeliveryRow::record)
                    .collect::<Result<Vec<_>>>()?;
                Ok($crate::storage::shared::page(items, limit, |d| d.key))
            }

            async fn delivery(
                &self,
                workspace: WorkspaceId,
                id: &DeliveryId,
            ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
                // One read transaction, so the delivery and its attempts are one consistent snapshot.
                let mut tx = self.reads().begin().await?;
                let row: Option<$crate::storage::shared::DeliveryRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::storage::shared::delivery_columns!(),
                    " FROM deliveries WHERE workspace_id = $1 AND webhook_id = $2"
                ))
                .bind(workspace.0)
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let delivery = row.record()?;
                let attempts: Vec<$crate::storage::shared::AttemptRow> = sqlx::query_as(
                    "SELECT started_at, duration_ms, outcome, status_code, error, response_excerpt, node
                     FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
                )
                .bind(delivery.key)
                .fetch_all(&mut *tx)
                .await?;
                let attempts = attempts
                    .into_iter()
                    .map($crate::storage::shared::AttemptRow::record)
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some((delivery, attempts)))
            }

            async fn cancel(
                &self,
                workspace: WorkspaceId,
                id: &DeliveryId,
                now: Millis,
            ) -> Result<$crate::storage::Cancel> {
                let done = sqlx::query(concat!(
                    "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $1
                     WHERE workspace_id = $2 AND webhook_id = $3 AND ",
                    $crate::storage::queue_sql::cancellable!("$1")
                ))
                .bind(now.0)
                .bind(workspace.0)
                .bind(id.as_str())
                .execute(self.writes())
                .await?;
                if done.rows_affected() > 0 {
                    // A later delivery of the same instance and URL may now go.
                    self.announce_due().await?;
                    return Ok($crate::storage::Cancel::Cancelled);
                }
                let found: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM deliveries WHERE workspace_id = $1 AND webhook_id = $2",
                )
                .bind(workspace.0)
                .bind(id.as_str())
                .fetch_optional(self.writes())
                .await?;
                let Some(status) = found else {
                    return Ok($crate::storage::Cancel::NotFound);
                };
                Ok(
                    match $crate::domain::DeliveryStatus::parse(&status)
                        .map_err(|e| $crate::storage::shared::unknown("delivery status", e))?
                    {
                        // In flight, or its lease ended between the two statements (then
                        // asking again cancels it).
                        $crate::domain::DeliveryStatus::Pending => $crate::storage::Cancel::InFlight,
                        other => $crate::storage::Cancel::Finished(other),
                    },
                )
            }

            async fn cancel_matching(
                &self,
                workspace: WorkspaceId,
                filter: &DeliveryFilter,
                now: Millis,
            ) -> Result<u64> {
                self.update_matching(
                    concat!(
                        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $8 WHERE ",
                        $crate::storage::queue_sql::log_filter!(),
                        " AND NOT test AND ",
                        $crate::storage::queue_sql::cancellable!("$8")
                    ),
                    workspace,
                    filter,
                    now,
                )
                .await
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
                .execute(self.writes())
                .await?;
                if done.rows_affected() > 0 {
                    self.announce_due().await?;
                }
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use delivery_log;
