//! A store that is gone leaves nothing running: its background tasks (PostgreSQL's own vacuum,
//! its notification listener) end with it, and with them its connections.

use crate::db::{TestDb, postgres_admin_url};
use crate::helpers::eventually;

/// Sessions on the test's database, counted from the server's maintenance database.
async fn sessions(name: &str) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url())
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_dropped_store_leaves_no_task_or_connection() {
    if crate::db::postgres_skipped() {
        return;
    }
    let db = TestDb::postgres().await;
    let TestDb::Postgres { name, .. } = &db else {
        unreachable!()
    };
    let store = db.store().await;
    store
        .subscribe(std::sync::Arc::new(tokio::sync::Notify::new()))
        .await
        .unwrap();
    assert!(sessions(name).await > 0, "the store is connected");
    drop(store);
    eventually("every session of the dropped store has ended", || async {
        (sessions(name).await == 0).then_some(())
    })
    .await;
}
