//! The retry policy: the one place that decides when a failed delivery is tried again.

use super::{Invalid, Millis, Signal};
use std::time::Duration;

/// The longest a `Retry-After` answer can postpone the next attempt (or pause a URL).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(Millis),
    Failed,
}

impl NextStep {
    /// The delivery's stored status and next attempt time after this step.
    pub fn stored(&self) -> (&'static str, Option<i64>) {
        match self {
            NextStep::Succeeded => ("succeeded", None),
            NextStep::Failed => ("failed", None),
            NextStep::RetryAt(at) => ("pending", Some(at.0)),
        }
    }
}

/// Decides what follows an attempt: success ends the delivery; a receiver that is gone (410)
/// ends it as failed; anything else is retried on the schedule until it runs out. A
/// `Retry-After` (carried by the signal, on 429 and 503) can postpone the retry beyond the
/// schedule; it never brings one forward. Test callbacks are never retried. `attempts_before`
/// counts the attempts made before this one; `jitter` in [0, 1) picks the jitter.
pub fn next_step(
    signal: Signal,
    attempts_before: i64,
    test: bool,
    retry: &RetrySchedule,
    now: Millis,
    jitter: f64,
) -> NextStep {
    let retry_after = match signal {
        Signal::Success => return NextStep::Succeeded,
        Signal::Gone => return NextStep::Failed,
        Signal::Failure { .. } if test => return NextStep::Failed,
        Signal::Failure { retry_after } => retry_after.unwrap_or(Duration::ZERO),
    };
    let made = u32::try_from(attempts_before.saturating_add(1)).unwrap_or(u32::MAX);
    match retry.delay_after(made, jitter) {
        Some(delay) => NextStep::RetryAt(now.plus(delay.max(retry_after.min(MAX_RETRY_AFTER)))),
        None => NextStep::Failed,
    }
}

/// Delays before each retry, after the first attempt fails. Once they are used up the delivery
/// is `failed`. Each delay gets ±20% jitter so a recovering receiver is not hit by a wall of
/// retries at the same instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// The default: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27 hours).
    pub const DEFAULT: &'static str = "0s,5s,5m,30m,2h,5h,10h,10h";

    /// Parses a comma-separated list of delays such as `0s,5s,5m,30m,2h` (units ms, s, m, h, d).
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let mut delays = Vec::new();
        for (i, part) in text.split(',').enumerate() {
            let part = part.trim();
            if part.is_empty() && text.trim().is_empty() {
                break;
            }
            delays.push(
                parse_duration(part).map_err(|e| {
                    Invalid::new(format!("retry schedule entry {}: {}", i + 1, e.0))
                })?,
            );
        }
        if delays.len() > 50 {
            return Err(Invalid::new("the retry schedule has more than 50 entries"));
        }
        if delays
            .iter()
            .any(|d| *d > Duration::from_secs(7 * 24 * 3600))
        {
            return Err(Invalid::new("a retry delay is longer than 7 days"));
        }
        Ok(Self(delays))
    }

    /// The delays, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// How long to wait after the `attempts`-th failed attempt (counting from 1), or `None` when
    /// the schedule is exhausted. `unit` in [0, 1) picks the jitter; pass a random number.
    pub fn delay_after(&self, attempts: u32, unit: f64) -> Option<Duration> {
        let base = *self
            .0
            .get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
        let factor = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// Total attempts a delivery gets: the first plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::parse(Self::DEFAULT).expect("the default schedule parses")
    }
}

