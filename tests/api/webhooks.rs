//! Webhook settings: shape, validation, roles.

use crate::helpers::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn fresh_settings_have_exactly_the_documented_shape() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/api/v1/webhooks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"created":{"enabled":false,"urls":[]},"updated":{"enabled":false,"urls":[]},"deleted":{"enabled":false,"urls":[]},"format":"kianda"})
    );
}

#[tokio::test]
async fn settings_are_saved_deduplicated_and_a_disabled_event_keeps_its_urls() {
    let app = TestApp::spawn().await;
    let body = json!({
        "created": {"enabled": true, "urls": ["https://a.example/hook", "https://b.example/h?k=1", "https://a.example/hook", ""]},
        "updated": {"enabled": false, "urls": ["https://c.example/kept"]},
        "deleted": {"enabled": false, "urls": []},
    });
    let (status, saved) = app.put("/api/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let expected = json!({
        "created": {"enabled": true, "urls": ["https://a.example/hook", "https://b.example/h?k=1"]},
        "updated": {"enabled": false, "urls": ["https://c.example/kept"]},
        "deleted": {"enabled": false, "urls": []},
        "format": "kianda",
    });
    assert_eq!(saved, expected);
    assert_eq!(app.get("/api/v1/webhooks").await.1, expected);
}

#[tokio::test]
async fn invalid_urls_are_named_by_event_and_line_and_nothing_is_saved() {
    let app = TestApp::spawn().await;
    app.configure(&["https://kept.example/"], &[], &[]).await;
    let before = app.get("/api/v1/webhooks").await.1;
    let long = format!("https://example.com/{}", "x".repeat(2048));
    let body = json!({
        "created": {"enabled": true, "urls": ["https://ok.example/", "/relative/path", "ftp://files.example/", "http://", long]},
        "updated": {"enabled": true, "urls": (0..21).map(|i| format!("https://u{i}.example/")).collect::<Vec<_>>()},
        "deleted": {"enabled": false, "urls": ["not a url"]},
    });
    let (status, err) = app.put("/api/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["code"], "invalid_callback_urls");
    let errors = err["errors"].as_array().unwrap();
    let at = |event: &str, line: u64| {
        errors
            .iter()
            .find(|e| e["eventType"] == event && e["line"] == line)
            .unwrap_or_else(|| panic!("no error for {event} line {line}: {err}"))["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(at("created", 2).contains("relative"));
    assert!(at("created", 3).contains("ftp"));
    assert!(at("created", 4).contains("host"));
    assert!(at("created", 5).contains("2048"));
    assert!(at("updated", 21).contains("at most 20"));
    assert!(at("deleted", 1).contains("relative"));
    assert_eq!(errors.len(), 6, "{err}");
    assert_eq!(
        app.get("/api/v1/webhooks").await.1,
        before,
        "nothing may be saved"
    );
}

#[tokio::test]
async fn only_administrators_and_developers_manage_webhooks() {
    let app = TestApp::spawn().await;
    let developer = app.user_token("dev@example.com", "developer").await;
    let user = app.user_token("user@example.com", "user").await;
    let settings = json!({"created":{"enabled":true,"urls":["https://a.example/"]},"updated":{"enabled":false,"urls":[]},"deleted":{"enabled":false,"urls":[]}});

    let (status, body) = app.call(Method::GET, "/api/v1/webhooks", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthenticated");
    let (status, _) = app
        .call(
            Method::GET,
            "/api/v1/webhooks",
            Some("hrld_not-a-real-token-at-all"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = app
        .call(Method::GET, "/api/v1/webhooks", Some(&user), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "forbidden");
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/webhooks",
            Some(&user),
            Some(settings.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(Method::GET, "/api/v1/deliveries", Some(&user), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, saved) = app
        .call(
            Method::PUT,
            "/api/v1/webhooks",
            Some(&developer),
            Some(settings.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut expected = settings.clone();
    expected["format"] = json!("kianda");
    assert_eq!(saved, expected);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&developer),
            Some(json!({"email":"x@example.com","role":"user"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only administrators add users"
    );
}

#[tokio::test]
async fn bad_bodies_get_json_errors_not_framework_text() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"created": {"enabled": true}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"created":{"enabled":"yes","urls":[]},"updated":{"enabled":false,"urls":[]},"deleted":{"enabled":false,"urls":[]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"created":{"enabled":true,"urls":[]},"updated":{"enabled":false,"urls":[]},"deleted":{"enabled":false,"urls":[]},"extra":1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, expected) in cases {
        let (status, err) = app.put("/api/v1/webhooks", body.clone()).await;
        assert_eq!(status, expected, "{body} -> {err}");
        assert!(
            err["code"].is_string() && err["message"].is_string(),
            "{err}"
        );
    }
    let response = reqwest::Client::new()
        .put(format!("{}/api/v1/webhooks", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let err: serde_json::Value = response.json().await.unwrap();
    assert_eq!(err["code"], "malformed_json");
    let (status, err) = app.get("/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "not_found");
}

#[tokio::test]
async fn a_huge_settings_list_is_refused_at_once_with_a_short_answer() {
    let app = TestApp::spawn().await;
    app.configure(&["https://kept.example/"], &[], &[]).await;
    let put = |body: serde_json::Value| {
        let app = &app;
        async move {
            let response = reqwest::Client::new()
                .put(format!("{}/api/v1/webhooks", app.base))
                .bearer_auth(&app.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let text = response.text().await.unwrap();
            assert!(text.len() < 30_000, "{} bytes of errors", text.len());
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        }
    };
    let lines = |n: usize, make: fn(usize) -> String| (0..n).map(make).collect::<Vec<_>>();
    let off = json!({"enabled": false, "urls": []});
    let err = put(json!({
        "created": {"enabled": true, "urls": lines(60_000, |i| format!("https://u{i}.example/"))},
        "updated": off,
        "deleted": off,
    }))
    .await;
    assert_eq!(err["errorCount"], 1, "{err}");
    assert_eq!(
        err["errors"][0]["message"],
        "60000 lines given; at most 100 lines (20 distinct URLs) are read per event"
    );

    let err = put(json!({
        "created": {"enabled": true, "urls": lines(100_000, |i| format!("x{i}"))},
        "updated": {"enabled": true, "urls": lines(100, |i| format!("bad {i}"))},
        "deleted": {"enabled": true, "urls": lines(100, |i| format!("bad {i}"))},
    }))
    .await;
    assert_eq!(err["errorCount"], 201, "{err}");
    assert_eq!(err["errors"].as_array().unwrap().len(), 100);
    assert_eq!(
        err["message"],
        "201 problem(s) with the callback URLs; nothing was saved"
    );

    let (_, saved) = app.get("/api/v1/webhooks").await;
    assert_eq!(saved["created"]["urls"], json!(["https://kept.example/"]));
}
