//! The authorisation matrix: every API route, from the route tables the router is built from,
//! called by no one, a deactivated user, a user, a developer and an administrator, each answer
//! checked against the access the table declares. A new route is in the matrix by being routed.

use crate::helpers::TestApp;
use crate::web::{PASSWORD, change_user, csrf_token, session_cookie};
use herald::api::Access;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A body the route accepts, so that what decides the answer is who calls, not what is sent.
fn body_for(method: &str, path: &str, n: usize) -> Option<Value> {
    let off = json!({"enabled": false, "urls": []});
    Some(match (method, path) {
        ("post", "/api/v1/processes") => json!({"name": format!("q{n}"), "title": "Q"}),
        ("post", "/api/v1/processes/{name}/instances") => json!({"data": {}}),
        ("patch", "/api/v1/instances/{id}") => json!({"data": {"n": n}}),
        ("post", "/api/v1/users") => json!({"email": format!("u{n}@example.com"), "role": "user"}),
        ("patch", "/api/v1/users/{email}") => json!({"active": true}),
        ("put", "/api/v1/webhooks") => json!({"created": off, "updated": off, "deleted": off}),
        ("post", "/api/v1/webhooks/test") => {
            json!({"eventType": "created", "url": "http://127.0.0.1:9/matrix"})
        }
        ("post", "/api/v1/webhooks/enable") => json!({"url": "https://example.com/h"}),
        ("post", "/api/v1/deliveries/redeliver") => json!({"status": "failed"}),
        ("post", "/api/v1/deliveries/cancel") => json!({"status": "pending"}),
        _ => return None,
    })
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "p")
        .replace("{email}", "someone@example.com")
        .replace(
            "{id}/redeliver",
            "msg_00000000000000000000000000000000/redeliver",
        )
        .replace(
            "deliveries/{id}",
            "deliveries/msg_00000000000000000000000000000000",
        )
        .replace("{id}", "p-1")
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_its_access_says() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let user = app.user_token("user@example.com", "user").await;
    let developer = app.user_token("dev@example.com", "developer").await;
    let gone = app.user_token("gone@example.com", "developer").await;
    app.post(
        "/api/v1/users",
        json!({"email": "boss@example.com", "role": "administrator", "password": PASSWORD}),
    )
    .await;
    let boss = session_cookie(&app, "boss@example.com").await;
    let csrf = csrf_token(&app, &boss, "/ui/admin/users").await;
    change_user(&app, &boss, &csrf, "gone@example.com", "deactivate").await;

    let routes = herald::api::routes();
    assert!(routes.len() >= 20, "{routes:?}");
    let callers: [(&str, Option<&str>, Option<Access>); 5] = [
        ("no token", None, None),
        ("a deactivated user", Some(&gone), None),
        ("a user", Some(&user), Some(Access::Member)),
        ("a developer", Some(&developer), Some(Access::Manager)),
        (
            "an administrator",
            Some(&app.token),
            Some(Access::Administrator),
        ),
    ];
    let rank = |a: Access| match a {
        Access::Member => 0,
        Access::Manager => 1,
        Access::Administrator => 2,
    };
    let mut n = 0;
    let mut wrong = Vec::new();
    for (method, path, access) in &routes {
        for (who, token, level) in &callers {
            n += 1;
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = app
                .call(m, &concrete(path), *token, body_for(method, path, n))
                .await;
            let expected = match level {
                None => "401",
                Some(level) if rank(*level) < rank(*access) => "403",
                Some(_) => "allowed",
            };
            let ok = match expected {
                "401" => status == StatusCode::UNAUTHORIZED,
                "403" => status == StatusCode::FORBIDDEN,
                _ => {
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && !status.is_server_error()
                        && body["code"] != "method_not_allowed"
                        && body["message"] != "no such route"
                }
            };
            if !ok {
                wrong.push(format!(
                    "{method} {path} by {who}: expected {expected}, got {status} {body}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
