//! Signed callbacks, checked with the official Standard Webhooks Python library (installed into
//! `target/pyenv` on first use), and the second callback format.

use crate::helpers::{Received, Receiver, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The Python interpreter of a virtual environment with `standardwebhooks` installed.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv");
            let python = venv.join("bin/python");
            let ready = Command::new(&python)
                .args(["-c", "import standardwebhooks"])
                .status()
                .is_ok_and(|s| s.success());
            if !ready {
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 is needed");
                assert!(made.success(), "could not create {}", venv.display());
                let pip = Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "standardwebhooks==1.1.0"])
                    .status()
                    .expect("pip runs");
                assert!(
                    pip.success(),
                    "could not install standardwebhooks from PyPI"
                );
            }
            python
        })
        .clone()
}

/// What the official library says about a payload and its headers.
fn verify(secret: &str, payload: &str, headers: &Value, later_seconds: i64) -> String {
    let mut child = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/verify.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({"secret": secret, "payload": payload, "headers": headers, "later_seconds": later_seconds});
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn headers(r: &Received) -> Value {
    json!({
        "webhook-id": r.header("webhook-id").unwrap(),
        "webhook-timestamp": r.header("webhook-timestamp").unwrap(),
        "webhook-signature": r.header("webhook-signature").unwrap(),
    })
}

async fn secret(app: &TestApp) -> String {
    let (status, body) = app.get("/api/v1/webhooks/secret").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn kianda_callbacks_verify_with_the_official_library_and_forgeries_do_not() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    app.configure(&[&rx.url("/k?team=ops")], &[], &[]).await;
    app.process("leave-request").await;
    app.instance("leave-request", json!({})).await;
    let got = rx.wait_for(Some("/k"), 1).await;
    let secret = secret(&app).await;
    assert!(secret.starts_with("whsec_"));
    let query = got[0].query.clone().unwrap();
    assert_eq!(
        query,
        "team=ops&instanceID=leave-request-1&processName=leave-request&eventType=created"
    );
    let h = headers(&got[0]);

    assert_eq!(verify(&secret, &query, &h, 0), "ok");
    let tampered = query.replace("leave-request-1", "leave-request-2");
    assert!(
        verify(&secret, &tampered, &h, 0).starts_with("rejected"),
        "a tampered query is refused"
    );
    let other = herald::domain::SigningSecret::generate();
    assert!(
        verify(other.expose(), &query, &h, 0).starts_with("rejected"),
        "another secret is refused"
    );
    assert!(
        verify(&secret, &query, &h, 600).contains("too old"),
        "a replay ten minutes later is refused"
    );
}

#[tokio::test]
async fn the_standard_format_posts_signed_json() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    let url = rx.url("/s");
    let body = json!({
        "created": {"enabled": true, "urls": [url]},
        "updated": {"enabled": true, "urls": [url]},
        "deleted": {"enabled": true, "urls": [url]},
        "format": "standard",
    });
    let (status, saved) = app.put("/api/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["format"], "standard");
    app.process("p").await;
    let id = app.instance("p", json!({"days": 2})).await;
    app.delete(&format!("/api/v1/instances/{id}")).await;
    let got = rx.wait_for(Some("/s"), 2).await;
    let secret = secret(&app).await;

    let created = &got[0];
    let body = &created.body;
    assert_eq!(created.method, "POST");
    assert_eq!(created.header("content-type"), Some("application/json"));
    assert_eq!(verify(&secret, body, &headers(created), 0), "ok");
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(parsed["type"], "instance.created");
    assert!(parsed["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(parsed["data"]["instanceID"], id.as_str());
    assert_eq!(parsed["data"]["processName"], "p");
    assert_eq!(parsed["data"]["eventType"], "created");
    assert_eq!(parsed["data"]["instance"]["data"], json!({"days": 2}));
    assert_eq!(parsed["data"]["instance"]["version"], 1);

    let deleted = &got[1];
    let body = &deleted.body;
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(parsed["type"], "instance.deleted");
    assert!(parsed["data"]["instance"].is_null());
    assert_eq!(verify(&secret, body, &headers(deleted), 0), "ok");
    assert!(
        verify(
            &secret,
            &body.replace("deleted", "created"),
            &headers(deleted),
            0
        )
        .starts_with("rejected")
    );

    // An old client that omits `format` keeps the current one.
    let (_, kept) = app
        .put("/api/v1/webhooks", json!({"created": {"enabled": false, "urls": []}, "updated": {"enabled": false, "urls": []}, "deleted": {"enabled": false, "urls": []}}))
        .await;
    assert_eq!(kept["format"], "standard");
}

#[tokio::test]
async fn after_a_rotation_callbacks_carry_both_signatures() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    app.configure(&[&rx.url("/r")], &[], &[]).await;
    app.process("p").await;
    let old = secret(&app).await;
    let (status, rotated) = app.post("/api/v1/webhooks/secret/rotate", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["previousSecret"], old.as_str());
    // Workers re-read secrets at most once a second: send callbacks until one carries both.
    let mut both = None;
    for n in 1..=50 {
        app.instance("p", json!({})).await;
        let got = rx.wait_for(Some("/r"), n).await;
        if got[n - 1]
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count()
            == 2
        {
            both = Some(got[n - 1].clone());
            break;
        }
    }
    let both = both.expect("a callback signed with both secrets");
    let query = both.query.clone().unwrap();
    assert_eq!(verify(&new, &query, &headers(&both), 0), "ok");
    assert_eq!(
        verify(&old, &query, &headers(&both), 0),
        "ok",
        "receivers still on the old secret keep working"
    );

    let user = app.user_token("u@example.com", "user").await;
    let (status, _) = app
        .call(Method::GET, "/api/v1/webhooks/secret", Some(&user), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/webhooks/secret/rotate",
            Some(&user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
