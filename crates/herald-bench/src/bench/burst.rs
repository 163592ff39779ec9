//! Scenario 8: a burst as fast as the API takes it, for a fixed time, to one receiver, with
//! Herald's default settings (its per-host concurrency as shipped). What a receiving team sees:
//! callbacks per second during the burst against the API's accepted rate, how long after the
//! burst the last callback arrives (the drain lag), and a bare keep-alive client with as many
//! connections as Herald used at most, in the same run.
//!
//! Scenarios 11 and 12: the same burst with the worker made the bottleneck on purpose (8
//! callbacks in flight on the node, as the per-host cap was before issue 18), with the shipped
//! backpressure (11) and with it off (12): the two sides of decision 0011.

use super::{Api, Bench, Figures, bare_gets, now_micros, start_herald_with, summarise};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a burst measured beyond the common figures.
#[derive(Debug, Clone, serde::Serialize, Default)]
pub struct BurstFigures {
    /// Creates the API accepted per second while it was driven.
    pub accepted_per_sec: f64,
    /// Callbacks that arrived while the API was driven, per second of the burst.
    pub callbacks_during_per_sec: f64,
    /// From the end of the burst to the last callback's arrival.
    pub drain_lag_s: f64,
    /// Most callbacks Herald had in flight at once (sampled from its metrics).
    pub peak_in_flight: usize,
    /// A bare keep-alive client with `peak_in_flight` connections, GETs per second.
    pub bare_same_connections_per_sec: f64,
    /// Instance writes that waited for the worker (backpressure), and their wait in all.
    pub writes_paced: f64,
    pub write_pacing_s: f64,
}

/// Which burst: its name and the flags the node gets beyond its defaults.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    name: &'static str,
    flags: &'static [&'static str],
}

impl Shape {
    pub const DEFAULTS: Self = Self {
        name: "8 burst, default settings",
        flags: &[],
    };
    pub const SLOW_WORKER: Self = Self {
        name: "11 burst, slow worker, paced",
        flags: &["--max-in-flight", "8"],
    };
    pub const SLOW_WORKER_UNPACED: Self = Self {
        name: "12 burst, slow worker, unpaced",
        flags: &["--max-in-flight", "8", "--backpressure-lag", "off"],
    };
}

/// Runs the burst for `length` on a fresh node with default settings and `shape`'s flags.
pub async fn burst(bench: &Bench<'_>, shape: Shape, length: Duration) -> anyhow::Result<Figures> {
    let arrivals = bench.arrivals;
    arrivals.reset();
    let mut node = start_herald_with(bench.options, bench.pg_admin, true, shape.flags).await?;
    let api = Arc::new(Api::new(&node.node.base));
    api.configure(&[format!("{}/one", bench.receiver.0)])
        .await?;
    let cpu = super::CpuMeter::start(node.node.pid);

    // The in-flight gauge, sampled while the burst runs and until it has drained.
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn({
        let (api, sampling, peak) = (Arc::clone(&api), Arc::clone(&sampling), Arc::clone(&peak));
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(n) = api.gauge("herald_callbacks_in_flight").await {
                    peak.fetch_max(n as usize, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let start = now_micros();
    let until = Instant::now() + length;
    let (commits, accepted) = super::drive_until(&api, until).await?;
    let burst_end = now_micros();
    let events = commits.len();
    let limit = Duration::from_secs(if bench.options.quick { 150 } else { 1800 });
    let mut figures = Figures {
        scenario: shape.name.to_owned(),
        api_ops_per_sec: accepted,
        ..Default::default()
    };
    if !super::wait_for(arrivals, events, limit).await {
        figures.note = format!(
            "only {} of {events} callbacks arrived in time",
            arrivals.count.load(Ordering::Relaxed)
        );
    }
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let writes_paced = api.gauge("herald_writes_paced_total").await.unwrap_or(0.0);
    let write_pacing_s = api
        .gauge("herald_write_pacing_seconds_total")
        .await
        .unwrap_or(0.0);
    cpu.charge(&mut figures, events, bench.pg_admin.is_some());
    let (during, last) = {
        let list = arrivals.list.lock().unwrap_or_else(|p| p.into_inner());
        let during = list.iter().filter(|(.., at)| *at <= burst_end).count();
        let last = list.iter().map(|(.., at)| *at).max().unwrap_or(burst_end);
        (during, last)
    };
    summarise(&mut figures, arrivals, "/one", &commits, start);
    figures.peak_rss_mib = super::peak_rss_mib(node.node.pid);
    figures.database_mib = super::database_mib(&node).await;
    let burst_secs = (burst_end.saturating_sub(start)) as f64 / 1e6;
    let connections = peak.load(Ordering::Relaxed).max(1);
    let bare = bare_gets(&bench.receiver.0, 20_000, connections).await;
    let burst = BurstFigures {
        accepted_per_sec: accepted,
        callbacks_during_per_sec: during as f64 / burst_secs.max(1e-9),
        drain_lag_s: (last.saturating_sub(burst_end)) as f64 / 1e6,
        peak_in_flight: connections,
        bare_same_connections_per_sec: bare,
        writes_paced,
        write_pacing_s,
    };
    let note = format!(
        "during the burst {:.0} callbacks/s = {:.0}% of accepted; drain lag {:.2} s; {} in flight at most, {:.0}% of a bare client with as many connections ({:.0} GET/s); {:.0} writes paced, {:.1} s in all",
        burst.callbacks_during_per_sec,
        100.0 * burst.callbacks_during_per_sec / accepted.max(1e-9),
        burst.drain_lag_s,
        burst.peak_in_flight,
        100.0 * figures.callbacks_per_sec / bare.max(1e-9),
        bare,
        burst.writes_paced,
        burst.write_pacing_s
    );
    figures.note = if figures.note.is_empty() {
        note
    } else {
        format!("{}; {note}", figures.note)
    };
    figures.burst = Some(burst);
    eprintln!("{}: {}", figures.scenario, figures.note);
    let _ = node.node.child.kill().await;
    drop(node);
    Ok(figures)
}
