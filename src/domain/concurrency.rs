//! How many callbacks one receiving host gets at once: a limit that adapts to the receiver
//! (decision 0009). It rises while the receiver answers successfully without slowing down, and
//! falls when it times out, refuses connections, answers 429 or 503, or its answers take much
//! longer than they did at their quickest. In the spirit of TCP's congestion control: it doubles
//! every round trip until the first sign of overload (slow start), then grows by one per round
//! trip and halves on overload, between a floor and the operator's ceiling (`--max-per-host`).
//!
//! Pure: the worker feeds it each finished attempt and asks it how many may be in flight.

use super::AttemptOutcome;
use std::time::Duration;

/// The fewest callbacks a host is allowed at once, however it behaves.
pub const FLOOR: usize = 1;

/// Where a host's limit starts.
pub const INITIAL: usize = 8;

/// Latency counts as rising once the recent average is this many times the quickest answer
/// seen lately, plus [`LATENCY_SLACK`] (so that sub-millisecond jitter on a fast receiver is
/// not mistaken for a queue building up).
const LATENCY_FACTOR: f64 = 2.0;
const LATENCY_SLACK: Duration = Duration::from_millis(5);

/// On a latency rise the limit shrinks by this factor; on an overload answer, by
/// [`OVERLOAD_DECREASE`].
const LATENCY_DECREASE: f64 = 0.9;
const OVERLOAD_DECREASE: f64 = 0.5;

/// The quickest answer is forgotten after this many samples, so a receiver that became slower
/// for good sets a new baseline instead of being held down forever.
const BASELINE_SAMPLES: u32 = 1_000;

/// How long a host counts as held back by its receiver after its limit last shrank.
pub const RESTRAINT_MEMORY: Duration = Duration::from_secs(10);

/// Deliveries are claimed ahead for a host only while its recent average answer is quicker than
/// this: claiming ahead covers the few milliseconds between an answer and the next claim, and a
/// delivery claimed ahead waits about one answer for a slot, well inside its lease (decision
/// 0013).
pub const AHEAD_BELOW_LATENCY: Duration = Duration::from_millis(100);

/// A quick host's window ahead, in rounds of its limit: refilled when half empty, it still
/// holds a round while the refill's claim is under way (decision 0013).
pub const AHEAD_ROUNDS: usize = 2;

/// What one finished attempt says about the receiver's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Answered successfully in this long.
    Served(Duration),
    /// Timed out, refused or dropped the connection, or answered 429 or 503.
    Overloaded,
    /// Anything else (a 4xx, a 500, a redirect): says nothing about load.
    Neutral,
}

impl Load {
    /// Classifies an attempt by its outcome, status and duration.
    pub fn of(outcome: AttemptOutcome, status: Option<u16>, took: Duration) -> Self {
        match (outcome, status) {
            (AttemptOutcome::Success, _) => Load::Served(took),
            (_, Some(429 | 503)) => Load::Overloaded,
            (
                AttemptOutcome::Timeout
                | AttemptOutcome::ConnectionRefused
                | AttemptOutcome::ConnectionError,
                _,
            ) => Load::Overloaded,
            _ => Load::Neutral,
        }
    }
}

/// The adaptive limit of one host.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    limit: f64,
    ceiling: usize,
    /// Still doubling: no overload seen yet.
    slow_start: bool,
    /// The quickest answer since the baseline was last reset, and the samples since.
    quickest: Option<Duration>,
    samples: u32,
    /// The recent average answer time (exponentially weighted).
    average: Option<Duration>,
    /// When (ms on the caller's clock) the limit last shrank: one decrease per round trip.
    last_decrease: Option<i64>,
    /// When the receiver last timed out, refused, dropped a connection or shed load.
    last_overload: Option<i64>,
    /// Whether the last attempt that said anything about load was served.
    serving: bool,
}

