//! The recycle bin empties itself after its retention (30 days by default, as in the original
//! product), and an administrator can purge one instance at once (issue 20).

use crate::db::TestDb;
use crate::helpers::{TestApp, eventually};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

async fn instances_past_the_retention_are_purged(db: TestDb) {
    let app = TestApp::spawn_on(db, |c| {
        c.recycle_bin_retention = Duration::from_millis(1);
        c.prune_interval = Duration::from_millis(100);
    })
    .await;
    app.process("p").await;
    let gone = app.instance("p", json!({"n": 1})).await;
    let kept = app.instance("p", json!({"n": 2})).await;
    let (status, _) = app.delete(&format!("/api/v1/instances/{gone}")).await;
    assert!(status.is_success());
    eventually("the deleted instance is purged", || async {
        let (_, bin) = app.get("/api/v1/recycle-bin").await;
        bin["items"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    let (status, _) = app.get(&format!("/api/v1/instances/{gone}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("/api/v1/instances/{kept}")).await;
    assert_eq!(status, StatusCode::OK, "a live instance is never purged");
    // Numbers are not reused after a purge.
    let next = app.instance("p", json!({})).await;
    assert_eq!(next, "p-3");
}
on_both_backends!(
    #[tokio::test]
    instances_past_the_retention_are_purged
);

#[tokio::test]
async fn an_administrator_purges_one_instance_at_once() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    let id = app.instance("p", json!({})).await;
    let purge = format!("/api/v1/recycle-bin/{id}");
    let (status, body) = app.delete(&purge).await;
    assert_eq!(status, StatusCode::CONFLICT, "not in the bin: {body}");
    assert_eq!(body["code"], "instance_not_deleted");
    app.delete(&format!("/api/v1/instances/{id}")).await;
    let developer = app.user_token("dev@example.com", "developer").await;
    let (status, _) = app
        .call(Method::DELETE, &purge, Some(&developer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app.delete(&purge).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, bin) = app.get("/api/v1/recycle-bin").await;
    assert_eq!(bin["items"], json!([]));
    let (status, _) = app.delete(&purge).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_recycle_bin_page_purges_with_its_button() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    let id = app.instance("p", json!({})).await;
    app.delete(&format!("/api/v1/instances/{id}")).await;
    app.post(
        "/api/v1/users",
        json!({"email": "boss@example.com", "role": "administrator", "password": crate::web::PASSWORD}),
    )
    .await;
    let boss = crate::web::session_cookie(&app, "boss@example.com").await;
    let csrf = crate::web::csrf_token(&app, &boss, "/ui/admin/recycle-bin").await;
    let page = crate::web::page(&app, &boss, "/ui/admin/recycle-bin").await;
    assert!(page.contains("Purge now"), "{page}");
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/ui/admin/recycle-bin/{id}/purge", app.base))
        .header("cookie", &boss)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (_, bin) = app.get("/api/v1/recycle-bin").await;
    assert_eq!(bin["items"], json!([]));
}
