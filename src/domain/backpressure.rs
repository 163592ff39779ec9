//! When the API slows down for the delivery worker (decision 0011).
//!
//! Herald prefers a bounded callback delay over unbounded intake: when its own worker falls
//! behind (it cannot start due deliveries as fast as the API queues them), instance writes wait
//! until it has caught up, instead of the backlog growing for minutes. The signal is how late
//! the worker's claims are, counted only for hosts that nothing but the worker holds back: a
//! receiver that times out, refuses or sheds load, or whose adaptive limit is full, has a
//! backlog of its own making, and must never slow the writes of everyone else.
//!
//! Pure: the worker feeds it each claim; the API asks it whether to wait.

use super::{Invalid, Millis, retry::parse_duration};
use std::collections::HashMap;
use std::time::Duration;

/// Whether a host was held back at a claim by something other than the worker: its receiver
/// failed lately (`restrained`), or, once the claim's deliveries were started, all the slots its
/// adaptive limit allows are busy (`at_its_limit`): the rest of its backlog waits for its
/// receiver's answers, not for the worker. A host whose deliveries wait for the node's own
/// capacity (`--max-in-flight`) has slots to spare and is not held back.
pub fn held_back(restrained: bool, at_its_limit: bool) -> bool {
    restrained || at_its_limit
}

/// The operator's policy (`--backpressure-lag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Writes never wait: intake is unbounded, and so is the callback delay.
    Off,
    /// Writes wait while the worker is further behind than this.
    AtLag(Duration),
}

impl Backpressure {
    /// The shipped policy: writes wait once the worker is a second behind.
    pub const DEFAULT: Self = Self::AtLag(Duration::from_secs(1));

    /// `off`, or a duration such as `1s` or `500ms` (at least 10 ms, at most 10 minutes).
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        let lag = parse_duration(text).map_err(|e| {
            Invalid::new(format!(
                "backpressure lag: {e} (or `off` to never slow writes)"
            ))
        })?;
        if !(Duration::from_millis(10)..=Duration::from_secs(600)).contains(&lag) {
            return Err(Invalid::new(format!(
                "backpressure lag must be 10ms to 10m, or `off`, not `{text}`"
            )));
        }
        Ok(Self::AtLag(lag))
    }

    /// Whether a write should wait now, with the worker `lag` behind.
    pub fn holds(&self, lag: Duration) -> bool {
        match self {
            Self::Off => false,
            Self::AtLag(limit) => lag > *limit,
        }
    }
}

impl Default for Backpressure {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One delivery a claim took, as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Claimed<'a> {
    /// The receiving `host:port`.
    pub host: &'a str,
    /// When the delivery became due.
    pub due: Millis,
    /// Whether something other than the worker's own capacity holds the host back: its
    /// receiver timed out, refused or shed load lately, or the claim took all the room the
    /// host's adaptive limit left while the worker could have taken more. Then its backlog is
    /// the receiver's, not the worker's.
    pub held_back: bool,
}

/// How far behind the worker is, from one claim made at `now`: for each host not held back, how long ago its youngest claimed delivery was due (claims take each host's oldest
/// first, so if even the youngest is late, all of that host's work is); the most of these. A
/// claim that took nothing for such hosts says the worker has caught up.
pub fn worker_lag<'a>(now: Millis, claimed: impl IntoIterator<Item = Claimed<'a>>) -> Duration {
    let mut youngest: HashMap<&str, Millis> = HashMap::new();
    for c in claimed.into_iter().filter(|c| !c.held_back) {
        let at = youngest.entry(c.host).or_insert(c.due);
        *at = (*at).max(c.due);
    }
    youngest
        .values()
        .map(|due| Duration::from_millis(u64::try_from(now.0.saturating_sub(due.0)).unwrap_or(0)))
        .max()
        .unwrap_or(Duration::ZERO)
}

