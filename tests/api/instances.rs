//! Processes and instances through the API.

use crate::helpers::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn processes_are_created_listed_and_validated() {
    let app = TestApp::spawn().await;
    let (status, p) = app
        .post(
            "/api/v1/processes",
            json!({"name": "leave-request", "title": "Leave request"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(p["name"], "leave-request");
    assert_eq!(p["title"], "Leave request");
    let (status, err) = app
        .post(
            "/api/v1/processes",
            json!({"name": "leave-request", "title": "Again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["message"].as_str().unwrap().contains("leave-request"));
    let (status, err) = app
        .post(
            "/api/v1/processes",
            json!({"name": "Leave Request", "title": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["message"].as_str().unwrap().contains("process name"));
    let (_, list) = app.get("/api/v1/processes").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (status, _) = app.get("/api/v1/processes/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn instances_are_numbered_per_process_and_versioned() {
    let app = TestApp::spawn().await;
    app.process("leave-request").await;
    app.process("safety-inspection").await;
    assert_eq!(
        app.instance("leave-request", json!({})).await,
        "leave-request-1"
    );
    assert_eq!(
        app.instance("leave-request", json!({})).await,
        "leave-request-2"
    );
    assert_eq!(
        app.instance("safety-inspection", json!({})).await,
        "safety-inspection-1"
    );

    let (status, created) = app
        .post(
            "/api/v1/processes/leave-request/instances",
            json!({"data": {"days": 3, "who": {"name": "Ann"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["id"], "leave-request-3");
    assert_eq!(created["version"], 1);
    assert_eq!(created["status"], "Active");
    assert_eq!(created["processName"], "leave-request");
    assert_eq!(created["createdBy"], "admin@herald.local");
    assert_eq!(created["uniqueId"].as_str().unwrap().len(), 32);

    let (status, updated) = app
        .patch(
            "/api/v1/instances/leave-request-3",
            json!({"data": {"days": 4, "who": {"team": "ops"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["version"], 2);
    assert_eq!(
        updated["data"],
        json!({"days": 4, "who": {"name": "Ann", "team": "ops"}})
    );

    let (status, same) = app
        .patch(
            "/api/v1/instances/leave-request-3",
            json!({"data": {"days": 4}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        same["version"], 2,
        "a patch that changes nothing keeps the version"
    );

    let (status, _, err) = app
        .call_full(
            Method::PATCH,
            "/api/v1/instances/leave-request-3",
            Some(&app.token),
            Some(json!({"data": {"days": 5}})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(err["code"], "version_mismatch");
    let (status, headers, ok) = app
        .call_full(
            Method::PATCH,
            "/api/v1/instances/leave-request-3",
            Some(&app.token),
            Some(json!({"status": "Approval"})),
            &[("if-match", "2")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["status"], "Approval");
    assert_eq!(headers["etag"], "\"3\"");
    for (if_match, expected) in [
        ("*", StatusCode::OK),
        ("W/\"4\"", StatusCode::OK),
        ("", StatusCode::UNPROCESSABLE_ENTITY),
        ("\"\"4\"\"", StatusCode::UNPROCESSABLE_ENTITY),
        ("-4", StatusCode::UNPROCESSABLE_ENTITY),
        ("four", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, _, body) = app
            .call_full(
                Method::PATCH,
                "/api/v1/instances/leave-request-3",
                Some(&app.token),
                Some(json!({"status": format!("Seen {if_match}")})),
                &[("if-match", if_match)],
            )
            .await;
        assert_eq!(status, expected, "If-Match: {if_match}: {body}");
        if status != StatusCode::OK {
            assert!(
                body["message"].as_str().unwrap().contains("If-Match"),
                "{body}"
            );
        }
    }
    let (_, now) = app.get("/api/v1/instances/leave-request-3").await;
    assert_eq!(now["version"], 5, "two changes taken, four refused");

    let (_, page1) = app
        .get("/api/v1/processes/leave-request/instances?limit=2")
        .await;
    let ids: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["leave-request-3", "leave-request-2"]);
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = app
        .get(&format!(
            "/api/v1/processes/leave-request/instances?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["items"][0]["id"], "leave-request-1");
    assert!(page2["nextCursor"].is_null());
    let (status, _) = app
        .get("/api/v1/processes/leave-request/instances?limit=0")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn bad_instance_input_is_refused() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    let (status, err) = app
        .post("/api/v1/processes/p/instances", json!({"data": [1, 2]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["message"].as_str().unwrap().contains("object"));
    let (status, _) = app
        .post(
            "/api/v1/processes/p/instances",
            json!({"data": {}, "colour": "red"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post("/api/v1/processes/missing/instances", json!({"data": {}}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/api/v1/instances/p-99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = app.get("/api/v1/instances/not_an_id").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["message"].as_str().unwrap().contains("instance ID"));
    let (_, list) = app.get("/api/v1/processes/p/instances").await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn delete_is_soft_and_restore_brings_it_back() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    let id = app.instance("p", json!({"a": 1})).await;
    let user = app.user_token("user@example.com", "user").await;

    let (status, _) = app.delete(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = app.delete(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "instance_deleted");
    let (status, _) = app
        .patch(
            &format!("/api/v1/instances/{id}"),
            json!({"data": {"a": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, got) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert!(got["deletedAt"].is_string());
    let (_, listed) = app.get("/api/v1/processes/p/instances").await;
    assert!(listed["items"].as_array().unwrap().is_empty());
    let (_, bin) = app.get("/api/v1/recycle-bin").await;
    assert_eq!(bin["items"][0]["id"], id.as_str());

    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/instances/{id}/restore"),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only administrators restore");
    let (status, restored) = app
        .post(&format!("/api/v1/instances/{id}/restore"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(restored.get("deletedAt").is_none());
    assert_eq!(restored["data"], json!({"a": 1}));
    let (status, err) = app
        .post(&format!("/api/v1/instances/{id}/restore"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "instance_not_deleted");
}

#[tokio::test]
async fn concurrent_creates_get_unique_gap_free_numbers() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    let mut tasks = Vec::new();
    let base = app.base.clone();
    for _ in 0..40 {
        let url = format!("{base}/api/v1/processes/p/instances");
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .json(&json!({"data": {}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        let id = t.await.unwrap();
        numbers.push(id.strip_prefix("p-").unwrap().parse::<u32>().unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=40).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_oversized_body_gets_413_with_herald_error_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    app.process("big").await;
    let data = "x".repeat(3 * 1024 * 1024);
    let (status, err) = app
        .post(
            "/api/v1/processes/big/instances",
            json!({"data": {"text": data}}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["code"], "body_too_large", "{err}");
    assert!(err["message"].as_str().unwrap().contains("2 MiB"), "{err}");
    let (status, list) = app.get("/api/v1/processes/big/instances").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}

#[tokio::test]
async fn only_administrators_read_an_instance_in_the_recycle_bin() {
    let app = TestApp::spawn().await;
    app.process("leave-request").await;
    let id = app.instance("leave-request", json!({"days": 2})).await;
    let user = app.user_token("reader@example.com", "user").await;
    let developer = app.user_token("dev@example.com", "developer").await;
    let path = format!("/api/v1/instances/{id}");
    for token in [&user, &developer] {
        let (status, body) = app.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "before the delete: {body}");
    }
    let (status, _) = app.delete(&path).await;
    assert!(status.is_success(), "{status}");
    for token in [&user, &developer] {
        let (status, body) = app.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["code"], "not_found", "{body}");
        assert!(body.get("data").is_none(), "{body}");
    }
    let (status, body) = app.get(&path).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the administrator still reads it: {body}"
    );
    assert!(body["deletedAt"].is_string(), "{body}");
}
