//! Processes and their instances, written once for both backends. Instance writes go through
//! each store's group commit (`storage::group`), which writes their events and deliveries.

/// Implements [`crate::storage::Instances`] for a store that implements [`super::Pools`].
macro_rules! instances {
    ($store:ty) => {
        #[allow(unused_imports)] // Each expansion imports it; one per module is used.
        use $crate::storage::shared::Pools as _;

        #[async_trait::async_trait]
        impl $crate::storage::Instances for $store {
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
                    .execute(self.writes())
                    .await
                    .map_err(|e| if $crate::storage::shared::is_unique_violation(&e) { StorageError::Duplicate("a process with this name") } else { e.into() })?;
                Ok(ProcessRecord {
                    name: name.clone(),
                    title: title.as_str().to_owned(),
                    created_at: now,
                    created_by: by.to_owned(),
                    instance_count: 0,
                })
            }

            async fn processes(&self, workspace: WorkspaceId) -> Result<Vec<ProcessRecord>> {
                let rows: Vec<$crate::storage::shared::ProcessRow> = sqlx::query_as(
                    "SELECT p.name, p.title, p.created_at, p.created_by,
                            (SELECT COUNT(*) FROM instances i WHERE i.process_id = p.id AND i.deleted_at IS NULL) AS n
                     FROM processes p WHERE p.workspace_id = $1 ORDER BY p.name",
                )
                .bind(workspace.0)
                .fetch_all(self.reads())
                .await?;
                rows.into_iter().map($crate::storage::shared::ProcessRow::record).collect()
            }

            async fn process(
                &self,
                workspace: WorkspaceId,
                name: &ProcessName,
            ) -> Result<Option<ProcessRecord>> {
                let row: Option<$crate::storage::shared::ProcessRow> = sqlx::query_as(
                    "SELECT p.name, p.title, p.created_at, p.created_by,
                            (SELECT COUNT(*) FROM instances i WHERE i.process_id = p.id AND i.deleted_at IS NULL) AS n
                     FROM processes p WHERE p.workspace_id = $1 AND p.name = $2",
                )
                .bind(workspace.0)
                .bind(name.as_str())
                .fetch_optional(self.reads())
                .await?;
                row.map($crate::storage::shared::ProcessRow::record).transpose()
            }

            async fn create_instance(
                &self,
                workspace: WorkspaceId,
                process: &ProcessName,
                data: &InstanceData,
                status: &InstanceStatus,
                by: &str,
            ) -> Result<Option<InstanceRecord>> {
                self.group_commit()
                    .create(workspace, process, data, status, by)
                    .await
            }

            async fn instance(
                &self,
                workspace: WorkspaceId,
                id: &InstanceId,
            ) -> Result<Option<InstanceRecord>> {
                let row: Option<$crate::storage::shared::InstanceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM instances WHERE workspace_id = $1 AND instance_id = $2",
                    $crate::storage::shared::INSTANCE_COLUMNS
                )))
                .bind(workspace.0)
                .bind(id.as_str())
                .fetch_optional(self.reads())
                .await?;
                row.map($crate::storage::shared::InstanceRow::record).transpose()
            }

            async fn instances(
                &self,
                workspace: WorkspaceId,
                process: &ProcessName,
                cursor: Option<i64>,
                limit: i64,
            ) -> Result<Page<InstanceRecord>> {
                let rows: Vec<$crate::storage::shared::InstanceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {}, number AS cursor FROM instances
                     WHERE process_id = (SELECT id FROM processes WHERE workspace_id = $1 AND name = $2)
                       AND deleted_at IS NULL AND ($3 IS NULL OR number < $3)
                     ORDER BY number DESC LIMIT $4",
                    $crate::storage::shared::INSTANCE_COLUMNS
                )))
                .bind(workspace.0)
                .bind(process.as_str())
                .bind(cursor)
                .bind(limit + 1)
                .fetch_all(self.reads())
                .await?;
                $crate::storage::shared::InstanceRow::page(rows, limit)
            }

            async fn recycle_bin(
                &self,
                workspace: WorkspaceId,
                cursor: Option<i64>,
                limit: i64,
            ) -> Result<Page<InstanceRecord>> {
                let rows: Vec<$crate::storage::shared::InstanceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {}, id AS cursor FROM instances
                     WHERE workspace_id = $1 AND deleted_at IS NOT NULL AND ($2 IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3",
                    $crate::storage::shared::INSTANCE_COLUMNS
                )))
                .bind(workspace.0)
                .bind(cursor)
                .bind(limit + 1)
                .fetch_all(self.reads())
                .await?;
                $crate::storage::shared::InstanceRow::page(rows, limit)
            }

            async fn purge_instance(&self, workspace: WorkspaceId, id: &InstanceId) -> Result<bool> {
                let n = sqlx::query(
                    "DELETE FROM instances
                     WHERE workspace_id = $1 AND instance_id = $2 AND deleted_at IS NOT NULL",
                )
                .bind(workspace.0)
                .bind(id.as_str())
                .execute(self.writes())
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn purge_recycle_bin(&self, before: Millis, batch: i64) -> Result<u64> {
                Ok(sqlx::query(
                    "DELETE FROM instances WHERE id IN (
                         SELECT id FROM instances
                         WHERE deleted_at IS NOT NULL AND deleted_at < $1
                         ORDER BY deleted_at LIMIT $2)",
                )
                .bind(before.0)
                .bind(batch)
                .execute(self.writes())
                .await?
                .rows_affected())
            }

            async fn update_instance(
                &self,
                workspace: WorkspaceId,
                id: &InstanceId,
                update: &InstanceUpdate,
                by: &str,
            ) -> Result<Written> {
                self.group_commit().update(workspace, id, update, by).await
            }

            async fn delete_instance(
                &self,
                workspace: WorkspaceId,
                id: &InstanceId,
                by: &str,
            ) -> Result<Written> {
                self.group_commit().delete(workspace, id, by).await
            }

            async fn restore_instance(
                &self,
                workspace: WorkspaceId,
                id: &InstanceId,
                by: &str,
            ) -> Result<Written> {
                self.group_commit().restore(workspace, id, by).await
            }

        }
    };
}

pub(crate) use instances;
