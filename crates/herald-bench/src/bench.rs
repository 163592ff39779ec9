//! The benchmark: measures Herald end to end on this machine, against the machine's own limit.
//!
//! Each scenario starts a fresh `herald serve` child process (the release build beside this
//! program, or `--herald`) on a fresh
//! database, a receiving HTTP server inside the benchmark that answers 200 and records when
//! each callback arrived, and drives Herald only through its HTTP API. The ceiling is a bare
//! HTTP client sending GETs to the same receiver with the same concurrency.

use anyhow::{Context, bail};
use axum::extract::{Request, State};
use herald_testkit::FreshDatabase;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod burst;
mod capacity;

pub use burst::BurstFigures;
pub use capacity::CapacityFigures;

const TOKEN: &str = "bench-admin-token-0123456789";
const CONCURRENCY: usize = 32;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `sqlite` (default) or a PostgreSQL server URL; each scenario gets a fresh database on it.
    pub database: Option<String>,
    /// A smoke run of a few seconds.
    pub quick: bool,
    pub json: Option<PathBuf>,
    /// Scenarios to run (1–13); empty runs all.
    pub only: Vec<u8>,
    /// The `herald` binary to measure.
    pub herald: PathBuf,
}

/// The figures of one scenario.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Figures {
    pub scenario: String,
    pub api_ops_per_sec: f64,
    pub callbacks: usize,
    pub callbacks_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub peak_rss_mib: f64,
    pub database_mib: f64,
    /// CPU time per event (API request to stored result, every callback of it), in µs: of the
    /// Herald process, and of PostgreSQL's server processes (zero on SQLite, which runs inside
    /// Herald). Steadier than rates on a shared machine, so changes are compared with them.
    pub herald_cpu_us_per_event: f64,
    pub database_cpu_us_per_event: f64,
    /// Herald's CPU time per event split by kind of thread (by thread name), in µs: on SQLite
    /// it shows the share of the one writer thread, which every write waits for.
    pub herald_threads_cpu_us_per_event: BTreeMap<String, f64>,
    /// Herald's own view of where the time went, from its `/metrics` at the end of the run.
    pub stages: Stages,
    /// The highest per-host concurrency limit in the node's `/metrics` at the end of the run.
    pub final_host_limit: usize,
    /// After a backlog: Herald's and the database server's CPU per callback from the moment
    /// the receiver came back until the last callback arrived (the drain alone).
    pub drain_cpu_us_per_callback: Option<(f64, f64)>,
    /// After a backlog: the claims and results writes of the drain alone.
    pub drain_stages: Option<DrainStages>,
    pub note: String,
    /// Scenario 8's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<BurstFigures>,
    /// Scenarios 9 and 10's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityFigures>,
}

/// Mean durations of the node's stages (ms) and the mean claim size, read from its metrics.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Stages {
    pub instance_write_ms: f64,
    pub claim_ms: f64,
    pub claims: f64,
    pub deliveries_per_claim: f64,
    pub attempt_ms: f64,
    pub results_write_ms: f64,
    /// The upper bound (ms) of the histogram bucket holding each stage's 99th percentile.
    pub instance_write_p99_within_ms: f64,
    pub claim_p99_within_ms: f64,
    pub results_write_p99_within_ms: f64,
}

/// What the worker did in a drain: claims and results writes between two scrapes.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DrainStages {
    pub claims: f64,
    pub deliveries_per_claim: f64,
    pub results_writes: f64,
    pub results_per_write: f64,
}

impl DrainStages {
    fn between(before: &str, after: &str) -> Self {
        let diff = |name: &str| metric_value(after, name) - metric_value(before, name);
        let claims = diff("herald_claims_total");
        let writes = diff("herald_results_write_duration_seconds_count");
        Self {
            claims,
            deliveries_per_claim: diff("herald_claimed_deliveries_total") / claims.max(1.0),
            results_writes: writes,
            results_per_write: diff("herald_callback_attempt_duration_seconds_count")
                / writes.max(1.0),
        }
    }
}

/// One unlabelled value of Prometheus text, 0 if absent.
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

