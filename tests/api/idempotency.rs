//! `Idempotency-Key` on writes, on both backends: a retry with the same key and request gets
//! the first answer and does nothing again (issue 19, item 17).

use crate::db::TestDb;
use crate::helpers::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    app.call_full(method, path, Some(token), body, &[("idempotency-key", key)])
        .await
}

async fn count(app: &TestApp) -> usize {
    let (_, list) = app.get("/api/v1/processes/p/instances?limit=200").await;
    list["items"].as_array().unwrap().len()
}

async fn a_retry_with_the_same_key_gets_the_first_answer(db: TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    app.process("p").await;
    let admin = app.token.clone();
    let create = json!({"data": {"order": 42}});
    let path = "/api/v1/processes/p/instances";

    let (status, headers, first) = keyed(
        &app,
        Method::POST,
        path,
        &admin,
        "order-42",
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, again_headers, again) = keyed(
        &app,
        Method::POST,
        path,
        &admin,
        "order-42",
        Some(create.clone()),
    )
    .await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first));
    assert_eq!(again_headers["idempotent-replayed"], "true");
    assert_eq!(again_headers.get("etag"), headers.get("etag"));
    assert_eq!(count(&app).await, 1, "the retry created nothing");

    // The same key for another request is a mistake, said as such.
    let (status, _, body) = keyed(
        &app,
        Method::POST,
        path,
        &admin,
        "order-42",
        Some(json!({"data": {"order": 43}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "idempotency_key_reused");
    assert_eq!(count(&app).await, 1);

    // Keys are per token: another token's key of the same name is its own.
    let developer = app.user_token("dev@example.com", "developer").await;
    let (status, _, other) = keyed(
        &app,
        Method::POST,
        path,
        &developer,
        "order-42",
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_ne!(other["id"], first["id"]);
    assert_eq!(count(&app).await, 2);

    // Delete and restore, each retried: the retry answers as the first did instead of
    // "already in the recycle bin".
    let id = first["id"].as_str().unwrap();
    let instance = format!("/api/v1/instances/{id}");
    let (deleted, _, _) = keyed(&app, Method::DELETE, &instance, &admin, "del-1", None).await;
    let (again, headers, _) = keyed(&app, Method::DELETE, &instance, &admin, "del-1", None).await;
    assert!(deleted.is_success(), "{deleted}");
    assert_eq!(again, deleted);
    assert_eq!(headers["idempotent-replayed"], "true");
    let restore = format!("{instance}/restore");
    let (restored, _, _) = keyed(&app, Method::POST, &restore, &admin, "res-1", None).await;
    let (again, _, _) = keyed(&app, Method::POST, &restore, &admin, "res-1", None).await;
    assert!(restored.is_success(), "{restored}");
    assert_eq!(again, restored);
    let (status, _) = app.get(&instance).await;
    assert_eq!(status, StatusCode::OK, "restored once, and there");

    // A key that is not a key.
    let (status, _, body) = keyed(
        &app,
        Method::POST,
        path,
        &admin,
        &"k".repeat(256),
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_idempotency_key");
    assert_eq!(count(&app).await, 2);

    // Five tries at once with one key: one write; the others wait their turn (409) or get
    // its answer.
    let tries = (0..5).map(|_| {
        keyed(
            &app,
            Method::POST,
            path,
            &admin,
            "burst-1",
            Some(json!({"data": {"burst": 1}})),
        )
    });
    let answers = futures_util::future::join_all(tries).await;
    assert!(
        answers
            .iter()
            .all(|(s, _, _)| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{answers:?}"
    );
    assert_eq!(count(&app).await, 3, "one write for five tries");
}
on_both_backends!(
    #[tokio::test]
    a_retry_with_the_same_key_gets_the_first_answer
);

/// A refused write (here 403) is an answer like any other: its retry gets it again, replayed.
#[tokio::test]
async fn a_refused_write_is_answered_the_same_on_retry() {
    let app = TestApp::spawn().await;
    let user = app.user_token("user@example.com", "user").await;
    let off = json!({"enabled": false, "urls": []});
    let settings = json!({"created": off, "updated": off, "deleted": off});
    let mut replayed = Vec::new();
    for _ in 0..2 {
        let (status, headers, _) = keyed(
            &app,
            Method::PUT,
            "/api/v1/webhooks",
            &user,
            "settings-1",
            Some(settings.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        replayed.push(headers.contains_key("idempotent-replayed"));
    }
    assert_eq!(replayed, [false, true]);
}

/// A key on a method no route takes gets the 405 and is not spent: the same key then works
/// for the write it was meant for (Schemathesis found a 405 stored as the key's answer).
#[tokio::test]
async fn a_key_on_an_unknown_method_is_not_spent() {
    let app = TestApp::spawn().await;
    let admin = app.token.clone();
    let body = json!({"name": "p", "title": "P"});
    let (status, _, err) = keyed(
        &app,
        Method::PUT,
        "/api/v1/processes",
        &admin,
        "key-1",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{err}");
    let (status, _, err) = keyed(
        &app,
        Method::DELETE,
        "/api/v1/no-such-route",
        &admin,
        "key-1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, headers, created) = keyed(
        &app,
        Method::POST,
        "/api/v1/processes",
        &admin,
        "key-1",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!headers.contains_key("idempotent-replayed"));
}
