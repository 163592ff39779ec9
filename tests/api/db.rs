//! Fresh databases for tests: a SQLite file in a temporary folder, or a new PostgreSQL database
//! on the machine's server (or `HERALD_TEST_POSTGRES_URL`), dropped afterwards.
//!
//! PostgreSQL tests never skip silently: an unreachable server fails them, unless the person
//! running the tests sets `HERALD_TEST_SKIP_POSTGRES=1` on purpose (refused under `CI=true`).

use herald::storage::{self, Store};

/// Runs a check that takes its database (to look behind Herald's back) on a fresh SQLite and a
/// fresh PostgreSQL database: `<check>::sqlite` and `<check>::postgres`.
macro_rules! on_both_backends {
    ($(#[$test:meta])* $check:ident) => {
        mod $check {
            $(#[$test])*
            async fn sqlite() {
                super::$check(crate::db::TestDb::sqlite()).await;
            }
            $(#[$test])*
            async fn postgres() {
                if crate::db::postgres_skipped() {
                    return;
                }
                super::$check(crate::db::TestDb::postgres().await).await;
            }
        }
    };
}

use herald_testkit::FreshDatabase;
use std::sync::Arc;

/// The server PostgreSQL tests use, as a URL to its maintenance database.
pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether PostgreSQL tests were switched off explicitly (never under CI).
pub fn postgres_skipped() -> bool {
    let skip = std::env::var("HERALD_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    if skip && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("HERALD_TEST_SKIP_POSTGRES=1 is not allowed under CI=true");
    }
    if skip {
        eprintln!("SKIPPED: PostgreSQL test (HERALD_TEST_SKIP_POSTGRES=1)");
    }
    skip
}

/// A database that exists for one test (made and dropped by the test kit the benchmark shares).
pub enum TestDb {
    Sqlite {
        url: String,
        _db: FreshDatabase,
    },
    Postgres {
        url: String,
        name: String,
        _db: FreshDatabase,
    },
}

impl TestDb {
    pub fn sqlite() -> Self {
        let db = FreshDatabase::sqlite().unwrap();
        TestDb::Sqlite {
            url: db.url().to_owned(),
            _db: db,
        }
    }

    /// Creates `herald_test_<random>` on the test server.
    pub async fn postgres() -> Self {
        herald::startup::install_tls_provider();
        let admin = postgres_admin_url();
        let db = FreshDatabase::postgres(&admin, "herald_test")
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is needed for this test: {e:#}"));
        let FreshDatabase::Postgres { url, name, .. } = &db else {
            unreachable!("made on PostgreSQL");
        };
        TestDb::Postgres {
            url: url.clone(),
            name: name.clone(),
            _db: db,
        }
    }

    /// Shuts every client out of this PostgreSQL database (and ends their sessions), or lets
    /// them in again: the database is gone, as far as a node can tell.
    pub async fn refuse_connections(&self, refuse: bool) {
        let TestDb::Postgres { name, .. } = self else {
            panic!("only a PostgreSQL database can refuse connections");
        };
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url())
            .await
            .unwrap();
        let allow = if refuse { "false" } else { "true" };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        if refuse {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(name.as_str())
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// Runs SQL statements straight on this database, behind Herald's back.
    pub async fn execute(&self, sql: &'static str) {
        use sqlx::Connection;
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            TestDb::Postgres { url, .. } => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Opens and migrates a store on this database.
    pub async fn store(&self) -> Arc<dyn Store> {
        let store = storage::open(self.url()).await.unwrap();
        store.migrate().await.unwrap();
        store
    }
}