impl Stages {
    /// Reads the means from Prometheus text (`_sum` / `_count` of each histogram).
    fn from_metrics(text: &str) -> Stages {
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let mean_ms = |histogram: &str| {
            let count = value(&format!("{histogram}_count"));
            if count > 0.0 {
                1000.0 * value(&format!("{histogram}_sum")) / count
            } else {
                0.0
            }
        };
        // The first bucket whose cumulative count reaches 99% of the observations.
        let p99_within_ms = |histogram: &str| {
            let count = value(&format!("{histogram}_count"));
            let prefix = format!("{histogram}_bucket{{le=\"");
            text.lines()
                .filter_map(|l| {
                    let (upper, cumulative) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
                    Some((
                        upper.parse::<f64>().ok()?,
                        cumulative.trim().parse::<f64>().ok()?,
                    ))
                })
                .find(|(_, cumulative)| count > 0.0 && *cumulative >= 0.99 * count)
                .map_or(0.0, |(upper, _)| 1000.0 * upper)
        };
        let claims = value("herald_claims_total");
        Stages {
            instance_write_p99_within_ms: p99_within_ms("herald_instance_write_duration_seconds"),
            claim_p99_within_ms: p99_within_ms("herald_claim_duration_seconds"),
            results_write_p99_within_ms: p99_within_ms("herald_results_write_duration_seconds"),
            instance_write_ms: mean_ms("herald_instance_write_duration_seconds"),
            claim_ms: mean_ms("herald_claim_duration_seconds"),
            claims,
            deliveries_per_claim: if claims > 0.0 {
                value("herald_claimed_deliveries_total") / claims
            } else {
                0.0
            },
            attempt_ms: mean_ms("herald_callback_attempt_duration_seconds"),
            results_write_ms: mean_ms("herald_results_write_duration_seconds"),
        }
    }

    fn line(&self) -> String {
        format!(
            "stages (mean): instance write {:.2} ms, claim {:.2} ms ({:.0} claims, {:.1} deliveries each), attempt {:.2} ms, results write {:.2} ms; \
             p99 within: instance write {} ms, claim {} ms, results write {} ms",
            self.instance_write_ms,
            self.claim_ms,
            self.claims,
            self.deliveries_per_claim,
            self.attempt_ms,
            self.results_write_ms,
            self.instance_write_p99_within_ms,
            self.claim_p99_within_ms,
            self.results_write_p99_within_ms
        )
    }
}

#[derive(Default)]
struct Arrivals {
    /// (path, instanceID, eventType, arrival in Unix µs)
    list: Mutex<Vec<(String, String, String, u64)>>,
    count: AtomicUsize,
    down: AtomicBool,
}

impl Arrivals {
    /// Forgets every callback, for the next scenario.
    fn reset(&self) {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.count.store(0, Ordering::Relaxed);
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn receive(State(state): State<Arc<Arrivals>>, request: Request) -> axum::http::StatusCode {
    let at = now_micros();
    let path = request.uri().path().to_owned();
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    if state.down.load(Ordering::Relaxed) {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    if !path.starts_with("/ceiling") {
        let query = request.uri().query().unwrap_or_default();
        let mut id = String::new();
        let mut event = String::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "instanceID" => id = v.into_owned(),
                "eventType" => event = v.into_owned(),
                _ => {}
            }
        }
        state
            .list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path, id, event, at));
    }
    state.count.fetch_add(1, Ordering::Relaxed);
    axum::http::StatusCode::OK
}

/// A node under measurement and its database.
struct Node {
    node: herald_testkit::Node,
    db: FreshDatabase,
}

/// With `defaults`, the node keeps its shipped concurrency limits; otherwise they are raised
/// (256 in flight, 64 per host) so that scenarios 1–7 measure the engine rather than the limits.
async fn start_herald(
    options: &BenchOptions,
    pg_admin: &Option<String>,
    defaults: bool,
) -> anyhow::Result<Node> {
    start_herald_with(options, pg_admin, defaults, &[]).await
}

/// [`start_herald`] with `extra` flags after the others.
async fn start_herald_with(
    options: &BenchOptions,
    pg_admin: &Option<String>,
    defaults: bool,
    extra: &[&str],
) -> anyhow::Result<Node> {
    let db = match pg_admin {
        None => FreshDatabase::sqlite()?,
        Some(admin) => FreshDatabase::postgres(admin, "herald_bench")
            .await
            .context("connecting to PostgreSQL")?,
    };
    // Quiet unless asked: `HERALD_BENCH_LOG=warn` shows the node's warnings while measuring.
    let log = std::env::var("HERALD_BENCH_LOG").unwrap_or_else(|_| "error".to_owned());
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        db.url(),
        "--allow-private-network",
        "--callback-timeout",
        "10",
    ];
    if !defaults {
        args.extend(["--max-in-flight", "256", "--max-per-host", "64"]);
    }
    args.extend(extra);
    let node = herald_testkit::spawn_node(
        &options.herald,
        &args,
        &[("HERALD_ADMIN_TOKEN", TOKEN), ("RUST_LOG", &log)],
    )
    .await?;
    Ok(Node { node, db })
}

