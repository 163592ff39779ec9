//! The web UI in a real browser: headless Chromium driven through ChromeDriver (Debian's
//! `chromium` and `chromium-driver`, which `scripts/test.sh` installs when missing). Each test
//! saves a screenshot of its final page under `target/ui-screenshots/`.

use crate::helpers::{Receiver, TestApp};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";

/// A headless Chromium with its own ChromeDriver and profile, closed on drop.
pub(crate) struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start(width: u32, height: u32) -> Self {
        let chrome =
            std::env::var("HERALD_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let driver_path = std::env::var("HERALD_TEST_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            std::path::Path::new(&chrome).exists() && std::path::Path::new(&driver_path).exists(),
            "browser tests need {chrome} and {driver_path}: run ./scripts/test.sh, which installs Debian's chromium and chromium-driver"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chrome, "args": args}),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not start Chromium through ChromeDriver: {e}"),
            }
        };
        Self {
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    pub(crate) fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub(crate) async fn login(&self, app: &TestApp, email: &str) {
        self.c().goto(&format!("{}/login", app.base)).await.unwrap();
        self.c()
            .find(Locator::Css("#email"))
            .await
            .unwrap()
            .send_keys(email)
            .await
            .unwrap();
        self.c()
            .find(Locator::Css("#password"))
            .await
            .unwrap()
            .send_keys(PASSWORD)
            .await
            .unwrap();
        self.c()
            .find(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for_text("h1", "Processes").await;
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until an element matching `css` contains `text`.
    pub(crate) async fn wait_for_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(found) = self.c().find_all(Locator::Css(css)).await {
                for el in found {
                    if el.text().await.unwrap_or_default().contains(text) {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` with text {text:?} on {}",
                self.c().current_url().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn click_link(&self, text: &str) {
        self.c()
            .find(Locator::LinkText(text))
            .await
            .unwrap_or_else(|_| panic!("no link {text:?}"))
            .click()
            .await
            .unwrap();
    }

    async fn dialog_open(&self) -> bool {
        self.c()
            .execute(
                "return document.getElementById('webhooks-dialog').open",
                vec![],
            )
            .await
            .unwrap()
            == json!(true)
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.c().screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub(crate) async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub(crate) async fn user(app: &TestApp, email: &str, role: &str) {
    let (status, body) = app
        .post(
            "/api/v1/users",
            json!({"email": email, "role": role, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn each_role_sees_its_own_sidebar() {
    let app = TestApp::spawn().await;
    user(&app, "admin2@example.com", "administrator").await;
    user(&app, "dev@example.com", "developer").await;
    user(&app, "user@example.com", "user").await;
    let cases = [
        (
            "admin2@example.com",
            vec![
                "Processes",
                "Administration",
                "Developer",
                "Users",
                "Recycle bin",
            ],
            vec![],
        ),
        (
            "dev@example.com",
            vec!["Processes", "Administration", "Developer"],
            vec!["Users", "Recycle bin"],
        ),
        (
            "user@example.com",
            vec!["Processes", "API tokens", "API reference"],
            vec!["Administration", "Developer", "Users", "Recycle bin"],
        ),
    ];
    for (email, shown, hidden) in cases {
        let b = Browser::start(1280, 900).await;
        b.login(&app, email).await;
        let links: Vec<String> = {
            let mut out = Vec::new();
            for el in b.c().find_all(Locator::Css("nav.side a")).await.unwrap() {
                out.push(el.text().await.unwrap());
            }
            out
        };
        for name in shown {
            assert!(
                links.iter().any(|l| l == name),
                "{email} should see {name}: {links:?}"
            );
        }
        for name in hidden {
            assert!(
                !links.iter().any(|l| l == name),
                "{email} must not see {name}: {links:?}"
            );
        }
        if email.starts_with("user") {
            b.c()
                .goto(&format!("{}/ui/admin/developer", app.base))
                .await
                .unwrap();
            b.wait_for_text("h1", "Not allowed").await;
            b.screenshot("user-forbidden").await;
        }
        b.close().await;
    }

    // Wrong credentials: one message for an unknown email and a wrong password alike.
    let b = Browser::start(1280, 900).await;
    for email in ["nobody@example.com", "dev@example.com"] {
        b.c().goto(&format!("{}/login", app.base)).await.unwrap();
        b.c()
            .find(Locator::Css("#email"))
            .await
            .unwrap()
            .send_keys(email)
            .await
            .unwrap();
        b.c()
            .find(Locator::Css("#password"))
            .await
            .unwrap()
            .send_keys("not the password")
            .await
            .unwrap();
        b.c()
            .find(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_for_text("[role=alert]", "Wrong email or password.")
            .await;
    }
    b.screenshot("login-wrong-password").await;
    b.close().await;
}

#[tokio::test]
async fn a_developer_configures_callbacks_the_kianda_way() {
    let app = TestApp::spawn().await;
    user(&app, "dev@example.com", "developer").await;
    let b = Browser::start(1280, 900).await;
    b.login(&app, "dev@example.com").await;
    b.click_link("Administration").await;
    b.wait_for_text("h1", "Administration").await;
    b.c()
        .find(Locator::Css(".entries a[href='/ui/admin/developer']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("h1", "Developer resources").await;

    // Webhooks opens the "Instance Callback URLs" dialog with the three sliders.
    b.c()
        .find(Locator::Id("open-webhooks"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(b.dialog_open().await);
    assert_eq!(b.text("#webhooks-title").await, "Instance Callback URLs");
    let labels = b.text("#webhooks-dialog .body").await;
    for label in [
        "Enable Created Callback",
        "Enable Updated Callback",
        "Enable Deleted Callback",
    ] {
        assert!(labels.contains(label), "{label} missing");
    }
    // Help shows instructions with an example of each event and the timeout.
    b.c()
        .find(Locator::Css("[data-help]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let help = b.text("#webhooks-help").await;
    for needle in [
        "eventType=created",
        "eventType=updated",
        "eventType=deleted",
        "10 seconds",
        "one URL per line",
    ] {
        assert!(help.contains(needle), "help lacks {needle}: {help}");
    }

    // Enable Created with two URLs, one per line, and press OK.
    b.c()
        .find(Locator::Css("input[name=created_enabled]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let created = b
        .c()
        .find(Locator::Css("textarea[name=created_urls]"))
        .await
        .unwrap();
    created
        .send_keys("https://one.example/hook\nhttps://two.example/hook?k=1")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#webhooks-dialog button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("[role=status]", "saved").await;
    let (_, saved) = app.get("/api/v1/webhooks").await;
    assert_eq!(
        saved["created"],
        json!({"enabled": true, "urls": ["https://one.example/hook", "https://two.example/hook?k=1"]})
    );

    // Reopen: the URLs are kept. Edit, then Close: nothing is saved and the edit is gone.
    b.c()
        .find(Locator::Id("open-webhooks"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let created = b
        .c()
        .find(Locator::Css("textarea[name=created_urls]"))
        .await
        .unwrap();
    assert_eq!(
        created.prop("value").await.unwrap().unwrap(),
        "https://one.example/hook\nhttps://two.example/hook?k=1"
    );
    created.send_keys("\nhttps://three.example/").await.unwrap();
    b.c()
        .find(Locator::Css("[data-close]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(!b.dialog_open().await);
    b.c()
        .find(Locator::Id("open-webhooks"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let created = b
        .c()
        .find(Locator::Css("textarea[name=created_urls]"))
        .await
        .unwrap();
    assert!(
        !created
            .prop("value")
            .await
            .unwrap()
            .unwrap()
            .contains("three"),
        "Close discards the edit"
    );
    // Esc leaves the same way.
    created
        .send_keys(&char::from(fantoccini::key::Key::Escape).to_string())
        .await
        .unwrap();
    assert!(!b.dialog_open().await);
    assert_eq!(
        app.get("/api/v1/webhooks").await.1["created"]["urls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // An invalid line: the error names the line, the dialog stays open with what was typed.
    b.c()
        .find(Locator::Id("open-webhooks"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let updated = b
        .c()
        .find(Locator::Css("textarea[name=updated_urls]"))
        .await
        .unwrap();
    updated
        .send_keys("https://fine.example/\nftp://files.example/")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#webhooks-dialog button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("#webhooks-dialog .error", "Line 2").await;
    assert!(b.dialog_open().await);
    let kept = b
        .c()
        .find(Locator::Css("textarea[name=updated_urls]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, "https://fine.example/\nftp://files.example/");
    assert!(b.text("#webhooks-dialog .error").await.contains("ftp"));
    b.screenshot("webhooks-dialog-error").await;
    assert!(
        app.get("/api/v1/webhooks").await.1["updated"]["urls"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing saved"
    );
    b.close().await;

    // The same page at 375 px wide.
    let narrow = Browser::start(375, 800).await;
    narrow.login(&app, "dev@example.com").await;
    narrow
        .c()
        .goto(&format!("{}/ui/admin/developer", app.base))
        .await
        .unwrap();
    narrow
        .c()
        .find(Locator::Id("open-webhooks"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(narrow.dialog_open().await);
    narrow.screenshot("webhooks-dialog-375px").await;
    narrow.close().await;
}

#[tokio::test]
async fn an_instance_created_in_the_ui_reaches_a_receiver_and_can_be_redelivered() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    app.configure(&[&rx.url("/ui-hook")], &[], &[]).await;
    user(&app, "admin2@example.com", "administrator").await;
    let b = Browser::start(1280, 900).await;
    b.login(&app, "admin2@example.com").await;

    b.c()
        .find(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys("leave-request")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#title"))
        .await
        .unwrap()
        .send_keys("Leave request")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("form[action='/ui/processes'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("h1", "Leave request").await;
    b.c()
        .find(Locator::Css("#key0"))
        .await
        .unwrap()
        .send_keys("days")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#value0"))
        .await
        .unwrap()
        .send_keys("3")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#key1"))
        .await
        .unwrap()
        .send_keys("reason")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#value1"))
        .await
        .unwrap()
        .send_keys("holiday")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("form[action$='/instances'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("h1", "leave-request-1").await;
    let (_, instance) = app.get("/api/v1/instances/leave-request-1").await;
    assert_eq!(instance["data"], json!({"days": 3, "reason": "holiday"}));

    let got = rx.wait_for(Some("/ui-hook"), 1).await;
    assert_eq!(
        got[0].query.as_deref(),
        Some("instanceID=leave-request-1&processName=leave-request&eventType=created")
    );
    let id = got[0].header("webhook-id").unwrap().to_owned();

    // The Deliveries page lists it; its page has Redeliver.
    b.c()
        .goto(&format!("{}/ui/admin/deliveries", app.base))
        .await
        .unwrap();
    b.wait_for_text("table", "leave-request-1").await;
    crate::helpers::eventually("the delivery shows as succeeded", || async {
        b.c().refresh().await.ok()?;
        b.text("table").await.contains("succeeded").then_some(())
    })
    .await;
    assert!(b.c().find(Locator::Css("svg.chart")).await.is_ok());
    b.screenshot("deliveries").await;
    b.c()
        .find(Locator::Css("table a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("h1", &id).await;
    b.c()
        .find(Locator::Css("form[action$='/redeliver'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("[role=status]", "Redelivery queued").await;
    let again = rx.wait_for(Some("/ui-hook"), 2).await;
    assert_eq!(
        again[1].header("webhook-id"),
        Some(id.as_str()),
        "a redelivery keeps the webhook-id"
    );
    crate::helpers::eventually("the second attempt is listed", || async {
        b.c().refresh().await.ok()?;
        (b.c()
            .find_all(Locator::Css("#attempts tbody tr"))
            .await
            .ok()?
            .len()
            == 2)
            .then_some(())
    })
    .await;
    b.screenshot("delivery-redelivered").await;
    b.close().await;
}

#[tokio::test]
async fn an_administrator_edits_deletes_restores_and_manages_users() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    user(&app, "admin2@example.com", "administrator").await;
    user(&app, "dev@example.com", "developer").await;
    app.process("audit").await;
    for n in 0..27 {
        app.instance("audit", json!({"n": n, "note": "keep"})).await;
    }
    let b = Browser::start(1280, 900).await;
    b.login(&app, "admin2@example.com").await;

    // Paging: 25 a page, newest first.
    b.click_link("audit").await;
    b.wait_for_text("table", "audit-27").await;
    assert!(!b.text("table").await.contains("audit-2\n"));
    b.click_link("Older instances").await;
    b.wait_for_text("table", "audit-1").await;

    // Edit: change one field, remove another (clear its name), set the status.
    b.c()
        .goto(&format!("{}/ui/instances/audit-1", app.base))
        .await
        .unwrap();
    let keys = b
        .c()
        .find_all(Locator::Css("input[name=key]"))
        .await
        .unwrap();
    let values = b
        .c()
        .find_all(Locator::Css("input[name=value]"))
        .await
        .unwrap();
    for (k, v) in keys.iter().zip(&values) {
        match k.prop("value").await.unwrap().unwrap_or_default().as_str() {
            "n" => {
                v.clear().await.unwrap();
                v.send_keys("{\"deep\": true}").await.unwrap();
            }
            "note" => k.clear().await.unwrap(),
            _ => {}
        }
    }
    let status = b.c().find(Locator::Css("#status")).await.unwrap();
    status.clear().await.unwrap();
    status.send_keys("Review").await.unwrap();
    b.c()
        .find(Locator::Css("form[action='/ui/instances/audit-1'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text(".card p", "version 2").await;
    let (_, saved) = app.get("/api/v1/instances/audit-1").await;
    assert_eq!(saved["data"], json!({"n": {"deep": true}}));
    assert_eq!(saved["status"], "Review");

    // Delete asks for confirmation; dismissing it keeps the instance.
    b.c()
        .find(Locator::Css("form[action$='/delete'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.c().dismiss_alert().await.unwrap();
    assert!(
        app.get("/api/v1/instances/audit-1")
            .await
            .1
            .get("deletedAt")
            .is_none()
    );
    b.c()
        .find(Locator::Css("form[action$='/delete'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.c().accept_alert().await.unwrap();
    b.wait_for_text("h1", "audit").await;
    assert!(app.get("/api/v1/instances/audit-1").await.1["deletedAt"].is_string());

    // The recycle bin lists it; Restore brings it back.
    b.click_link("Recycle bin").await;
    b.wait_for_text("table", "audit-1").await;
    b.c()
        .find(Locator::Css("form[action$='/restore'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("h1", "audit-1").await;
    assert!(
        app.get("/api/v1/instances/audit-1")
            .await
            .1
            .get("deletedAt")
            .is_none()
    );

    // Users: add one with a role, change the role, deactivate, reset a password.
    b.click_link("Users").await;
    b.c()
        .find(Locator::Css("#u-email"))
        .await
        .unwrap()
        .send_keys("new@example.com")
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#u-role option[value=developer]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("form[action='/ui/admin/users'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("[role=status]", "Added new@example.com")
        .await;
    let flash = b.text("[role=status]").await;
    let token = flash.split("API token ").nth(1).unwrap().trim().to_owned();
    assert_eq!(
        app.call(reqwest::Method::GET, "/api/v1/webhooks", Some(&token), None)
            .await
            .0,
        reqwest::StatusCode::OK
    );
    let change = |email: &'static str, action: &'static str| {
        let b = &b;
        async move {
            let form = format!("form[action='/ui/admin/users/change']:has(input[value='{email}'])");
            b.c()
                .find(Locator::Css(&format!("{form} option[value='{action}']")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            b.c()
                .find(Locator::Css(&format!("{form} button")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            b.wait_for_text("[role=status]", email).await;
        }
    };
    change("new@example.com", "role:user").await;
    assert_eq!(
        app.call(reqwest::Method::GET, "/api/v1/webhooks", Some(&token), None)
            .await
            .0,
        reqwest::StatusCode::FORBIDDEN
    );
    change("new@example.com", "deactivate").await;
    assert_eq!(
        app.call(
            reqwest::Method::GET,
            "/api/v1/processes",
            Some(&token),
            None
        )
        .await
        .0,
        reqwest::StatusCode::UNAUTHORIZED
    );
    change("dev@example.com", "reset-password").await;
    assert!(
        b.text("[role=status]")
            .await
            .contains("New password for dev@example.com")
    );
    b.screenshot("users").await;

    // Developer page extras: reveal the secret, send a test callback, rotate.
    b.c()
        .goto(&format!("{}/ui/admin/developer", app.base))
        .await
        .unwrap();
    assert!(b.text("#signing-secret").await.contains("••"));
    b.c()
        .find(Locator::Css("[data-reveal]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let (_, secret) = app.get("/api/v1/webhooks/secret").await;
    assert_eq!(
        b.text("#signing-secret").await,
        secret["secret"].as_str().unwrap()
    );
    b.c()
        .find(Locator::Css("#test-url"))
        .await
        .unwrap()
        .send_keys(&rx.url("/probe"))
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#send-test-updated"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text(".test-outcome", "Delivered: HTTP 200")
        .await;
    let probe = &rx.requests_to("/probe")[0];
    assert_eq!(probe.header("webhook-test"), Some("true"));
    assert!(
        probe
            .query
            .as_deref()
            .unwrap()
            .ends_with("eventType=updated")
    );
    // Without a URL, "Send test" calls every URL configured for that event.
    app.configure(&[&rx.url("/conf-a"), &rx.url("/conf-b")], &[], &[])
        .await;
    b.c()
        .find(Locator::Css("#test-url"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    b.c()
        .find(Locator::Css("#send-test-created"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text(".test-outcome", "conf-b: Delivered").await;
    assert_eq!(
        b.c()
            .find_all(Locator::Css(".test-outcome"))
            .await
            .unwrap()
            .len(),
        2
    );
    b.c()
        .find(Locator::Css("#send-test-deleted"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text(".test-outcome", "No URLs are configured for deleted")
        .await;
    b.c()
        .find(Locator::Css("form[action$='/rotate'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.c().accept_alert().await.unwrap();
    b.wait_for_text("[role=status]", "rotated").await;
    let (_, rotated) = app.get("/api/v1/webhooks/secret").await;
    assert_eq!(rotated["previousSecret"], secret["secret"]);
    b.screenshot("developer").await;
    b.close().await;
}
