//! Where the backpressure rule ([`crate::domain::backpressure`]) is carried out: the worker
//! reports how late each claim was, and every instance write asks to be let through first.

use crate::domain::Backpressure;
use crate::domain::backpressure::expected_wait;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A report older than this says nothing: the worker has not claimed since (its slots are all
/// busy, or the database is failing), and writes are not held on a guess.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// The longest one write waits. The worker catches up within about the policy's lag once
/// writes wait, so this is only reached when it cannot (then the API keeps answering, slowly).
const MAX_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting write looks again when nothing woke it.
const RECHECK: Duration = Duration::from_millis(50);

/// The lag's growth is measured over at least this long (claims come every few milliseconds).
const GROWTH_WINDOW: Duration = Duration::from_millis(200);

/// What the worker last reported.
#[derive(Debug, Clone, Copy)]
struct Report {
    at: Instant,
    lag: Duration,
    /// How fast the lag grew over the last window, seconds per second.
    growth: f64,
    /// Where the current window began.
    window: (Instant, Duration),
}

impl Report {
    fn expected_wait(&self) -> Duration {
        expected_wait(self.lag, self.growth)
    }
}

/// The node's gate on instance writes.
pub struct WriteGate {
    policy: Backpressure,
    report: Mutex<Option<Report>>,
    caught_up: Notify,
    paced: AtomicU64,
    waited_micros: AtomicU64,
}

impl WriteGate {
    pub fn new(policy: Backpressure) -> Self {
        Self {
            policy,
            report: Mutex::new(None),
            caught_up: Notify::new(),
            paced: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> Backpressure {
        self.policy
    }

    /// The worker's report after a claim: it is `lag` behind.
    pub fn report(&self, lag: Duration) {
        let now = Instant::now();
        let (was, is) = {
            let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
            let was = report.is_some_and(|r| self.policy.holds(r.expected_wait()));
            let next = match *report {
                // Caught up, or the first report: nothing is growing.
                _ if lag.is_zero() => None,
                None => None,
                Some(r) => Some(r),
            }
            .map_or(
                Report {
                    at: now,
                    lag,
                    growth: 0.0,
                    window: (now, lag),
                },
                |r| {
                    let (since, from) = r.window;
                    let span = now.duration_since(since);
                    if span >= GROWTH_WINDOW {
                        let grown = lag.as_secs_f64() - from.as_secs_f64();
                        Report {
                            at: now,
                            lag,
                            growth: grown / span.as_secs_f64(),
                            window: (now, lag),
                        }
                    } else {
                        Report { at: now, lag, ..r }
                    }
                },
            );
            *report = Some(next);
            (was, self.policy.holds(next.expected_wait()))
        };
        if was && !is {
            self.caught_up.notify_waiters();
        }
    }

    fn fresh(&self) -> Option<Report> {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(|r| r.at.elapsed() < STALE_AFTER)
    }

    /// How far behind the worker is by its latest report, zero when that is stale.
    pub fn lag(&self) -> Duration {
        self.fresh().map_or(Duration::ZERO, |r| r.lag)
    }

    /// Writes wait while a delivery queued now would wait longer than the policy allows.
    fn holds(&self) -> bool {
        self.fresh()
            .is_some_and(|r| self.policy.holds(r.expected_wait()))
    }

    /// Waits while the worker is too far behind (at most [`MAX_WAIT`]).
    pub async fn admit(&self) {
        if !self.holds() {
            return;
        }
        let started = Instant::now();
        while started.elapsed() < MAX_WAIT {
            let woken = self.caught_up.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !self.holds() {
                break;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
        self.paced.fetch_add(1, Ordering::Relaxed);
        self.waited_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Writes that waited, and how long they waited in all.
    pub fn paced(&self) -> (u64, Duration) {
        (
            self.paced.load(Ordering::Relaxed),
            Duration::from_micros(self.waited_micros.load(Ordering::Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gate() -> Arc<WriteGate> {
        Arc::new(WriteGate::new(Backpressure::AtLag(Duration::from_millis(
            100,
        ))))
    }

    #[tokio::test]
    async fn writes_pass_while_the_worker_keeps_up() {
        let gate = gate();
        gate.admit().await;
        gate.report(Duration::from_millis(100));
        gate.admit().await;
        assert_eq!(gate.paced().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waits_while_the_worker_is_behind_and_goes_when_it_catches_up() {
        let gate = gate();
        gate.report(Duration::from_secs(3));
        let waiting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.admit().await }
        });
        // On paused time: the write runs, finds the worker behind and waits.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiting.is_finished(),
            "the write waits while the worker is behind"
        );
        gate.report(Duration::ZERO);
        waiting.await.unwrap();
        assert_eq!(gate.paced().0, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_report_holds_nothing_and_no_write_waits_past_the_cap() {
        let gate = gate();
        gate.report(Duration::from_secs(3));
        tokio::time::advance(STALE_AFTER).await;
        assert_eq!(gate.lag(), Duration::ZERO);
        gate.admit().await;
        assert_eq!(gate.paced().0, 0, "a stale report holds no write");
        // The worker keeps reporting it is behind: the write still goes after MAX_WAIT.
        let reporter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move {
                loop {
                    gate.report(Duration::from_secs(3));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        gate.report(Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        gate.admit().await;
        assert!(started.elapsed() >= MAX_WAIT);
        reporter.abort();
        assert_eq!(gate.paced().0, 1, "the write that waited to the cap counts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lag_that_grows_holds_writes_before_it_reaches_the_limit() {
        let gate = gate();
        gate.report(Duration::from_millis(10));
        tokio::time::advance(GROWTH_WINDOW).await;
        // 60 ms behind, growing by 0.25 s per second: a delivery queued now waits 80 ms.
        gate.report(Duration::from_millis(60));
        assert!(!gate.holds());
        tokio::time::advance(GROWTH_WINDOW).await;
        // 90 ms behind, growing by 0.15 s per second: 106 ms to wait, over the 100 ms limit,
        // which the lag alone would not reach for a while yet.
        gate.report(Duration::from_millis(90));
        assert!(gate.holds());
        gate.report(Duration::ZERO);
        assert!(!gate.holds(), "caught up");
    }

    #[test]
    fn with_backpressure_off_nothing_ever_waits() {
        let gate = WriteGate::new(Backpressure::Off);
        gate.report(Duration::from_secs(3600));
        assert!(!gate.holds());
        assert_eq!(gate.lag(), Duration::from_secs(3600));
    }
}
