//! Health of a destination URL: when to pause it, and how often to probe it while paused.

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

#[cfg(test)]
mod tests {
    use super::*;

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
