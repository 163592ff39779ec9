//! Backpressure (decision 0011): instance writes wait while the node's own worker is behind,
//! and never because one receiver is slow.

use crate::db::TestDb;
use crate::helpers::*;
use crate::metrics::{sample, scrape};
use herald::domain::Backpressure;
use serde_json::json;
use std::time::Duration;

/// A node whose worker cannot keep up: one callback at a time, each taking 20 ms (50 a second),
/// while one client creates instances as fast as it can.
async fn slow_worker(db: TestDb, policy: Backpressure) -> (TestApp, Receiver) {
    let app = TestApp::spawn_on(db, |c| {
        c.max_in_flight = 1;
        c.backpressure = policy;
    })
    .await;
    let rx = Receiver::start().await;
    rx.behave("/slow", Behaviour::Delay(20));
    app.configure(&[&rx.url("/slow")], &[], &[]).await;
    app.process("expense").await;
    (app, rx)
}

/// Creates instances one after another until `done` says so from the scrape (checked every
/// ten), at most `most`; how many it created.
async fn create_until(app: &TestApp, most: usize, done: impl Fn(&str) -> bool) -> usize {
    for n in 1..=most {
        app.instance("expense", json!({ "n": n })).await;
        if n % 10 == 0 && done(&scrape(app).await) {
            return n;
        }
    }
    panic!("not reached in {most} creates:\n{}", scrape(app).await);
}

async fn writes_wait_for_a_worker_that_is_behind(db: TestDb) {
    let (app, rx) = slow_worker(db, Backpressure::AtLag(Duration::from_millis(100))).await;
    let created = create_until(&app, 2_000, |text| {
        sample(text, "herald_writes_paced_total").is_some_and(|n| n > 0.0)
    })
    .await;
    // Waiting writes still succeed, and every callback arrives.
    let more = 20;
    for n in 0..more {
        app.instance("expense", json!({ "more": n })).await;
    }
    rx.wait_for(Some("/slow"), created + more).await;
    let text = scrape(&app).await;
    assert!(
        sample(&text, "herald_write_pacing_seconds_total").is_some_and(|s| s > 0.0),
        "{text}"
    );
}

on_both_backends!(
    #[tokio::test]
    writes_wait_for_a_worker_that_is_behind
);

#[tokio::test]
async fn with_backpressure_off_writes_never_wait_however_far_behind() {
    let (app, _rx) = slow_worker(TestDb::sqlite(), Backpressure::Off).await;
    create_until(&app, 2_000, |text| {
        sample(text, "herald_worker_lag_seconds").is_some_and(|lag| lag > 0.5)
    })
    .await;
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "herald_writes_paced_total"),
        Some(0.0),
        "{text}"
    );
}

/// A receiver that never answers has a backlog of its own making: it holds no write back, even
/// after its timeouts have lowered its limit and its oldest deliveries are claimed for retries
/// seconds late.
async fn a_hanging_receiver_slows_no_write(db: TestDb) {
    let app = TestApp::spawn_on(db, |c| {
        c.backpressure = Backpressure::AtLag(Duration::from_millis(100));
    })
    .await;
    let rx = Receiver::start().await;
    rx.behave("/hang", Behaviour::Hang);
    app.configure(&[&rx.url("/hang")], &[], &[]).await;
    app.process("expense").await;
    for n in 0..40 {
        app.instance("expense", json!({ "n": n })).await;
    }
    // The first attempts time out (2 s in tests) and later ones are claimed late.
    eventually(
        "attempts timed out and late deliveries were claimed",
        || async {
            let text = scrape(&app).await;
            (sample(&text, "herald_callback_attempts_total{outcome=\"timeout\"}")
                .is_some_and(|n| n >= 1.0)
                && sample(&text, "herald_claimed_deliveries_total").is_some_and(|n| n > 8.0))
            .then_some(())
        },
    )
    .await;
    // Counted from here: the late claims are behind us, and their backlog is there. (Before,
    // a worker stalled by a loaded machine may rightly pace a write or two of the first 40.)
    let before = sample(&scrape(&app).await, "herald_writes_paced_total");
    for n in 0..20 {
        app.instance("expense", json!({ "after": n })).await;
    }
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "herald_writes_paced_total"), before, "{text}");
    assert!(
        sample(&text, "herald_deliveries_pending").is_some_and(|n| n >= 50.0),
        "the backlog is there: {text}"
    );
}

on_both_backends!(
    #[tokio::test]
    a_hanging_receiver_slows_no_write
);

/// A receiver that answers, but slowly, is held back by its own adaptive limit: the worker has
/// room to spare, so its backlog (claimed a slot at a time, each already late) slows no write.
#[tokio::test]
async fn a_slow_receiver_at_its_limit_slows_no_write() {
    let app = TestApp::spawn_with(|c| {
        c.backpressure = Backpressure::AtLag(Duration::from_millis(100));
    })
    .await;
    let rx = Receiver::start().await;
    rx.behave("/slow", Behaviour::Delay(100));
    app.configure(&[&rx.url("/slow")], &[], &[]).await;
    app.process("expense").await;
    for n in 0..60 {
        app.instance("expense", json!({ "n": n })).await;
    }
    // Eight at a time, 100 ms each: by the 24th, deliveries are claimed 200 ms late or more.
    eventually("late deliveries were claimed", || async {
        let text = scrape(&app).await;
        sample(&text, "herald_claimed_deliveries_total")
            .is_some_and(|n| n >= 24.0)
            .then_some(())
    })
    .await;
    for n in 0..20 {
        app.instance("expense", json!({ "after": n })).await;
    }
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "herald_writes_paced_total"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "herald_deliveries_pending").is_some_and(|n| n >= 20.0),
        "the backlog is there: {text}"
    );
}
