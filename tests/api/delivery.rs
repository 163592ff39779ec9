//! Callbacks reaching real receivers: format, fan-out, timeouts, retries, egress, the log.

use crate::helpers::{Behaviour, Receiver, TestApp, eventually};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn every_event_reaches_every_url_with_the_kianda_query() {
    every_event_reaches_every_url(TestApp::spawn().await).await;
}

#[tokio::test]
async fn on_postgres_every_event_reaches_every_url() {
    if let Some(app) = TestApp::spawn_postgres(|_| {}).await {
        every_event_reaches_every_url(app).await;
    }
}

async fn every_event_reaches_every_url(app: TestApp) {
    let rx = Receiver::start().await;
    let (a, b) = (rx.url("/a"), rx.url("/b?token=abc&x=1#section"));
    app.configure(&[&a, &b], &[&a], &[&b]).await;
    app.process("leave-request").await;

    let id = app.instance("leave-request", json!({"days": 1})).await;
    let created = rx.wait_for(None, 2).await;
    let mut queries: Vec<(String, String)> = created
        .iter()
        .map(|r| (r.path.clone(), r.query.clone().unwrap()))
        .collect();
    queries.sort();
    assert_eq!(
        queries,
        [
            ("/a".to_owned(), "instanceID=leave-request-1&processName=leave-request&eventType=created".to_owned()),
            ("/b".to_owned(), "token=abc&x=1&instanceID=leave-request-1&processName=leave-request&eventType=created".to_owned()),
        ]
    );
    for r in &created {
        assert_eq!(r.method, "GET");
        assert!(r.header("user-agent").unwrap().starts_with("Herald/"));
        assert!(r.header("webhook-id").unwrap().starts_with("msg_"));
        assert!(
            r.header("webhook-timestamp")
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 1_700_000_000
        );
    }
    assert_ne!(
        created[0].header("webhook-id"),
        created[1].header("webhook-id")
    );

    app.patch(
        &format!("/api/v1/instances/{id}"),
        json!({"data": {"days": 2}}),
    )
    .await;
    let updated = rx.wait_for(Some("/a"), 2).await;
    assert_eq!(
        updated[1].query.as_deref(),
        Some("instanceID=leave-request-1&processName=leave-request&eventType=updated")
    );

    app.delete(&format!("/api/v1/instances/{id}")).await;
    let deleted = rx.wait_for(Some("/b"), 2).await;
    assert_eq!(
        deleted[1].query.as_deref(),
        Some(
            "token=abc&x=1&instanceID=leave-request-1&processName=leave-request&eventType=deleted"
        )
    );

    app.post(&format!("/api/v1/instances/{id}/restore"), json!({}))
        .await;
    let restored = rx.wait_for(None, 6).await;
    let created_again = restored
        .iter()
        .filter(|r| {
            r.query
                .as_deref()
                .is_some_and(|q| q.ends_with("eventType=created"))
        })
        .count();
    assert_eq!(created_again, 4, "restore fires created to both URLs");

    // The log agrees, and every delivery succeeded with the same ID the receiver saw.
    let log = app.deliveries("").await;
    assert_eq!(log.len(), 6);
    for d in &log {
        eventually("deliveries succeed", || async {
            let (_, full) = app
                .get(&format!("/api/v1/deliveries/{}", d["id"].as_str().unwrap()))
                .await;
            (full["status"] == "succeeded").then_some(())
        })
        .await;
    }
    let ids: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(
        log.iter()
            .all(|d| ids.contains(&d["id"].as_str().unwrap().to_owned()))
    );
    assert!(!log[0]["url"].as_str().unwrap().contains('#'));
}

#[tokio::test]
async fn disabled_events_send_nothing_and_a_noop_patch_fires_nothing() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let url = rx.url("/only-created");
    // Updated and deleted have URLs but their sliders are off.
    let body = json!({
        "created": {"enabled": true, "urls": [url]},
        "updated": {"enabled": false, "urls": [url]},
        "deleted": {"enabled": false, "urls": [url]},
    });
    assert_eq!(app.put("/api/v1/webhooks", body).await.0, StatusCode::OK);
    app.process("p").await;
    let id = app.instance("p", json!({"k": 1})).await;
    app.patch(
        &format!("/api/v1/instances/{id}"),
        json!({"data": {"k": 2}}),
    )
    .await;
    app.delete(&format!("/api/v1/instances/{id}")).await;
    // The outbox is written with the change, so the log is complete as soon as the calls return.
    let log = app.deliveries("").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["eventType"], "created");
    rx.wait_for(None, 1).await;

    // A patch that changes nothing fires nothing.
    app.post(&format!("/api/v1/instances/{id}/restore"), json!({}))
        .await;
    let body = json!({"created":{"enabled":true,"urls":[url]},"updated":{"enabled":true,"urls":[url]},"deleted":{"enabled":false,"urls":[]}});
    app.put("/api/v1/webhooks", body).await;
    app.patch(
        &format!("/api/v1/instances/{id}"),
        json!({"data": {"k": 2}}),
    )
    .await;
    let log = app.deliveries("eventType=updated").await;
    assert!(log.is_empty(), "{log:?}");
}

