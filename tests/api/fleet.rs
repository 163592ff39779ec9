//! A fleet of three `herald serve` processes on one PostgreSQL database.

use crate::db::{TestDb, postgres_skipped};
use crate::helpers::{ADMIN_TOKEN, Receiver, Remote, spawn_herald};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const EVENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_survive_losing_one() {
    if postgres_skipped() {
        return;
    }
    let db = TestDb::postgres().await;
    let rx = Receiver::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(spawn_herald(db.url(), &[]).await);
    }
    let bases: Vec<String> = nodes.iter().map(|(_, base)| base.clone()).collect();
    let first = Remote::new(&bases[0]);
    let urls = [rx.url("/one"), rx.url("/two")];
    first
        .put(
            "/api/v1/webhooks",
            json!({
                "created": {"enabled": true, "urls": urls},
                "updated": {"enabled": false, "urls": []},
                "deleted": {"enabled": false, "urls": []},
            }),
        )
        .await;
    first
        .post(
            "/api/v1/processes",
            json!({"name": "fleet", "title": "Fleet"}),
        )
        .await;

    // Send the events round-robin through all three APIs, 24 at a time; kill node 3 (SIGKILL)
    // a third of the way through and carry on with the other two.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0;
    let mut killed = false;
    while sent < EVENTS {
        if !killed && sent >= EVENTS / 3 {
            nodes[2].0.start_kill().unwrap();
            let _ = nodes[2].0.wait().await;
            killed = true;
        }
        let alive = if killed { 2 } else { 3 };
        let mut batch = Vec::new();
        for i in sent..(sent + 24).min(EVENTS) {
            let url = format!("{}/api/v1/processes/fleet/instances", bases[i % alive]);
            let http = http.clone();
            batch.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"data": {"n": i}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::CREATED);
            }));
        }
        sent += batch.len();
        for t in batch {
            t.await.unwrap();
        }
    }
    let api_seconds = started.elapsed().as_secs_f64();

    let want = EVENTS * 2;
    eventually_long("every callback arrives", || {
        let got: std::collections::HashSet<String> = rx
            .requests()
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_owned())
            .collect();
        got.len() == want
    })
    .await;
    let total_seconds = started.elapsed().as_secs_f64();

    let mut copies: HashMap<String, usize> = HashMap::new();
    for r in rx.requests() {
        *copies
            .entry(r.header("webhook-id").unwrap().to_owned())
            .or_default() += 1;
    }
    let duplicated: Vec<&String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        copies.values().all(|n| *n <= 2),
        "no callback arrives more than twice"
    );

    // Attempts recorded per node, and per delivery.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let split: Vec<(String, i64)> =
        sqlx::query_as("SELECT node, COUNT(*) FROM delivery_attempts GROUP BY node ORDER BY node")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let recorded: i64 = split.iter().map(|(_, n)| n).sum();
    eprintln!(
        "fleet: {EVENTS} events through the APIs in {api_seconds:.1} s; all {want} callbacks in {total_seconds:.1} s; \
         attempts per node {split:?}; {} duplicates",
        duplicated.len()
    );
    assert_eq!(
        split.len(),
        3,
        "all three nodes delivered a share: {split:?}"
    );
    assert!(split.iter().all(|(_, n)| *n > 0));
    assert_eq!(
        recorded as usize, want,
        "every delivery succeeded with exactly one recorded attempt"
    );
    // A duplicate is an attempt the killed node made but never recorded: the recorded attempt
    // is by a surviving node, and the receiver saw the same webhook-id twice.
    for id in &duplicated {
        let nodes: Vec<String> = sqlx::query_scalar(
            "SELECT a.node FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.webhook_id = $1",
        )
        .bind(id.as_str())
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(nodes.len(), 1, "{id}");
    }
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status <> 'succeeded'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(pending, 0);
}

/// Like `eventually`, with room for a large run on a slow machine (3 minutes).
async fn eventually_long(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
