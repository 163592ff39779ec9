//! The web UI's protections, checked over plain HTTP.

use crate::helpers::{Behaviour, Receiver, TestApp, eventually};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;

pub(crate) const PASSWORD: &str = "correct horse battery staple";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The login form's anti-forgery cookie (`name=value`) and token, as a browser gets them.
pub(crate) async fn login_form(base: &str) -> (String, String) {
    let response = client().get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = response.text().await.unwrap();
    let token = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the login form carries a token")
        .to_owned();
    (cookie, token)
}

/// Posts the login form as a browser that loaded it does.
pub(crate) fn post_login(
    base: &str,
    form: &(String, String),
    email: &str,
    password: &str,
) -> reqwest::RequestBuilder {
    client()
        .post(format!("{base}/login"))
        .header("cookie", &form.0)
        .form(&[("email", email), ("password", password), ("csrf", &form.1)])
}

/// The session cookie (`name=value`) of a successful form login.
pub(crate) async fn session_cookie(app: &TestApp, email: &str) -> String {
    let form = login_form(&app.base).await;
    let response = post_login(&app.base, &form, email, PASSWORD)
        .send()
        .await
        .unwrap();
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The page at `path` as the holder of `cookie` sees it.
pub(crate) async fn page(app: &TestApp, cookie: &str, path: &str) -> String {
    client()
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An administrator's change to a user on the Users page (`action` as its buttons send it).
pub(crate) async fn change_user(app: &TestApp, admin: &str, csrf: &str, email: &str, action: &str) {
    let r = client()
        .post(format!("{}/ui/admin/users/change", app.base))
        .header("cookie", admin)
        .form(&[("csrf", csrf), ("email", email), ("action", action)])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "{action} for {email}: {}",
        r.status()
    );
}

/// The anti-forgery token embedded in the page at `path`.
pub(crate) async fn csrf_token(app: &TestApp, cookie: &str, path: &str) -> String {
    page(app, cookie, path)
        .await
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// A Herald with a developer `dev@example.com` who signs in with [`PASSWORD`].
async fn with_developer() -> TestApp {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post(
            "/api/v1/users",
            json!({"email": "dev@example.com", "role": "developer", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app
}

async fn login(app: &TestApp, https: bool) -> (String, String) {
    app.post(
        "/api/v1/users",
        json!({"email": "dev@example.com", "role": "developer", "password": PASSWORD}),
    )
    .await;
    let form = login_form(&app.base).await;
    let mut request = post_login(&app.base, &form, "dev@example.com", PASSWORD);
    if https {
        request = request.header("x-forwarded-proto", "https");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let value = cookie.split(';').next().unwrap().to_owned();
    (cookie, value)
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_secure_over_https() {
    let app = TestApp::spawn().await;
    let (cookie, _) = login(&app, false).await;
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    let (cookie, _) = login(&app, true).await;
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn pages_need_a_session_and_forms_need_the_csrf_token() {
    let app = TestApp::spawn().await;
    let anonymous = client()
        .get(format!("{}/ui/processes", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()["location"], "/login");

    let (_, cookie) = login(&app, false).await;
    let forged = client()
        .post(format!("{}/ui/processes", app.base))
        .header("cookie", &cookie)
        .form(&[("name", "forged"), ("title", "Forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let wrong = client()
        .post(format!("{}/ui/processes", app.base))
        .header("cookie", &cookie)
        .form(&[
            ("name", "forged"),
            ("title", "Forged"),
            ("csrf", "hrld_guessedguessedguessedguessedguessedgue"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(
        app.get("/api/v1/processes").await.1["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );

    // A user (not admin or developer) typing an Administration URL gets 403.
    app.post(
        "/api/v1/users",
        json!({"email": "user@example.com", "role": "user", "password": PASSWORD}),
    )
    .await;
    let user_cookie = session_cookie(&app, "user@example.com").await;
    for path in [
        "/ui/admin",
        "/ui/admin/developer",
        "/ui/admin/deliveries",
        "/ui/admin/users",
        "/ui/admin/recycle-bin",
    ] {
        let r = client()
            .get(format!("{}{path}", app.base))
            .header("cookie", &user_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }

    // Logging out ends the session.
    let csrf = csrf_token(&app, &cookie, "/ui/processes").await;
    let out = client()
        .post(format!("{}/logout", app.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = client()
        .get(format!("{}/ui/processes", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.headers()["location"], "/login");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    login(&app, false).await;
    let form = login_form(&app.base).await;
    let mut bodies = Vec::new();
    for email in ["dev@example.com", "nobody@example.com"] {
        let r = post_login(&app.base, &form, email, "not the password")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        bodies.push(r.text().await.unwrap().replace(email, ""));
    }
    assert_eq!(bodies[0], bodies[1]);
    assert!(bodies[0].contains("Wrong email or password."));
}

/// API tokens are remembered for a second to save a query per request, but a change an
/// administrator makes takes effect on the very next request: a demoted developer loses the
/// webhooks, a deactivated user's token stops working.
#[tokio::test]
async fn role_changes_and_deactivation_apply_to_api_tokens_at_once() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/users",
        json!({"email": "boss@example.com", "role": "administrator", "password": PASSWORD}),
    )
    .await;
    let developer = app.user_token("dev@example.com", "developer").await;
    let call = |token: String| {
        let app = &app;
        async move {
            app.call(reqwest::Method::GET, "/api/v1/webhooks", Some(&token), None)
                .await
                .0
        }
    };
    assert_eq!(call(developer.clone()).await, StatusCode::OK);

    let boss = session_cookie(&app, "boss@example.com").await;
    let csrf = csrf_token(&app, &boss, "/ui/admin/users").await;
    let change = |action| change_user(&app, &boss, &csrf, "dev@example.com", action);
    change("role:user").await;
    assert_eq!(call(developer.clone()).await, StatusCode::FORBIDDEN);
    change("role:developer").await;
    assert_eq!(call(developer.clone()).await, StatusCode::OK);
    change("deactivate").await;
    assert_eq!(call(developer.clone()).await, StatusCode::UNAUTHORIZED);
}

/// A URL disabled because its receiver answered 410 Gone is listed on the developer page with
/// when and why, and its Enable button calls it again for new events.
#[tokio::test]
async fn a_url_disabled_by_a_410_is_shown_and_enabled_on_the_developer_page() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    rx.behave("/gone", Behaviour::Status(410));
    app.configure(&[&rx.url("/gone")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    eventually("the URL is disabled", || async {
        let (_, h) = app.get("/api/v1/webhooks/health").await;
        (h["items"][0]["state"] == "disabled").then_some(())
    })
    .await;
    let (_, cookie) = login(&app, false).await;
    let page = page(&app, &cookie, "/ui/admin/developer").await;
    assert!(page.contains("Disabled URLs"), "{page}");
    // The template escapes `/` too: look for the URL's host and port.
    assert!(page.contains(&rx.addr.to_string()), "{page}");
    assert!(page.contains("the receiver answered 410 Gone"), "{page}");
    let csrf = csrf_token(&app, &cookie, "/ui/admin/developer").await;
    let answer = client()
        .post(format!("{}/ui/admin/developer/enable", app.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("url", rx.url("/gone").as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let page = answer.text().await.unwrap();
    assert!(page.contains("is enabled again"), "{page}");
    assert!(!page.contains("Disabled URLs"), "{page}");
    let (_, h) = app.get("/api/v1/webhooks/health").await;
    assert_eq!(h["items"][0]["state"], "healthy");
}

#[tokio::test]
async fn every_ui_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let (_, cookie) = login(&app, false).await;
    // The login form, a page with the signing secret, a redirect, an error page and an asset.
    for (path, signed_in) in [
        ("/login", false),
        ("/ui/admin/developer", true),
        ("/", true),
        ("/ui/processes/no-such-process", true),
        ("/assets/app.css", false),
    ] {
        let mut request = client().get(format!("{}{path}", app.base));
        if signed_in {
            request = request.header("cookie", &cookie);
        }
        let response = request.send().await.unwrap();
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("{path}: no {name} header ({})", response.status()))
        };
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        let cache = header("cache-control");
        if path.starts_with("/assets/") {
            assert_eq!(cache, "max-age=300", "{path}");
        } else {
            assert_eq!(cache, "no-store", "{path}");
        }
    }
    // No page relies on inline style or script, which the policy forbids.
    let page = page(&app, &cookie, "/ui/admin/developer").await;
    assert!(!page.contains("style=\""), "inline style in the page");
    assert!(!page.contains("<script>"), "inline script in the page");
}

#[tokio::test]
async fn an_over_long_login_email_gets_the_normal_answer() {
    let app = TestApp::spawn().await;
    let email = format!("{}@example.com", "x".repeat(1_900_000));
    let form = login_form(&app.base).await;
    let response = post_login(&app.base, &form, &email, "wrong password!")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let page = response.text().await.unwrap();
    assert!(page.contains("Wrong email or password."), "{page:.300}");
    assert!(page.len() < 100_000, "the email is not echoed back");
}

/// A NUL in the login email is a wrong email like any other, on both backends (PostgreSQL
/// cannot even look such a text up).
async fn a_nul_in_the_login_email_gets_the_normal_answer(db: crate::db::TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    let form = login_form(&app.base).await;
    let response = post_login(&app.base, &form, "admin\0@example.com", "wrong password!")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let page = response.text().await.unwrap();
    assert!(page.contains("Wrong email or password."), "{page:.300}");
}
on_both_backends!(
    #[tokio::test]
    a_nul_in_the_login_email_gets_the_normal_answer
);

/// The peak resident memory of a process, from `/proc/<pid>/status`.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test]
async fn concurrent_sign_ins_are_bounded_and_the_rest_told_to_retry() {
    // Each password check takes about 19 MiB; 200 at once used to take the process to 2 GiB.
    herald::startup::install_tls_provider();
    let db = crate::db::TestDb::sqlite();
    let (node, base) = crate::helpers::spawn_herald(db.url(), &[]).await;
    let form = login_form(&base).await;
    let logins = (0..200).map(|i| {
        let (base, form) = (base.clone(), form.clone());
        async move {
            let email = format!("nobody-{i}@example.com");
            let response = post_login(&base, &form, &email, "not the password")
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.headers().get("retry-after").cloned(),
            )
        }
    });
    let answers = futures_util::future::join_all(logins).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        answers
            .iter()
            .all(|(s, _)| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{answers:?}"
    );
    assert!(!refused.is_empty(), "none was told to retry: {answers:?}");
    assert!(refused.iter().all(|(_, r)| r.is_some()), "{refused:?}");
    let peak = peak_rss_mib(node.id().unwrap());
    assert!(peak < 400.0, "peak RSS {peak:.0} MiB");
}

#[tokio::test]
async fn the_login_form_needs_its_token_so_no_other_site_can_sign_a_victim_in() {
    let app = with_developer().await;
    let form = login_form(&app.base).await;
    // A cross-site form post: the right credentials, but no token and no cookie, or a token
    // of the attacker's own that the victim's browser does not hold.
    let forged = [
        client()
            .post(format!("{}/login", app.base))
            .form(&[("email", "dev@example.com"), ("password", PASSWORD)]),
        client().post(format!("{}/login", app.base)).form(&[
            ("email", "dev@example.com"),
            ("password", PASSWORD),
            ("csrf", &form.1),
        ]),
        client()
            .post(format!("{}/login", app.base))
            .header("cookie", &form.0)
            .form(&[
                ("email", "dev@example.com"),
                ("password", PASSWORD),
                ("csrf", "0123456789abcdef0123456789abcdef"),
            ]),
    ];
    for request in forged {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            response
                .headers()
                .get("set-cookie")
                .is_some_and(|c| c.to_str().unwrap().starts_with("herald_login="))
        );
        let page = response.text().await.unwrap();
        assert!(page.contains("did not come from Herald"), "{page:.400}");
    }
    // The form as the browser loaded it signs in.
    let response = post_login(&app.base, &form, "dev@example.com", PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("herald_session=")
    );
}

/// A password reset and a deactivation sign the user out everywhere; reactivating brings no old
/// session back.
#[tokio::test]
async fn a_reset_or_deactivation_ends_the_users_sessions() {
    let app = TestApp::spawn().await;
    for (email, role) in [
        ("boss@example.com", "administrator"),
        ("one@example.com", "developer"),
        ("two@example.com", "developer"),
    ] {
        app.post(
            "/api/v1/users",
            json!({"email": email, "role": role, "password": PASSWORD}),
        )
        .await;
    }
    let boss = session_cookie(&app, "boss@example.com").await;
    let csrf = csrf_token(&app, &boss, "/ui/admin/users").await;
    let change = |email, action| change_user(&app, &boss, &csrf, email, action);
    let signed_in = |cookie: String| {
        let base = app.base.clone();
        async move {
            let r = client()
                .get(format!("{base}/ui/processes"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            r.status() == StatusCode::OK
        }
    };
    let one = session_cookie(&app, "one@example.com").await;
    let two = session_cookie(&app, "two@example.com").await;
    assert!(signed_in(one.clone()).await && signed_in(two.clone()).await);
    change("one@example.com", "reset-password").await;
    assert!(!signed_in(one).await, "the reset ends the session");
    change("two@example.com", "deactivate").await;
    change("two@example.com", "activate").await;
    assert!(
        !signed_in(two).await,
        "reactivating brings back no session the deactivation ended"
    );
    assert!(signed_in(boss).await, "other users stay signed in");
}

#[tokio::test]
async fn the_deliveries_page_filters_only_by_the_url_as_shown() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start().await;
    app.configure(
        &[&format!("http://hook-user:s3cret@{}/auth", rx.addr)],
        &[],
        &[],
    )
    .await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let delivered = app
        .delivery_when("", "delivered", |d| d["status"] == "succeeded")
        .await;
    let id = delivered["id"].as_str().unwrap().to_owned();
    let (_, cookie) = login(&app, false).await;
    let shown = |piece: &'static str| {
        let (app, cookie, id) = (&app, &cookie, &id);
        async move {
            page(app, cookie, &format!("/ui/admin/deliveries?url={piece}"))
                .await
                .contains(id.as_str())
        }
    };
    assert!(
        shown("auth").await,
        "a piece of the shown URL finds the delivery"
    );
    for secret in ["s3cret", "hook-user", "s3c"] {
        assert!(
            !shown(secret).await,
            "the filter {secret:?} found a delivery by its password"
        );
    }
}

#[tokio::test]
async fn a_field_nested_too_deep_is_refused_by_the_instance_form_not_stored_as_nothing() {
    let app = TestApp::spawn().await;
    app.process("p").await;
    let (_, cookie) = login(&app, false).await;
    let csrf = csrf_token(&app, &cookie, "/ui/processes/p").await;
    let post = |value: String| {
        let (app, cookie, csrf) = (&app, &cookie, &csrf);
        async move {
            client()
                .post(format!("{}/ui/processes/p/instances", app.base))
                .header("cookie", cookie)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("key", "kept"),
                    ("value", "yes"),
                    ("key", "deep"),
                    ("value", value.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    // 127 levels under the field: the record would be 128 deep, past what can be read back.
    let answer = post("[".repeat(127) + &"]".repeat(127)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let page = answer.text().await.unwrap();
    assert!(page.contains("nested deeper than 64 levels"), "{page}");
    let (_, list) = app.get("/api/v1/processes/p/instances").await;
    assert_eq!(list["items"], json!([]), "nothing was stored");

    let answer = post("[".repeat(10) + &"]".repeat(10)).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let (_, list) = app.get("/api/v1/processes/p/instances").await;
    assert_eq!(list["items"][0]["data"]["kept"], "yes", "{list}");
}

/// The login form posted from the local address `from` (127.0.0.x: a different client).
fn post_login_from(
    from: [u8; 4],
    base: &str,
    form: &(String, String),
    email: &str,
    password: &str,
    device: Option<&str>,
) -> reqwest::RequestBuilder {
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap();
    let cookies = match device {
        Some(device) => format!("{}; {device}", form.0),
        None => form.0.clone(),
    };
    client
        .post(format!("{base}/login"))
        .header("cookie", cookies)
        .form(&[("email", email), ("password", password), ("csrf", &form.1)])
}

#[tokio::test]
async fn parallel_guesses_for_one_account_wait_in_turn() {
    let app = with_developer().await;
    let form = login_form(&app.base).await;
    for _ in 0..2 {
        let r = post_login(&app.base, &form, "dev@example.com", "wrong guess!!")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Twenty guesses at once, the right password among them: one is checked, the others are
    // told to come back later, so parallelism buys an attacker nothing.
    let guesses = (0..20).map(|i| {
        let password = if i == 7 {
            PASSWORD.to_owned()
        } else {
            format!("guess number {i}")
        };
        let request = post_login(&app.base, &form, "dev@example.com", &password);
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.headers().get("retry-after").cloned())
        }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|(s, _)| *s != StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
            .all(|(_, retry)| retry.is_some()),
        "{answers:?}"
    );
}

#[tokio::test]
async fn spraying_one_password_over_many_emails_from_one_address_is_slowed() {
    let app = TestApp::spawn().await;
    let form = login_form(&app.base).await;
    for i in 0..6 {
        let r = post_login(
            &app.base,
            &form,
            &format!("victim{i}@example.com"),
            "Summer2026!!",
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let sprays = (0..10).map(|i| {
        let request = post_login(
            &app.base,
            &form,
            &format!("next{i}@example.com"),
            "Summer2026!!",
        );
        async move { request.send().await.unwrap().status() }
    });
    let answers = futures_util::future::join_all(sprays).await;
    let refused = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(refused >= 9, "{answers:?}");
    // Another client is not slowed by it.
    let r = post_login_from(
        [127, 0, 0, 2],
        &app.base,
        &form,
        "next0@example.com",
        "Summer2026!!",
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_owner_signs_in_from_a_known_browser_while_someone_else_guesses() {
    let app = with_developer().await;
    // The owner signed in once from their browser (127.0.0.2), which keeps a device cookie.
    let form = login_form(&app.base).await;
    let first = post_login_from(
        [127, 0, 0, 2],
        &app.base,
        &form,
        "dev@example.com",
        PASSWORD,
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let device = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("herald_device="))
        .expect("a device cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // Someone else guesses from 127.0.0.1, and keeps a guess waiting on the account.
    for _ in 0..3 {
        post_login(&app.base, &form, "dev@example.com", "wrong guess!!")
            .send()
            .await
            .unwrap();
    }
    let waiting =
        tokio::spawn(post_login(&app.base, &form, "dev@example.com", "wrong guess!!").send());
    let owner = post_login_from(
        [127, 0, 0, 2],
        &app.base,
        &form,
        "dev@example.com",
        PASSWORD,
        Some(&device),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(owner.status(), StatusCode::SEE_OTHER, "the owner is let in");
    let _ = waiting.await;
}