/// How long a delivery queued now would wait for the worker, by its `lag` and how fast that lag
/// has been growing (`growth`, seconds per second): the worker moves through the queue at
/// `1 - growth` seconds of it per second, so what is `lag` behind it is reached after
/// `lag / (1 - growth)`. Judging by the lag alone, writes would be let through until the lag
/// itself reached the limit, and by then the queue behind it holds more than the limit's worth
/// (measured in scenario 11: callbacks up to 2.5 s late with a 1 s limit).
pub fn expected_wait(lag: Duration, growth: f64) -> Duration {
    /// Below this, the worker is taken to be as good as stuck.
    const SLOWEST: f64 = 0.05;
    if lag.is_zero() {
        return Duration::ZERO;
    }
    let progress = if growth.is_finite() {
        1.0 - growth
    } else {
        SLOWEST
    };
    lag.div_f64(progress.max(SLOWEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(host: &str, due: i64, held_back: bool) -> Claimed<'_> {
        Claimed {
            host,
            due: Millis(due),
            held_back,
        }
    }

    #[test]
    fn the_policy_parses_off_and_durations_and_names_what_is_wrong() {
        assert_eq!(Backpressure::parse("off"), Ok(Backpressure::Off));
        assert_eq!(Backpressure::parse(" OFF "), Ok(Backpressure::Off));
        assert_eq!(
            Backpressure::parse("500ms"),
            Ok(Backpressure::AtLag(Duration::from_millis(500)))
        );
        assert_eq!(
            Backpressure::parse("2s"),
            Ok(Backpressure::AtLag(Duration::from_secs(2)))
        );
        let e = Backpressure::parse("2").unwrap_err();
        assert!(e.0.contains("unit") && e.0.contains("off"), "{e}");
        let e = Backpressure::parse("1ms").unwrap_err();
        assert!(e.0.contains("10ms to 10m"), "{e}");
        assert!(Backpressure::parse("1h").is_err());
    }

    #[test]
    fn writes_wait_only_past_the_lag_and_never_when_off() {
        let at = Backpressure::AtLag(Duration::from_secs(1));
        assert!(!at.holds(Duration::from_millis(1000)));
        assert!(at.holds(Duration::from_millis(1001)));
        assert!(!Backpressure::Off.holds(Duration::from_secs(3600)));
    }

    #[test]
    fn a_claim_of_fresh_work_says_caught_up() {
        let now = Millis(10_000);
        assert_eq!(worker_lag(now, []), Duration::ZERO);
        let fresh = [
            claimed("a:80", 9_990, false),
            claimed("a:80", 10_000, false),
        ];
        assert_eq!(worker_lag(now, fresh), Duration::ZERO);
    }

    #[test]
    fn the_lag_is_the_latest_hosts_youngest_claimed_delivery() {
        let now = Millis(10_000);
        let claim = [
            claimed("a:80", 1_000, false),
            claimed("a:80", 7_000, false),
            claimed("b:80", 9_500, false),
        ];
        assert_eq!(worker_lag(now, claim), Duration::from_secs(3));
    }

    #[test]
    fn a_held_back_hosts_backlog_never_counts() {
        let now = Millis(100_000);
        // A slow receiver's hour-old backlog beside fresh work for a healthy one.
        let claim = [
            claimed("slow:80", 1_000, true),
            claimed("slow:80", 2_000, true),
            claimed("fast:80", 100_000, false),
        ];
        assert_eq!(worker_lag(now, claim), Duration::ZERO);
        assert_eq!(
            worker_lag(now, [claimed("slow:80", 1_000, true)]),
            Duration::ZERO
        );
    }

    #[test]
    fn the_expected_wait_grows_with_a_lag_that_grows() {
        let lag = Duration::from_millis(500);
        assert_eq!(expected_wait(Duration::ZERO, 0.9), Duration::ZERO);
        assert_eq!(expected_wait(lag, 0.0), lag, "a steady lag is the wait");
        // Falling behind half a second per second: the worker moves at half speed.
        assert_eq!(expected_wait(lag, 0.5), Duration::from_secs(1));
        // Catching up: sooner than the lag.
        assert_eq!(expected_wait(lag, -1.0), Duration::from_millis(250));
        // Stuck, or nonsense: as slow as the floor allows.
        assert_eq!(expected_wait(lag, 1.0), Duration::from_secs(10));
        assert_eq!(expected_wait(lag, f64::NAN), Duration::from_secs(10));
    }

    #[test]
    fn a_host_is_held_back_by_its_receiver_or_its_full_limit_never_by_the_workers_capacity() {
        assert!(held_back(true, false), "a failing receiver");
        assert!(held_back(false, true), "its limit full");
        assert!(
            !held_back(false, false),
            "slots to spare: what waits, waits for the worker"
        );
    }

    #[test]
    fn a_delivery_due_in_the_future_is_not_late() {
        assert_eq!(
            worker_lag(Millis(1_000), [claimed("a:80", 5_000, false)]),
            Duration::ZERO
        );
    }
}
