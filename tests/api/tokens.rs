//! API tokens as objects, on both backends: a user holds several, each named, scoped and
//! optionally expiring; lists never show a secret; a revoked or expired token stops working.

use crate::db::TestDb;
use crate::helpers::{TestApp, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn make(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.call(Method::POST, "/api/v1/tokens", Some(token), Some(body))
        .await
}

async fn status(app: &TestApp, method: Method, path: &str, token: &str) -> StatusCode {
    let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
    app.call(method, path, Some(token), body).await.0
}

async fn tokens_are_named_scoped_listed_and_revoked(db: TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    app.process("p").await;
    let admin = app.token.clone();

    let (created, read) = make(
        &app,
        &admin,
        json!({"name": "  dashboards ", "scope": "read", "expiresInDays": 30}),
    )
    .await;
    assert_eq!(created, StatusCode::CREATED, "{read}");
    let read_secret = read["secret"].as_str().unwrap().to_owned();
    assert!(read_secret.starts_with("hrld_"), "{read}");
    assert_eq!(read["prefix"], read_secret[..9]);
    assert_eq!(read["name"], "dashboards");
    assert_eq!(read["scope"], "read");
    assert!(read["lastUsedAt"].is_null());
    let expires = read["expiresAt"].as_str().unwrap();
    let made = read["createdAt"].as_str().unwrap();
    assert!(expires > made, "{read}");

    let (_, list) = app.get("/api/v1/tokens").await;
    let items = list["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dashboards", "first token"], "newest first: {list}");
    assert!(
        !list.to_string().contains(&read_secret[9..]),
        "a list never shows a secret: {list}"
    );
    assert!(items.iter().all(|t| t.get("secret").is_none()));
    assert_eq!(items[1]["prefix"], "", "the operator chose the first one");

    // What each scope may do, within the administrator's role.
    let read_only = read_secret.as_str();
    assert_eq!(
        status(&app, Method::GET, "/api/v1/processes", read_only).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, Method::GET, "/api/v1/webhooks", read_only).await,
        StatusCode::OK
    );
    let (refused, why) = app
        .call(
            Method::POST,
            "/api/v1/processes",
            Some(read_only),
            Some(json!({"name": "q", "title": "Q"})),
        )
        .await;
    assert_eq!(refused, StatusCode::FORBIDDEN, "{why}");
    assert!(why["message"].as_str().unwrap().contains("`read`"), "{why}");
    let (refused, _) = make(&app, read_only, json!({"name": "wider", "scope": "all"})).await;
    assert_eq!(
        refused,
        StatusCode::FORBIDDEN,
        "a read token cannot mint one"
    );

    let (_, instances) = make(
        &app,
        &admin,
        json!({"name": "orders", "scope": "instances"}),
    )
    .await;
    let instances = instances["secret"].as_str().unwrap().to_owned();
    let (ok, body) = app
        .call(
            Method::POST,
            "/api/v1/processes/p/instances",
            Some(&instances),
            Some(json!({"data": {"n": 1}})),
        )
        .await;
    assert_eq!(ok, StatusCode::CREATED, "{body}");
    for path in [
        "/api/v1/webhooks",
        "/api/v1/deliveries",
        "/api/v1/tokens",
        "/metrics",
    ] {
        assert_eq!(
            status(&app, Method::GET, path, &instances).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }

    let (_, hooks) = make(&app, &admin, json!({"name": "ops", "scope": "webhooks"})).await;
    let hooks = hooks["secret"].as_str().unwrap().to_owned();
    for path in ["/api/v1/webhooks", "/api/v1/deliveries", "/metrics"] {
        assert_eq!(
            status(&app, Method::GET, path, &hooks).await,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        status(&app, Method::GET, "/api/v1/processes", &hooks).await,
        StatusCode::FORBIDDEN
    );

    // Use is written down.
    let read_id = read["id"].as_i64().unwrap();
    eventually("the read token's use to be noted", || async {
        let (_, list) = app.get("/api/v1/tokens").await;
        list["items"]
            .as_array()?
            .iter()
            .find(|t| t["id"] == read_id)?["lastUsedAt"]
            .as_str()
            .map(|_| ())
    })
    .await;

    // Revoked: gone at once, and only the holder can revoke it.
    let other = app.user_token("someone@example.com", "developer").await;
    let path = format!("/api/v1/tokens/{read_id}");
    assert_eq!(
        status(&app, Method::DELETE, &path, &other).await,
        StatusCode::NOT_FOUND,
        "another user's token is not theirs to revoke"
    );
    assert_eq!(
        status(&app, Method::DELETE, &path, &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&app, Method::GET, "/api/v1/processes", read_only).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&app, Method::DELETE, &path, &admin).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&app, Method::GET, "/api/v1/processes", &other).await,
        StatusCode::OK,
        "the other user's own token is untouched"
    );
}
on_both_backends!(
    #[tokio::test]
    tokens_are_named_scoped_listed_and_revoked
);

