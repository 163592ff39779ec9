//! A database that goes away: fast, honest answers, and nothing committed behind a client's
//! back (issue 19, item 15). PostgreSQL is made to refuse connections and its sessions are
//! ended, as when it restarts or the network to it fails.

use crate::db::TestDb;
use crate::helpers::{TestApp, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// One request with a client that gives up after `patience`: its status, `Retry-After` and
/// body, or `None` when the client gave up first.
async fn ask(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    patience: Duration,
) -> Option<(StatusCode, Option<String>, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(&app.token)
        .timeout(patience);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.ok()?;
    Some((
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

#[tokio::test]
async fn postgres_gone_answers_503_before_clients_give_up_and_commits_nothing_they_saw_fail() {
    if crate::db::postgres_skipped() {
        return;
    }
    let app = TestApp::spawn_on(TestDb::postgres().await, |_| {}).await;
    app.process("p").await;
    let ready = || async {
        let response = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(ready().await, (StatusCode::OK, json!({"status": "ready"})));
    app.db().refuse_connections(true).await;
    // A load balancer takes the node out; `/healthz` still says the process lives.
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body,
        json!({"status": "unavailable", "reason": "the database cannot be reached"})
    );
    let alive = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    assert_eq!(alive.status(), StatusCode::OK);

    // Writes, reads and /metrics: each answered 503 database_unavailable with Retry-After,
    // well within a client's patience of 8 s (the pool used to wait 10 s per try).
    let patience = Duration::from_secs(8);
    let create = json!({"data": {"n": 1}});
    let creates = (0..10).map(|_| {
        ask(
            &app,
            reqwest::Method::POST,
            "/api/v1/processes/p/instances",
            Some(create.clone()),
            patience,
        )
    });
    let mut answers = futures_util::future::join_all(creates).await;
    answers.push(
        ask(
            &app,
            reqwest::Method::GET,
            "/api/v1/processes/p/instances",
            None,
            patience,
        )
        .await,
    );
    answers.push(ask(&app, reqwest::Method::GET, "/metrics", None, patience).await);
    for answer in answers {
        let (status, retry, body) = answer.expect("answered before the client gave up");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "database_unavailable", "{body}");
        assert!(retry.is_some(), "Retry-After is given");
    }

    app.db().refuse_connections(false).await;
    eventually("the database is back", || async {
        let (status, _) = app
            .post(
                "/api/v1/processes/p/instances",
                json!({"data": {"after": true}}),
            )
            .await;
        (status == StatusCode::CREATED).then_some(())
    })
    .await;
    assert_eq!(ready().await.0, StatusCode::OK);
    // Only the write made after the outage exists: none that was answered 503 was committed
    // later by a retry in the background.
    let (_, list) = app.get("/api/v1/processes/p/instances?limit=200").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["data"], json!({"after": true}));
}

/// A small filesystem of its own (tmpfs), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "the disk-full test needs to mount a small tmpfs (run the suite as root, as CI does)"
        );
        Self { dir }
    }

    /// Fills what is left of the disk with one file.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.flush();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_storage_full_and_reads_go_on() {
    let disk = SmallDisk::mount("8m");
    let db = format!("sqlite://{}", disk.dir.path().join("herald.db").display());
    let app = TestApp::spawn_with(|c| c.database_url = db).await;
    app.process("p").await;
    let kept = app.instance("p", json!({"kept": true})).await;
    let filler = disk.fill();

    // Writes fail once the database needs room it cannot get; SQLite may first reuse space it
    // already holds, so a few writes may still succeed.
    let big = json!({"data": {"text": "x".repeat(200_000)}});
    let mut refused = None;
    for _ in 0..100 {
        let (status, body) = app.post("/api/v1/processes/p/instances", big.clone()).await;
        if status != StatusCode::CREATED {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("a write fails on a full disk");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["code"], "storage_full");
    assert!(
        body["message"].as_str().unwrap().contains("free space"),
        "the message tells an operator what to do: {body}"
    );
    // Reads go on.
    let (status, read) = app.get(&format!("/api/v1/instances/{kept}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["data"], json!({"kept": true}));

    // Room again: writes go on.
    std::fs::remove_file(filler).unwrap();
    eventually("writes succeed once there is room", || async {
        let (status, _) = app
            .post("/api/v1/processes/p/instances", json!({"data": {}}))
            .await;
        (status == StatusCode::CREATED).then_some(())
    })
    .await;
    app.stop().await;
}
