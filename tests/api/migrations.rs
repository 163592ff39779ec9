//! Migrations: a database made by Herald's earlier migration runner upgrades in place, and a
//! node refuses a schema newer than it knows, however it was recorded.

use crate::db::TestDb;
use crate::storage::{behind_herald, create, process, settings};
use herald::domain::ProcessName;
use herald::storage::{DeliveryFilter, Store};

/// The newest migration of this build.
pub(crate) const LATEST: i64 = 11;

/// Migrations 1 to 6 of each backend, as the earlier runner applied them.
const SQLITE_UP_TO_6: [&str; 6] = [
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_held_index.sql"),
    include_str!("../../migrations/sqlite/0003_held_by_id.sql"),
    include_str!("../../migrations/sqlite/0004_no_due_index.sql"),
    include_str!("../../migrations/sqlite/0005_no_foreign_keys_on_the_queue.sql"),
    include_str!("../../migrations/sqlite/0006_prune_indexes.sql"),
];
const POSTGRES_UP_TO_6: [&str; 6] = [
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_held_index.sql"),
    include_str!("../../migrations/postgres/0003_held_by_id.sql"),
    include_str!("../../migrations/postgres/0004_no_due_index.sql"),
    include_str!("../../migrations/postgres/0005_no_foreign_keys_on_the_queue.sql"),
    include_str!("../../migrations/postgres/0006_prune_indexes.sql"),
];

/// Migrations 7 and 8 of each backend, to make a database of the build before cancellation.
const SQLITE_7_AND_8: [&str; 2] = [
    include_str!("../../migrations/sqlite/0007_disabled_destinations.sql"),
    include_str!("../../migrations/sqlite/0008_idempotency_keys.sql"),
];
const POSTGRES_7_AND_8: [&str; 2] = [
    include_str!("../../migrations/postgres/0007_disabled_destinations.sql"),
    include_str!("../../migrations/postgres/0008_idempotency_keys.sql"),
];

/// The earlier runner's record of versions 1 to 6.
const LEGACY_RECORD: &str = "CREATE TABLE herald_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);
     INSERT INTO herald_schema (version, name, applied_at) VALUES
         (1, 'initial', 0), (2, 'held_index', 0), (3, 'held_by_id', 0), (4, 'no_due_index', 0),
         (5, 'no_foreign_keys_on_the_queue', 0), (6, 'prune_indexes', 0);";

/// The first administrator and their token as a build before migration 10 wrote them
/// (the token is `conformance-token-123456`).
const LEGACY_ACCOUNT: &str = "INSERT INTO workspaces (name, created_at) VALUES ('default', 0);
     INSERT INTO users (workspace_id, email, display_name, role, password_hash, created_at)
         SELECT id, 'admin@example.com', 'Admin', 'administrator', 'x', 0 FROM workspaces;
     INSERT INTO api_tokens (user_id, token_hash, created_at)
         SELECT id, '671d0c9ae34e154a1613e3534aae1a2ec49209756dd51d25add9c93bc86d9e61', 0 FROM users;";

/// The workspace of [`LEGACY_ACCOUNT`], written behind the old store's back.
async fn legacy_setup(
    db: &TestDb,
    old: &std::sync::Arc<dyn Store>,
) -> herald::storage::WorkspaceId {
    db.execute(LEGACY_ACCOUNT).await;
    old.workspace_id("default").await.unwrap().unwrap()
}