async fn an_expired_token_stops_working(db: TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    let (_, made) = make(
        &app,
        &app.token,
        json!({"name": "short", "expiresInDays": 1}),
    )
    .await;
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        status(&app, Method::GET, "/api/v1/tokens", &secret).await,
        StatusCode::OK
    );
    // A day later, as far as the database is concerned.
    app.db()
        .execute("UPDATE api_tokens SET expires_at = 1 WHERE name = 'short'")
        .await;
    eventually("the expired token to be refused", || async {
        (status(&app, Method::GET, "/api/v1/tokens", &secret).await == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    let (_, list) = app.get("/api/v1/tokens").await;
    assert_eq!(
        list["items"][0]["expiresAt"], "1970-01-01T00:00:00.001Z",
        "an expired token is still listed, to be revoked: {list}"
    );
}
on_both_backends!(
    #[tokio::test]
    an_expired_token_stops_working
);

#[tokio::test]
async fn bad_token_requests_are_refused_by_name() {
    let app = TestApp::spawn().await;
    for (body, named) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "a\nb"}), "name"),
        (json!({"name": "x", "scope": "admin"}), "scope"),
        (json!({"name": "x", "expiresInDays": 0}), "expiresInDays"),
        (json!({"name": "x", "expiresInDays": 3651}), "expiresInDays"),
    ] {
        let (status, err) = make(&app, &app.token, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert!(err["message"].as_str().unwrap().contains(named), "{err}");
    }
    let (status, err) = app
        .call(Method::DELETE, "/api/v1/tokens/abc", Some(&app.token), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let (_, list) = app.get("/api/v1/tokens").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "nothing stored");
}

/// A developer manages their own tokens on the API tokens page: makes one (its secret shown
/// once), sees it listed without the secret, and revokes it.
#[tokio::test]
async fn a_developer_manages_their_tokens_in_the_browser() {
    use fantoccini::Locator;
    let app = TestApp::spawn().await;
    crate::browser::user(&app, "dev@example.com", "developer").await;
    let b = crate::browser::Browser::start(1280, 900).await;
    b.login(&app, "dev@example.com").await;
    b.click_link("API tokens").await;
    b.wait_for_text("h1", "API tokens").await;
    let c = b.c();
    c.find(Locator::Css("#t-name"))
        .await
        .unwrap()
        .send_keys("nightly export")
        .await
        .unwrap();
    c.find(Locator::Css("#t-scope option[value=read]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("#t-days"))
        .await
        .unwrap()
        .send_keys("30")
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/ui/tokens'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text(".flash", "not shown again").await;
    let flash = b.text(".flash").await;
    let secret = flash.rsplit(' ').next().unwrap().to_owned();
    assert!(secret.starts_with("hrld_"), "{flash}");
    let table = b.text("table").await;
    assert!(
        table.contains("nightly export") && table.contains("read"),
        "{table}"
    );
    assert!(
        !table.contains(&secret[9..]),
        "the list never shows it: {table}"
    );
    b.screenshot("api-tokens").await;

    assert_eq!(
        status(&app, Method::GET, "/api/v1/processes", &secret).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, Method::PUT, "/api/v1/webhooks", &secret).await,
        StatusCode::FORBIDDEN
    );
    c.find(Locator::Css("button[aria-label='Revoke nightly export']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text(".flash", "Token revoked.").await;
    assert!(!b.text("table").await.contains("nightly export"));
    assert_eq!(
        status(&app, Method::GET, "/api/v1/processes", &secret).await,
        StatusCode::UNAUTHORIZED
    );
    b.close().await;
}
