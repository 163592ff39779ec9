//! The user lifecycle through the API: change role, deactivate, reactivate, reset password,
//! administrators only (issue 20).

use crate::helpers::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn an_administrator_changes_deactivates_reactivates_and_resets_a_user() {
    let app = TestApp::spawn().await;
    let dev = app.user_token("dev@example.com", "developer").await;
    let webhooks = |token: String| {
        let app = &app;
        async move {
            app.call(Method::GET, "/api/v1/webhooks", Some(&token), None)
                .await
                .0
        }
    };
    assert_eq!(webhooks(dev.clone()).await, StatusCode::OK);

    let user = "/api/v1/users/dev@example.com";
    let (status, body) = app.patch(user, json!({"role": "user"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "user");
    assert_eq!(webhooks(dev.clone()).await, StatusCode::FORBIDDEN);

    let (status, body) = app
        .patch(user, json!({"role": "developer", "active": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["role"].clone(), body["active"].clone()),
        (json!("developer"), json!(false))
    );
    assert_eq!(webhooks(dev.clone()).await, StatusCode::UNAUTHORIZED);

    let (status, _) = app.patch(user, json!({"active": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        webhooks(dev.clone()).await,
        StatusCode::OK,
        "the token works again"
    );

    let (status, body) = app.post(&format!("{user}/reset-password"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "dev@example.com");
    assert!(body["password"].as_str().unwrap().len() >= 10, "{body}");

    // What cannot be done is said.
    let (status, body) = app.patch(user, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .patch("/api/v1/users/nobody@example.com", json!({"active": false}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .patch("/api/v1/users/admin@herald.local", json!({"active": false}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "own_account");
    let (status, _) = app
        .call(
            Method::PATCH,
            user,
            Some(&dev),
            Some(json!({"role": "administrator"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a developer cannot promote themselves"
    );
}