/// Parses `250ms`, `5s`, `5m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, Invalid> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| Invalid::new(format!("`{text}` needs a unit: ms, s, m, h or d")))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| Invalid::new(format!("`{text}` is not a duration such as 5s or 30m")))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(Invalid::new(format!(
                "`{text}` has an unknown unit; use ms, s, m, h or d"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failure(retry_after: Option<u64>) -> Signal {
        Signal::Failure {
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn delay(step: NextStep, now: Millis) -> i64 {
        match step {
            NextStep::RetryAt(at) => (at.0 - now.0) / 1000,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn retry_after_postpones_but_never_hastens() {
        let schedule = RetrySchedule::parse("60s,60s").unwrap();
        let now = Millis(1_000_000);
        let step = |s, before| next_step(s, before, false, &schedule, now, 0.5);
        assert_eq!(delay(step(failure(Some(600)), 0), now), 600);
        assert_eq!(delay(step(failure(Some(5)), 0), now), 60);
        assert_eq!(delay(step(failure(Some(7 * 86_400)), 0), now), 86_400);
        assert_eq!(step(failure(Some(5)), 2), NextStep::Failed);
    }

    #[test]
    fn gone_and_test_callbacks_are_not_retried() {
        let schedule = RetrySchedule::default();
        let now = Millis(1_000_000);
        assert_eq!(
            next_step(Signal::Gone, 0, false, &schedule, now, 0.5),
            NextStep::Failed
        );
        assert_eq!(
            next_step(failure(None), 0, true, &schedule, now, 0.5),
            NextStep::Failed
        );
        assert!(matches!(
            next_step(failure(None), 0, false, &schedule, now, 0.5),
            NextStep::RetryAt(_)
        ));
    }

    proptest! {
        /// A 410 is never retried, whatever the schedule and however few attempts were made.
        #[test]
        fn a_gone_receiver_is_never_retried(before in 0i64..100, jitter in 0.0f64..1.0, n in 0usize..10) {
            let schedule = RetrySchedule::parse(&vec!["1s"; n].join(",")).unwrap();
            prop_assert_eq!(next_step(Signal::Gone, before, false, &schedule, Millis(0), jitter), NextStep::Failed);
        }

        /// A retry never comes before the receiver's Retry-After, nor before its scheduled delay
        /// less the jitter.
        #[test]
        fn a_retry_comes_no_sooner_than_asked(ra in proptest::option::of(0u64..200_000), before in 0i64..8, jitter in 0.0f64..1.0) {
            let schedule = RetrySchedule::default();
            let now = Millis(1_000_000);
            match next_step(failure(ra), before, false, &schedule, now, jitter) {
                NextStep::RetryAt(at) => {
                    let wanted = Duration::from_secs(ra.unwrap_or(0)).min(MAX_RETRY_AFTER);
                    prop_assert!(at.0 - now.0 >= i64::try_from(wanted.as_millis()).unwrap());
                    let base = schedule.delays()[usize::try_from(before).unwrap()];
                    prop_assert!(at.0 - now.0 >= i64::try_from(base.mul_f64(0.8).as_millis()).unwrap());
                }
                other => prop_assert!(false, "expected a retry, got {:?}", other),
            }
        }
    }

    #[test]
    fn default_schedule() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 9);
        assert_eq!(s.delay_after(1, 0.5), Some(Duration::ZERO));
        assert_eq!(s.delay_after(2, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(9, 0.5), None);
        let total: u64 = s.delays().iter().map(Duration::as_secs).sum();
        assert!((26 * 3600..28 * 3600).contains(&total));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = RetrySchedule::parse("100s").unwrap();
        assert_eq!(s.delay_after(1, 0.0), Some(Duration::from_secs(80)));
        assert_eq!(s.delay_after(1, 0.999_999).map(|d| d.as_secs()), Some(119));
    }

    #[test]
    fn bad_schedules_name_the_entry() {
        assert!(
            RetrySchedule::parse("5s,abc")
                .unwrap_err()
                .0
                .contains("entry 2")
        );
        assert!(RetrySchedule::parse("5").unwrap_err().0.contains("unit"));
        assert!(RetrySchedule::parse("5w").is_err());
        assert!(RetrySchedule::parse("8d").is_err());
        assert_eq!(RetrySchedule::parse("").unwrap().max_attempts(), 1);
        assert_eq!(
            RetrySchedule::parse("250ms").unwrap().delays(),
            &[Duration::from_millis(250)]
        );
    }
}
