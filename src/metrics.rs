//! What one node has done, for Prometheus: counters and a histogram kept in memory (atomics, no
//! lock on the hot path), and the state of the queue read from the database when scraped.
//!
//! Counters are per node and start at zero when the process starts, as Prometheus expects; the
//! queue gauges describe the whole database, so every node of a fleet reports the same values.

use crate::delivery::HostConcurrency;
use crate::domain::{AttemptOutcome, EventType};
use crate::storage::QueueStats;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the duration histograms' buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram of durations, in seconds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Counts per bucket of [`DURATION_BUCKETS`] (not cumulative), then the `+Inf` bucket.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        let mut cumulative = 0;
        for (i, upper) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{upper}\"}} {cumulative}");
        }
        cumulative += self.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

const OUTCOMES: [AttemptOutcome; 9] = AttemptOutcome::ALL;

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    events: [AtomicU64; 3],
    attempts: [AtomicU64; OUTCOMES.len()],
    attempt_duration: Histogram,
    /// How long each claim on the queue took.
    pub claim_duration: Histogram,
    /// How long storing each batch of attempt results took.
    pub results_duration: Histogram,
    /// How long each instance change took to commit with its event and deliveries.
    pub instance_write_duration: Histogram,
    in_flight: AtomicI64,
    claims: AtomicU64,
    claimed: AtomicU64,
    deliveries_succeeded: AtomicU64,
    deliveries_failed: AtomicU64,
    retries_scheduled: AtomicU64,
}

fn event_index(event: EventType) -> usize {
    match event {
        EventType::Created => 0,
        EventType::Updated => 1,
        EventType::Deleted => 2,
    }
}

