//! A fleet of three `herald serve` processes on one PostgreSQL database.

use crate::db::{TestDb, postgres_skipped};
use crate::helpers::{ADMIN_TOKEN, Behaviour, Receiver, Remote, eventually, spawn_herald};
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

    // Attempts recorded per node, and per delivery. A callback arrives before its result is
    // stored (results are written in batches off the attempt's path): wait until every
    // delivery has left the queue, then count.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} deliveries still pending after every callback arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// A node whose database goes away while a callback is in flight cannot store its result. Asked
/// to stop, it retries for a grace period only, then stops: the delivery is not lost, another
/// node sends it again, with the same webhook-id, once the lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_when_asked_even_if_its_database_is_gone_and_the_callback_is_sent_again() {
    if postgres_skipped() {
        return;
    }
    let db = TestDb::postgres().await;
    let rx = Receiver::start().await;
    rx.behave("/slow", Behaviour::Delay(600));
    let (mut node, base) = spawn_herald(db.url(), &[]).await;
    let remote = Remote::new(&base);
    remote
        .put(
            "/api/v1/webhooks",
            json!({
                "created": {"enabled": true, "urls": [rx.url("/slow")]},
                "updated": {"enabled": false, "urls": []},
                "deleted": {"enabled": false, "urls": []},
            }),
        )
        .await;
    remote
        .post(
            "/api/v1/processes",
            json!({"name": "gone", "title": "Gone"}),
        )
        .await;
    remote
        .post("/api/v1/processes/gone/instances", json!({"data": {}}))
        .await;
    let first = rx.wait_for(Some("/slow"), 1).await;

    // While the receiver takes its time, the database shuts this node out.
    db.refuse_connections(true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &node.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), node.wait())
        .await
        .expect("the node stops within the callback timeout plus its grace period")
        .unwrap();
    eprintln!(
        "stopped {:.1} s after SIGTERM: {status}",
        asked.elapsed().as_secs_f64()
    );

    // The database is back; a new node sends the callback again once the lease has ended.
    db.refuse_connections(false).await;
    let (_node, base) = spawn_herald(db.url(), &[]).await;
    let both = rx.wait_for(Some("/slow"), 2).await;
    assert_eq!(
        both[1].header("webhook-id"),
        first[0].header("webhook-id"),
        "the repeat carries the same webhook-id"
    );
    let remote = Remote::new(&base);
    let delivery = eventually("the delivery is recorded as succeeded", || async {
        let (_, body) = remote.get("/api/v1/deliveries").await;
        let first = body["items"].get(0)?.clone();
        (first["status"] == "succeeded").then_some(first)
    })
    .await;
    assert_eq!(delivery["id"].as_str(), first[0].header("webhook-id"));
    assert_eq!(
        delivery["attemptCount"], 1,
        "the stopped node's result was given up, not stored: {delivery}"
    );
    let (_, body) = remote.get("/api/v1/deliveries").await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
}

/// Like `eventually`, with room for a large run on a slow machine (3 minutes).
async fn eventually_long(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
