//! `herald backup FILE` under load, then a node started on the copy: every instance the API
//! had acknowledged before the backup began is there, with its pending delivery (issue 20).

use crate::helpers::TestApp;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::test]
async fn a_backup_taken_under_load_restores_every_acknowledged_write() {
    let hour = |c: &mut herald::Config| {
        c.retry_schedule = herald::domain::RetrySchedule::parse("1h").unwrap();
    };
    let app = TestApp::spawn_with(hour).await;
    // A receiver that is not there, and an hour between tries: every delivery stays pending.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    app.configure(&[&format!("http://127.0.0.1:{port}/down")], &[], &[])
        .await;
    app.process("p").await;
    let db = format!("{}/herald.db", app.dir().display());

    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let (base, token) = (app.base.clone(), app.token.clone());
        let (acknowledged, running) = (Arc::clone(&acknowledged), Arc::clone(&running));
        async move {
            let http = reqwest::Client::new();
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let r = http
                    .post(format!("{base}/api/v1/processes/p/instances"))
                    .bearer_auth(&token)
                    .json(&json!({"data": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                let body: serde_json::Value = r.json().await.unwrap();
                acknowledged
                    .lock()
                    .unwrap()
                    .push(body["id"].as_str().unwrap().to_owned());
            }
        }
    });
    crate::helpers::eventually("some writes are in", || async {
        (acknowledged.lock().unwrap().len() >= 50).then_some(())
    })
    .await;

    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    let restore_dir = tempfile::tempdir().unwrap();
    let copy = restore_dir.path().join("herald.db");
    let out = tokio::task::spawn_blocking({
        let (db, copy) = (db.clone(), copy.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["backup", "--database", &format!("sqlite://{db}")])
                .arg(&copy)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    let during = acknowledged.lock().unwrap().len();
    running.store(false, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        during > before.len(),
        "the load ran while the backup was made"
    );

    // A node on the copy: what was acknowledged before the backup began is all there.
    let restored = TestApp::spawn_in(restore_dir, hour).await;
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = restored
            .get(&format!("/api/v1/processes/p/instances?limit=200{cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    for id in &before {
        assert!(
            ids.contains(id),
            "{id} was acknowledged before the backup and is missing"
        );
    }
    let pending = restored.deliveries("status=pending").await;
    let pending_ids: Vec<&str> = pending
        .iter()
        .filter_map(|d| d["instanceId"].as_str())
        .collect();
    let sample: Vec<&String> = before.iter().rev().take(50).collect();
    for id in sample {
        assert!(
            pending_ids.contains(&id.as_str()),
            "{id}'s delivery is not pending in the copy"
        );
    }
    // Backups refuse to overwrite, and PostgreSQL is pointed to its own tools.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["backup", "--database", &format!("sqlite://{db}")])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let postgres = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "backup",
            "--database",
            "postgres://herald@db.internal/herald",
        ])
        .arg(restored.dir().join("pg.db"))
        .output()
        .unwrap();
    assert!(!postgres.status.success());
    assert!(String::from_utf8_lossy(&postgres.stderr).contains("pg_dump"));
}