fn outcome_index(outcome: AttemptOutcome) -> usize {
    OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(OUTCOMES.len() - 1)
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
        self.events[event_index(event)].fetch_add(1, Ordering::Relaxed);
    }

    /// A claim returned `n` deliveries.
    pub fn claimed(&self, n: usize) {
        self.claims.fetch_add(1, Ordering::Relaxed);
        self.claimed.fetch_add(n as u64, Ordering::Relaxed);
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
        self.attempts[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
        self.attempt_duration.observe(took);
        match end {
            AttemptEnd::Succeeded => &self.deliveries_succeeded,
            AttemptEnd::Failed => &self.deliveries_failed,
            AttemptEnd::Retrying => &self.retries_scheduled,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4) of these counters and of `queue`.
    pub fn render(
        &self,
        queue: &QueueStats,
        hosts: &[HostConcurrency],
        gate: &crate::delivery::WriteGate,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "herald_events_total",
            "counter",
            "Instance changes committed by this node, each queuing one delivery per enabled URL.",
        );
        for event in EventType::ALL {
            let _ = writeln!(
                out,
                "herald_events_total{{event_type=\"{}\"}} {}",
                event.as_str(),
                load(&self.events[event_index(event)])
            );
        }

        header(
            &mut out,
            "herald_callback_attempts_total",
            "counter",
            "Callback attempts made by this node, by outcome.",
        );
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "herald_callback_attempts_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                load(&self.attempts[i])
            );
        }

        self.attempt_duration.render(
            &mut out,
            "herald_callback_attempt_duration_seconds",
            "Time from sending a callback to its answer, error or timeout.",
        );
        self.claim_duration.render(
            &mut out,
            "herald_claim_duration_seconds",
            "Time each claim of due deliveries took in the database.",
        );
        self.results_duration.render(
            &mut out,
            "herald_results_write_duration_seconds",
            "Time storing each batch of attempt results took.",
        );
        self.instance_write_duration.render(
            &mut out,
            "herald_instance_write_duration_seconds",
            "Time from handing an instance change to storage until it was committed with its event and deliveries (waiting for the group commit included).",
        );

        for (name, help, value) in [
            (
                "herald_deliveries_succeeded_total",
                "Deliveries this node completed with a 2xx answer.",
                &self.deliveries_succeeded,
            ),
            (
                "herald_deliveries_failed_total",
                "Deliveries this node gave up on: retries exhausted, 410 Gone, or a failed test callback.",
                &self.deliveries_failed,
            ),
            (
                "herald_delivery_retries_scheduled_total",
                "Failed attempts this node scheduled a retry for.",
                &self.retries_scheduled,
            ),
            (
                "herald_claims_total",
                "Claims this node's worker made on the delivery queue.",
                &self.claims,
            ),
            (
                "herald_claimed_deliveries_total",
                "Deliveries this node's worker claimed.",
                &self.claimed,
            ),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", load(value));
        }

        header(
            &mut out,
            "herald_callbacks_in_flight",
            "gauge",
            "Callback attempts this node is waiting on now.",
        );
        let _ = writeln!(
            out,
            "herald_callbacks_in_flight {}",
            self.in_flight.load(Ordering::Relaxed).max(0)
        );

        header(
            &mut out,
            "herald_deliveries_pending",
            "gauge",
            "Deliveries waiting in the queue (all nodes), including those held by a paused URL.",
        );
        let _ = writeln!(out, "herald_deliveries_pending {}", queue.pending);
        header(
            &mut out,
            "herald_deliveries_due",
            "gauge",
            "Pending deliveries that could be sent now: due, not in flight, not waiting behind an earlier delivery of their instance.",
        );
        let _ = writeln!(out, "herald_deliveries_due {}", queue.due);
        header(
            &mut out,
            "herald_deliveries_waiting_behind_earlier",
            "gauge",
            "Due deliveries that wait for an earlier delivery of their instance and URL, which is being retried (per-instance order).",
        );
        let _ = writeln!(
            out,
            "herald_deliveries_waiting_behind_earlier {}",
            queue.waiting_behind_earlier
        );
        header(
            &mut out,
            "herald_deliveries_held",
            "gauge",
            "Deliveries held back by a paused URL's circuit breaker.",
        );
        let _ = writeln!(out, "herald_deliveries_held {}", queue.held);
        header(
            &mut out,
            "herald_queue_lag_seconds",
            "gauge",
            "How long the oldest delivery that could be sent has been waiting past its time (0 when none is); held deliveries and those waiting behind an earlier one do not count.",
        );
        let _ = writeln!(
            out,
            "herald_queue_lag_seconds {}",
            queue.oldest_due_lag.as_secs_f64()
        );
        header(
            &mut out,
            "herald_destinations_paused",
            "gauge",
            "Callback URLs whose circuit breaker is open.",
        );
        let _ = writeln!(out, "herald_destinations_paused {}", queue.paused_urls);

        header(
            &mut out,
            "herald_worker_lag_seconds",
            "gauge",
            "How late this node's worker started its latest deliveries, counting only hosts whose receiver is not holding them back; writes wait while it is over the backpressure lag.",
        );
        let _ = writeln!(
            out,
            "herald_worker_lag_seconds {}",
            gate.lag().as_secs_f64()
        );
        let (paced, waited) = gate.paced();
        header(
            &mut out,
            "herald_writes_paced_total",
            "counter",
            "Instance writes that waited for this node's worker to catch up (backpressure).",
        );
        let _ = writeln!(out, "herald_writes_paced_total {paced}");
        header(
            &mut out,
            "herald_write_pacing_seconds_total",
            "counter",
            "Time instance writes spent waiting for this node's worker to catch up.",
        );
        let _ = writeln!(
            out,
            "herald_write_pacing_seconds_total {}",
            waited.as_secs_f64()
        );

        header(
            &mut out,
            "herald_host_concurrency_limit",
            "gauge",
            "Callbacks this node allows at once to a receiving host now (its adaptive limit).",
        );
        for h in hosts {
            let _ = writeln!(
                out,
                "herald_host_concurrency_limit{{host=\"{}\"}} {}",
                label(&h.host),
                h.limit
            );
        }
        header(
            &mut out,
            "herald_host_callbacks_in_flight",
            "gauge",
            "Callbacks this node is waiting on now, per receiving host.",
        );
        for h in hosts {
            let _ = writeln!(
                out,
                "herald_host_callbacks_in_flight{{host=\"{}\"}} {}",
                label(&h.host),
                h.in_flight
            );
        }
        out
    }
}

/// A label value as the text format wants it (backslash, quote and newline escaped).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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
        assert!(text.contains("herald_callback_attempt_duration_seconds_sum 0.043\n"));
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
        };
        let text = Metrics::default().render(
            &QueueStats::default(),
            &[host],
            &WriteGate::new(Backpressure::DEFAULT),
        );
        assert!(text.contains("herald_host_concurrency_limit{host=\"odd\\\"host:80\"} 12\n"));
        assert!(text.contains("herald_host_callbacks_in_flight{host=\"odd\\\"host:80\"} 3\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line
                .split(['{', ' '])
                .next()
                .unwrap()
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE line for {name}"
            );
        }
    }
}