/// The CPU a node (and PostgreSQL's server) used from [`CpuMeter::start`] on. The whole is read
/// before the threads at the start and after them at the end, so the split by thread never
/// comes out above the whole.
struct CpuMeter {
    pid: String,
    whole: f64,
    database: f64,
    threads: BTreeMap<String, f64>,
}

impl CpuMeter {
    fn start(pid: u32) -> Self {
        let pid = pid.to_string();
        let (whole, database) = (cpu_secs(&pid), postgres_cpu_secs());
        let threads = thread_cpu_secs(&pid);
        Self {
            pid,
            whole,
            database,
            threads,
        }
    }

    /// Writes the CPU per event of `events` into `figures` (the server's with `database`).
    fn charge(&self, figures: &mut Figures, events: usize, database: bool) {
        if events == 0 {
            return;
        }
        let per_event = |secs: f64| 1e6 * secs / events as f64;
        let threads = thread_cpu_secs(&self.pid);
        figures.herald_cpu_us_per_event = per_event(cpu_secs(&self.pid) - self.whole);
        figures.herald_threads_cpu_us_per_event = threads
            .into_iter()
            .map(|(name, secs)| {
                let before = self.threads.get(&name).copied().unwrap_or(0.0);
                (name, per_event(secs - before))
            })
            .filter(|(_, us)| *us >= 0.5)
            .collect();
        if database {
            figures.database_cpu_us_per_event = per_event(postgres_cpu_secs() - self.database);
        }
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// CPU seconds used so far by each named kind of thread of a process (threads are grouped by
/// name: Herald's SQLite writer, the async runtime's workers, sqlx's connection threads...).
/// A thread that has ended no longer counts, so this is read while the node runs.
fn thread_cpu_secs(pid: &str) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let secs = stat_cpu_secs(&path.join("stat").to_string_lossy());
        *by_name.entry(name.trim().to_owned()).or_insert(0.0) += secs;
    }
    by_name
}

/// The user and system CPU seconds in a `/proc/.../stat` file; zero if it cannot be read.
fn stat_cpu_secs(path: &str) -> f64 {
    // USER_HZ, the unit of these fields, is 100 on every Linux architecture Herald targets.
    const TICKS_PER_SEC: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the state.
    (ticks(11) + ticks(12)) / TICKS_PER_SEC
}

/// CPU seconds used so far by every PostgreSQL server process on this machine (the benchmark
/// runs alone on it, so they serve Herald's node).
fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .map(|pid| cpu_secs(&pid))
        .sum()
}

/// Peak resident memory of a process, from the kernel's high-water mark.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn database_mib(node: &Node) -> f64 {
    match &node.db {
        FreshDatabase::Sqlite { path, .. } => {
            let mut total = 0u64;
            for suffix in ["", "-wal", "-shm"] {
                total += std::fs::metadata(format!("{}{suffix}", path.display()))
                    .map(|m| m.len())
                    .unwrap_or(0);
            }
            total as f64 / 1_048_576.0
        }
        FreshDatabase::Postgres { admin, name, .. } => {
            let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(admin).await
            else {
                return 0.0;
            };
            let size: Option<i64> = sqlx::query_scalar("SELECT pg_database_size($1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .ok();
            size.unwrap_or(0) as f64 / 1_048_576.0
        }
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    /// Saves `urls` for `created` (the other events off) and creates the process `bench`.
    /// The node's metrics as text, or nothing if the scrape failed.
    async fn metrics_text(&self) -> String {
        match self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn configure(&self, urls: &[String]) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::PUT,
            "/api/v1/webhooks",
            serde_json::json!({
                "created": {"enabled": true, "urls": urls},
                "updated": {"enabled": false, "urls": []},
                "deleted": {"enabled": false, "urls": []},
            }),
        )
        .await?;
        self.send(
            reqwest::Method::POST,
            "/api/v1/processes",
            serde_json::json!({"name": "bench", "title": "Bench"}),
        )
        .await?;
        Ok(())
    }

    /// The value of an unlabelled metric in the node's `/metrics`.
    async fn gauge(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// Creates `events` instances with `CONCURRENCY` requests in flight (or at `rate` per second),
/// and returns each instance's commit time (its `createdAt`, Unix µs) and the API rate.
async fn drive(
    api: &Arc<Api>,
    events: usize,
    rate: Option<f64>,
) -> anyhow::Result<(HashMap<String, u64>, f64)> {
    drive_within(api, events, rate, None).await
}

/// Creates instances as fast as the API takes them until `until`; as [`drive`] returns.
async fn drive_until(
    api: &Arc<Api>,
    until: Instant,
) -> anyhow::Result<(HashMap<String, u64>, f64)> {
    drive_within(api, usize::MAX, None, Some(until)).await
}

async fn drive_within(
    api: &Arc<Api>,
    events: usize,
    rate: Option<f64>,
    until: Option<Instant>,
) -> anyhow::Result<(HashMap<String, u64>, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (api, next) = (Arc::clone(api), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                if until.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    break;
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = api
                    .send(
                        reqwest::Method::POST,
                        "/api/v1/processes/bench/instances",
                        serde_json::json!({"data": {"i": i}}),
                    )
                    .await?;
                let id = body["id"].as_str().unwrap_or_default().to_owned();
                let at = herald::domain::Millis::parse_rfc3339(
                    body["createdAt"].as_str().unwrap_or_default(),
                )
                .map(|m| m.0 as u64 * 1000)
                .unwrap_or(0);
                mine.push((id, at));
            }
            Ok::<_, anyhow::Error>(mine)
        }));
    }
    let mut commits = HashMap::new();
    for t in tasks {
        commits.extend(t.await??);
    }
    let accepted = commits.len() as f64 / started.elapsed().as_secs_f64();
    Ok((commits, accepted))
}

