//! Health of a destination URL: when to pause it, how often to probe it while paused, and when
//! to stop calling it. The rules are decided here, from the facts; each storage backend only
//! carries out the [`Change`] they return.

use super::{Millis, Signal};
use std::time::Duration;

/// The circuit-breaker rule: after `threshold` consecutive failed attempts to one URL, its
/// deliveries pause (they are delayed, never dropped) and one probe is sent after `first_probe`,
/// then at doubling intervals up to `max_probe`; the first success resumes them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub threshold: u32,
    pub first_probe: Duration,
    pub max_probe: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            threshold: 10,
            first_probe: Duration::from_secs(10),
            max_probe: Duration::from_secs(30 * 60),
        }
    }
}

/// Where a destination stands after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Still closed: deliveries keep flowing.
    StayClosed,
    /// Open (or stay open) and wait this long before the next probe.
    Pause(Duration),
}

impl BreakerPolicy {
    /// Decides what a failure does, given the failures in a row (this one included), whether the
    /// breaker was already open, and the interval of the last probe.
    pub fn after_failure(
        &self,
        consecutive_failures: i64,
        was_open: bool,
        last_interval: Duration,
    ) -> AfterFailure {
        if was_open {
            let next = if last_interval.is_zero() {
                self.first_probe
            } else {
                last_interval.saturating_mul(2)
            };
            return AfterFailure::Pause(next.min(self.max_probe));
        }
        if consecutive_failures >= i64::from(self.threshold) {
            AfterFailure::Pause(self.first_probe)
        } else {
            AfterFailure::StayClosed
        }
    }
}

/// A destination URL's health as stored, read in the transaction that records an attempt's
/// result (after counting that attempt, if it failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The breaker is open: the URL's deliveries are held.
    pub open: bool,
    /// Failed attempts in a row, the one being recorded included.
    pub consecutive_failures: i64,
    /// The length of the last pause (zero when none was made yet).
    pub probe_interval: Duration,
    /// No request to the URL may start before this time, while the breaker is open.
    pub paused_until: Option<Millis>,
    /// The receiver said it is gone: no delivery is queued or sent to it until re-enabled.
    pub disabled: bool,
}

/// What recording one attempt does to its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Close the breaker, reset the failures, and release every held delivery, oldest first.
    /// (A disabled URL stays disabled: only a person enables it again.)
    Close,
    /// The receiver is gone: disable the URL and fail every pending delivery to it as `gone`.
    Disable,
    /// The failure is counted; the breaker stays closed.
    Count,
    /// The failure came from an attempt in flight when the pause began: hold whatever of the
    /// URL is not held yet; the pause is unchanged. The attempt's delivery waits with the held
    /// ones, even if its own schedule ran out, since nothing is dropped while its URL is paused.
    Hold,
    /// Open the breaker (or keep it open) until `until`, remembering `interval` as the length of
    /// this pause for the next back-off, and hold the URL's pending deliveries. With `requeue`
    /// (the breaker was open: a failed probe), the attempt's delivery waits with the held ones
    /// even if its own schedule ran out.
    Pause {
        until: Millis,
        interval: Duration,
        requeue: bool,
    },
}

