//! `/metrics`: what an operator's Prometheus scrapes.

use crate::helpers::*;
use reqwest::Method;
use reqwest::StatusCode;
use serde_json::json;

/// The scrape as text, with the admin token.
pub(crate) async fn scrape(app: &TestApp) -> String {
    let (status, headers, body) = app
        .call_full(Method::GET, "/metrics", Some(&app.token), None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    body.as_str().expect("plain text").to_owned()
}

/// The value of one sample line, `name{labels}` or `name`.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn counters_follow_events_attempts_and_outcomes() {
    counters_follow(TestApp::spawn().await).await;
}

#[tokio::test]
async fn on_postgres_counters_follow_events_attempts_and_outcomes() {
    if let Some(app) = TestApp::spawn_postgres(|_| {}).await {
        counters_follow(app).await;
    }
}

async fn counters_follow(app: TestApp) {
    let rx = Receiver::start().await;
    rx.behave("/gone", Behaviour::Status(410));
    let (ok, gone) = (rx.url("/ok"), rx.url("/gone"));
    // The 410 receiver only for `deleted`: one event calls it. (For `created` too, whether the
    // second instance's callback reached it or was failed unsent, the URL being disabled by
    // then, depended on which came first.)
    app.configure(&[&ok], &[&ok], &[&ok, &gone]).await;
    app.process("expense").await;

    let first = app.instance("expense", json!({"amount": 1})).await;
    app.instance("expense", json!({"amount": 2})).await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/instances/{first}"),
            json!({"data": {"amount": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.delete(&format!("/api/v1/instances/{first}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Four callbacks answered 200, one answered 410 (which ends a delivery without retries).
    rx.wait_for(Some("/ok"), 4).await;
    rx.wait_for(Some("/gone"), 1).await;
    let text = eventually("every result counted and stored", || async {
        let text = scrape(&app).await;
        (sample(&text, "herald_deliveries_succeeded_total") == Some(4.0)
            && sample(&text, "herald_deliveries_failed_total") == Some(1.0)
            && sample(&text, "herald_deliveries_pending") == Some(0.0))
        .then_some(text)
    })
    .await;
    for (series, want) in [
        ("herald_events_total{event_type=\"created\"}", 2.0),
        ("herald_events_total{event_type=\"updated\"}", 1.0),
        ("herald_events_total{event_type=\"deleted\"}", 1.0),
        ("herald_callback_attempts_total{outcome=\"success\"}", 4.0),
        (
            "herald_callback_attempts_total{outcome=\"http_status\"}",
            1.0,
        ),
        ("herald_callback_attempts_total{outcome=\"timeout\"}", 0.0),
        ("herald_callback_attempt_duration_seconds_count", 5.0),
        (
            "herald_callback_attempt_duration_seconds_bucket{le=\"+Inf\"}",
            5.0,
        ),
        ("herald_delivery_retries_scheduled_total", 0.0),
        ("herald_claimed_deliveries_total", 5.0),
        ("herald_callbacks_in_flight", 0.0),
        ("herald_deliveries_due", 0.0),
        ("herald_queue_lag_seconds", 0.0),
        ("herald_destinations_paused", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    // Every change was timed, and every claim and result batch.
    assert_eq!(
        sample(&text, "herald_instance_write_duration_seconds_count"),
        Some(4.0)
    );
    for series in [
        "herald_claim_duration_seconds_count",
        "herald_results_write_duration_seconds_count",
    ] {
        assert!(sample(&text, series).unwrap() >= 1.0, "{series} in\n{text}");
    }
}

#[tokio::test]
async fn queue_gauges_show_attempts_in_flight_and_deliveries_waiting() {
    // One attempt at a time, to a receiver that never answers: one in flight, two due behind it.
    let app = TestApp::spawn_with(|c| {
        c.max_in_flight = 1;
        c.callback_timeout = std::time::Duration::from_secs(10);
    })
    .await;
    let rx = Receiver::start().await;
    rx.behave("/hang", Behaviour::Hang);
    app.configure(&[&rx.url("/hang")], &[], &[]).await;
    app.process("expense").await;
    for n in 0..3 {
        app.instance("expense", json!({ "n": n })).await;
    }
    rx.wait_for(Some("/hang"), 1).await;
    let text = eventually("one attempt in flight, two due", || async {
        let text = scrape(&app).await;
        (sample(&text, "herald_callbacks_in_flight") == Some(1.0)
            && sample(&text, "herald_deliveries_due") == Some(2.0))
        .then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "herald_deliveries_pending"), Some(3.0));
    assert!(sample(&text, "herald_queue_lag_seconds").unwrap() >= 0.0);
    assert_eq!(
        sample(&text, "herald_events_total{event_type=\"created\"}"),
        Some(3.0)
    );
}

#[tokio::test]
async fn metrics_need_an_administrator_or_developer_token() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = app
        .call(Method::GET, "/metrics", Some("hrld_not-a-real-token"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let user = app.user_token("clerk@example.com", "user").await;
    let (status, body) = app.call(Method::GET, "/metrics", Some(&user), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let developer = app.user_token("dev@example.com", "developer").await;
    let (status, _) = app
        .call(Method::GET, "/metrics", Some(&developer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Deliveries waiting behind an earlier one of their instance (which is being retried) are
/// per-instance order, not a late queue: counted apart, never in the lag (issue 20). The URL
/// whose attempts failed is not called healthy.
async fn waiting_in_order_is_not_lag(app: TestApp) {
    let rx = Receiver::start().await;
    rx.behave("/broken", Behaviour::Status(500));
    app.configure(&[&rx.url("/broken")], &[&rx.url("/broken")], &[])
        .await;
    app.process("p").await;
    let id = app.instance("p", json!({"n": 0})).await;
    rx.wait_for(Some("/broken"), 1).await;
    for n in 1..=2 {
        let (status, body) = app
            .patch(
                &format!("/api/v1/instances/{id}"),
                json!({"data": {"n": n}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let health = eventually("the failed attempt is recorded", || async {
        let (_, health) = app.get("/api/v1/webhooks/health").await;
        (health["items"][0]["consecutiveFailures"] == 1).then_some(health)
    })
    .await;
    assert_eq!(health["items"][0]["state"], "failing", "{health}");
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "herald_deliveries_waiting_behind_earlier"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(&text, "herald_deliveries_due"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "herald_queue_lag_seconds"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "herald_deliveries_pending"),
        Some(3.0),
        "{text}"
    );
}

#[tokio::test]
async fn waiting_in_order_is_not_lag_sqlite() {
    waiting_in_order_is_not_lag(
        TestApp::spawn_with(|c| {
            c.retry_schedule = herald::domain::RetrySchedule::parse("1h").unwrap();
        })
        .await,
    )
    .await;
}

#[tokio::test]
async fn waiting_in_order_is_not_lag_postgres() {
    let Some(app) = TestApp::spawn_postgres(|c| {
        c.retry_schedule = herald::domain::RetrySchedule::parse("1h").unwrap();
    })
    .await
    else {
        return;
    };
    waiting_in_order_is_not_lag(app).await;
}
