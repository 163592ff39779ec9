//! Processes and their instances; every instance write also writes its event and deliveries (the outbox). (SQLite)

use super::*;

#[async_trait]
impl Instances for SqliteStore {
    async fn create_process(
        &self,
        workspace: WorkspaceId,
        name: &ProcessName,
        title: &ProcessTitle,
        by: &str,
    ) -> Result<ProcessRecord> {
        let now = Millis::now();
        sqlx::query("INSERT INTO processes (workspace_id, name, title, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(workspace.0)
            .bind(name.as_str())
            .bind(title.as_str())
            .bind(now.0)
            .bind(by)
            .execute(&self.write)
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
             FROM processes p WHERE p.workspace_id = ?1 ORDER BY p.name",
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
             FROM processes p WHERE p.workspace_id = ?1 AND p.name = ?2",
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
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE workspace_id = ?1 AND instance_id = ?2"
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
             WHERE process_id = (SELECT id FROM processes WHERE workspace_id = ?1 AND name = ?2)
               AND deleted_at IS NULL AND (?3 IS NULL OR number < ?3)
             ORDER BY number DESC LIMIT ?4"
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
             WHERE workspace_id = ?1 AND deleted_at IS NOT NULL AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3"
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
}