#[tokio::test]
async fn a_hanging_receiver_times_out_without_delaying_the_other_url() {
    let app = TestApp::spawn_with(|c| c.callback_timeout = std::time::Duration::from_secs(1)).await;
    let rx = Receiver::start().await;
    rx.behave("/hang", Behaviour::Hang);
    app.configure(&[&rx.url("/hang"), &rx.url("/fast")], &[], &[])
        .await;
    app.process("p").await;
    app.instance("p", json!({})).await;

    rx.wait_for(Some("/fast"), 1).await;
    // When the fast URL got its callback, the hanging one had not been given up on yet.
    let hanging = app
        .deliveries(&format!("url={}", urlencode(&rx.url("/hang"))))
        .await;
    assert_eq!(hanging[0]["attemptCount"], 0, "{hanging:?}");

    let done = app
        .delivery_when(
            &format!("url={}", urlencode(&rx.url("/hang"))),
            "the hanging attempt is recorded",
            |d| d["attempts"].as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let attempt = &done["attempts"][0];
    assert_eq!(attempt["outcome"], "timeout");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1000 ms")
    );
    assert!(attempt["durationMs"].as_i64().unwrap() >= 1000);
    assert_eq!(rx.requests_to("/fast").len(), 1);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_until_the_receiver_recovers() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/flaky", Behaviour::FailFirst(2, 503));
    app.configure(&[&rx.url("/flaky")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;

    let delivery = app
        .delivery_when("", "the delivery succeeds", |d| d["status"] == "succeeded")
        .await;
    assert_eq!(delivery["attemptCount"], 3);
    let outcomes: Vec<&str> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["http_status", "http_status", "success"]);
    assert_eq!(delivery["attempts"][0]["statusCode"], 503);
    assert_eq!(delivery["attempts"][0]["responseExcerpt"], "not yet");
    let got = rx.requests_to("/flaky");
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == delivery["id"].as_str()),
        "same webhook-id on every retry"
    );
}

#[tokio::test]
async fn retries_stop_when_the_schedule_runs_out_or_the_receiver_says_gone() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/down", Behaviour::Status(500));
    rx.behave("/gone", Behaviour::Status(410));
    app.configure(&[&rx.url("/down"), &rx.url("/gone")], &[], &[])
        .await;
    app.process("p").await;
    app.instance("p", json!({})).await;

    let down = app
        .delivery_when("url=%2Fdown", "retries run out", |d| {
            d["status"] == "failed"
        })
        .await;
    assert_eq!(down["attemptCount"], 4, "first attempt plus three retries");
    let gone = app
        .delivery_when("url=%2Fgone", "410 stops at once", |d| {
            d["status"] == "failed"
        })
        .await;
    assert_eq!(gone["attemptCount"], 1);
    assert_eq!(gone["lastStatusCode"], 410);
}