async fn wait_for(arrivals: &Arrivals, count: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while arrivals.count.load(Ordering::Relaxed) < count {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Fills latency and rate figures from what the receiver saw on `path`.
fn summarise(
    figures: &mut Figures,
    arrivals: &Arrivals,
    path: &str,
    commits: &HashMap<String, u64>,
    since_micros: u64,
) {
    let list = arrivals.list.lock().unwrap_or_else(|p| p.into_inner());
    let mine: Vec<&(String, String, String, u64)> =
        list.iter().filter(|(p, ..)| p.starts_with(path)).collect();
    let mut latencies: Vec<f64> = mine
        .iter()
        .filter_map(|(_, id, _, at)| {
            commits
                .get(id)
                .map(|c| (at.saturating_sub(*c)) as f64 / 1000.0)
        })
        .collect();
    // `HERALD_BENCH_TRACE=FILE` appends each callback's arrival (ms since the scenario began)
    // and latency, to see when in a run the slow ones came.
    if let Ok(path) = std::env::var("HERALD_BENCH_TRACE") {
        let mut lines = String::new();
        for (_, id, _, at) in &mine {
            if let Some(c) = commits.get(id) {
                lines.push_str(&format!(
                    "{}\t{:.1}\t{:.2}\n",
                    figures.scenario,
                    at.saturating_sub(since_micros) as f64 / 1000.0,
                    at.saturating_sub(*c) as f64 / 1000.0
                ));
            }
        }
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = file.write_all(lines.as_bytes());
        }
    }
    latencies.sort_by(f64::total_cmp);
    figures.callbacks = mine.len();
    let last = mine
        .iter()
        .map(|(.., at)| *at)
        .max()
        .unwrap_or(since_micros);
    let span = (last.saturating_sub(since_micros)) as f64 / 1e6;
    figures.callbacks_per_sec = if span > 0.0 {
        mine.len() as f64 / span
    } else {
        0.0
    };
    figures.latency_ms_p50 = percentile(&latencies, 50.0);
    figures.latency_ms_p95 = percentile(&latencies, 95.0);
    figures.latency_ms_p99 = percentile(&latencies, 99.0);
    figures.latency_ms_max = latencies.last().copied().unwrap_or(0.0);
}

/// One scenario's shape: `urls` paths per event, `events` creates, an optional rate, whether
/// the receiver is down while they queue, and whether callbacks are counted at every URL
/// (fan-out) or at the first one only.
#[derive(Clone, Copy)]
struct Plan<'a> {
    name: &'a str,
    urls: &'a [&'a str],
    events: usize,
    rate: Option<f64>,
    backlog: bool,
    every_url: bool,
}

/// Paths served on the receiver's second port, as a second receiving service would be: a host
/// of their own, with their own per-host cap.
const SECOND_HOST: [&str; 2] = ["/hang", "/two"];

/// Where scenarios run: the options, the PostgreSQL server if any, and the receiver.
struct Bench<'a> {
    options: &'a BenchOptions,
    pg_admin: &'a Option<String>,
    receiver: &'a (String, String),
    arrivals: &'a Arc<Arrivals>,
}

