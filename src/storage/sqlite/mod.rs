//! The SQLite backend: one file, WAL mode, zero set-up.
//!
//! Write transactions start with `BEGIN IMMEDIATE` so concurrent writers queue on SQLite's lock
//! (with a busy timeout) instead of failing when a read transaction tries to upgrade.

mod health;
mod writer;

use super::group::{BatchWriter, GroupCommit, InstanceWrite, WriteOutcome};
use super::migrate::{self, SQLITE};
use super::*;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// Herald's store in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// Reads: several connections, which WAL lets run beside the writer.
    pool: SqlitePool,
    /// Every write goes through this one connection, so writers of this process queue here
    /// (fairly, without spinning) instead of meeting on SQLite's lock, whose busy handler sleeps
    /// in steps of milliseconds.
    write: SqlitePool,
    /// The hot write transactions (claims, results, group commits) run on this thread.
    thread: Arc<writer::WriteThread>,
    /// Instance writes go through one writer task that commits them in groups.
    writes: Arc<GroupCommit>,
    /// The database file, for the node lock beside it.
    path: std::path::PathBuf,
    /// Held (locked) while this process serves as the database's delivery node.
    node_lock: Arc<std::sync::OnceLock<std::fs::File>>,
}

const INSTANCE_COLUMNS: &str = "instance_id, unique_id, status, version, data, created_at, created_by, modified_at, modified_by, deleted_at";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn instance_from_row(row: &SqliteRow) -> Result<InstanceRecord> {
    let id_text: String = row.try_get("instance_id")?;
    let id = InstanceId::parse(&id_text).map_err(|e| sqlx::Error::Decode(e.0.into()))?;
    let data: String = row.try_get("data")?;
    Ok(InstanceRecord {
        process_name: id.process_name().to_owned(),
        id,
        unique_id: row.try_get("unique_id")?,
        status: row.try_get("status")?,
        version: row.try_get("version")?,
        data: InstanceData::from_stored(&data),
        created_at: Millis(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        modified_at: Millis(row.try_get("modified_at")?),
        modified_by: row.try_get("modified_by")?,
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(Millis),
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        key: row.try_get("id")?,
        test: row.try_get("test")?,
        id: DeliveryId::from_stored(row.try_get("webhook_id")?),
        event_type: event_from_stored(row.try_get("event_type")?),
        instance_id: row.try_get("instance_id")?,
        process_name: row.try_get("process_name")?,
        url: row.try_get("url")?,
        status: status_from_stored(row.try_get("status")?),
        attempts: row.try_get("attempts")?,
        next_attempt_at: row
            .try_get::<Option<i64>, _>("next_attempt_at")?
            .map(Millis),
        last_attempt_at: row
            .try_get::<Option<i64>, _>("last_attempt_at")?
            .map(Millis),
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        created_at: Millis(row.try_get("created_at")?),
    })
}

impl SqliteStore {
    /// Opens (creating if missing) the database file a `sqlite://` URL names.
    pub async fn open(url: &str) -> Result<Self> {
        // The writer thread opens the file itself: an in-memory database would be a second,
        // separate database there.
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StorageError::Io(
                "an in-memory SQLite database cannot be shared with the writer thread; use a file, such as sqlite://herald.db".into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        let thread = Arc::new(writer::WriteThread::open(options.get_filename())?);
        let writes = Arc::new(GroupCommit::start(SqliteWriter {
            write: write.clone(),
            thread: Arc::clone(&thread),
        }));
        Ok(Self {
            pool,
            write,
            thread,
            writes,
            path: options.get_filename().to_owned(),
            node_lock: Arc::default(),
        })
    }

    async fn schema_version(&self) -> Result<i64> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS herald_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&self.write)
        .await?;
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM herald_schema")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        let found = self.schema_version().await?;
        let known = migrate::latest(SQLITE);
        migrate::check(found, known, true)?;
        for m in SQLITE.iter().filter(|m| m.version > found) {
            let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO herald_schema (version, name, applied_at) VALUES (?1, ?2, ?3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(Millis::now().0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
        }
        Ok(())
    }

    async fn start_node(&self, _node: &str) -> Result<u64> {
        let mut name = self.path.clone().into_os_string();
        name.push(".node-lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&name)
            .map_err(|e| StorageError::Io(format!("opening {}: {e}", name.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Io(format!(
                    "another `herald serve` is running on {}: SQLite serves one node at a time (stop the other, or run a fleet on PostgreSQL)",
                    self.path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StorageError::Io(format!("locking {}: {e}", name.display())));
            }
        }
        let _ = self.node_lock.set(lock);
        // Every lease was taken by a process that no longer runs: the lock says none other does.
        let ended = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, leased_by = NULL WHERE lease_until IS NOT NULL",
        )
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(ended)
    }

    async fn check_schema(&self) -> Result<()> {
        let found = self.schema_version().await?;
        migrate::check(found, migrate::latest(SQLITE), false)?;
        Ok(())
    }

    async fn bootstrap(&self, name: &str, admin: &NewUser, token: &TokenHash) -> Result<bool> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(false);
        }
        let now = Millis::now().0;
        let ws: i64 = sqlx::query_scalar(
            "INSERT INTO workspaces (name, created_at) VALUES (?1, ?2) RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let user: i64 = sqlx::query_scalar(
            "INSERT INTO users (workspace_id, email, display_name, role, password_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )
        .bind(ws)
        .bind(admin.email.as_str())
        .bind(&admin.display_name)
        .bind(admin.role.as_str())
        .bind(&admin.password_hash)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (?1, ?2, ?3)")
            .bind(user)
            .bind(token.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn workspace_id(&self, name: &str) -> Result<Option<WorkspaceId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM workspaces WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(id.map(WorkspaceId))
    }

    async fn create_user(&self, workspace: WorkspaceId, user: &NewUser) -> Result<UserId> {
        let id = sqlx::query_scalar(
            "INSERT INTO users (workspace_id, email, display_name, role, password_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )
        .bind(workspace.0)
        .bind(user.email.as_str())
        .bind(&user.display_name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(Millis::now().0)
        .fetch_one(&self.write)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::Duplicate("a user with this email")
            } else {
                e.into()
            }
        })?;
        Ok(UserId(id))
    }

    async fn users(&self, workspace: WorkspaceId) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(
            "SELECT email, display_name, role, active, created_at FROM users WHERE workspace_id = ?1 ORDER BY email",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserRecord {
                    email: r.try_get("email")?,
                    display_name: r.try_get("display_name")?,
                    role: Role::parse(r.try_get("role")?).unwrap_or(Role::User),
                    active: r.try_get("active")?,
                    created_at: Millis(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn user_for_login(&self, email: &Email) -> Result<Option<LoginRecord>> {
        let row = sqlx::query(
            "SELECT id, workspace_id, email, display_name, role, active, password_hash FROM users WHERE email = ?1",
        )
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LoginRecord {
                caller: caller_from_row(&r)?,
                display_name: r.try_get("display_name")?,
                active: r.try_get("active")?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    async fn change_user(
        &self,
        workspace: WorkspaceId,
        email: &Email,
        change: &UserChange,
    ) -> Result<bool> {
        let query = match change {
            UserChange::Role(role) => {
                sqlx::query("UPDATE users SET role = ?1 WHERE workspace_id = ?2 AND email = ?3")
                    .bind(role.as_str())
            }
            UserChange::Active(active) => {
                sqlx::query("UPDATE users SET active = ?1 WHERE workspace_id = ?2 AND email = ?3")
                    .bind(*active)
            }
            UserChange::PasswordHash(hash) => sqlx::query(
                "UPDATE users SET password_hash = ?1 WHERE workspace_id = ?2 AND email = ?3",
            )
            .bind(hash.clone()),
        };
        let done = query
            .bind(workspace.0)
            .bind(email.as_str())
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_session(
        &self,
        token: &TokenHash,
        user: UserId,
        csrf: &str,
        now: Millis,
        expires: Millis,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at < ?1")
            .bind(now.0)
            .execute(&self.write)
            .await?;
        sqlx::query("INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(token.as_str())
            .bind(user.0)
            .bind(csrf)
            .bind(now.0)
            .bind(expires.0)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn session(&self, token: &TokenHash, now: Millis) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT u.id, u.workspace_id, u.email, u.role, u.display_name, s.csrf
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.active = 1",
        )
        .bind(token.as_str())
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                caller: caller_from_row(&r)?,
                display_name: r.try_get("display_name")?,
                csrf: r.try_get("csrf")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token: &TokenHash) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?1")
            .bind(token.as_str())
            .execute(&self.write)
            .await?;
        Ok(())
    }

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
             WHERE d.workspace_id = ?1 AND a.started_at >= ?2
             GROUP BY hour ORDER BY hour",
        )
        .bind(workspace.0)
        .bind(since.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(h, ok, bad)| (Millis(h), ok, bad))
            .collect())
    }

    async fn add_token(&self, user: UserId, token: &TokenHash) -> Result<()> {
        sqlx::query("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (?1, ?2, ?3)")
            .bind(user.0)
            .bind(token.as_str())
            .bind(Millis::now().0)
            .execute(&self.write)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StorageError::Duplicate("this API token")
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn caller_by_token(&self, token: &TokenHash) -> Result<Option<Caller>> {
        let row = sqlx::query(
            "SELECT u.id, u.workspace_id, u.email, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ?1 AND u.active = 1",
        )
        .bind(token.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| caller_from_row(&r)).transpose()
    }

    async fn webhook_settings(&self, workspace: WorkspaceId) -> Result<WebhookSettings> {
        let enabled: Vec<(String, bool)> = sqlx::query_as(
            "SELECT event_type, enabled FROM webhook_events WHERE workspace_id = ?1",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await?;
        let urls: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_type, url FROM webhook_urls WHERE workspace_id = ?1 ORDER BY event_type, position",
        )
        .bind(workspace.0)
        .fetch_all(&self.pool)
        .await?;
        let mut settings = super::settings_from_rows(enabled, urls);
        let format: Option<String> =
            sqlx::query_scalar("SELECT webhook_format FROM workspaces WHERE id = ?1")
                .bind(workspace.0)
                .fetch_optional(&self.pool)
                .await?;
        settings.format = format
            .as_deref()
            .map(super::format_from_stored)
            .unwrap_or_default();
        Ok(settings)
    }

    async fn save_webhook_settings(
        &self,
        workspace: WorkspaceId,
        settings: &WebhookSettings,
    ) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE workspaces SET webhook_format = ?1 WHERE id = ?2")
            .bind(settings.format.as_str())
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_urls WHERE workspace_id = ?1")
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_events WHERE workspace_id = ?1")
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        for event in EventType::ALL {
            let s = settings.event(event);
            sqlx::query("INSERT INTO webhook_events (workspace_id, event_type, enabled) VALUES (?1, ?2, ?3)")
                .bind(workspace.0)
                .bind(event.as_str())
                .bind(s.enabled)
                .execute(&mut *tx)
                .await?;
            for (position, url) in s.urls.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO webhook_urls (workspace_id, event_type, position, url, host) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                    .bind(workspace.0)
                    .bind(event.as_str())
                    .bind(i64::try_from(position).unwrap_or(i64::MAX))
                    .bind(url.as_str())
                    .bind(url.host_key())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Saving a URL says it should be called: one disabled because its receiver was gone is
        // enabled again.
        sqlx::query(super::health::ENABLE_LISTED_SQL)
            .bind(workspace.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signing_keys(&self, workspace: WorkspaceId, now: Millis) -> Result<SigningKeys> {
        // The first secret of a workspace is made on first use; the condition keeps two nodes
        // from each setting a different one.
        sqlx::query(
            "UPDATE workspaces SET signing_secret = ?1 WHERE id = ?2 AND signing_secret IS NULL",
        )
        .bind(SigningSecret::generate().expose())
        .bind(workspace.0)
        .execute(&self.write)
        .await?;
        let (current, previous, rotated_at): (String, Option<String>, Option<i64>) = sqlx::query_as(
            "SELECT signing_secret, previous_secret, secret_rotated_at FROM workspaces WHERE id = ?1",
        )
        .bind(workspace.0)
        .fetch_one(&self.pool)
        .await?;
        super::keys_from_stored(&current, previous, rotated_at, now)
    }

    async fn rotate_signing_secret(
        &self,
        workspace: WorkspaceId,
        new: &SigningSecret,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE workspaces SET previous_secret = signing_secret, signing_secret = ?1, secret_rotated_at = ?2
             WHERE id = ?3",
        )
        .bind(new.expose())
        .bind(now.0)
        .bind(workspace.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

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
            sqlx::query_as(sqlx::AssertSqlSafe(super::pauses_over_sql('?')))
                .bind(now.0)
                .fetch_all(&self.pool)
                .await?;
        let promote = super::promote_probe_sql('?');
        for (workspace, url) in paused {
            let Some(host) = super::probe_host(&url) else {
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
        let rows: Vec<(i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(super::stranded_releases_sql('?')))
                .fetch_all(&self.pool)
                .await?;
        Ok(super::stranded(rows))
    }

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
        let row: QueueRow = sqlx::query_as(sqlx::AssertSqlSafe(queue_stats_sql('?')))
            .bind(now.0)
            .fetch_one(&self.pool)
            .await?;
        Ok(QueueStats::from_row(row, now))
    }

    async fn destinations(&self, workspace: WorkspaceId) -> Result<Vec<DestinationRecord>> {
        let rows: Vec<super::health::DestinationRow> =
            sqlx::query_as(super::health::DESTINATIONS_SQL)
                .bind(workspace.0)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn enable_destination(&self, workspace: WorkspaceId, url: &str) -> Result<bool> {
        let n = sqlx::query(super::health::ENABLE_SQL)
            .bind(workspace.0)
            .bind(url)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n > 0)
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

    async fn redeliver_matching(
        &self,
        workspace: WorkspaceId,
        filter: &DeliveryFilter,
        now: Millis,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?8, updated_at = ?8
             WHERE workspace_id = ?1
               AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR event_type = ?3)
               AND (?4 IS NULL OR instance_id = ?4)
               AND (?5 IS NULL OR instr(url, ?5) > 0)
               AND (?6 IS NULL OR created_at >= ?6)
               AND (?7 IS NULL OR created_at < ?7)
               AND test = 0",
        )
        .bind(workspace.0)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.event_type.map(|e| e.as_str()))
        .bind(filter.instance_id.as_deref())
        .bind(filter.url.as_deref())
        .bind(filter.since.map(|t| t.0))
        .bind(filter.until.map(|t| t.0))
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    async fn deliveries(
        &self,
        workspace: WorkspaceId,
        filter: &DeliveryFilter,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT *, id AS cursor FROM deliveries
             WHERE workspace_id = ?1
               AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR event_type = ?3)
               AND (?4 IS NULL OR instance_id = ?4)
               AND (?5 IS NULL OR instr(url, ?5) > 0)
               AND (?6 IS NULL OR created_at >= ?6)
               AND (?7 IS NULL OR created_at < ?7)
               AND (?8 IS NULL OR id < ?8)
             ORDER BY id DESC LIMIT ?9",
        )
        .bind(workspace.0)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.event_type.map(|e| e.as_str()))
        .bind(filter.instance_id.as_deref())
        .bind(filter.url.as_deref())
        .bind(filter.since.map(|t| t.0))
        .bind(filter.until.map(|t| t.0))
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        page(rows, limit, delivery_from_row)
    }

    async fn delivery(
        &self,
        workspace: WorkspaceId,
        id: &DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        // One read transaction, so the delivery and its attempts are one consistent snapshot.
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT * FROM deliveries WHERE workspace_id = ?1 AND webhook_id = ?2")
                .bind(workspace.0)
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let delivery = delivery_from_row(&row)?;
        let attempts = sqlx::query(
            "SELECT started_at, duration_ms, outcome, status_code, error, response_excerpt, node
             FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY id",
        )
        .bind(delivery.key)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(AttemptRecord {
                started_at: Millis(r.try_get("started_at")?),
                duration_ms: r.try_get("duration_ms")?,
                outcome: AttemptOutcome::from_stored(r.try_get("outcome")?),
                status_code: r.try_get("status_code")?,
                error: r.try_get("error")?,
                response_excerpt: r.try_get("response_excerpt")?,
                node: r.try_get("node")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Some((delivery, attempts)))
    }

    async fn redeliver(
        &self,
        workspace: WorkspaceId,
        id: &DeliveryId,
        now: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, updated_at = ?1
             WHERE workspace_id = ?2 AND webhook_id = ?3",
        )
        .bind(now.0)
        .bind(workspace.0)
        .bind(id.as_str())
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// The process name of test callbacks.
const TEST_PROCESS: &str = "herald-test";

fn claimed_from_row(r: &SqliteRow) -> Result<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        key: r.try_get("id")?,
        workspace_id: WorkspaceId(r.try_get("workspace_id")?),
        test: r.try_get("test")?,
        id: DeliveryId::from_stored(r.try_get("webhook_id")?),
        event_type: event_from_stored(r.try_get("event_type")?),
        instance_id: r.try_get("instance_id")?,
        process_name: r.try_get("process_name")?,
        url: r.try_get("url")?,
        host: r.try_get("host")?,
        attempts: r.try_get("attempts")?,
        occurred_at: Millis(r.try_get("created_at")?),
        format: super::format_from_stored(r.try_get("format")?),
        instance: r.try_get("instance")?,
    })
}

/// A caller from a row with the user's `id`, `workspace_id`, `email` and `role`.
fn caller_from_row(r: &SqliteRow) -> Result<Caller> {
    Ok(Caller {
        user_id: UserId(r.try_get("id")?),
        workspace_id: WorkspaceId(r.try_get("workspace_id")?),
        email: r.try_get("email")?,
        role: Role::parse(r.try_get("role")?).unwrap_or(Role::User),
    })
}

fn process_from_row(row: &SqliteRow) -> Result<ProcessRecord> {
    let name: String = row.try_get("name")?;
    Ok(ProcessRecord {
        name: ProcessName::parse(&name).map_err(|e| sqlx::Error::Decode(e.0.into()))?,
        title: row.try_get("title")?,
        created_at: Millis(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        instance_count: row.try_get("n")?,
    })
}

/// Turns `limit + 1` fetched rows into a page and the cursor of the next one.
fn page<T>(
    rows: Vec<SqliteRow>,
    limit: i64,
    decode: impl Fn(&SqliteRow) -> Result<T>,
) -> Result<Page<T>> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut next_cursor = None;
    for row in rows.iter().take(limit) {
        items.push(decode(row)?);
        next_cursor = Some(row.try_get::<i64, _>("cursor")?);
    }
    Ok(Page {
        items,
        next_cursor: if more { next_cursor } else { None },
    })
}

/// Applies batches of instance writes for [`GroupCommit`] on the write thread, holding the
/// store's write connection meanwhile.
struct SqliteWriter {
    write: SqlitePool,
    thread: Arc<writer::WriteThread>,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn apply(&self, writes: &[InstanceWrite]) -> Result<Vec<WriteOutcome>> {
        let writes = writes.to_vec();
        let _writing = self.write.acquire().await?;
        self.thread
            .run(move |conn| writer::apply(conn, &writes))
            .await
    }
}
