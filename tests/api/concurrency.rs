//! Each receiving host's adaptive concurrency, driven through the API with a real receiver: a
//! receiver that keeps up is given more than the initial 8 at once, never more than the
//! operator's ceiling; one that answers 503 is given fewer; the limit is shown in
//! `GET /api/v1/webhooks/health` and `/metrics`.

use crate::helpers::{Behaviour, Receiver, TestApp, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// Creates `n` instances of process `p`, 32 requests at a time, so a backlog builds up.
async fn burst(app: &TestApp, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let creates = chunk
            .iter()
            .map(|i| app.post("/api/v1/processes/p/instances", json!({"data": {"i": i}})));
        for (status, body) in futures_util::future::join_all(creates).await {
            assert_eq!(status, 201, "{body}");
        }
    }
}

/// This node's entry for the receiver's host in the health listing.
async fn host_entry(app: &TestApp, receiver: &Receiver) -> Option<Value> {
    let (status, body) = app.get("/api/v1/webhooks/health").await;
    assert_eq!(status, 200, "{body}");
    let host = receiver.addr.to_string();
    body["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host.as_str())
        .cloned()
}

async fn a_receiver_that_keeps_up_gets_more_at_once(app: TestApp) {
    // 100 ms an answer: at 8 at once, 80 a second, far below how fast the API queues them, so
    // a backlog builds however busy the machine running the tests is.
    let receiver = Receiver::start().await;
    receiver.behave("/busy", Behaviour::Delay(100));
    app.configure(&[&receiver.url("/busy")], &[], &[]).await;
    app.process("p").await;
    burst(&app, 300).await;
    receiver.wait_for(Some("/busy"), 300).await;
    // The limit moves with each answer: compare the health listing and the metrics only once
    // the last answer is in and nothing is pending.
    eventually("every delivery is done", || async {
        app.deliveries("status=pending")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let peak = receiver.peak_in_flight();
    assert!(
        peak > 8,
        "a receiver answering in 100 ms got only {peak} at once"
    );
    let entry = host_entry(&app, &receiver)
        .await
        .expect("the host is shown");
    let limit = entry["concurrencyLimit"].as_u64().unwrap();
    assert!(limit > 8, "{entry}");
    assert_eq!(entry["ceiling"], 256, "{entry}");
    let (_, _, text) = app
        .call_full(Method::GET, "/metrics", Some(&app.token), None, &[])
        .await;
    let text = text.as_str().expect("plain text");
    assert!(
        text.contains(&format!(
            "herald_host_concurrency_limit{{host=\"{}\"}} {limit}",
            receiver.addr
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_receiver_that_keeps_up_gets_more_at_once_sqlite() {
    a_receiver_that_keeps_up_gets_more_at_once(TestApp::spawn().await).await;
}

#[tokio::test]
async fn a_receiver_that_keeps_up_gets_more_at_once_postgres() {
    if let Some(app) = TestApp::spawn_postgres(|_| {}).await {
        a_receiver_that_keeps_up_gets_more_at_once(app).await;
    }
}

#[tokio::test]
async fn no_host_gets_more_than_the_ceiling() {
    let app = TestApp::spawn_with(|c| c.max_per_host = 3).await;
    let receiver = Receiver::start().await;
    receiver.behave("/busy", Behaviour::Delay(100));
    app.configure(&[&receiver.url("/busy")], &[], &[]).await;
    app.process("p").await;
    burst(&app, 60).await;
    receiver.wait_for(Some("/busy"), 60).await;
    assert_eq!(receiver.peak_in_flight(), 3);
    let entry = host_entry(&app, &receiver)
        .await
        .expect("the host is shown");
    assert_eq!(entry["concurrencyLimit"], 3, "{entry}");
    assert_eq!(entry["ceiling"], 3, "{entry}");
}

#[tokio::test]
async fn a_receiver_that_answers_503_gets_fewer_at_once() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.behave("/overloaded", Behaviour::Status(503));
    app.configure(&[&receiver.url("/overloaded")], &[], &[])
        .await;
    app.process("p").await;
    burst(&app, 40).await;
    let limit = eventually("the host's limit to fall below 8", || async {
        let entry = host_entry(&app, &receiver).await?;
        let limit = entry["concurrencyLimit"].as_u64()?;
        (limit < 8).then_some(limit)
    })
    .await;
    assert!(limit >= 1);
}

/// Four attempts at a time on the node (`--max-in-flight 4`) to a receiver that answers in
/// 50 ms: the host's own limit has room for more, so once it has answered, deliveries wait
/// claimed ahead and each freed slot takes the next at once.
async fn four_slots(app: &TestApp, receiver: &Receiver) {
    receiver.behave("/quick", Behaviour::Delay(50));
    app.configure(&[&receiver.url("/quick")], &[], &[]).await;
    app.process("p").await;
}

#[tokio::test]
async fn a_quick_receivers_backlog_is_claimed_ahead_and_each_callback_arrives_once() {
    let app = TestApp::spawn_with(|c| c.max_in_flight = 4).await;
    let receiver = Receiver::start().await;
    four_slots(&app, &receiver).await;
    burst(&app, 100).await;
    let entry = eventually("deliveries waiting claimed ahead", || async {
        let entry = host_entry(&app, &receiver).await?;
        (entry["claimedAhead"].as_u64()? > 0).then_some(entry)
    })
    .await;
    assert!(entry["inFlight"].as_u64().unwrap() <= 4, "{entry}");
    let got = receiver.wait_for(Some("/quick"), 100).await;
    eventually("every delivery is done", || async {
        app.deliveries("status=pending")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let mut ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100, "each callback arrived once");
    assert_eq!(
        receiver.peak_in_flight(),
        4,
        "never more than the node allows"
    );
    let log = app.deliveries("status=succeeded").await;
    assert_eq!(log.len(), 100);
    assert!(log.iter().all(|d| d["attemptCount"] == 1), "{log:?}");
    let text = crate::metrics::scrape(&app).await;
    assert_eq!(
        crate::metrics::sample(&text, "herald_deliveries_given_back_total"),
        Some(0.0)
    );
}

#[tokio::test]
async fn deliveries_claimed_ahead_for_a_url_that_fails_are_given_back_and_none_is_lost() {
    // Retries a second apart and no pause, so every delivery that fails while the receiver
    // answers 500 succeeds on a later attempt.
    let app = TestApp::spawn_with(|c| {
        c.max_in_flight = 4;
        c.retry_schedule = herald::domain::RetrySchedule::parse("1s,1s,1s,1s,1s").unwrap();
        c.breaker.threshold = 10_000;
    })
    .await;
    let receiver = Receiver::start().await;
    four_slots(&app, &receiver).await;
    burst(&app, 100).await;
    eventually("deliveries waiting claimed ahead", || async {
        let entry = host_entry(&app, &receiver).await?;
        (entry["claimedAhead"].as_u64()? > 0).then_some(())
    })
    .await;
    receiver.behave("/quick", Behaviour::Status(500));
    // The first failure gives back what waits for the URL, to be claimed again under the
    // breaker's rules instead of being sent from the node's window.
    eventually("claimed-ahead deliveries given back", || async {
        let text = crate::metrics::scrape(&app).await;
        crate::metrics::sample(&text, "herald_deliveries_given_back_total")
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    })
    .await;
    receiver.behave("/quick", Behaviour::Delay(1));
    // Retries (and the breaker's probe, if it opened) bring every one of them through.
    eventually("every delivery succeeded", || async {
        (app.deliveries("status=succeeded").await.len() == 100).then_some(())
    })
    .await;
}
