//! Faults found in the delivery engine, each driven through HTTP on both backends: a receiver
//! whose answer a database cannot hold, a result the database refuses, 410 Gone under an open
//! breaker, and a Retry-After that must pause the whole URL.

use crate::db::TestDb;
use crate::helpers::{Behaviour, Receiver, Remote, TestApp, eventually, spawn_herald};
use herald::domain::Millis;
use serde_json::{Value, json};
use std::time::Duration;

/// The URL path of a delivery in the log.
fn path(d: &Value) -> &str {
    let url = d["url"].as_str().unwrap();
    &url[url.find("/r/").unwrap()..]
}

/// A receiver answering `200` with a NUL byte in its body: PostgreSQL cannot hold the character
/// in text, and refusing the whole results batch stopped every result of the node, forever.
/// Now the excerpt keeps it as U+2400, every other result is stored, and a test callback to the
/// URL reports its outcome instead of answering 500.
async fn a_body_with_a_nul_byte_is_stored_and_stops_nothing(db: TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    let rx = Receiver::start().await;
    rx.behave("/r/nul", Behaviour::Body(200, "before\0after"));
    app.configure(&[&rx.url("/r/nul"), &rx.url("/r/fine")], &[], &[])
        .await;
    app.process("p").await;
    for _ in 0..5 {
        app.instance("p", json!({})).await;
    }
    eventually("every callback is recorded as succeeded", || async {
        let log = app.deliveries("status=succeeded").await;
        (log.len() == 10).then_some(())
    })
    .await;
    let nul = app
        .delivery_when("url=%2Fr%2Fnul", "the NUL callback's attempt", |d| {
            d["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(
        nul["attempts"][0]["responseExcerpt"], "before\u{2400}after",
        "the NUL is kept, visibly, as U+2400"
    );
    let (status, test) = app
        .post(
            "/api/v1/webhooks/test",
            json!({"eventType": "created", "url": rx.url("/r/nul")}),
        )
        .await;
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["outcome"], "success", "{test}");
    assert_eq!(test["responseExcerpt"], "before\u{2400}after", "{test}");
}

on_both_backends!(
    #[tokio::test]
    a_body_with_a_nul_byte_is_stored_and_stops_nothing
);

/// A trigger behind Herald's back refuses one attempt row, as a backend refuses a value it
/// cannot hold. The batch holding it is split: the other results are stored, and the refused one
/// is stored without the response, its error naming the refusal; nothing is retried forever.
async fn a_result_the_database_refuses_fails_alone(db: TestDb, trigger: &'static str) {
    drop(db.store().await); // The schema, for the trigger.
    db.execute(trigger).await;
    let app = TestApp::spawn_on(db, |_| {}).await;
    let rx = Receiver::start().await;
    rx.behave("/r/poison", Behaviour::Body(200, "poison"));
    rx.behave("/r/fine", Behaviour::Delay(50));
    app.configure(&[&rx.url("/r/poison"), &rx.url("/r/fine")], &[], &[])
        .await;
    app.process("p").await;
    for _ in 0..5 {
        app.instance("p", json!({})).await;
    }
    eventually("every callback is recorded as succeeded", || async {
        let log = app.deliveries("status=succeeded").await;
        (log.len() == 10).then_some(())
    })
    .await;
    for d in app.deliveries("").await {
        let (_, full) = app
            .get(&format!("/api/v1/deliveries/{}", d["id"].as_str().unwrap()))
            .await;
        let attempts = full["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{full}");
        if path(&d) == "/r/poison" {
            assert_eq!(attempts[0]["responseExcerpt"], Value::Null);
            let error = attempts[0]["error"].as_str().unwrap();
            assert!(error.contains("could not store"), "{error}");
        } else {
            assert_eq!(attempts[0]["responseExcerpt"], "slow but fine");
        }
    }
}

mod a_result_the_database_refuses_fails_alone {
    const SQLITE: &str = "CREATE TRIGGER refuse BEFORE INSERT ON delivery_attempts
         WHEN NEW.response_excerpt = 'poison'
         BEGIN SELECT RAISE(ABORT, 'refused'); END;";
    const POSTGRES: &str = "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.response_excerpt = 'poison' THEN
             RAISE EXCEPTION 'refused' USING ERRCODE = '22021';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON delivery_attempts
         FOR EACH ROW EXECUTE FUNCTION refuse();";

    #[tokio::test]
    async fn sqlite() {
        super::a_result_the_database_refuses_fails_alone(crate::db::TestDb::sqlite(), SQLITE).await;
    }

    #[tokio::test]
    async fn postgres() {
        if crate::db::postgres_skipped() {
            return;
        }
        super::a_result_the_database_refuses_fails_alone(
            crate::db::TestDb::postgres().await,
            POSTGRES,
        )
        .await;
    }
}

fn breaker(c: &mut herald::Config) {
    c.retry_schedule = herald::domain::RetrySchedule::parse("1h").unwrap();
    c.breaker.threshold = 3;
    c.breaker.first_probe = Duration::from_millis(300);
}

/// The health listing's entry for a URL path.
async fn health_of(app: &TestApp, path: &str) -> Option<Value> {
    let (_, h) = app.get("/api/v1/webhooks/health").await;
    h["items"]
        .as_array()?
        .iter()
        .find(|i| i["url"].as_str().is_some_and(|u| u.ends_with(path)))
        .cloned()
}

/// A URL whose breaker is open answers its probe with 410 Gone: the probe's delivery and every
/// delivery held behind it fail as gone (the hold used to set the probe back to pending, so it
/// was sent again forever); the URL is disabled, shown so with when and why; new events skip
/// it; saving the settings with it, or enabling it explicitly, brings it back.
async fn gone_under_an_open_breaker_disables_the_url(db: TestDb) {
    let app = TestApp::spawn_on(db, breaker).await;
    let rx = Receiver::start().await;
    rx.behave("/r/gone", Behaviour::Status(500));
    let urls = [rx.url("/r/gone"), rx.url("/r/fine")];
    app.configure(&[&urls[0], &urls[1]], &[], &[]).await;
    app.process("p").await;
    for _ in 0..5 {
        app.instance("p", json!({})).await;
    }
    eventually("the breaker opens", || async {
        health_of(&app, "/r/gone")
            .await
            .filter(|h| h["state"] == "paused")
    })
    .await;
    rx.behave("/r/gone", Behaviour::Status(410));
    let gone = eventually("the URL is disabled", || async {
        health_of(&app, "/r/gone")
            .await
            .filter(|h| h["state"] == "disabled")
    })
    .await;
    assert!(gone["disabledAt"].is_string(), "{gone}");
    assert_eq!(gone["disabledReason"], "the receiver answered 410 Gone");
    let calls = rx.requests_to("/r/gone").len();

    let log = app.deliveries("").await;
    let to_gone: Vec<&Value> = log.iter().filter(|d| path(d) == "/r/gone").collect();
    assert_eq!(to_gone.len(), 5);
    assert!(
        to_gone.iter().all(|d| d["status"] == "failed"),
        "every delivery to a gone receiver fails: {to_gone:#?}"
    );
    let probe = to_gone
        .iter()
        .filter(|d| d["lastStatusCode"] == 410)
        .count();
    assert_eq!(probe, 1, "one probe got the 410");
    assert!(
        to_gone
            .iter()
            .filter(|d| d["lastStatusCode"] != 410)
            .all(|d| d["lastError"].as_str().unwrap().starts_with("gone")),
        "{to_gone:#?}"
    );

    // New events skip the disabled URL; the other URL still gets them.
    let skipped = app.instance("p", json!({})).await;
    rx.wait_for(Some("/r/fine"), 6).await;
    let queued = app.deliveries(&format!("instanceId={skipped}")).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(path(&queued[0]), "/r/fine");
    assert_eq!(
        rx.requests_to("/r/gone").len(),
        calls,
        "nothing more is sent"
    );

    // Saving the settings with the URL enables it again.
    rx.behave("/r/gone", Behaviour::Status(200));
    app.configure(&[&urls[0], &urls[1]], &[], &[]).await;
    let back = health_of(&app, "/r/gone").await.unwrap();
    assert_eq!(back["state"], "healthy", "{back}");
    assert_eq!(back["disabledAt"], Value::Null);
    let sent = app.instance("p", json!({})).await;
    eventually("the enabled URL gets the new event", || async {
        rx.requests_to("/r/gone")
            .iter()
            .any(|r| r.query.as_deref().is_some_and(|q| q.contains(&sent)))
            .then_some(())
    })
    .await;

    // An explicit enable does the same, and says when there is nothing to enable.
    rx.behave("/r/gone", Behaviour::Status(410));
    app.instance("p", json!({})).await;
    eventually("the URL is disabled again", || async {
        health_of(&app, "/r/gone")
            .await
            .filter(|h| h["state"] == "disabled")
    })
    .await;
    let redacted = health_of(&app, "/r/gone").await.unwrap()["url"].clone();
    let (status, body) = app
        .post("/api/v1/webhooks/enable", json!({"url": redacted}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], 1);
    assert_eq!(
        health_of(&app, "/r/gone").await.unwrap()["state"],
        "healthy"
    );
    let (status, body) = app
        .post("/api/v1/webhooks/enable", json!({"url": redacted}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found");
    let user = app.user_token("user@example.com", "user").await;
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/enable",
            Some(&user),
            Some(json!({"url": redacted})),
        )
        .await;
    assert_eq!(status, 403, "a user may not enable URLs");
}

on_both_backends!(
    #[tokio::test]
    gone_under_an_open_breaker_disables_the_url
);

/// A 429 with `Retry-After: 2` pauses the whole URL: deliveries of other instances queued after
/// it do not start before the two seconds have passed (they used to go out at once, the breaker
/// being closed), and the health listing shows the pause.
async fn retry_after_pauses_the_whole_url(db: TestDb) {
    let app = TestApp::spawn_on(db, |_| {}).await;
    let rx = Receiver::start().await;
    rx.behave(
        "/r/busy",
        Behaviour::FirstWithHeader(1, 429, "retry-after", "2"),
    );
    app.configure(&[&rx.url("/r/busy")], &[], &[]).await;
    app.process("p").await;
    app.instance("p", json!({})).await;
    let first = rx.wait_for(Some("/r/busy"), 1).await[0].at;
    let paused = eventually("the URL is paused", || async {
        health_of(&app, "/r/busy")
            .await
            .filter(|h| h["state"] == "paused")
    })
    .await;
    let until = Millis::parse_rfc3339(paused["pausedUntil"].as_str().unwrap()).unwrap();
    assert!(until.0 - Millis::now().0 > 0, "{paused}");
    app.instance("p", json!({})).await;
    app.instance("p", json!({})).await;
    let calls = rx.wait_for(Some("/r/busy"), 4).await;
    for later in &calls[1..] {
        assert!(
            later.at.duration_since(first) >= Duration::from_secs(2),
            "a request started {:?} after the 429 asked for 2 s",
            later.at.duration_since(first)
        );
    }
    eventually("everything is delivered after the pause", || async {
        (app.deliveries("status=succeeded").await.len() == 3).then_some(())
    })
    .await;
}

on_both_backends!(
    #[tokio::test]
    retry_after_pauses_the_whole_url
);

/// A node killed with 8 attempts in flight to one host (its cap) leaves 8 leases that would
/// each run for the timeout and 5 s more. Restarted, the node ends them at once: the process
/// that held them is provably gone (SQLite: the database's node lock; PostgreSQL: the node's
/// name, its host and port), so the host is called again long before those leases would end.
async fn a_restarted_node_does_not_wait_for_its_dead_leases(db: TestDb) {
    let rx = Receiver::start().await;
    rx.behave("/r/slow", Behaviour::HangFirst(8));
    let timeout = ["--callback-timeout", "30"];
    let (mut node, base) = spawn_herald(db.url(), &timeout).await;
    let app = Remote::new(&base);
    app.put(
        "/api/v1/webhooks",
        json!({
            "created": {"enabled": true, "urls": [rx.url("/r/slow")]},
            "updated": {"enabled": false, "urls": []},
            "deleted": {"enabled": false, "urls": []},
        }),
    )
    .await;
    app.post("/api/v1/processes", json!({"name": "p", "title": "P"}))
        .await;
    for _ in 0..8 {
        app.post("/api/v1/processes/p/instances", json!({"data": {}}))
            .await;
    }
    rx.wait_for(Some("/r/slow"), 8).await;
    node.kill().await.unwrap(); // SIGKILL, with 8 attempts in flight
    let killed_at = std::time::Instant::now();
    let _ = node.wait().await;

    let listen = base.trim_start_matches("http://");
    let (mut node, base) =
        spawn_herald(db.url(), &[timeout[0], timeout[1], "--listen", listen]).await;
    let again = rx.wait_for(Some("/r/slow"), 16).await;
    for r in &again[8..] {
        assert!(
            r.at.duration_since(killed_at) < Duration::from_secs(30),
            "sent again {:?} after the kill: the dead leases (35 s) were waited for",
            r.at.duration_since(killed_at)
        );
    }
    let app = Remote::new(&base);
    eventually("every delivery succeeds after the restart", || async {
        let (_, log) = app.get("/api/v1/deliveries?status=succeeded").await;
        (log["items"].as_array()?.len() == 8).then_some(())
    })
    .await;
    node.kill().await.unwrap();
}

on_both_backends!(
    #[tokio::test]
    a_restarted_node_does_not_wait_for_its_dead_leases
);

/// SQLite serves one node: a second `herald serve` on the same database is refused, naming the
/// way out, rather than both claiming (and one ending the other's leases).
#[tokio::test]
async fn a_second_node_on_one_sqlite_database_is_refused() {
    let db = TestDb::sqlite();
    let (mut first, _) = spawn_herald(db.url(), &[]).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", db.url()])
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another `herald serve` is running on"),
        "{stderr}"
    );
    first.kill().await.unwrap();
}
