//! Test helpers: a Herald on port 0 with a fresh database, and a receiver that records every
//! request it gets.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use herald::Config;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running Herald with its own database in a temporary folder.
pub struct TestApp {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
    running: Option<herald::Running>,
    _dir: tempfile::TempDir,
    _db: Option<crate::db::TestDb>,
}

impl TestApp {
    /// Herald with private targets allowed (receivers live on 127.0.0.1), a 2 s timeout and a
    /// short retry schedule.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_in(tempfile::tempdir().expect("temp dir"), adjust).await
    }

    /// Herald on the database in `dir` (fresh, or left by a stopped Herald).
    pub async fn spawn_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> Self {
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        let mut config = Config::with_database(url);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.allow_private_network = true;
        config.callback_timeout = Duration::from_secs(2);
        config.retry_schedule = herald::domain::RetrySchedule::parse("100ms,100ms,100ms").unwrap();
        config.admin_token = Some(herald::domain::ApiToken::parse(ADMIN_TOKEN).unwrap());
        config.idle_poll = Duration::from_millis(200);
        adjust(&mut config);
        let running = herald::start(config).await.expect("Herald starts");
        Self {
            base: format!("http://{}", running.addr),
            token: ADMIN_TOKEN.to_owned(),
            http: reqwest::Client::new(),
            running: Some(running),
            _dir: dir,
            _db: None,
        }
    }

    /// The same Herald on a fresh PostgreSQL database (`None` when PostgreSQL tests are
    /// skipped on purpose).
    pub async fn spawn_postgres(adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        if crate::db::postgres_skipped() {
            return None;
        }
        Some(Self::spawn_on(crate::db::TestDb::postgres().await, adjust).await)
    }

    /// The same Herald on `db`, kept for the test to look behind Herald's back.
    pub async fn spawn_on(db: crate::db::TestDb, adjust: impl FnOnce(&mut Config)) -> Self {
        let url = db.url().to_owned();
        let mut app = Self::spawn_in(tempfile::tempdir().unwrap(), |c| {
            c.database_url = url;
            adjust(c);
        })
        .await;
        app._db = Some(db);
        app
    }

    /// Sends a request as `token` (or anonymously with `None`).
    /// The folder of this Herald's SQLite database (`herald.db`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The database given to [`TestApp::spawn_on`], to act on behind Herald's back.
    pub fn db(&self) -> &crate::db::TestDb {
        self._db
            .as_ref()
            .expect("spawned on a database of the test's")
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self.call_full(method, path, token, body, &[]).await;
        (status, value)
    }

    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("request reaches Herald");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.token), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(&self.token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(&self.token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(&self.token), None)
            .await
    }

    /// Adds a user with `role` through the API and returns their token.
    pub async fn user_token(&self, email: &str, role: &str) -> String {
        let (status, body) = self
            .post("/api/v1/users", json!({"email": email, "role": role}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["apiToken"].as_str().unwrap().to_owned()
    }

    /// Enables the given events, each with the same URLs.
    pub async fn configure(&self, created: &[&str], updated: &[&str], deleted: &[&str]) {
        let body = json!({
            "created": {"enabled": !created.is_empty(), "urls": created},
            "updated": {"enabled": !updated.is_empty(), "urls": updated},
            "deleted": {"enabled": !deleted.is_empty(), "urls": deleted},
        });
        let (status, saved) = self.put("/api/v1/webhooks", body).await;
        assert_eq!(status, StatusCode::OK, "{saved}");
    }

    /// Creates a process.
    pub async fn process(&self, name: &str) {
        let (status, body) = self
            .post("/api/v1/processes", json!({"name": name, "title": name}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Creates an instance and returns its ID.
    pub async fn instance(&self, process: &str, data: Value) -> String {
        let (status, body) = self
            .post(
                &format!("/api/v1/processes/{process}/instances"),
                json!({"data": data}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// All deliveries, newest first.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/v1/deliveries?limit=200&{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    /// Waits until a delivery matching `query` satisfies `done`, and returns it with attempts.
    pub async fn delivery_when(
        &self,
        query: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, || async {
            let list = self.deliveries(query).await;
            let first = list.into_iter().next()?;
            let (_, full) = self
                .get(&format!("/api/v1/deliveries/{}", first["id"].as_str()?))
                .await;
            done(&full).then_some(full)
        })
        .await
    }

    /// Stops Herald gracefully and hands back its database folder.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(running) = self.running.take() {
            running.shutdown();
            running.wait().await.expect("clean shutdown");
        }
        std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown();
        }
    }
}

/// Polls `check` until it yields a value; fails the test after 15 s. A condition to wait for,
/// never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the receiver answers requests to one path.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer with this status.
    Status(u16),
    /// Answer `status` to the first `n` requests, then 200.
    FailFirst(usize, u16),
    /// Never answer.
    Hang,
    /// Answer 200 after this many milliseconds.
    Delay(u64),
    /// Answer with this status and one header.
    WithHeader(u16, &'static str, &'static str),
    /// Answer the first `n` requests with this status and one header, then 200.
    FirstWithHeader(usize, u16, &'static str, &'static str),
    /// Answer with this status and body.
    Body(u16, &'static str),
    /// Never answer the first `n` requests, then answer 200.
    HangFirst(usize),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    behaviours: Mutex<HashMap<String, Behaviour>>,
    counts: Mutex<HashMap<String, usize>>,
    arrived: Notify,
    /// Requests being answered now, and the most there were at once.
    in_flight: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

/// Counts one request as being answered until dropped.
struct Answering(Arc<ReceiverState>);

impl Answering {
    fn new(state: &Arc<ReceiverState>) -> Self {
        use std::sync::atomic::Ordering;
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(state))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A real HTTP server on 127.0.0.1 that records every request. Paths answer 200 unless told
/// otherwise.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler_state = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |request: Request| {
            let state = Arc::clone(&handler_state);
            async move { record(state, request).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    /// The URL of a path on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn behave(&self, path: &str, behaviour: Behaviour) {
        self.state
            .behaviours
            .lock()
            .unwrap()
            .insert(path.to_owned(), behaviour);
    }

    /// The most requests this receiver was answering at once.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until at least `n` requests reached `path` (or any path with `None`).
    pub async fn wait_for(&self, path: Option<&str>, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let arrived = self.state.arrived.notified();
            let got: Vec<Received> = self
                .requests()
                .into_iter()
                .filter(|r| path.is_none_or(|p| r.path == p))
                .collect();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "receiver got {} of {n} requests to {path:?}: {got:#?}",
                    got.len()
                );
            }
        }
    }
}

async fn record(state: Arc<ReceiverState>, request: Request) -> axum::response::Response {
    let _answering = Answering::new(&state);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let request = Request::from_parts(parts, axum::body::Body::empty());
    let path = request.uri().path().to_owned();
    let received = Received {
        method: request.method().to_string(),
        path: path.clone(),
        query: request.uri().query().map(str::to_owned),
        headers: request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    let behaviour = state
        .behaviours
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Behaviour::Status(200));
    let seen = {
        let mut counts = state.counts.lock().unwrap();
        let n = counts.entry(path).or_insert(0);
        *n += 1;
        *n
    };
    state.requests.lock().unwrap().push(received);
    state.arrived.notify_waiters();
    match behaviour {
        Behaviour::Status(code) => {
            (StatusCode::from_u16(code).unwrap(), "receiver says hi").into_response()
        }
        Behaviour::FailFirst(n, code) if seen <= n => {
            (StatusCode::from_u16(code).unwrap(), "not yet").into_response()
        }
        Behaviour::FailFirst(..) => (StatusCode::OK, "ok now").into_response(),
        Behaviour::Hang => std::future::pending().await,
        Behaviour::HangFirst(n) if seen <= n => std::future::pending().await,
        Behaviour::HangFirst(_) => (StatusCode::OK, "answered").into_response(),
        Behaviour::FirstWithHeader(n, code, name, value) if seen <= n => (
            StatusCode::from_u16(code).unwrap(),
            [(name, value)],
            "with header",
        )
            .into_response(),
        Behaviour::FirstWithHeader(..) => (StatusCode::OK, "ok now").into_response(),
        Behaviour::Body(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Behaviour::WithHeader(code, name, value) => (
            StatusCode::from_u16(code).unwrap(),
            [(name, value)],
            "with header",
        )
            .into_response(),
        Behaviour::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, "slow but fine").into_response()
        }
    }
}

/// Starts the real binary on a free port with private targets allowed and a 1 s timeout, plus
/// `extra` arguments (which may name another `--listen` or `--callback-timeout`); returns the child (killed when dropped) and its base URL.
pub async fn spawn_herald(db: &str, extra: &[&str]) -> (tokio::process::Child, String) {
    let mut args = vec!["serve", "--database", db, "--allow-private-network"];
    for (flag, value) in [("--listen", "127.0.0.1:0"), ("--callback-timeout", "1")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    let node = herald_testkit::spawn_node(
        std::path::Path::new(env!("CARGO_BIN_EXE_herald")),
        &args,
        &[("HERALD_ADMIN_TOKEN", ADMIN_TOKEN), ("RUST_LOG", "warn")],
    )
    .await
    .unwrap();
    (node.child, node.base)
}

/// A small API client for a Herald in another process.
pub struct Remote {
    base: String,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or_default())
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
}