/// A database at version 6, made as the earlier runner made it, with an administrator, a token
/// and a process in it; then today's node migrates it and works on it.
async fn a_database_of_the_earlier_runner_upgrades_in_place(db: TestDb) {
    let migrations = match db {
        TestDb::Sqlite { .. } => SQLITE_UP_TO_6,
        TestDb::Postgres { .. } => POSTGRES_UP_TO_6,
    };
    // Opened first: on SQLite, that makes the file.
    let old = herald::storage::open(db.url()).await.unwrap();
    for sql in migrations {
        db.execute(sql).await;
    }
    db.execute(LEGACY_RECORD).await;
    let err = old.check_schema().await.unwrap_err().to_string();
    assert!(
        err.contains("version 6") && err.contains(&format!("needs {LATEST}")),
        "{err}"
    );
    let ws = legacy_setup(&db, &old).await;
    let p = process(&old, ws, "kept").await;
    drop(old);

    let store = db.store().await;
    store.check_schema().await.unwrap();
    // What was there is still there, and what version 7 added works: a URL disabled by a 410
    // is skipped (its `destinations` columns are new).
    assert!(store.process(ws, &p).await.unwrap().is_some());
    // The token made before migration 10 works as it did: every right of the role, no expiry.
    let token = herald::domain::ApiToken::parse("conformance-token-123456").unwrap();
    let (caller, expires) = store
        .caller_by_token(&token.hash(), herald::domain::Millis::now())
        .await
        .unwrap()
        .expect("the old token still resolves");
    assert_eq!(
        (caller.scope, expires),
        (herald::domain::TokenScope::All, None)
    );
    let listed = store.tokens(caller.user_id).await.unwrap();
    assert_eq!(
        (
            listed.len(),
            listed[0].name.as_str(),
            listed[0].prefix.as_str()
        ),
        (1, "first token", "")
    );
    store
        .save_webhook_settings(ws, &settings(&["https://a.example/"], &[], &[]))
        .await
        .unwrap();
    create(&store, ws, &p).await;
    let log = store
        .deliveries(ws, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(log.items.len(), 1);
    let recorded: Vec<(i64, bool)> = behind_herald(
        &db,
        "SELECT version, success FROM _sqlx_migrations ORDER BY version",
    )
    .await;
    assert_eq!(
        recorded,
        (1..=LATEST).map(|v| (v, true)).collect::<Vec<_>>()
    );
    // Kept for older builds, which read only this table.
    let legacy: Vec<(i64,)> =
        behind_herald(&db, "SELECT version FROM herald_schema ORDER BY version").await;
    assert_eq!(legacy, (1..=LATEST).map(|v| (v,)).collect::<Vec<_>>());
    // Migrating again changes nothing.
    store.migrate().await.unwrap();
    let again: Vec<(i64,)> = behind_herald(&db, "SELECT COUNT(*) FROM _sqlx_migrations").await;
    assert_eq!(again, [(LATEST,)]);
    let other = ProcessName::parse("new").unwrap();
    assert!(store.process(ws, &other).await.unwrap().is_none());
}

on_both_backends!(
    #[tokio::test]
    a_database_of_the_earlier_runner_upgrades_in_place
);

/// Migration 9 lets a delivery be cancelled; on SQLite it rebuilds the deliveries table. A
/// database at version 8 with a pending delivery and its attempt keeps both, the queue still
/// works, and the delivery can be cancelled.
async fn the_deliveries_table_keeps_every_row_and_attempt_through_migration_9(db: TestDb) {
    let (early, late) = match db {
        TestDb::Sqlite { .. } => (SQLITE_UP_TO_6, SQLITE_7_AND_8),
        TestDb::Postgres { .. } => (POSTGRES_UP_TO_6, POSTGRES_7_AND_8),
    };
    let old = herald::storage::open(db.url()).await.unwrap();
    for sql in early.into_iter().chain(late) {
        db.execute(sql).await;
    }
    db.execute(LEGACY_RECORD).await;
    db.execute("INSERT INTO herald_schema (version, name, applied_at) VALUES (7, 'disabled_destinations', 0), (8, 'idempotency_keys', 0)")
        .await;
    let ws = legacy_setup(&db, &old).await;
    process(&old, ws, "kept").await;
    old.save_webhook_settings(
        ws,
        &settings(&["https://a.example/", "https://b.example/"], &[], &[]),
    )
    .await
    .unwrap();
    // One event with a pending delivery to each URL, as a build before migration 11 wrote them.
    db.execute(
        "INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at)
             SELECT id, 'created', 'kept-1', 'kept', 1 FROM workspaces;
         INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id,
                                 process_name, url, host, status, attempts, next_attempt_at,
                                 created_at, updated_at, format)
             SELECT 'msg_0000000000000000000000000000000' || n, workspace_id, id, 'created',
                    'kept-1', 'kept', u, h, 'pending', 0, 1, 1, 1, 'kianda'
             FROM events, (SELECT 1 AS n, 'https://a.example/' AS u, 'a.example:443' AS h
                           UNION ALL SELECT 2, 'https://b.example/', 'b.example:443') urls
             ORDER BY n",
    )
    .await;
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, node, started_at, duration_ms, outcome)
         SELECT id, 'old-node', 1, 5, 'timeout' FROM deliveries",
    )
    .await;
    drop(old);

    let store = db.store().await;
    let log = store
        .deliveries(ws, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(log.items.len(), 2);
    for d in &log.items {
        let (_, attempts) = store.delivery(ws, &d.id).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1, "the attempt survived the rebuild");
        assert_eq!(attempts[0].node, "old-node");
    }
    let now = herald::domain::Millis::now();
    assert_eq!(
        store.cancel(ws, &log.items[0].id, now).await.unwrap(),
        herald::storage::Cancel::Cancelled
    );
    let cancelled = DeliveryFilter {
        status: Some(herald::domain::DeliveryStatus::Cancelled),
        ..DeliveryFilter::default()
    };
    assert_eq!(
        store
            .deliveries(ws, &cancelled, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // The other is still claimed as before, through the rebuilt indexes.
    let claimed = store
        .claim_due(herald::storage::ClaimRequest {
            node: "n",
            now,
            lease_until: now.plus(std::time::Duration::from_secs(30)),
            limit: 10,
            per_host_cap: 10,
            full_hosts: &[],
            room_hosts: &[],
            rooms: &[],
            default_room: 10,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, log.items[1].id);
}

on_both_backends!(
    #[tokio::test]
    the_deliveries_table_keeps_every_row_and_attempt_through_migration_9
);

/// A migration this build does not know, recorded by sqlx's migrator (a newer node applied it):
/// refused with the message that says what to do, by `migrate` and by the `--no-migrate` check.
async fn a_newer_migration_is_refused(db: TestDb) {
    let store = db.store().await;
    db.execute(match db {
        TestDb::Sqlite { .. } => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99, 'future', 1, x'00', 0)"
        }
        TestDb::Postgres { .. } => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99, 'future', true, '\\x00'::bytea, 0)"
        }
    })
    .await;
    for err in [
        store.migrate().await.unwrap_err().to_string(),
        store.check_schema().await.unwrap_err().to_string(),
    ] {
        assert!(
            err.contains(&format!(
                "at version 99, newer than this Herald knows (up to {LATEST})"
            )),
            "{err}"
        );
    }
    // A fresh node on it refuses too.
    let late: std::sync::Arc<dyn Store> = herald::storage::open(db.url()).await.unwrap();
    assert!(late.migrate().await.is_err());
}

on_both_backends!(
    #[tokio::test]
    a_newer_migration_is_refused
);

/// Nodes of a fleet starting together on a new PostgreSQL database: one migrates, the others
/// wait for it under the migrator's lock and find the schema current.
#[tokio::test]
async fn postgres_nodes_starting_together_migrate_once() {
    if crate::db::postgres_skipped() {
        return;
    }
    let db = TestDb::postgres().await;
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(herald::storage::open(db.url()).await.unwrap());
    }
    let runs = nodes.iter().map(|node| node.migrate());
    for outcome in futures_util::future::join_all(runs).await {
        outcome.unwrap();
    }
    let recorded: Vec<(i64,)> = behind_herald(&db, "SELECT COUNT(*) FROM _sqlx_migrations").await;
    assert_eq!(recorded, [(LATEST,)]);
    for node in &nodes {
        node.check_schema().await.unwrap();
    }
}
