//! The SQLite backend: one file, WAL mode, zero set-up.
//!
//! Write transactions start with `BEGIN IMMEDIATE` so concurrent writers queue on SQLite's lock
//! (with a busy timeout) instead of failing when a read transaction tries to upgrade.

mod batch;
mod health;
mod queue;
mod writer;

use super::group::{BatchWriter, GroupCommit, InstanceWrite, WriteOutcome};
use super::migrate::{self, SQLITE};
use super::*;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
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

/// Copies the database a `sqlite://` URL names to the new file `to`, as it was at one moment
/// (`VACUUM INTO`, which reads beside Herald's writer without stopping it); returns its size.
pub async fn backup(url: &str, to: &std::path::Path) -> Result<u64> {
    let options = SqliteConnectOptions::from_str(url)?;
    let from = options.get_filename().to_owned();
    let to = to.to_owned();
    tokio::task::spawn_blocking(move || {
        if !from.exists() {
            return Err(StorageError::Io(format!(
                "there is no database at {}",
                from.display()
            )));
        }
        if to.exists() {
            return Err(StorageError::Io(format!(
                "{} exists already; name a new file",
                to.display()
            )));
        }
        let conn = rusqlite::Connection::open_with_flags(
            &from,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])?;
        Ok(std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0))
    })
    .await
    .map_err(|e| StorageError::Io(e.to_string()))?
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
}

impl super::shared::Pools for SqliteStore {
    type Db = sqlx::Sqlite;

    fn reads(&self) -> &SqlitePool {
        &self.pool
    }

    fn group_commit(&self) -> &GroupCommit {
        &self.writes
    }

    fn writes(&self) -> &SqlitePool {
        &self.write
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn serialize_bootstrap(
        &self,
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    ) -> Result<()> {
        // `BEGIN IMMEDIATE` runs one writer at a time already.
        Ok(())
    }

    async fn announce_due(&self) -> Result<()> {
        // One node, whose worker the service wakes in process.
        Ok(())
    }
}

super::shared::accounts!(SqliteStore);
super::shared::instances!(SqliteStore);
super::shared::settings!(SqliteStore);
super::shared::delivery_log!(SqliteStore);
super::shared::queue_upkeep!(SqliteStore);
super::shared::idempotency_keys!(SqliteStore);

#[async_trait]
impl Schema for SqliteStore {
    async fn migrate(&self) -> Result<(Vec<i64>, i64)> {
        let applied = migrate::run(&self.write, &SQLITE).await?;
        Ok((applied, migrate::latest(&SQLITE)))
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
        migrate::check_current(&self.pool, &SQLITE).await
    }
}

/// Applies batches of instance writes for [`GroupCommit`] on the write thread, holding the
/// store's write connection meanwhile.
struct SqliteWriter {
    write: SqlitePool,
    thread: Arc<writer::WriteThread>,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn apply(
        &self,
        writes: &[InstanceWrite],
        traces: &[Option<String>],
    ) -> Result<Vec<WriteOutcome>> {
        let writes = writes.to_vec();
        let traces = traces.to_vec();
        let _writing = self.write.acquire().await?;
        self.thread
            .run(move |conn| writer::apply(conn, &writes, &traces))
            .await
    }
}
