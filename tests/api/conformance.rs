//! The API against its OpenAPI document: the served document is the reviewed snapshot
//! (`docs/openapi.json`), the reference page renders it, and Schemathesis, a property-based API
//! tester, finds no server error and no answer that breaks the document, on both backends.

use crate::db::TestDb;
use crate::helpers::{Receiver, TestApp};
use serde_json::{Value, json};
use std::path::PathBuf;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// The document Herald serves is the one in the repository, so every change to the API's
/// description is reviewed like code. `HERALD_UPDATE_SNAPSHOT=1` writes the served one there.
#[tokio::test]
async fn the_served_document_is_the_reviewed_snapshot() {
    let app = TestApp::spawn().await;
    let served = reqwest::get(format!("{}/api/v1/openapi.json", app.base))
        .await
        .expect("the document is served");
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(
        served.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served = served.text().await.unwrap();
    let document: Value = serde_json::from_str(&served).expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0");
    if std::env::var("HERALD_UPDATE_SNAPSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(SNAPSHOT, format!("{served}\n")).unwrap();
    }
    let reviewed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        reviewed.trim_end() == served,
        "the served OpenAPI document differs from {SNAPSHOT}; review the change and run \
         `HERALD_UPDATE_SNAPSHOT=1 cargo test the_served_document` to take it"
    );
}

/// The reference page at `/api/docs` renders every operation of the document in a browser,
/// under the UI's content security policy and with nothing loaded from elsewhere.
#[tokio::test]
async fn the_reference_page_renders_every_operation() {
    let app = TestApp::spawn().await;
    let browser = crate::browser::Browser::start(1280, 900).await;
    browser
        .c()
        .goto(&format!("{}/api/docs", app.base))
        .await
        .unwrap();
    browser.wait_for_text("h2", "Schemas").await;
    let rendered = browser
        .c()
        .execute(
            "return [document.querySelectorAll('section[id^=op-]').length, \
             document.querySelectorAll('section[id^=schema-]').length, \
             [...document.querySelectorAll('script')].map(s => s.src)]",
            vec![],
        )
        .await
        .unwrap();
    let operations = herald::api::routes().len();
    assert_eq!(rendered[0], json!(operations), "{rendered}");
    assert!(rendered[1].as_u64().unwrap() > 20, "{rendered}");
    assert_eq!(
        rendered[2],
        json!([format!("{}/assets/api-reference.js", app.base)])
    );
    assert!(
        browser
            .text("#op-instances_create")
            .await
            .contains("Who may call: any active user, with a token of scope all or instances.")
    );
    browser.screenshot("api-reference").await;
    browser.close().await;
}

/// Schemathesis as the test command installs it (`scripts/test.sh`, into `target/schemathesis`),
/// or where `HERALD_SCHEMATHESIS` says.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("HERALD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis/bin/schemathesis")
        });
    assert!(
        path.exists(),
        "Schemathesis is not at {}: run scripts/test.sh, which installs it from PyPI \
         (tests/schemathesis/requirements.txt)",
        path.display()
    );
    path
}

/// Data for Schemathesis to find through the document's links and examples: the example
/// process with an instance, callbacks to a live receiver, and a finished delivery.
async fn seed(app: &TestApp, receiver: &Receiver) {
    app.process("leave-request").await;
    let url = receiver.url("/hook");
    app.configure(&[&url], &[&url], &[&url]).await;
    let id = app
        .instance("leave-request", json!({"days": 3, "who": "Ada"}))
        .await;
    app.delivery_when(
        &format!("instanceId={id}"),
        "the seeded callback to succeed",
        |d| d["status"] == "succeeded",
    )
    .await;
}

async fn conforms(db: TestDb) {
    let schemathesis = schemathesis();
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_on(db, |_| {}).await;
    seed(&app, &receiver).await;
    let (_, tokens) = app.get("/api/v1/tokens").await;
    let own_token = tokens["items"][0]["id"].to_string();
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");
    let report = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", app.base))
        .args(["--header", &format!("Authorization: Bearer {}", app.token)])
        .args(["--checks", "all"])
        // Not checked, on purpose: `positive_data_acceptance` (a value the document allows can
        // still break a rule no schema states, such as a URL the egress policy refuses or a
        // title of two lines, and Herald's 422 names it) and `use_after_free` (a deleted
        // instance stays readable, with `deletedAt`, until it is purged: the `deleted`
        // callback's receiver reads it).
        .args([
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
        ])
        .args(["--max-examples", "40", "--workers", "1", "--seed", "1"])
        .args(["--no-color", "--request-timeout", "20"])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("HERALD_CONFORMANCE_TOKEN_ID", &own_token)
        .env("PYTHONPATH", hooks)
        .env("HOME", report.path())
        .current_dir(report.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("Schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Schemathesis found problems:\n{stdout}\n{stderr}"
    );
    let operations = herald::api::routes().len();
    assert!(
        stdout.contains(&format!("{operations} selected / {operations} total")),
        "every operation was tested:\n{stdout}"
    );
    let (status, _) = app.get("/api/v1/processes").await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "the run kept its token to the end, so it tested more than 401s"
    );
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread")]
    conforms
);
