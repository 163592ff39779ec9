//! Reliable delivery: Retry-After, test callbacks, bulk redelivery, the circuit breaker,
//! per-host caps, pruning, and surviving a SIGKILL.

use crate::helpers::{Behaviour, Receiver, Remote, TestApp, eventually, spawn_herald};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn retry_after_pauses_the_url_for_as_long_as_asked() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/busy", Behaviour::WithHeader(503, "retry-after", "30"));
    app.configure(&[&rx.url("/busy")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let d = app
        .delivery_when("", "first attempt recorded", |d| {
            d["attemptCount"] == 1 && d["paused"] == true
        })
        .await;
    assert_eq!(d["status"], "pending");
    let last = herald::domain::Millis::parse_rfc3339(d["lastAttemptAt"].as_str().unwrap()).unwrap();
    let (_, health) = app.get("/api/v1/webhooks/health").await;
    let url = &health["items"][0];
    assert_eq!(url["state"], "paused");
    // The schedule says 100 ms; the receiver asked for 30 s, and the whole URL waits that long.
    let until = url["pausedUntil"].as_str().unwrap();
    let until = herald::domain::Millis::parse_rfc3339(until).unwrap();
    assert!(
        until.0 - last.0 >= 29_000,
        "paused until {} ms after the attempt",
        until.0 - last.0
    );
}

#[tokio::test]
async fn a_test_callback_reports_its_outcome_and_is_logged() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/broken", Behaviour::Status(500));
    let (status, ok) = app
        .post(
            "/api/v1/webhooks/test",
            json!({"eventType": "updated", "url": rx.url("/t?k=v")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["succeeded"], true);
    assert_eq!(ok["statusCode"], 200);
    let got = rx.wait_for(Some("/t"), 1).await;
    assert_eq!(got[0].header("webhook-test"), Some("true"));
    let query = got[0].query.as_deref().unwrap();
    assert!(
        query.starts_with("k=v&instanceID=herald-test-")
            && query.ends_with("&processName=herald-test&eventType=updated"),
        "{query}"
    );

    let (_, bad) = app
        .post(
            "/api/v1/webhooks/test",
            json!({"eventType": "created", "url": rx.url("/broken")}),
        )
        .await;
    assert_eq!(bad["succeeded"], false);
    assert_eq!(bad["statusCode"], 500);
    assert_eq!(bad["outcome"], "http_status");

    let log = app.deliveries("").await;
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|d| d["test"] == true));
    assert_eq!(log[0]["status"], "failed", "test callbacks are not retried");

    let (status, err) = app
        .post(
            "/api/v1/webhooks/test",
            json!({"eventType": "renamed", "url": rx.url("/t")}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["message"].as_str().unwrap().contains("renamed"));
    let user = app.user_token("u@example.com", "user").await;
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/test",
            Some(&user),
            Some(json!({"eventType": "created", "url": rx.url("/t")})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn failed_deliveries_can_be_redelivered_in_bulk() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/gone", Behaviour::Status(410));
    app.configure(&[&rx.url("/gone"), &rx.url("/ok")], &[], &[])
        .await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    app.instance("p", json!({})).await;
    eventually("settled", || async {
        app.deliveries("status=pending")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(app.deliveries("status=failed").await.len(), 2);

    let (status, err) = app.post("/api/v1/deliveries/redeliver", json!({})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an empty filter is refused: {err}"
    );
    rx.behave("/gone", Behaviour::Status(200));
    let (status, body) = app
        .post("/api/v1/deliveries/redeliver", json!({"status": "failed"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["redelivered"], 2);
    rx.wait_for(Some("/gone"), 4).await;
    eventually("all succeeded", || async {
        (app.deliveries("status=succeeded").await.len() == 4).then_some(())
    })
    .await;
    assert_eq!(
        rx.requests_to("/ok").len(),
        2,
        "the succeeded ones were not sent again"
    );
}

#[tokio::test]
async fn the_circuit_breaker_pauses_a_failing_url_and_resumes_on_the_first_success() {
    circuit_breaker(TestApp::spawn_with(breaker_config).await).await;
}

#[tokio::test]
async fn on_postgres_the_circuit_breaker_pauses_and_resumes() {
    if let Some(app) = TestApp::spawn_postgres(breaker_config).await {
        circuit_breaker(app).await;
    }
}

fn breaker_config(c: &mut herald::Config) {
    c.retry_schedule = herald::domain::RetrySchedule::parse("1h").unwrap();
    c.breaker.first_probe = Duration::from_millis(300);
}

async fn circuit_breaker(app: TestApp) {
    let rx = Receiver::start().await;
    rx.behave("/down", Behaviour::Status(500));
    app.configure(&[&rx.url("/down"), &rx.url("/fine")], &[], &[])
        .await;
    app.process("p").await;
    for _ in 0..10 {
        app.instance("p", json!({})).await;
    }
    let health = eventually("the breaker opens", || async {
        let (_, h) = app.get("/api/v1/webhooks/health").await;
        let item = h["items"].as_array()?.first()?.clone();
        (item["state"] == "paused").then_some(item)
    })
    .await;
    assert_eq!(health["consecutiveFailures"], 10);
    assert!(health["url"].as_str().unwrap().ends_with("/down"));
    assert_eq!(health["lastError"], "HTTP 500");
    let seen = rx.requests_to("/down").len();

    // While paused, new callbacks to that URL wait; the other URL is unaffected.
    app.instance("p", json!({})).await;
    let fine = rx.wait_for(Some("/fine"), 11).await;
    assert_eq!(fine.len(), 11);
    let held = app.deliveries("instanceId=p-11").await;
    let down = held
        .iter()
        .find(|d| d["url"].as_str().unwrap().ends_with("/down"))
        .unwrap();
    assert_eq!(down["status"], "pending");
    assert_eq!(down["paused"], true);
    // At most one probe at a time goes out while paused, and it fails.
    eventually("a probe is tried", || async {
        (rx.requests_to("/down").len() > seen).then_some(())
    })
    .await;

    rx.behave("/down", Behaviour::Status(200));
    eventually("everything held is delivered", || async {
        let pending = app.deliveries("status=pending").await;
        pending.is_empty().then_some(())
    })
    .await;
    let (_, h) = app.get("/api/v1/webhooks/health").await;
    assert_eq!(h["items"][0]["state"], "healthy");
    assert_eq!(h["items"][0]["consecutiveFailures"], 0);
    assert!(h["items"][0]["lastSuccessAt"].is_string());
    assert_eq!(app.deliveries("status=succeeded").await.len(), 22);
}

#[tokio::test]
async fn one_host_never_gets_more_than_its_cap_in_flight() {
    let app = TestApp::spawn_with(|c| c.max_per_host = 2).await;
    let rx = Receiver::start().await;
    rx.behave("/slow", Behaviour::Delay(150));
    app.configure(&[&rx.url("/slow")], &[], &[]).await;
    app.process("p").await;
    for _ in 0..8 {
        app.instance("p", json!({})).await;
    }
    let got = rx.wait_for(Some("/slow"), 8).await;
    // Each request answers 150 ms after it arrives; count how many overlapped at any arrival.
    let most = got
        .iter()
        .map(|r| {
            got.iter()
                .filter(|o| o.at <= r.at && r.at < o.at + Duration::from_millis(150))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= 2,
        "{most} requests were in flight to one host at once"
    );
}

#[tokio::test]
async fn old_finished_deliveries_are_pruned_and_pending_ones_kept() {
    let app = TestApp::spawn_with(|c| {
        c.retention = Duration::from_millis(300);
        c.prune_interval = Duration::from_millis(100);
        c.retry_schedule = herald::domain::RetrySchedule::parse("1h").unwrap();
    })
    .await;
    let rx = Receiver::start().await;
    rx.behave("/fails", Behaviour::Status(500));
    app.configure(&[&rx.url("/ok"), &rx.url("/fails")], &[], &[])
        .await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    rx.wait_for(None, 2).await;
    eventually("the finished delivery is pruned", || async {
        let log = app.deliveries("").await;
        (log.len() == 1).then_some(())
    })
    .await;
    let left = app.deliveries("").await;
    assert_eq!(
        left[0]["status"], "pending",
        "a pending delivery is never pruned"
    );
}

#[tokio::test]
async fn a_sigkill_mid_flight_loses_nothing_and_duplicates_only_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let rx = Receiver::start().await;
    rx.behave("/a", Behaviour::Delay(400));
    rx.behave("/b", Behaviour::Delay(400));
    let (mut child, base) = spawn_herald(&db, &[]).await;
    let app = Remote::new(&base);
    app.put(
        "/api/v1/webhooks",
        json!({
            "created": {"enabled": true, "urls": [rx.url("/a"), rx.url("/b")]},
            "updated": {"enabled": false, "urls": []},
            "deleted": {"enabled": false, "urls": []},
        }),
    )
    .await;
    app.post("/api/v1/processes", json!({"name": "p", "title": "P"}))
        .await;
    for _ in 0..20 {
        app.post("/api/v1/processes/p/instances", json!({"data": {}}))
            .await;
    }
    rx.wait_for(None, 4).await;
    child.kill().await.unwrap(); // SIGKILL
    let killed_at = std::time::Instant::now();
    let _ = child.wait().await;

    let (mut child, base) = spawn_herald(&db, &[]).await;
    let app = Remote::new(&base);
    eventually("every delivery succeeds after the restart", || async {
        let (_, log) = app.get("/api/v1/deliveries?limit=200").await;
        let items = log["items"].as_array()?.clone();
        (items.len() == 40 && items.iter().all(|d| d["status"] == "succeeded")).then_some(())
    })
    .await;
    let got = rx.requests();
    let mut by_id: HashMap<String, Vec<std::time::Instant>> = HashMap::new();
    for r in &got {
        by_id
            .entry(r.header("webhook-id").unwrap().to_owned())
            .or_default()
            .push(r.at);
    }
    assert_eq!(by_id.len(), 40, "every event reached every URL");
    for (id, arrivals) in &by_id {
        if arrivals.len() > 1 {
            assert_eq!(arrivals.len(), 2, "{id} arrived {} times", arrivals.len());
            assert!(
                arrivals[0] < killed_at,
                "{id}: a duplicate must be an attempt in flight at the kill"
            );
        }
    }
    let duplicates = by_id.values().filter(|a| a.len() > 1).count();
    assert!(
        duplicates >= 1,
        "the kill hit attempts in flight, which are retried with the same webhook-id"
    );
    child.kill().await.unwrap();
}