/// Runs one scenario on a fresh node with its limits raised.
async fn scenario(bench: &Bench<'_>, plan: Plan<'_>) -> anyhow::Result<Figures> {
    scenario_with(bench, plan, false).await
}

/// Runs one scenario on a fresh node, with its shipped limits when `defaults`.
async fn scenario_with(
    bench: &Bench<'_>,
    plan: Plan<'_>,
    defaults: bool,
) -> anyhow::Result<Figures> {
    let Bench {
        options,
        pg_admin,
        receiver,
        arrivals,
    } = *bench;
    let Plan {
        name,
        urls,
        events,
        rate,
        backlog,
        every_url,
    } = plan;
    arrivals.reset();
    let mut node = start_herald(options, pg_admin, defaults).await?;
    let api = Arc::new(Api::new(&node.node.base));
    let list: Vec<String> = urls
        .iter()
        .map(|p| {
            if SECOND_HOST.contains(p) {
                format!("{}{p}", receiver.1)
            } else {
                format!("{}{p}", receiver.0)
            }
        })
        .collect();
    api.configure(&list).await?;
    arrivals.down.store(backlog, Ordering::Relaxed);
    let cpu = CpuMeter::start(node.node.pid);
    let start = now_micros();
    let (commits, api_rate) = drive(&api, events, rate).await?;
    let fast: Vec<&&str> = urls.iter().filter(|u| **u != "/hang").collect();
    let expected = events * fast.len();
    let mut figures = Figures {
        scenario: name.to_owned(),
        api_ops_per_sec: api_rate,
        ..Default::default()
    };
    // The drain's own CPU and stages: from the moment the receiver comes back.
    let drain_cpu = backlog.then(|| CpuMeter::start(node.node.pid));
    let before_drain = if backlog {
        api.metrics_text().await
    } else {
        String::new()
    };
    if backlog {
        arrivals.down.store(false, Ordering::Relaxed);
    }
    let limit = Duration::from_secs(if options.quick { 150 } else { 1800 });
    if !wait_for(arrivals, expected, limit).await {
        figures.note = format!(
            "only {} of {expected} callbacks arrived in time",
            arrivals.count.load(Ordering::Relaxed)
        );
    }
    cpu.charge(&mut figures, events, pg_admin.is_some());
    if let Some(drain_cpu) = drain_cpu {
        let mut drain = Figures::default();
        drain_cpu.charge(&mut drain, expected, pg_admin.is_some());
        figures.drain_cpu_us_per_callback = Some((
            drain.herald_cpu_us_per_event,
            drain.database_cpu_us_per_event,
        ));
    }
    // A backlog drains from the first callback that got through after the receiver came back
    // (the circuit breaker's probe); other scenarios count from the first API call.
    let since = if backlog {
        let list = arrivals.list.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().map(|(.., at)| *at).min().unwrap_or(start)
    } else {
        start
    };
    summarise(
        &mut figures,
        arrivals,
        fast.first().map_or("/", |p| **p),
        &commits,
        since,
    );
    if every_url {
        figures.callbacks = arrivals.count.load(Ordering::Relaxed);
        let last = arrivals
            .list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(.., at)| *at)
            .max()
            .unwrap_or(since);
        let span = (last.saturating_sub(since)) as f64 / 1e6;
        figures.callbacks_per_sec = figures.callbacks as f64 / span.max(1e-9);
    }
    figures.peak_rss_mib = peak_rss_mib(node.node.pid);
    if let Ok(r) = api
        .http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        && let Ok(text) = r.text().await
    {
        figures.stages = Stages::from_metrics(&text);
        if backlog {
            figures.drain_stages = Some(DrainStages::between(&before_drain, &text));
        }
        figures.final_host_limit = text
            .lines()
            .filter_map(|l| l.strip_prefix("herald_host_concurrency_limit{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
    }
    figures.database_mib = database_mib(&node).await;
    // Progress on stderr, so a long run that is stopped still shows what it measured.
    eprintln!(
        "{name}: {:.0} API op/s, {:.0} callbacks/s, p50/p95/p99 {:.1}/{:.1}/{:.1} ms, peak RSS {:.1} MiB, {}",
        figures.api_ops_per_sec,
        figures.callbacks_per_sec,
        figures.latency_ms_p50,
        figures.latency_ms_p95,
        figures.latency_ms_p99,
        figures.peak_rss_mib,
        figures.note
    );
    let threads: Vec<String> = figures
        .herald_threads_cpu_us_per_event
        .iter()
        .map(|(name, us)| format!("{name} {us:.0}"))
        .collect();
    eprintln!(
        "  CPU per event: Herald {:.0} µs ({}), database server {:.0} µs",
        figures.herald_cpu_us_per_event,
        threads.join(", "),
        figures.database_cpu_us_per_event
    );
    eprintln!("  {}", figures.stages.line());
    let _ = node.node.child.kill().await;
    drop(node);
    Ok(figures)
}

/// The bare-client ceiling: GETs to the receiver with keep-alive, as many in flight as Herald
/// is allowed to one host in the scenarios (64).
async fn ceiling(receiver: &str, requests: usize) -> f64 {
    bare_gets(receiver, requests, 64).await
}

/// A bare keep-alive client sending `requests` GETs to the receiver, `connections` at once:
/// GETs per second.
async fn bare_gets(receiver: &str, requests: usize, connections: usize) -> f64 {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (http, next, url) = (
            http.clone(),
            Arc::clone(&next),
            format!("{receiver}/ceiling?instanceID=x&processName=y&eventType=created"),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let _ = http.get(&url).send().await.map(|r| r.status());
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    requests as f64 / started.elapsed().as_secs_f64()
}

/// The bare cost of the request that starts an event: the benchmark's own API client (same
/// concurrency, same JSON body, same token) posting to the receiver, which answers at once. No
/// server can take API requests faster than this client can send them to a server that does
/// nothing.
async fn bare_posts(receiver: &str, requests: usize) -> f64 {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, next, url) = (
            http.clone(),
            Arc::clone(&next),
            format!("{receiver}/ceiling-post"),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let _ = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"data": {"i": i}}))
                    .send()
                    .await
                    .map(|r| r.status());
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    requests as f64 / started.elapsed().as_secs_f64()
}