#[tokio::test]
async fn private_targets_are_refused_by_default() {
    let app = TestApp::spawn_with(|c| {
        c.allow_private_network = false;
        c.resolve_overrides = vec![("rebind.test".to_owned(), "127.0.0.1".parse().unwrap())];
    })
    .await;
    let rx = Receiver::start().await;
    let port = rx.addr.port();
    // Literal private hosts, in every spelling, are refused when saved, with the way out named.
    let literals = [
        format!("http://127.0.0.1:{port}/a"),
        format!("http://[::ffff:127.0.0.1]:{port}/b"),
        format!("http://2130706433:{port}/c"),
        format!("http://0177.0.0.1:{port}/d"),
        format!("http://localhost:{port}/e"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        // IPv6 forms that carry 127.0.0.1: SIIT, local-use NAT64, 6to4, Teredo's server.
        format!("http://[::ffff:0:7f00:1]:{port}/f"),
        format!("http://[64:ff9b:1::7f00:1]:{port}/g"),
        format!("http://[2002:7f00:1::]:{port}/h"),
        format!("http://[2001:0:7f00:1::]:{port}/i"),
    ];
    let body = json!({"created": {"enabled": true, "urls": literals}, "updated": {"enabled": false, "urls": []}, "deleted": {"enabled": false, "urls": []}});
    let (status, err) = app.put("/api/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = err["errors"].as_array().unwrap();
    assert_eq!(errors.len(), literals.len(), "{err}");
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["line"], i + 1);
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("--allow-private-network"),
            "{e}"
        );
        assert!(
            e["message"].as_str().unwrap().contains("allowed_networks"),
            "{e}"
        );
    }
    let (status, _) = app
        .post(
            "/api/v1/webhooks/test",
            json!({"eventType": "created", "url": literals[0]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A name that resolves to a private address is saved, and refused when the callback is sent.
    let by_name = format!("http://rebind.test:{port}/by-name");
    app.configure(&[&by_name], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let d = app
        .delivery_when("", "the refusal is recorded", |d| {
            d["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(d["attempts"][0]["outcome"], "private_address", "{d}");
    assert!(
        d["lastError"].as_str().unwrap().contains("127.0.0.1"),
        "{d}"
    );
    assert!(
        d["lastError"]
            .as_str()
            .unwrap()
            .contains("--allow-private-network")
    );
    assert!(
        rx.requests().is_empty(),
        "nothing may reach a private address"
    );
}

#[tokio::test]
async fn a_literal_private_url_saved_while_allowed_is_refused_once_the_flag_is_off() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    app.configure(&[&rx.url("/literal")], &[], &[]).await;
    app.process("p").await;
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |c| c.allow_private_network = false).await;
    app.instance("p", json!({})).await;
    let d = app
        .delivery_when("", "the refusal is recorded", |d| {
            d["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(d["attempts"][0]["outcome"], "private_address", "{d}");
    assert!(rx.requests().is_empty());
}

#[tokio::test]
async fn an_allowed_network_opens_exactly_that_range() {
    let app = TestApp::spawn_with(|c| {
        c.allow_private_network = false;
        c.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let rx = Receiver::start().await;
    app.configure(&[&rx.url("/ok")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    rx.wait_for(Some("/ok"), 1).await;
    let body = json!({"created": {"enabled": true, "urls": ["http://10.1.2.3/x"]}, "updated": {"enabled": false, "urls": []}, "deleted": {"enabled": false, "urls": []}});
    let (status, _) = app.put("/api/v1/webhooks", body).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "10.0.0.0/8 is still refused"
    );
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave(
        "/moved",
        Behaviour::WithHeader(302, "location", "/private-target"),
    );
    app.configure(&[&rx.url("/moved")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let d = app
        .delivery_when("", "the redirect is recorded", |d| {
            d["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(d["attempts"][0]["outcome"], "redirect");
    assert!(
        d["lastError"]
            .as_str()
            .unwrap()
            .contains("redirect not followed")
    );
    assert!(rx.requests_to("/private-target").is_empty());
}

#[tokio::test]
async fn credentials_in_a_url_travel_as_basic_auth_and_stay_out_of_the_log() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let url = format!("http://hook-user:s3cr%40t@{}/auth", rx.addr);
    app.configure(&[&url], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let got = rx.wait_for(Some("/auth"), 1).await;
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode("hook-user:s3cr@t");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    let log = app.deliveries("").await;
    assert!(!log[0]["url"].as_str().unwrap().contains("s3cr"), "{log:?}");

    // A developer cannot recover the credentials through the filter, piece by piece: it
    // matches only the URL as shown (issue 19, item 9).
    let developer = app.user_token("dev@example.com", "developer").await;
    let matching = |piece: &str| {
        let path = format!("/api/v1/deliveries?url={}", urlencode(piece));
        let (app, developer) = (&app, &developer);
        async move {
            let (status, body) = app.call(Method::GET, &path, Some(developer), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["items"].as_array().unwrap().len()
        }
    };
    for secret in ["s3cr", "hook-user", "user:", "%40t@", "@"] {
        assert_eq!(matching(secret).await, 0, "the filter {secret:?} matched");
    }
    assert_eq!(matching("/auth").await, 1);
    assert_eq!(matching(&format!("http://{}/auth", rx.addr)).await, 1);
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/deliveries/redeliver",
            Some(&developer),
            Some(json!({"url": "s3cr"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::ACCEPTED, json!({"redelivered": 0}))
    );
}

#[tokio::test]
async fn a_delivery_can_be_redelivered_with_the_same_id() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    app.configure(&[&rx.url("/r")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let first = app
        .delivery_when("", "delivered", |d| d["status"] == "succeeded")
        .await;
    let id = first["id"].as_str().unwrap();

    let (status, body) = app
        .post(&format!("/api/v1/deliveries/{id}/redeliver"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = rx.wait_for(Some("/r"), 2).await;
    assert_eq!(got[1].header("webhook-id"), Some(id));
    let again = app
        .delivery_when("", "redelivered", |d| {
            d["attempts"].as_array().unwrap().len() == 2
        })
        .await;
    assert_eq!(again["status"], "succeeded");

    let (status, _) = app
        .post(
            "/api/v1/deliveries/msg_00000000000000000000000000000000/redeliver",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_log_filters_by_status_event_and_instance() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/bad", Behaviour::Status(410));
    app.configure(&[&rx.url("/ok"), &rx.url("/bad")], &[&rx.url("/ok")], &[])
        .await;
    app.process("p").await;
    let one = app.instance("p", json!({})).await;
    let two = app.instance("p", json!({})).await;
    app.patch(
        &format!("/api/v1/instances/{two}"),
        json!({"data": {"x": 1}}),
    )
    .await;
    eventually("all settled", || async {
        let pending = app.deliveries("status=pending").await;
        pending.is_empty().then_some(())
    })
    .await;
    assert_eq!(app.deliveries("").await.len(), 5);
    assert_eq!(app.deliveries("status=failed").await.len(), 2);
    assert_eq!(app.deliveries("status=succeeded").await.len(), 3);
    assert_eq!(app.deliveries("eventType=updated").await.len(), 1);
    assert_eq!(app.deliveries(&format!("instanceId={one}")).await.len(), 2);
    let page = app.get("/api/v1/deliveries?limit=2").await.1;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap();
    let rest = app
        .get(&format!("/api/v1/deliveries?limit=10&cursor={cursor}"))
        .await
        .1;
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    let (status, err) = app.get("/api/v1/deliveries?status=lost").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["message"].as_str().unwrap().contains("lost"));
}

#[tokio::test]
async fn callbacks_for_one_instance_and_url_arrive_in_event_order() {
    callbacks_arrive_in_order(TestApp::spawn().await).await;
}

#[tokio::test]
async fn on_postgres_callbacks_arrive_in_event_order() {
    if let Some(app) = TestApp::spawn_postgres(|_| {}).await {
        callbacks_arrive_in_order(app).await;
    }
}

async fn callbacks_arrive_in_order(app: TestApp) {
    let rx = Receiver::start().await;
    let url = rx.url("/ordered");
    app.configure(&[&url], &[&url], &[&url]).await;
    app.process("p").await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(app.instance("p", json!({"n": 0})).await);
        }
        v
    };
    for n in 1..=10 {
        for id in &ids {
            app.patch(
                &format!("/api/v1/instances/{id}"),
                json!({"data": {"n": n}}),
            )
            .await;
        }
    }
    for id in &ids {
        app.delete(&format!("/api/v1/instances/{id}")).await;
    }
    let got = rx.wait_for(Some("/ordered"), 4 * 12).await;
    for id in &ids {
        let events: Vec<String> = got
            .iter()
            .filter_map(|r| {
                let q = r.query.as_deref()?;
                q.contains(&format!("instanceID={id}&"))
                    .then(|| q.rsplit('=').next().unwrap().to_owned())
            })
            .collect();
        let mut expected = vec!["created".to_owned()];
        expected.extend(std::iter::repeat_n("updated".to_owned(), 10));
        expected.push("deleted".to_owned());
        assert_eq!(events, expected, "order for {id}");
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn shutdown_lets_a_callback_in_flight_finish_and_records_it() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/slow", Behaviour::Delay(700));
    app.configure(&[&rx.url("/slow")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    rx.wait_for(Some("/slow"), 1).await;

    // Stop while the receiver is still answering: the attempt completes and is stored.
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir, |_| {}).await;
    let log = app.deliveries("").await;
    assert_eq!(log[0]["status"], "succeeded", "{log:?}");
    assert_eq!(log[0]["attemptCount"], 1);
    assert_eq!(
        rx.requests_to("/slow").len(),
        1,
        "no second attempt after restart"
    );
}