impl BreakerPolicy {
    /// What an attempt's `signal` does to a URL whose health (after counting the attempt) is
    /// `health`, at `now`.
    ///
    /// - A success closes the breaker.
    /// - `410 Gone` disables the URL; so does any failure of a URL already disabled (an attempt
    ///   that was in flight, or a delivery queued while the disable committed), which sweeps
    ///   what is pending again.
    /// - A failure while a pause runs holds (the attempt was in flight when it began); a
    ///   failure at the threshold, or of a probe, pauses with back-off.
    /// - A `Retry-After` pauses the URL until it has passed, at the least: a pause is never
    ///   shorter than the receiver asked, and never cut short by one.
    pub fn decide(&self, signal: Signal, health: &Health, now: Millis) -> Change {
        let retry_after = match signal {
            Signal::Success => return Change::Close,
            Signal::Gone => return Change::Disable,
            Signal::Failure { .. } if health.disabled => return Change::Disable,
            Signal::Failure { retry_after } => retry_after,
        };
        let running = health
            .paused_until
            .filter(|until| health.open && *until > now);
        let backoff = match running {
            Some(_) => None,
            None => match self.after_failure(
                health.consecutive_failures,
                health.open,
                health.probe_interval,
            ) {
                AfterFailure::StayClosed => None,
                AfterFailure::Pause(pause) => Some(pause),
            },
        };
        let asked = retry_after.map(|d| now.plus(d));
        let until = [running, backoff.map(|d| now.plus(d)), asked]
            .into_iter()
            .flatten()
            .max();
        match until {
            None => Change::Count,
            Some(until) if Some(until) == running => Change::Hold,
            Some(until) => Change::Pause {
                until,
                interval: backoff.unwrap_or(health.probe_interval),
                requeue: health.open,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn health(open: bool, failures: i64, paused_until: Option<i64>) -> Health {
        Health {
            open,
            consecutive_failures: failures,
            probe_interval: if open {
                Duration::from_secs(10)
            } else {
                Duration::ZERO
            },
            paused_until: paused_until.map(Millis),
            disabled: false,
        }
    }

    const NOW: Millis = Millis(1_000_000);

    fn failure(retry_after: Option<u64>) -> Signal {
        Signal::Failure {
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_closed_breaker_counts_then_pauses_at_the_threshold() {
        let p = BreakerPolicy::default();
        assert_eq!(
            p.decide(failure(None), &health(false, 9, None), NOW),
            Change::Count
        );
        assert_eq!(
            p.decide(failure(None), &health(false, 10, None), NOW),
            Change::Pause {
                until: NOW.plus(Duration::from_secs(10)),
                interval: Duration::from_secs(10),
                requeue: false
            }
        );
    }

    #[test]
    fn a_failed_probe_backs_off_and_one_in_flight_holds() {
        let p = BreakerPolicy::default();
        assert_eq!(
            p.decide(failure(None), &health(true, 11, Some(NOW.0 - 1)), NOW),
            Change::Pause {
                until: NOW.plus(Duration::from_secs(20)),
                interval: Duration::from_secs(20),
                requeue: true
            }
        );
        assert_eq!(
            p.decide(failure(None), &health(true, 11, Some(NOW.0 + 5_000)), NOW),
            Change::Hold
        );
    }

    #[test]
    fn retry_after_pauses_a_closed_url_and_outlasts_the_backoff() {
        let p = BreakerPolicy::default();
        assert_eq!(
            p.decide(failure(Some(60)), &health(false, 1, None), NOW),
            Change::Pause {
                until: NOW.plus(Duration::from_secs(60)),
                interval: Duration::ZERO,
                requeue: false
            }
        );
        // The reported fault: a probe answered 429 with Retry-After: 60, and the next probe came
        // after the back-off's 20 s.
        assert_eq!(
            p.decide(failure(Some(60)), &health(true, 12, Some(NOW.0 - 1)), NOW),
            Change::Pause {
                until: NOW.plus(Duration::from_secs(60)),
                interval: Duration::from_secs(20),
                requeue: true
            }
        );
        // In flight when a pause began, but asking for longer: the pause is extended.
        assert!(matches!(
            p.decide(failure(Some(60)), &health(true, 12, Some(NOW.0 + 5_000)), NOW),
            Change::Pause { until, .. } if until == NOW.plus(Duration::from_secs(60))
        ));
    }

    #[test]
    fn gone_disables_and_a_disabled_url_stays_disabled() {
        let p = BreakerPolicy::default();
        assert_eq!(
            p.decide(Signal::Gone, &health(true, 3, Some(NOW.0 + 5_000)), NOW),
            Change::Disable
        );
        let disabled = Health {
            disabled: true,
            ..health(false, 1, None)
        };
        assert_eq!(p.decide(failure(Some(5)), &disabled, NOW), Change::Disable);
    }

    fn any_health() -> impl Strategy<Value = Health> {
        (
            any::<bool>(),
            0i64..50,
            0u64..4_000,
            proptest::option::of(NOW.0 - 100_000..NOW.0 + 100_000),
            any::<bool>(),
        )
            .prop_map(|(open, failures, interval, until, disabled)| Health {
                open,
                consecutive_failures: failures,
                probe_interval: Duration::from_secs(interval),
                paused_until: until.map(Millis),
                disabled,
            })
    }

    fn any_signal() -> impl Strategy<Value = Signal> {
        prop_oneof![
            Just(Signal::Success),
            Just(Signal::Gone),
            proptest::option::of(0u64..100_000).prop_map(failure),
        ]
    }

    proptest! {
        /// A success always closes the breaker (which releases every held delivery).
        #[test]
        fn a_success_always_closes(h in any_health()) {
            prop_assert_eq!(BreakerPolicy::default().decide(Signal::Success, &h, NOW), Change::Close);
        }

        /// A 410 always disables: it is never retried nor held.
        #[test]
        fn gone_always_disables(h in any_health()) {
            prop_assert_eq!(BreakerPolicy::default().decide(Signal::Gone, &h, NOW), Change::Disable);
        }

        /// After a Retry-After, the URL's pause lasts at least as long as asked: no probe can
        /// start before it.
        #[test]
        fn no_probe_before_a_retry_after(h in any_health(), ra in 0u64..100_000) {
            let change = BreakerPolicy::default().decide(failure(Some(ra)), &h, NOW);
            let asked = NOW.plus(Duration::from_secs(ra));
            match change {
                Change::Disable => prop_assert!(h.disabled),
                Change::Pause { until, .. } => prop_assert!(until >= asked),
                Change::Hold => prop_assert!(h.paused_until.unwrap() >= asked),
                other => prop_assert!(false, "{:?} for a Retry-After", other),
            }
        }

        /// A pause that runs is never cut short, and a pause is never set in the past.
        #[test]
        fn pauses_only_grow(h in any_health(), s in any_signal()) {
            if let Change::Pause { until, .. } = BreakerPolicy::default().decide(s, &h, NOW) {
                prop_assert!(until >= NOW);
                if h.open && let Some(running) = h.paused_until.filter(|u| u.0 > NOW.0) {
                    prop_assert!(until >= running);
                }
            }
        }
    }

    #[test]
    fn opens_at_the_threshold_and_backs_off() {
        let p = BreakerPolicy::default();
        assert_eq!(
            p.after_failure(9, false, Duration::ZERO),
            AfterFailure::StayClosed
        );
        assert_eq!(
            p.after_failure(10, false, Duration::ZERO),
            AfterFailure::Pause(Duration::from_secs(10))
        );
        assert_eq!(
            p.after_failure(11, true, Duration::from_secs(10)),
            AfterFailure::Pause(Duration::from_secs(20))
        );
        assert_eq!(
            p.after_failure(30, true, Duration::from_secs(1500)),
            AfterFailure::Pause(Duration::from_secs(1800))
        );
    }
}