/// Runs every scenario and prints the table (and writes JSON when asked).
pub async fn run(options: BenchOptions) -> anyhow::Result<Vec<Figures>> {
    herald::startup::install_tls_provider();
    let pg_admin = options
        .database
        .clone()
        .filter(|d| d.starts_with("postgres"));
    let arrivals = Arc::new(Arrivals::default());
    let mut addresses = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addresses.push(format!("http://{}", listener.local_addr()?));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&arrivals));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    let receiver = (addresses[0].clone(), addresses[1].clone());

    let q = options.quick;
    let n = |full: usize, quick: usize| if q { quick } else { full };
    let ceiling_rate = ceiling(&receiver.0, n(100_000, 5_000)).await;
    // Every event costs at least one bare request in and one bare GET out on the same two
    // cores, so end to end no webhook server can beat this bound, database or not.
    let post_rate = bare_posts(&receiver.0, n(100_000, 5_000)).await;
    let bound = 1.0 / (1.0 / ceiling_rate + 1.0 / post_rate);
    let ten: Vec<String> = (0..10).map(|i| format!("/fan{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    let bench = Bench {
        options: &options,
        pg_admin: &pg_admin,
        receiver: &receiver,
        arrivals: &arrivals,
    };
    let mut all = Vec::new();
    let want = |n: u8| options.only.is_empty() || options.only.contains(&n);
    let steady = Plan {
        name: "1 steady (latency)",
        urls: &["/one"],
        events: n(30_000, 400),
        rate: Some(if q { 200.0 } else { 1000.0 }),
        backlog: false,
        every_url: false,
    };
    // Scenario 6 is judged against scenario 1, when it ran.
    let mut latency: Option<Figures> = None;
    if want(1) {
        let figures = scenario(&bench, steady).await?;
        all.push(figures.clone());
        latency = Some(figures);
    }
    // Scenarios 4 and 5 are judged against scenario 2's throughput, when it ran.
    let mut throughput: Option<Figures> = None;
    if want(2) {
        let mut figures = scenario(
            &bench,
            Plan {
                name: "2 throughput",
                urls: &["/one"],
                events: n(100_000, 2_000),
                rate: None,
                backlog: false,
                every_url: false,
            },
        )
        .await?;
        figures.note = format!(
            "{:.0}% of the bare-client ceiling, {:.0}% of the bound",
            100.0 * figures.callbacks_per_sec / ceiling_rate,
            100.0 * figures.callbacks_per_sec / bound
        );
        all.push(figures.clone());
        throughput = Some(figures);
    }
    let against_scenario_2 = |rate: f64| match &throughput {
        Some(two) => format!(
            "{:.0}% of scenario 2's throughput",
            100.0 * rate / two.callbacks_per_sec.max(1e-9)
        ),
        None => "scenario 2 not run: no ratio".to_owned(),
    };
    if want(3) {
        all.push(
            scenario(
                &bench,
                Plan {
                    name: "3 fan-out x10",
                    urls: &ten,
                    events: n(10_000, 200),
                    rate: None,
                    backlog: false,
                    every_url: true,
                },
            )
            .await?,
        );
    }
    let isolation_plan = Plan {
        name: "4 isolation (fast + hanging)",
        urls: &["/fast", "/hang"],
        events: n(100_000, 2_000),
        rate: None,
        backlog: false,
        every_url: false,
    };
    let mut isolation_rate: Option<f64> = None;
    if want(4) {
        let mut isolation = scenario(&bench, isolation_plan).await?;
        isolation_rate = Some(isolation.callbacks_per_sec);
        isolation.note = against_scenario_2(isolation.callbacks_per_sec);
        // Rates move by tens of percent between runs on a shared machine; CPU time per event
        // moves far less, so the ratio of the two scenarios' costs is printed beside it.
        if let Some(two) = &throughput {
            let cost = |f: &Figures| f.herald_cpu_us_per_event + f.database_cpu_us_per_event;
            if cost(&isolation) > 0.0 {
                isolation.note = format!(
                    "{}; in CPU per event {:.0}%",
                    isolation.note,
                    100.0 * cost(two) / cost(&isolation)
                );
            }
        }
        all.push(isolation);
    }
    let backlog_plan = Plan {
        name: "5 backlog x10 (down, then up)",
        urls: &ten,
        events: n(100_000, 200),
        rate: None,
        backlog: true,
        every_url: true,
    };
    if want(5) {
        let mut backlog = scenario(&bench, backlog_plan).await?;
        backlog.note = format!(
            "drain from receiver-up; {} ({})",
            backlog.note,
            against_scenario_2(backlog.callbacks_per_sec)
        );
        all.push(backlog);
    }
    // Isolation below saturation: scenario 1's steady rate with scenario 4's two URLs. Scenario 4
    // runs as fast as the machine allows, so there the hanging URL's share of the CPU (its
    // delivery rows) lowers the event rate itself; here the rate is fixed, and what the fast URL
    // receives, and how late, shows only whether the hanging one gets in its way.
    if want(6) {
        let mut steady_isolation = scenario(
            &bench,
            Plan {
                name: "6 steady isolation (fast+hang)",
                urls: &["/fast", "/hang"],
                ..steady
            },
        )
        .await?;
        if let Some(one) = &latency {
            steady_isolation.note = format!(
                "{:.0}% of scenario 1's callbacks/s; p99 {:.1} ms against {:.1}",
                100.0 * steady_isolation.callbacks_per_sec / one.callbacks_per_sec.max(1e-9),
                steady_isolation.latency_ms_p99,
                one.latency_ms_p99
            );
        } else {
            steady_isolation.note = "scenario 1 not run: no ratio".to_owned();
        }
        all.push(steady_isolation);
    }
    // The control for scenario 4: the same, with a second URL that answers at once. What the
    // first URL loses here is the cost of a second URL per event as such; scenario 4 losing no
    // more than this means the hanging URL costs no more than a healthy one.
    if want(7) {
        let mut control = scenario(
            &bench,
            Plan {
                name: "7 control: fast + fast",
                urls: &["/one", "/two"],
                ..isolation_plan
            },
        )
        .await?;
        control.note = format!(
            "first URL: {}",
            against_scenario_2(control.callbacks_per_sec)
        );
        if let Some(four) = isolation_rate {
            control.note = format!(
                "{}; scenario 4's fast URL got {:.0}% of this",
                control.note,
                100.0 * four / control.callbacks_per_sec.max(1e-9)
            );
        }
        all.push(control);
    }
    let burst_length = Duration::from_secs(if q { 2 } else { 20 });
    if want(8) {
        all.push(burst::burst(&bench, burst::Shape::DEFAULTS, burst_length).await?);
    }
    let rate = if q { 500.0 } else { 5_000.0 };
    if want(9) {
        let length = Duration::from_secs(if q { 2 } else { 12 });
        all.push(capacity::capacity(&bench, false, rate, length).await?);
    }
    if want(10) {
        let length = Duration::from_secs(if q { 2 } else { 14 });
        all.push(capacity::capacity(&bench, true, rate, length).await?);
    }
    if want(11) {
        all.push(burst::burst(&bench, burst::Shape::SLOW_WORKER, burst_length).await?);
    }
    if want(12) {
        all.push(burst::burst(&bench, burst::Shape::SLOW_WORKER_UNPACED, burst_length).await?);
    }
    // A backlog to one receiver drained with the shipped limits, against a bare client with as
    // many connections as Herald's limit for the host ended at (issue 18's 60% target).
    if want(13) {
        let mut drain = scenario_with(
            &bench,
            Plan {
                name: "13 drain to one, defaults",
                urls: &["/one"],
                events: n(100_000, 2_000),
                rate: None,
                backlog: true,
                every_url: false,
            },
            true,
        )
        .await?;
        let connections = drain.final_host_limit.max(1);
        let bare = bare_gets(&receiver.0, n(50_000, 5_000), connections).await;
        let (herald_cpu, server_cpu) = drain.drain_cpu_us_per_callback.unwrap_or_default();
        let stages = drain.drain_stages.clone().unwrap_or_default();
        drain.note = format!(
            "drain from receiver-up; {}; limit at the end {connections}: {:.0}% of a bare client with as many connections ({bare:.0} GET/s); in the drain: CPU per callback Herald {herald_cpu:.0} µs, database server {server_cpu:.0} µs; {:.0} claims of {:.1}, {:.0} results writes of {:.1}",
            drain.note,
            100.0 * drain.callbacks_per_sec / bare.max(1e-9),
            stages.claims,
            stages.deliveries_per_claim,
            stages.results_writes,
            stages.results_per_write,
        );
        eprintln!("{}: {}", drain.scenario, drain.note);
        all.push(drain);
    }

    println!("bare-client ceiling: {ceiling_rate:.0} GET/s (64 in flight, keep-alive)");
    println!(
        "bare API-request rate: {post_rate:.0} POST/s ({CONCURRENCY} in flight); bound for one request in + one GET out with no work between: {bound:.0} events/s = {:.0}% of the ceiling",
        100.0 * bound / ceiling_rate
    );
    println!(
        "{:<32} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}  note",
        "scenario",
        "api op/s",
        "callback/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "RSS MiB",
        "DB MiB",
        "CPU µs/ev",
        "DB µs/ev"
    );
    for f in &all {
        println!(
            "{:<32} {:>9.0} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.0} {:>9.0}  {}",
            f.scenario,
            f.api_ops_per_sec,
            f.callbacks_per_sec,
            f.latency_ms_p50,
            f.latency_ms_p95,
            f.latency_ms_p99,
            f.latency_ms_max,
            f.peak_rss_mib,
            f.database_mib,
            f.herald_cpu_us_per_event,
            f.database_cpu_us_per_event,
            f.note
        );
    }
    if let Some(path) = &options.json {
        let doc = serde_json::json!({
            "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "database": if pg_admin.is_some() { "postgres" } else { "sqlite" },
            "quick": options.quick,
            "ceiling_get_per_sec": ceiling_rate,
            "bare_post_per_sec": post_rate,
            "bound_events_per_sec": bound,
            "scenarios": all,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::Stages;

    #[test]
    fn stage_means_are_read_from_the_metrics_text() {
        let text = "\
# TYPE herald_claim_duration_seconds histogram
herald_claim_duration_seconds_bucket{le=\"0.001\"} 3
herald_claim_duration_seconds_bucket{le=\"0.0025\"} 3
herald_claim_duration_seconds_bucket{le=\"0.005\"} 4
herald_claim_duration_seconds_bucket{le=\"+Inf\"} 4
herald_claim_duration_seconds_sum 0.008
herald_claim_duration_seconds_count 4
herald_claims_total 4
herald_claimed_deliveries_total 10
herald_results_write_duration_seconds_sum 0
herald_results_write_duration_seconds_count 0
";
        let stages = Stages::from_metrics(text);
        assert!((stages.claim_ms - 2.0).abs() < 1e-9);
        assert!((stages.claims - 4.0).abs() < 1e-9);
        assert!((stages.deliveries_per_claim - 2.5).abs() < 1e-9);
        // No samples (or no such metric): zero, not a division by zero.
        assert_eq!(stages.results_write_ms, 0.0);
        assert_eq!(stages.instance_write_ms, 0.0);
        // 3 of 4 claims within 1 ms is 75%: the 99th percentile is in the 5 ms bucket.
        assert_eq!(stages.claim_p99_within_ms, 5.0);
        assert_eq!(stages.results_write_p99_within_ms, 0.0);
    }
}
