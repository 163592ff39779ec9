//! Hostile input through the API, on both backends: what one refuses the other refuses with the
//! same answer, and what is accepted reads back exactly (issue 19, items 12 and 13).

use crate::db::TestDb;
use crate::helpers::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Refusals every backend must give alike: status and error code, with nothing stored.
async fn nul_characters_are_refused_alike(db: TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    app.process("p").await;
    let refused = |(status, body): (StatusCode, Value), what: &str| {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        let code = body["code"].as_str().unwrap();
        assert!(
            code == "invalid_input" || code == "invalid_callback_urls",
            "{what}: {body}"
        );
        assert!(
            body.to_string().contains("U+0000"),
            "{what} names the character: {body}"
        );
    };
    refused(
        app.post(
            "/api/v1/processes",
            json!({"name": "q", "title": "a\u{0}b"}),
        )
        .await,
        "process title",
    );
    refused(
        app.post("/api/v1/processes/p/instances", json!({"status": "x\u{0}"}))
            .await,
        "status",
    );
    refused(
        app.post(
            "/api/v1/users",
            json!({"email": "a\u{0}@example.com", "role": "user"}),
        )
        .await,
        "email",
    );
    refused(
        app.post(
            "/api/v1/users",
            json!({"email": "a@example.com", "role": "user", "displayName": "A\u{0}"}),
        )
        .await,
        "display name",
    );
    refused(
        app.put(
            "/api/v1/webhooks",
            json!({
                "created": {"enabled": true, "urls": ["https://example.com/\u{0}"]},
                "updated": {"enabled": false, "urls": []},
                "deleted": {"enabled": false, "urls": []},
            }),
        )
        .await,
        "callback URL",
    );
    refused(app.get("/api/v1/deliveries?url=%00").await, "URL filter");
    // An instance ID has a strict form, which its message describes.
    let (status, body) = app.get("/api/v1/deliveries?instanceId=p-1%00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (_, processes) = app.get("/api/v1/processes").await;
    assert_eq!(
        processes["items"].as_array().unwrap().len(),
        1,
        "{processes}"
    );
    let (_, instances) = app.get("/api/v1/processes/p/instances").await;
    assert_eq!(instances["items"], json!([]));
    let (_, users) = app.get("/api/v1/users").await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "{users}");
}
on_both_backends!(
    #[tokio::test]
    nul_characters_are_refused_alike
);

/// Text that is allowed, however strange, reads back byte for byte on each backend.
async fn hostile_strings_read_back_exactly(db: TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    let strange = [
        "Robert'); DROP TABLE instances;--",
        "\u{202e}gnp.exe \u{200f}مرحبا\u{200e}",
        "$1 ? %s \\x00 \\u0000 ' \" ` ;",
        "emoji 🦀 and combining é",
    ];
    for (n, title) in strange.iter().enumerate() {
        let name = format!("p{n}");
        let (status, body) = app
            .post("/api/v1/processes", json!({"name": name, "title": title}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["title"], *title);
        let data = json!({
            "nul \u{0} in a key": "and \u{0} in a value",
            "sql": title,
            "long": "x".repeat(200_000),
            "nested": [[[{"a": [1.5, -0.0, 1e300, null, true]}]]],
        });
        let (status, created) = app
            .post(
                &format!("/api/v1/processes/{name}/instances"),
                json!({"data": data, "status": title}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let (_, read) = app
            .get(&format!(
                "/api/v1/instances/{}",
                created["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(read["data"], data, "data of {name}");
        assert_eq!(read["status"], *title);
    }

    // What JSON itself cannot carry, or Herald's limits refuse, is answered the same way.
    let raw = reqwest::Client::new()
        .post(format!("{}/api/v1/processes/p0/instances", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(r#"{"data": {"lone": "\ud800"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST, "a lone surrogate");
    let megabyte = "t".repeat(1 << 20);
    let (status, body) = app
        .post(
            "/api/v1/processes",
            json!({"name": "big", "title": megabyte}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/processes/p0/instances",
            json!({"data": {"text": megabyte}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("256 KiB"));
    let deep = (0..70).fold(json!(1), |v, _| json!([v]));
    let (status, body) = app
        .post(
            "/api/v1/processes/p0/instances",
            json!({"data": {"deep": deep}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("nested deeper"));
}
on_both_backends!(
    #[tokio::test]
    hostile_strings_read_back_exactly
);

/// An empty query value or filter field is refused, naming it, instead of being read as "not
/// given": what the API takes is what its OpenAPI document says. A cursor is only digits.
#[tokio::test]
async fn empty_and_malformed_filters_are_refused_by_name() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    for (path, named) in [
        ("/api/v1/deliveries?status=", "`status`"),
        ("/api/v1/deliveries?limit=5&until=", "`until`"),
        ("/api/v1/processes/p/instances?cursor=", "`cursor`"),
        ("/api/v1/processes/p/instances?cursor=%2B5", "`cursor`"),
        ("/api/v1/recycle-bin?cursor=-1", "`cursor`"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{path}: {body}"
        );
    }
    for action in ["cancel", "redeliver"] {
        let (status, body) = app
            .post(
                &format!("/api/v1/deliveries/{action}"),
                json!({"instanceId": "p-1", "status": ""}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("`status`"),
            "{body}"
        );
    }
    let (status, body) = app.get("/api/v1/processes/p/instances?cursor=12").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a cursor of digits is taken: {body}"
    );
}