impl ConcurrencyLimit {
    /// A new host's limit: [`INITIAL`], never above `ceiling` (itself at least [`FLOOR`]).
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(FLOOR);
        Self {
            limit: INITIAL.min(ceiling) as f64,
            ceiling,
            slow_start: true,
            quickest: None,
            samples: 0,
            average: None,
            last_decrease: None,
            last_overload: None,
            serving: false,
        }
    }

    /// How many callbacks may be in flight to the host now.
    pub fn current(&self) -> usize {
        (self.limit.floor() as usize).clamp(FLOOR, self.ceiling)
    }

    /// Whether the receiver holds this host back now: in the last [`RESTRAINT_MEMORY`] it timed
    /// out, refused or dropped a connection, or answered 429 or 503. A backlog for such a host
    /// is the receiver's, not the worker's ([`super::backpressure`]). Slower answers alone are
    /// no such sign: on a machine Herald shares, they come as often from Herald's own load as
    /// from the receiver's (measured in scenario 11: with slower answers counted, a worker
    /// starved by the API's intake called its receiver restrained, and callbacks fell 16 s
    /// behind). Nor is the operator's ceiling: work waiting for it is work Herald was told it
    /// may not send faster, and a bounded callback delay comes first.
    pub fn restrained(&self, now_ms: i64) -> bool {
        self.last_overload.is_some_and(|at| {
            now_ms.saturating_sub(at)
                < i64::try_from(RESTRAINT_MEMORY.as_millis()).unwrap_or(i64::MAX)
        })
    }

    /// How many deliveries may wait claimed ahead for this host, ready to start the moment one
    /// of its slots frees: [`AHEAD_ROUNDS`] times its limit while it answers quickly and successfully
    /// ([`AHEAD_BELOW_LATENCY`]) and its last answer that said anything about load was a
    /// success; none otherwise, so nothing waits leased behind a slow, failing or unknown
    /// receiver. (A receiver that has just recovered gets its window back with its first
    /// success: its backlog is what claiming ahead is for.)
    pub fn ahead(&self) -> usize {
        match self.average {
            Some(average) if average < AHEAD_BELOW_LATENCY && self.serving => {
                AHEAD_ROUNDS * self.current()
            }
            _ => 0,
        }
    }

    /// Learns from one finished attempt, made while `in_flight` attempts (itself included) were
    /// in flight to the host, ending at `now_ms`. The limit grows only while it is used: a host
    /// that gets a few callbacks a second keeps its limit where it is.
    pub fn observe(&mut self, load: Load, in_flight: usize, now_ms: i64) {
        match load {
            Load::Neutral => {}
            Load::Overloaded => {
                self.serving = false;
                self.last_overload = Some(now_ms);
                if !self.decrease(OVERLOAD_DECREASE, now_ms) {
                    // Already halved this round trip: no more in flight than there were, less
                    // this one. Otherwise answers that fail at once (a 503 is quick) would free
                    // slots for more of them until the next halving (decision 0009).
                    let below = in_flight.saturating_sub(1).max(FLOOR) as f64;
                    self.limit = self.limit.min(below);
                }
            }
            Load::Served(took) => {
                self.serving = true;
                self.samples += 1;
                if self.samples >= BASELINE_SAMPLES {
                    self.samples = 0;
                    self.quickest = self.average;
                }
                let quickest = *self
                    .quickest
                    .insert(self.quickest.map_or(took, |q| q.min(took)));
                let average = match self.average {
                    None => took,
                    Some(a) => a.mul_f64(0.9) + took.mul_f64(0.1),
                };
                self.average = Some(average);
                if average > quickest.mul_f64(LATENCY_FACTOR) + LATENCY_SLACK {
                    self.decrease(LATENCY_DECREASE, now_ms);
                } else if in_flight * 2 >= self.current() {
                    self.limit += if self.slow_start {
                        1.0
                    } else {
                        1.0 / self.limit
                    };
                    self.limit = self.limit.min(self.ceiling as f64);
                }
            }
        }
    }

    /// Shrinks the limit by `factor`, at most once per round trip (the attempts in flight when
    /// a receiver falls over all end at about the same time: that is one signal, not many);
    /// whether it did.
    fn decrease(&mut self, factor: f64, now_ms: i64) -> bool {
        let round_trip = self
            .average
            .map_or(0, |a| i64::try_from(a.as_millis()).unwrap_or(i64::MAX))
            .max(10);
        if self
            .last_decrease
            .is_some_and(|at| now_ms.saturating_sub(at) < round_trip)
        {
            return false;
        }
        self.slow_start = false;
        self.last_decrease = Some(now_ms);
        self.limit = (self.limit * factor).max(FLOOR as f64);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn served(ms: u64) -> Load {
        Load::Served(Duration::from_millis(ms))
    }

    #[test]
    fn a_fast_busy_receiver_gets_up_to_the_ceiling_and_no_further() {
        let mut limit = ConcurrencyLimit::new(64);
        assert_eq!(limit.current(), INITIAL);
        for i in 0..1_000 {
            let busy = limit.current();
            limit.observe(served(1), busy, i);
        }
        assert_eq!(limit.current(), 64);
    }

    #[test]
    fn slow_start_doubles_per_round_trip_then_growth_is_linear() {
        let mut limit = ConcurrencyLimit::new(1_000);
        // One round trip: as many successes as the limit.
        let round = |limit: &mut ConcurrencyLimit, t: i64| {
            let n = limit.current();
            for _ in 0..n {
                limit.observe(served(20), n, t);
            }
        };
        round(&mut limit, 0);
        assert_eq!(limit.current(), 16);
        round(&mut limit, 20);
        assert_eq!(limit.current(), 32);
        limit.observe(Load::Overloaded, 32, 40);
        assert_eq!(limit.current(), 16);
        round(&mut limit, 100);
        round(&mut limit, 120);
        assert_eq!(
            limit.current(),
            17,
            "about one more per round trip after slow start"
        );
    }

    #[test]
    fn a_host_is_restrained_for_a_while_after_an_overload() {
        let mut limit = ConcurrencyLimit::new(64);
        assert!(!limit.restrained(0));
        for i in 0..100 {
            let busy = limit.current();
            limit.observe(served(1), busy, i);
        }
        assert!(
            !limit.restrained(100),
            "growing to the ceiling is no restraint"
        );
        limit.observe(Load::Overloaded, 64, 1_000);
        assert!(limit.current() < 64);
        assert!(limit.restrained(1_000 + 9_999));
        assert!(!limit.restrained(1_000 + 10_000));
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let mut limit = ConcurrencyLimit::new(64);
        for i in 0..1_000 {
            limit.observe(served(1), 1, i);
        }
        assert_eq!(limit.current(), INITIAL);
    }

    #[test]
    fn overload_halves_once_per_round_trip() {
        let mut limit = ConcurrencyLimit::new(256);
        for i in 0..200 {
            let busy = limit.current();
            limit.observe(served(50), busy, i);
        }
        let before = limit.current();
        // Every attempt in flight times out at once: one halving.
        for _ in 0..before {
            limit.observe(Load::Overloaded, before, 10_000);
        }
        assert_eq!(limit.current(), before / 2);
        // A round trip later, the next overload halves again.
        limit.observe(Load::Overloaded, before, 10_100);
        assert_eq!(limit.current(), before / 4);
    }

    #[test]
    fn quick_failures_within_a_round_trip_free_no_slots_for_more() {
        let mut limit = ConcurrencyLimit::new(256);
        for i in 0..200 {
            let busy = limit.current();
            limit.observe(served(50), busy, i);
        }
        limit.observe(Load::Overloaded, 100, 1_000);
        assert_eq!(limit.current(), 104);
        // More 503s come back within the round trip, in flight falling with each: the limit
        // follows what is in flight down instead of letting each be replaced.
        for in_flight in (21..=100).rev() {
            limit.observe(Load::Overloaded, in_flight, 1_001);
        }
        assert_eq!(limit.current(), 20);
    }

    #[test]
    fn rising_latency_backs_off() {
        let mut limit = ConcurrencyLimit::new(256);
        let mut t = 0;
        for _ in 0..500 {
            let busy = limit.current();
            limit.observe(served(50), busy, t);
            t += 1;
        }
        let high = limit.current();
        // The receiver starts queueing: answers take 150 ms.
        for _ in 0..200 {
            let busy = limit.current();
            limit.observe(served(150), busy, t);
            t += 20;
        }
        assert!(
            limit.current() < high / 2,
            "{} against {high}",
            limit.current()
        );
        assert!(!limit.restrained(t), "slower answers alone restrain no one");
    }

    #[test]
    fn a_receiver_that_became_slower_for_good_gets_a_new_baseline() {
        let mut limit = ConcurrencyLimit::new(64);
        let mut t = 0;
        for _ in 0..100 {
            limit.observe(served(1), 8, t);
            t += 1;
        }
        for _ in 0..(3 * BASELINE_SAMPLES) {
            let busy = limit.current();
            limit.observe(served(40), busy, t);
            t += 1;
        }
        assert!(limit.current() > INITIAL, "{}", limit.current());
    }

    #[test]
    fn only_a_quick_healthy_receiver_gets_deliveries_claimed_ahead() {
        let mut limit = ConcurrencyLimit::new(64);
        assert_eq!(limit.ahead(), 0, "an unknown receiver gets none");
        for i in 0..20 {
            limit.observe(served(2), limit.current(), i);
        }
        assert_eq!(limit.ahead(), AHEAD_ROUNDS * limit.current());
        limit.observe(Load::Overloaded, 1, 30);
        assert_eq!(limit.ahead(), 0, "a receiver that shed load gets none");
        limit.observe(Load::Neutral, 1, 31);
        assert_eq!(limit.ahead(), 0, "a 4xx says nothing");
        limit.observe(served(2), 1, 40);
        assert_eq!(
            limit.ahead(),
            AHEAD_ROUNDS * limit.current(),
            "back with its first success"
        );

        let mut slow = ConcurrencyLimit::new(64);
        for i in 0..20 {
            slow.observe(served(150), slow.current(), i * 200);
        }
        assert_eq!(slow.ahead(), 0, "a slow receiver gets none");
    }

    #[test]
    fn load_is_classified_by_outcome_and_status() {
        let took = Duration::from_millis(3);
        assert_eq!(
            Load::of(AttemptOutcome::Success, Some(200), took),
            Load::Served(took)
        );
        for status in [429, 503] {
            assert_eq!(
                Load::of(AttemptOutcome::HttpStatus, Some(status), took),
                Load::Overloaded
            );
        }
        assert_eq!(
            Load::of(AttemptOutcome::Timeout, None, took),
            Load::Overloaded
        );
        assert_eq!(
            Load::of(AttemptOutcome::ConnectionRefused, None, took),
            Load::Overloaded
        );
        assert_eq!(
            Load::of(AttemptOutcome::HttpStatus, Some(500), took),
            Load::Neutral
        );
        assert_eq!(
            Load::of(AttemptOutcome::HttpStatus, Some(404), took),
            Load::Neutral
        );
    }

    fn load() -> impl Strategy<Value = Load> {
        prop_oneof![
            (0u64..20_000).prop_map(|ms| Load::Served(Duration::from_millis(ms))),
            Just(Load::Overloaded),
            Just(Load::Neutral),
        ]
    }

    proptest! {
        /// Whatever the receiver does, the limit stays between the floor and the ceiling.
        #[test]
        fn the_limit_stays_between_floor_and_ceiling(
            ceiling in 0usize..300,
            samples in prop::collection::vec((load(), 0usize..400, 0i64..100), 0..400),
        ) {
            let mut limit = ConcurrencyLimit::new(ceiling);
            let mut now = 0;
            for (load, busy, step) in samples {
                now += step;
                limit.observe(load, busy, now);
                prop_assert!(limit.current() >= FLOOR);
                prop_assert!(limit.current() <= ceiling.max(FLOOR));
            }
        }

        /// An overload answer never raises the limit, and a neutral one never changes it.
        #[test]
        fn overload_never_raises_and_neutral_never_moves(
            samples in prop::collection::vec((load(), 0usize..400, 0i64..100), 0..200),
            busy in 0usize..400,
        ) {
            let mut limit = ConcurrencyLimit::new(256);
            let mut now = 0;
            for (load, b, step) in samples {
                now += step;
                limit.observe(load, b, now);
            }
            let before = limit.current();
            let mut neutral = limit.clone();
            neutral.observe(Load::Neutral, busy, now + 1);
            prop_assert_eq!(neutral.current(), before);
            limit.observe(Load::Overloaded, busy, now + 1);
            prop_assert!(limit.current() <= before);
        }
    }
}
