//! Scenarios 9 and 10: a receiver with a capacity, as a real service has one (a pool of
//! workers, each taking 50 ms a request), and Herald with its default settings sending it more
//! than it can take. Scenario 9: the receiver queues what it cannot serve at once, so its
//! answers slow down; how soon does Herald's concurrency reach 80% of the capacity, and does it
//! stay there? Scenario 10: the receiver sheds what it cannot serve with `503`, and its capacity
//! drops to a tenth part way; how many more requests than it answered well does it get in the
//! following 5 s?

use super::{Api, Bench, Figures, start_herald};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each request takes the receiver this long.
const SERVICE: Duration = Duration::from_millis(50);
/// Requests it serves at once (scenario 9, and 10 before its drop).
const CAPACITY: usize = 200;

/// What the capacity scenarios measured beyond the common figures.
#[derive(Debug, Clone, serde::Serialize, Default)]
pub struct CapacityFigures {
    pub capacity: usize,
    /// From the first callback until the receiver first had 80% of its capacity busy.
    pub seconds_to_80_percent: Option<f64>,
    /// The receiver's mean busy share from then until the burst ended.
    pub mean_busy_share: f64,
    /// Scenario 10: requests in the 5 s after the drop, and how many were answered well.
    pub after_drop_requests: usize,
    pub after_drop_served: usize,
}

/// The receiving service: `capacity` workers; beyond them a request waits (`shed` off) or is
/// answered `503` at once (`shed` on).
struct Service {
    capacity: AtomicUsize,
    shed: bool,
    busy: AtomicUsize,
    /// Workers, for the queueing receiver.
    workers: tokio::sync::Semaphore,
    /// Every answer: when the request arrived (since `start`) and its status.
    answers: Mutex<Vec<(Duration, u16)>>,
    start: Instant,
}

impl Service {
    fn new(shed: bool) -> Arc<Self> {
        Arc::new(Self {
            capacity: AtomicUsize::new(CAPACITY),
            shed,
            busy: AtomicUsize::new(0),
            workers: tokio::sync::Semaphore::new(CAPACITY),
            answers: Mutex::default(),
            start: Instant::now(),
        })
    }

    async fn answer(self: Arc<Self>) -> axum::http::StatusCode {
        let arrived = self.start.elapsed();
        let status = if self.shed {
            let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
            let status = if now > self.capacity.load(Ordering::SeqCst) {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                tokio::time::sleep(SERVICE).await;
                axum::http::StatusCode::OK
            };
            self.busy.fetch_sub(1, Ordering::SeqCst);
            status
        } else {
            let _worker = self.workers.acquire().await;
            self.busy.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(SERVICE).await;
            self.busy.fetch_sub(1, Ordering::SeqCst);
            axum::http::StatusCode::OK
        };
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((arrived, status.as_u16()));
        status
    }
}

async fn serve(service: &Arc<Service>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/service", listener.local_addr()?);
    let state = Arc::clone(service);
    let app = axum::Router::new().fallback(move || Arc::clone(&state).answer());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// Runs scenario 9 (`shed` off) or 10 (`shed` on): the API driven at `rate` creates per
/// second for `length`, more than the receiver's 4,000 a second.
pub async fn capacity(
    bench: &Bench<'_>,
    shed: bool,
    rate: f64,
    length: Duration,
) -> anyhow::Result<Figures> {
    let service = Service::new(shed);
    let url = serve(&service).await?;
    let mut node = start_herald(bench.options, bench.pg_admin, true).await?;
    let api = Arc::new(Api::new(&node.node.base));
    api.configure(&[url]).await?;

    // The receiver's busy workers, sampled every 50 ms; scenario 10 drops the capacity
    // halfway through the burst.
    let sampling = Arc::new(AtomicBool::new(true));
    let samples: Arc<Mutex<Vec<(Duration, usize)>>> = Arc::default();
    let dropped_at: Arc<Mutex<Option<Duration>>> = Arc::default();
    let sampler = tokio::spawn({
        let (service, sampling, samples, dropped_at) = (
            Arc::clone(&service),
            Arc::clone(&sampling),
            Arc::clone(&samples),
            Arc::clone(&dropped_at),
        );
        async move {
            let began = Instant::now();
            while sampling.load(Ordering::Relaxed) {
                let at = service.start.elapsed();
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at, service.busy.load(Ordering::SeqCst)));
                if shed && began.elapsed() >= length / 2 {
                    let mut dropped = dropped_at.lock().unwrap_or_else(|p| p.into_inner());
                    if dropped.is_none() {
                        service.capacity.store(CAPACITY / 10, Ordering::SeqCst);
                        *dropped = Some(at);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let events = (rate * length.as_secs_f64()) as usize;
    let (_, accepted) = super::drive(&api, events, Some(rate)).await?;
    let burst_end = service.start.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;

    let answers = service
        .answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let first = answers.iter().map(|(at, _)| *at).min().unwrap_or_default();
    let busy_target = CAPACITY * 8 / 10;
    let reached = samples
        .iter()
        .find(|(at, busy)| *at >= first && *busy >= busy_target)
        .map(|(at, _)| *at);
    let until = (*dropped_at.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or(burst_end);
    let steady: Vec<usize> = samples
        .iter()
        .filter(|(at, _)| reached.is_some_and(|r| *at >= r) && *at <= until)
        .map(|(_, busy)| *busy)
        .collect();
    let mean_busy = if steady.is_empty() {
        0.0
    } else {
        steady.iter().sum::<usize>() as f64 / steady.len() as f64
    };
    let mut figures = Figures {
        scenario: if shed {
            "10 receiver sheds load (503)".to_owned()
        } else {
            "9 receiver of capacity 200".to_owned()
        },
        api_ops_per_sec: accepted,
        callbacks: answers.iter().filter(|(_, s)| *s == 200).count(),
        ..Default::default()
    };
    let span = burst_end.saturating_sub(first).as_secs_f64();
    figures.callbacks_per_sec = figures.callbacks as f64 / span.max(1e-9);
    let mut capacity = CapacityFigures {
        capacity: CAPACITY,
        seconds_to_80_percent: reached.map(|r| r.saturating_sub(first).as_secs_f64()),
        mean_busy_share: mean_busy / CAPACITY as f64,
        ..Default::default()
    };
    figures.note = match capacity.seconds_to_80_percent {
        Some(s) => format!(
            "80% of capacity busy {s:.1} s after the first callback; {:.0}% busy on average then",
            100.0 * capacity.mean_busy_share
        ),
        None => "never reached 80% of capacity".to_owned(),
    };
    if let Some(drop) = *dropped_at.lock().unwrap_or_else(|p| p.into_inner()) {
        let window = |at: &Duration| *at >= drop && *at < drop + Duration::from_secs(5);
        capacity.after_drop_requests = answers.iter().filter(|(at, _)| window(at)).count();
        capacity.after_drop_served = answers
            .iter()
            .filter(|(at, s)| window(at) && *s == 200)
            .count();
        figures.note = format!(
            "{}; in the 5 s after capacity fell to {}: {} requests for {} served ({:.0}% more)",
            figures.note,
            CAPACITY / 10,
            capacity.after_drop_requests,
            capacity.after_drop_served,
            100.0
                * (capacity.after_drop_requests as f64 / capacity.after_drop_served.max(1) as f64
                    - 1.0)
        );
    }
    figures.capacity = Some(capacity);
    figures.peak_rss_mib = super::peak_rss_mib(node.node.pid);
    eprintln!("{}: {}", figures.scenario, figures.note);
    let _ = node.node.child.kill().await;
    drop(node);
    Ok(figures)
}
