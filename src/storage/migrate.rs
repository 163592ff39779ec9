//! Migrations: numbered SQL files, one folder per backend (`migrations/<backend>/`), embedded by
//! `sqlx::migrate!` and applied by its `Migrator`, which records each with its checksum in
//! `_sqlx_migrations` (on PostgreSQL under an advisory lock, so nodes starting together migrate
//! one at a time). Migrations are additive so an older node keeps working while a newer one runs
//! beside it; a node refuses a schema newer than it knows.
//!
//! Databases made before Herald used sqlx's migrator recorded their versions in `herald_schema`;
//! the first migration run adopts them (marks those versions applied without running them).
//! `herald_schema` is kept up to date beside it, so an older Herald, which reads only that
//! table, still refuses a schema newer than it knows.

use super::{Result, StorageError};
use crate::domain::Millis;
use sqlx::migrate::{Migrate, Migrator};

pub(crate) static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
pub(crate) static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The schema cannot be used by this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is at version {found}, newer than this Herald knows (up to {known}); upgrade Herald before pointing it at this database"
    )]
    TooNew { found: i64, known: i64 },
    #[error(
        "the database schema is at version {found} but this Herald needs {known}; run `herald migrate` or start without --no-migrate"
    )]
    TooOld { found: i64, known: i64 },
}

/// Checks a found schema version against the newest one known.
pub(crate) fn check(found: i64, known: i64, will_migrate: bool) -> Result<(), SchemaError> {
    if found > known {
        return Err(SchemaError::TooNew { found, known });
    }
    if found < known && !will_migrate {
        return Err(SchemaError::TooOld { found, known });
    }
    Ok(())
}

/// The newest version a migrator knows.
pub(crate) fn latest(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The table sqlx's migrator records in.
const TABLE: &str = "_sqlx_migrations";

const LEGACY_TABLE: &str = "CREATE TABLE IF NOT EXISTS herald_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// The versions a database holds: as sqlx's migrator recorded them, and as Herald's earlier
/// runner did (`herald_schema`); 0 where none.
struct Found {
    recorded: i64,
    legacy: i64,
}

impl Found {
    fn version(&self) -> i64 {
        self.recorded.max(self.legacy)
    }
}

/// The schema versions of the database behind `conn`, making the two tables if need be.
async fn found<DB>(conn: &mut DB::Connection) -> Result<Found>
where
    DB: sqlx::Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    Option<i64>: for<'r> sqlx::Decode<'r, DB>,
    (Option<i64>,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    conn.ensure_migrations_table(TABLE)
        .await
        .map_err(sqlx::Error::from)?;
    sqlx::query(LEGACY_TABLE).execute(&mut *conn).await?;
    let (recorded,): (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await?;
    let (legacy,): (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM herald_schema")
        .fetch_one(&mut *conn)
        .await?;
    Ok(Found {
        recorded: recorded.unwrap_or(0),
        legacy: legacy.unwrap_or(0),
    })
}

/// Brings the database behind `pool` to `migrator`'s newest version, and answers the versions
/// it applied (empty when it was current already).
pub(crate) async fn run<DB>(pool: &sqlx::Pool<DB>, migrator: &Migrator) -> Result<Vec<i64>>
where
    DB: sqlx::Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + sqlx::Encode<'static, DB> + for<'r> sqlx::Decode<'r, DB>,
    Option<i64>: for<'r> sqlx::Decode<'r, DB>,
    (Option<i64>,): for<'r> sqlx::FromRow<'r, DB::Row>,
    String: sqlx::Type<DB> + sqlx::Encode<'static, DB>,
    for<'a> &'a sqlx::Pool<DB>: sqlx::Acquire<'a, Database = DB>,
    for<'a> <&'a sqlx::Pool<DB> as sqlx::Acquire<'a>>::Connection:
        std::ops::Deref<Target = DB::Connection>,
{
    let known = latest(migrator);
    // One connection at a time: SQLite's write pool holds one.
    let before = found::<DB>(&mut *pool.acquire().await?).await?;
    check(before.version(), known, true)?;
    if before.recorded == 0 && before.legacy > 0 {
        // Made by Herald's earlier runner: its versions are applied; record them as such.
        migrator
            .skip(pool, Some(before.legacy))
            .await
            .map_err(sqlx::Error::from)?;
        tracing::info!(
            version = before.legacy,
            "adopted the schema recorded by an earlier Herald"
        );
    }
    migrator.run(pool).await.map_err(|e| match e {
        // Another node migrated meanwhile to a version this build does not know.
        sqlx::migrate::MigrateError::VersionMissing(found) => {
            StorageError::Schema(SchemaError::TooNew { found, known })
        }
        other => StorageError::Database(other.into()),
    })?;
    let applied: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| *v > before.version())
        .collect();
    for m in migrator.iter().filter(|m| applied.contains(&m.version)) {
        tracing::info!(version = m.version, name = %m.description, "applied migration");
    }
    // For older Herald builds, which read only this table.
    let mut conn = pool.acquire().await?;
    for m in migrator.iter().filter(|m| m.version > before.legacy) {
        sqlx::query(
            "INSERT INTO herald_schema (version, name, applied_at) VALUES ($1, $2, $3)
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(m.version)
        .bind(m.description.to_string())
        .bind(Millis::now().0)
        .execute(&mut *conn)
        .await?;
    }
    Ok(applied)
}

/// Checks, without migrating, that the database behind `pool` is at `migrator`'s newest version.
pub(crate) async fn check_current<DB>(pool: &sqlx::Pool<DB>, migrator: &Migrator) -> Result<()>
where
    DB: sqlx::Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    Option<i64>: for<'r> sqlx::Decode<'r, DB>,
    (Option<i64>,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let mut conn = pool.acquire().await?;
    let found = found::<DB>(&mut conn).await?;
    check(found.version(), latest(migrator), false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_are_at_the_same_version() {
        assert_eq!(latest(&SQLITE), latest(&POSTGRES));
        let names = |m: &Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&SQLITE), names(&POSTGRES));
    }

    #[test]
    fn schema_checks() {
        assert!(check(1, 1, false).is_ok());
        assert_eq!(
            check(2, 1, true),
            Err(SchemaError::TooNew { found: 2, known: 1 })
        );
        assert_eq!(
            check(0, 1, false),
            Err(SchemaError::TooOld { found: 0, known: 1 })
        );
        assert!(check(0, 1, true).is_ok());
    }
}
