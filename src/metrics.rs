//! What one node has done, for Prometheus: `prometheus-client`'s counters and histograms kept
//! in memory (atomics; a labelled family takes a shared read lock), and what is read when
//! scraped (the queue from the database, the hosts' limits, the write gate), encoded as
//! OpenMetrics text with the names Herald has always used.
//!
//! Counters are per node and start at zero when the process starts, as Prometheus expects; the
//! queue gauges describe the whole database, so every node of a fleet reports the same values.

use crate::delivery::HostConcurrency;
use crate::domain::{AttemptOutcome, EventType};
use crate::storage::QueueStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram as Buckets;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The media type of [`Metrics::render`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the duration histograms' buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of durations, in seconds.
#[derive(Debug, Clone)]
pub struct Histogram(Buckets);

impl Default for Histogram {
    fn default() -> Self {
        Self(Buckets::new(DURATION_BUCKETS))
    }
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

/// A counter family by one label.
type ByLabel = Family<[(&'static str, &'static str); 1], Counter>;

/// The node's counters.
#[derive(Debug)]
pub struct Metrics {
    events: ByLabel,
    attempts: ByLabel,
    attempt_duration: Histogram,
    /// How long each claim on the queue took.
    pub claim_duration: Histogram,
    /// How long storing each batch of attempt results took.
    pub results_duration: Histogram,
    /// How long each instance change took to commit with its event and deliveries.
    pub instance_write_duration: Histogram,
    in_flight: AtomicI64,
    claims: Counter,
    claimed: Counter,
    given_back: Counter,
    deliveries_succeeded: Counter,
    deliveries_failed: Counter,
    retries_scheduled: Counter,
}

impl Default for Metrics {
    /// Every label value is there from the start, so each series exists at 0 before its first
    /// event (as `rate()` and alerts want).
    fn default() -> Self {
        let events = ByLabel::default();
        for event in EventType::ALL {
            let _ = events.get_or_create(&[("event_type", event.as_str())]);
        }
        let attempts = ByLabel::default();
        for outcome in AttemptOutcome::ALL {
            let _ = attempts.get_or_create(&[("outcome", outcome.as_str())]);
        }
        Self {
            events,
            attempts,
            attempt_duration: Histogram::default(),
            claim_duration: Histogram::default(),
            results_duration: Histogram::default(),
            instance_write_duration: Histogram::default(),
            in_flight: AtomicI64::new(0),
            claims: Counter::default(),
            claimed: Counter::default(),
            given_back: Counter::default(),
            deliveries_succeeded: Counter::default(),
            deliveries_failed: Counter::default(),
            retries_scheduled: Counter::default(),
        }
    }
}

/// What became of a delivery after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Succeeded,
    Failed,
    Retrying,
}

impl Metrics {
    /// An instance change was committed with its event.
    pub fn event(&self, event: EventType) {
        self.events
            .get_or_create(&[("event_type", event.as_str())])
            .inc();
    }

    /// A claim returned `n` deliveries.
    pub fn claimed(&self, n: usize) {
        self.claims.inc();
        self.claimed.inc_by(n as u64);
    }

    /// Deliveries claimed ahead were given back unattempted.
    pub fn given_back(&self, n: usize) {
        self.given_back.inc_by(n as u64);
    }

    /// An attempt started.
    pub fn attempt_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// An attempt ended after `took`.
    pub fn attempt_finished(&self, outcome: AttemptOutcome, took: Duration, end: AttemptEnd) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.attempts
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
        self.attempt_duration.observe(took);
        match end {
            AttemptEnd::Succeeded => &self.deliveries_succeeded,
            AttemptEnd::Failed => &self.deliveries_failed,
            AttemptEnd::Retrying => &self.retries_scheduled,
        }
        .inc();
    }

    /// The OpenMetrics text of these counters and of what is read at scrape time: the queue,
    /// the hosts' limits and the write gate. Help texts are written without a final stop,
    /// which the encoder adds.
    pub fn render(
        &self,
        queue: &QueueStats,
        hosts: &[HostConcurrency],
        gate: &crate::delivery::WriteGate,
    ) -> String {
        let mut r = Registry::default();
        r.register(
            "herald_events",
            "Instance changes committed by this node, each queuing one delivery per enabled URL",
            self.events.clone(),
        );
        r.register(
            "herald_callback_attempts",
            "Callback attempts made by this node, by outcome",
            self.attempts.clone(),
        );
        for (name, help, histogram) in [
            (
                "herald_callback_attempt_duration_seconds",
                "Time from sending a callback to its answer, error or timeout",
                &self.attempt_duration,
            ),
            (
                "herald_claim_duration_seconds",
                "Time each claim of due deliveries took in the database",
                &self.claim_duration,
            ),
            (
                "herald_results_write_duration_seconds",
                "Time storing each batch of attempt results took",
                &self.results_duration,
            ),
            (
                "herald_instance_write_duration_seconds",
                "Time from handing an instance change to storage until it was committed with its event and deliveries (waiting for the group commit included)",
                &self.instance_write_duration,
            ),
        ] {
            r.register(name, help, histogram.0.clone());
        }
        for (name, help, counter) in [
            (
                "herald_deliveries_succeeded",
                "Deliveries this node completed with a 2xx answer",
                &self.deliveries_succeeded,
            ),
            (
                "herald_deliveries_failed",
                "Deliveries this node gave up on: retries exhausted, 410 Gone, or a failed test callback",
                &self.deliveries_failed,
            ),
            (
                "herald_delivery_retries_scheduled",
                "Failed attempts this node scheduled a retry for",
                &self.retries_scheduled,
            ),
            (
                "herald_claims",
                "Claims this node's worker made on the delivery queue",
                &self.claims,
            ),
            (
                "herald_claimed_deliveries",
                "Deliveries this node's worker claimed",
                &self.claimed,
            ),
            (
                "herald_deliveries_given_back",
                "Deliveries claimed ahead that this node gave back unattempted: their receiver failed, their lease ran short, or the node stopped",
                &self.given_back,
            ),
        ] {
            r.register(name, help, counter.clone());
        }

        let count = |n: u64| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        r.register(
            "herald_callbacks_in_flight",
            "Callback attempts this node is waiting on now",
            ConstGauge::new(self.in_flight().max(0)),
        );
        r.register(
            "herald_deliveries_pending",
            "Deliveries waiting in the queue (all nodes), including those held by a paused URL",
            count(queue.pending),
        );
        r.register(
            "herald_deliveries_due",
            "Pending deliveries that could be sent now: due, not in flight, not waiting behind an earlier delivery of their instance",
            count(queue.due),
        );
        r.register(
            "herald_deliveries_waiting_behind_earlier",
            "Due deliveries that wait for an earlier delivery of their instance and URL, which is being retried (per-instance order)",
            count(queue.waiting_behind_earlier),
        );
        r.register(
            "herald_deliveries_held",
            "Deliveries held back by a paused URL's circuit breaker",
            count(queue.held),
        );
        r.register(
            "herald_queue_lag_seconds",
            "How long the oldest delivery that could be sent has been waiting past its time (0 when none is); held deliveries and those waiting behind an earlier one do not count",
            ConstGauge::new(queue.oldest_due_lag.as_secs_f64()),
        );
        r.register(
            "herald_destinations_paused",
            "Callback URLs whose circuit breaker is open",
            count(queue.paused_urls),
        );
        r.register(
            "herald_worker_lag_seconds",
            "How late this node's worker started its latest deliveries, counting only hosts whose receiver is not holding them back; writes wait while it is over the backpressure lag",
            ConstGauge::new(gate.lag().as_secs_f64()),
        );
        let (paced, waited) = gate.paced();
        r.register(
            "herald_writes_paced",
            "Instance writes that waited for this node's worker to catch up (backpressure)",
            ConstCounter::new(paced),
        );
        r.register(
            "herald_write_pacing_seconds",
            "Time instance writes spent waiting for this node's worker to catch up",
            ConstCounter::new(waited.as_secs_f64()),
        );

        let limits = Family::<[(&'static str, String); 1], Gauge>::default();
        let in_flight = Family::<[(&'static str, String); 1], Gauge>::default();
        let ahead = Family::<[(&'static str, String); 1], Gauge>::default();
        for h in hosts {
            let host = [("host", h.host.clone())];
            ahead
                .get_or_create(&host)
                .set(i64::try_from(h.claimed_ahead).unwrap_or(i64::MAX));
            limits
                .get_or_create(&host)
                .set(i64::try_from(h.limit).unwrap_or(i64::MAX));
            in_flight
                .get_or_create(&host)
                .set(i64::try_from(h.in_flight).unwrap_or(i64::MAX));
        }
        r.register(
            "herald_host_concurrency_limit",
            "Callbacks this node allows at once to a receiving host now (its adaptive limit)",
            limits,
        );
        r.register(
            "herald_host_callbacks_in_flight",
            "Callbacks this node is waiting on now, per receiving host",
            in_flight,
        );
        r.register(
            "herald_host_deliveries_claimed_ahead",
            "Deliveries this node has claimed ahead for a receiving host, each to start the moment one of its slots frees",
            ahead,
        );

        let mut out = String::with_capacity(8192);
        encode(&mut out, &r).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::WriteGate;
    use crate::domain::Backpressure;

    #[test]
    fn a_histogram_is_cumulative_and_counts_every_attempt() {
        let m = Metrics::default();
        m.attempt_started();
        m.attempt_started();
        m.attempt_started();
        m.attempt_finished(
            AttemptOutcome::Success,
            Duration::from_millis(3),
            AttemptEnd::Succeeded,
        );
        m.attempt_finished(
            AttemptOutcome::HttpStatus,
            Duration::from_millis(40),
            AttemptEnd::Retrying,
        );
        let text = m.render(
            &QueueStats::default(),
            &[],
            &WriteGate::new(Backpressure::DEFAULT),
        );
        assert!(
            text.contains("herald_callback_attempt_duration_seconds_bucket{le=\"0.0025\"} 0\n")
        );
        assert!(text.contains("herald_callback_attempt_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("herald_callback_attempt_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("herald_callback_attempt_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("herald_callback_attempt_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("herald_callback_attempt_duration_seconds_count 2\n"));
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("herald_callback_attempt_duration_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.043).abs() < 1e-9, "{sum}");
        assert!(text.contains("herald_callback_attempts_total{outcome=\"http_status\"} 1\n"));
        assert!(text.contains("herald_callbacks_in_flight 1\n"));
        assert!(text.contains("herald_delivery_retries_scheduled_total 1\n"));
        assert!(text.contains("herald_deliveries_succeeded_total 1\n"));
    }

    #[test]
    fn every_metric_has_help_and_type_lines() {
        let host = HostConcurrency {
            host: "odd\"host:80".into(),
            limit: 12,
            in_flight: 3,
            claimed_ahead: 5,
        };
        let text = Metrics::default().render(
            &QueueStats::default(),
            &[host],
            &WriteGate::new(Backpressure::DEFAULT),
        );
        assert!(text.contains("herald_host_concurrency_limit{host=\"odd\\\"host:80\"} 12\n"));
        assert!(text.contains("herald_host_callbacks_in_flight{host=\"odd\\\"host:80\"} 3\n"));
        assert!(text.contains("herald_host_deliveries_claimed_ahead{host=\"odd\\\"host:80\"} 5\n"));
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line
                .split(['{', ' '])
                .next()
                .unwrap()
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .trim_end_matches("_total");
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE line for {name}"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP line for {name}"
            );
        }
        assert!(!text.contains(".."), "one stop after each help text");
        assert!(text.contains("herald_events_total{event_type=\"deleted\"} 0\n"));
    }
}
