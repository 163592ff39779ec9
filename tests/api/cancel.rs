//! Cancelling pending deliveries, one or all matching a filter, through the API and the UI.

use crate::db::TestDb;
use crate::helpers::*;
use crate::web::{PASSWORD, csrf_token, page, session_cookie};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// A failed attempt is retried only after a minute: long enough to act on it meanwhile.
fn retry_in_a_minute(c: &mut herald::Config) {
    c.retry_schedule = herald::domain::RetrySchedule::parse("1m").unwrap();
}

/// Adds `dev@example.com` as a developer and signs them in: their session cookie.
async fn developer_session(app: &TestApp) -> String {
    let (status, body) = app
        .post(
            "/api/v1/users",
            json!({"email": "dev@example.com", "role": "developer", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    session_cookie(app, "dev@example.com").await
}

/// Posts a UI form as the holder of `cookie`; the page that comes back.
async fn post_form(app: &TestApp, cookie: &str, path: &str, fields: &[(&str, &str)]) -> String {
    reqwest::Client::new()
        .post(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .form(fields)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The deliveries of one instance, by event.
async fn delivery_of(app: &TestApp, instance: &str, event: &str) -> Value {
    app.deliveries(&format!("instanceId={instance}&eventType={event}"))
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {event} delivery of {instance}"))
}

/// A cancelled delivery is never sent; the next one of its instance goes at once; redelivery
/// brings it back.
async fn a_cancelled_delivery_is_not_sent_and_frees_the_next(db: TestDb) {
    let app = TestApp::spawn_on(db, retry_in_a_minute).await;
    let rx = Receiver::start().await;
    rx.behave("/r", Behaviour::FailFirst(1, 503));
    let url = rx.url("/r");
    app.configure(&[&url], &[&url], &[]).await;
    app.process("expense").await;
    let id = app.instance("expense", json!({"amount": 1})).await;
    // Its first attempt fails; the retry waits a minute, and the update's delivery behind it.
    let created = app
        .delivery_when(
            &format!("instanceId={id}&eventType=created"),
            "a failed first attempt",
            |d| d["attemptCount"] == 1 && d["status"] == "pending",
        )
        .await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/instances/{id}"),
            json!({"data": {"amount": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let created_id = created["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/v1/deliveries/{created_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["id"], created_id);

    // The update's callback goes now, and is the only one after the failed attempt.
    let got = rx.wait_for(Some("/r"), 2).await;
    assert!(
        got[1]
            .query
            .as_deref()
            .unwrap()
            .contains("eventType=updated"),
        "{got:#?}"
    );
    let created = delivery_of(&app, &id, "created").await;
    assert_eq!(created["status"], "cancelled");
    let listed = app.deliveries("status=cancelled").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created_id);

    // Nothing left to cancel: the answer says why.
    let (status, body) = app
        .post(
            &format!("/api/v1/deliveries/{created_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "delivery_not_pending");
    assert!(
        body["message"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
    let updated = delivery_of(&app, &id, "updated").await;
    app.delivery_when(
        &format!("instanceId={id}&eventType=updated"),
        "the update delivered",
        |d| d["status"] == "succeeded",
    )
    .await;
    let (status, body) = app
        .post(
            &format!(
                "/api/v1/deliveries/{}/cancel",
                updated["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("succeeded"),
        "{body}"
    );

    // Redelivered, it is sent after all, with its own webhook-id.
    let (status, _) = app
        .post(
            &format!("/api/v1/deliveries/{created_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = rx.wait_for(Some("/r"), 3).await;
    assert!(
        got[2]
            .query
            .as_deref()
            .unwrap()
            .contains("eventType=created")
    );
    assert_eq!(got[2].header("webhook-id"), Some(created_id));
}

on_both_backends!(
    #[tokio::test]
    a_cancelled_delivery_is_not_sent_and_frees_the_next
);

#[tokio::test]
async fn an_attempt_under_way_cannot_be_cancelled_and_unknown_ids_are_not_found() {
    let app = TestApp::spawn_with(|c| c.callback_timeout = Duration::from_secs(60)).await;
    let rx = Receiver::start().await;
    rx.behave("/hang", Behaviour::Hang);
    app.configure(&[&rx.url("/hang")], &[], &[]).await;
    app.process("expense").await;
    app.instance("expense", json!({})).await;
    rx.wait_for(Some("/hang"), 1).await;
    let d = app.deliveries("").await.remove(0);
    let (status, body) = app
        .post(
            &format!("/api/v1/deliveries/{}/cancel", d["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "delivery_in_flight");
    let (status, body) = app
        .post(
            "/api/v1/deliveries/msg_00000000000000000000000000000000/cancel",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .post("/api/v1/deliveries/nonsense/cancel", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// Every pending delivery to one URL, except those under way, and nothing else.
async fn cancelling_by_filter_takes_only_what_matches(db: TestDb) {
    // The hanging attempts stay under way for the whole test.
    let app = TestApp::spawn_on(db, |c| c.callback_timeout = Duration::from_secs(60)).await;
    let rx = Receiver::start().await;
    rx.behave("/hang", Behaviour::Hang);
    // The other URL on a host of its own: on one host, the hanging attempts could take every
    // slot of the host's concurrency limit and starve it (a CI run saw that on PostgreSQL).
    let other = Receiver::start().await;
    let (hang, ok) = (rx.url("/hang"), other.url("/ok"));
    app.configure(&[&hang, &ok], &[], &[]).await;
    app.process("expense").await;
    for n in 0..20 {
        app.instance("expense", json!({ "n": n })).await;
    }
    rx.wait_for(Some("/hang"), 1).await;
    // The other URL's callbacks have all arrived and their results are stored.
    eventually("every callback to the other URL succeeded", || async {
        (app.deliveries("status=succeeded").await.len() == 20).then_some(())
    })
    .await;

    let (status, body) = app.post("/api/v1/deliveries/cancel", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("at least one"),
        "{body}"
    );
    let (status, body) = app
        .post("/api/v1/deliveries/cancel", json!({"status": "cancelld"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cancelld"),
        "{body}"
    );

    let (status, body) = app
        .post("/api/v1/deliveries/cancel", json!({"url": "/hang"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancelled = body["cancelled"].as_u64().unwrap();
    let listed = app.deliveries("status=cancelled").await;
    assert_eq!(listed.len() as u64, cancelled);
    assert!(
        listed.iter().all(|d| d["url"] == hang.as_str()),
        "{listed:#?}"
    );
    // What was under way is still pending; the rest is cancelled; the other URL's are untouched.
    let pending = app.deliveries("status=pending").await;
    assert!(!pending.is_empty() && pending.iter().all(|d| d["url"] == hang.as_str()));
    assert_eq!(cancelled + pending.len() as u64, 20, "{pending:#?}");
    assert_eq!(app.deliveries("status=succeeded").await.len(), 20);
}

on_both_backends!(
    #[tokio::test]
    cancelling_by_filter_takes_only_what_matches
);

#[tokio::test]
async fn a_developer_cancels_in_the_ui_one_delivery_or_all_a_filter_matches() {
    let app = TestApp::spawn_with(retry_in_a_minute).await;
    let rx = Receiver::start().await;
    rx.behave("/down", Behaviour::Status(503));
    app.configure(&[&rx.url("/down")], &[], &[]).await;
    app.process("expense").await;
    for n in 0..3 {
        app.instance("expense", json!({ "n": n })).await;
    }
    // Each has failed once and waits for its retry.
    eventually("three failed first attempts", || async {
        let list = app.deliveries("status=pending").await;
        (list.len() == 3 && list.iter().all(|d| d["attemptCount"] == 1)).then_some(())
    })
    .await;
    let cookie = developer_session(&app).await;
    let http = reqwest::Client::new();

    let one = app.deliveries("").await.remove(0);
    let path = format!("/ui/admin/deliveries/{}", one["id"].as_str().unwrap());
    assert!(
        page(&app, &cookie, &path)
            .await
            .contains("id=\"cancel-delivery\"")
    );
    let csrf = csrf_token(&app, &cookie, &path).await;
    let html = post_form(&app, &cookie, &format!("{path}/cancel"), &[("csrf", &csrf)]).await;
    assert!(
        html.contains("Cancelled: this delivery will not be sent"),
        "{html}"
    );
    assert!(
        !html.contains("id=\"cancel-delivery\""),
        "no Cancel button once cancelled"
    );

    let list = "/ui/admin/deliveries?status=pending";
    assert!(
        page(&app, &cookie, list)
            .await
            .contains("id=\"cancel-matching\"")
    );
    assert!(
        !page(&app, &cookie, "/ui/admin/deliveries")
            .await
            .contains("id=\"cancel-matching\""),
        "no bulk cancel without a filter"
    );
    let csrf = csrf_token(&app, &cookie, list).await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("status", "pending"),
        ("eventType", ""),
        ("url", ""),
    ];
    let html = post_form(&app, &cookie, "/ui/admin/deliveries/cancel", &fields).await;
    assert!(html.contains("Cancelled 2 pending deliveries."), "{html}");
    assert_eq!(app.deliveries("status=cancelled").await.len(), 3);
    // Without the page's token, nothing happens.
    let r = http
        .post(format!("{}/ui/admin/deliveries/cancel", app.base))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged"), ("status", "pending")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// Taking a URL out of the settings leaves its queued callbacks pending: the API names them in
/// its answer, and the Developer page offers to cancel them.
#[tokio::test]
async fn removing_a_url_offers_to_cancel_what_is_still_pending_for_it() {
    let app = TestApp::spawn_with(retry_in_a_minute).await;
    let rx = Receiver::start().await;
    rx.behave("/old", Behaviour::Status(503));
    let (old, new) = (rx.url("/old"), rx.url("/new"));
    app.configure(&[&old, &new], &[], &[]).await;
    app.process("expense").await;
    for n in 0..3 {
        app.instance("expense", json!({ "n": n })).await;
    }
    eventually("three failed first attempts to the old URL", || async {
        let list = app.deliveries("status=pending").await;
        (list.len() == 3 && list.iter().all(|d| d["attemptCount"] == 1)).then_some(())
    })
    .await;

    let off = json!({"enabled": false, "urls": []});
    let (status, body) = app
        .put(
            "/api/v1/webhooks",
            json!({"created": {"enabled": true, "urls": [new]}, "updated": off, "deleted": off}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["pendingToRemovedUrls"],
        json!([{"url": old, "pending": 3}]),
        "{body}"
    );
    // Saved again unchanged, nothing was removed: nothing to offer.
    let (_, body) = app
        .put(
            "/api/v1/webhooks",
            json!({"created": {"enabled": true, "urls": [new]}, "updated": off, "deleted": off}),
        )
        .await;
    assert!(body.get("pendingToRemovedUrls").is_none(), "{body}");

    // In the UI: put the old URL back, then take it out in the dialog.
    app.configure(&[&old, &new], &[], &[]).await;
    let cookie = developer_session(&app).await;
    let csrf = csrf_token(&app, &cookie, "/ui/admin/developer").await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("created_enabled", "on"),
        ("created_urls", new.as_str()),
        ("updated_urls", ""),
        ("deleted_urls", ""),
        ("format", "kianda"),
    ];
    let html = post_form(&app, &cookie, "/ui/admin/developer/webhooks", &fields).await;
    assert!(html.contains("id=\"removed-urls\""), "{html}");
    assert!(html.contains("3 pending"), "{html}");
    let fields = [("csrf", csrf.as_str()), ("url", old.as_str())];
    let html = post_form(&app, &cookie, "/ui/admin/developer/cancel-removed", &fields).await;
    assert!(html.contains("Cancelled 3 pending deliveries to"), "{html}");
    assert_eq!(app.deliveries("status=cancelled").await.len(), 3);
    assert!(app.deliveries("status=pending").await.is_empty());
}
