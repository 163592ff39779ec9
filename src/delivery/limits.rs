//! This node's concurrency per receiving host: each host's adaptive limit
//! ([`ConcurrencyLimit`]), its callbacks in flight and the deliveries claimed ahead for it,
//! shared by the delivery loop (which claims no more for a host than its limit and its window
//! ahead leave room for), the attempts (which report how each one went and start the next one
//! claimed ahead the moment their slot frees) and the API and metrics (which show it).
//!
//! Across a fleet, the operator's ceiling (`--max-per-host`) still bounds the leases every node
//! together holds for a host, those claimed ahead included, so it bounds the requests in flight
//! too; each node adapts its own share below it.

use crate::domain::{ConcurrencyLimit, Load, Millis, SigningKeys};
use crate::storage::ClaimedDelivery;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A host with nothing in flight and no callback for this long is forgotten: its next callback
/// starts again from the initial limit.
const FORGET_AFTER: Duration = Duration::from_secs(600);

struct HostState {
    limit: ConcurrencyLimit,
    in_flight: usize,
    last_used: Instant,
    /// Claimed ahead, in claim order, waiting for a slot.
    ready: VecDeque<Ready>,
}

impl HostState {
    fn new(ceiling: usize) -> Self {
        Self {
            limit: ConcurrencyLimit::new(ceiling),
            in_flight: 0,
            last_used: Instant::now(),
            ready: VecDeque::new(),
        }
    }

    /// Whether one more may start now.
    fn has_slot(&self) -> bool {
        self.in_flight < self.limit.current()
    }
}

/// A delivery claimed ahead: leased to this node until `lease_until`, with the keys that sign
/// it, waiting for a slot of its host.
pub struct Ready {
    pub delivery: ClaimedDelivery,
    pub keys: Arc<SigningKeys>,
    pub lease_until: Millis,
}

impl Ready {
    /// Whether an attempt started at `now` that takes up to `timeout` ends within the lease, so
    /// no other node can claim the delivery while it is on the wire.
    fn covered(&self, now: Millis, timeout: Duration) -> bool {
        now.plus(timeout).0 < self.lease_until.0
    }
}

/// A host's limit and callbacks in flight on this node, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConcurrency {
    pub host: String,
    pub limit: usize,
    pub in_flight: usize,
    /// Deliveries claimed ahead, waiting for a slot.
    pub claimed_ahead: usize,
}

/// What a claim may take per host, as [`HostLimits::rooms`] computes it.
#[derive(Debug, Default)]
pub struct Rooms {
    /// Hosts with no room left: the claim skips them.
    pub full: Vec<String>,
    /// Other hosts this node knows, and how many each may still take.
    pub hosts: Vec<String>,
    pub rooms: Vec<i64>,
    /// The room of a host this node does not know yet.
    pub default: i64,
    /// The windows ahead of every host, together: how many deliveries may wait claimed ahead
    /// on this node besides those a free slot takes at once.
    pub ahead: usize,
}

impl Rooms {
    /// What a claim could take for `host`.
    pub fn room_of(&self, host: &str) -> usize {
        if self.full.iter().any(|h| h == host) {
            return 0;
        }
        let room = self
            .hosts
            .iter()
            .position(|h| h == host)
            .map_or(self.default, |i| self.rooms[i]);
        usize::try_from(room).unwrap_or(0)
    }
}

/// Every host's limit and callbacks in flight on this node.
pub struct HostLimits {
    ceiling: usize,
    hosts: Mutex<HashMap<String, HostState>>,
    /// Told when a host's window ahead is half empty: the delivery loop claims its refill.
    refill: tokio::sync::Notify,
}

impl HostLimits {
    /// Limits that never pass `ceiling` for any host.
    pub fn new(ceiling: usize) -> Self {
        Self {
            ceiling,
            hosts: Mutex::default(),
            refill: tokio::sync::Notify::new(),
        }
    }

    /// Told when a host's window ahead is half empty (see [`HostLimits::rooms`]).
    pub fn refill_wanted(&self) -> &tokio::sync::Notify {
        &self.refill
    }

    /// The operator's ceiling per host.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostState>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many more deliveries a claim may take for each host now (its limit and its window
    /// ahead, [`ConcurrencyLimit::ahead`], less what is in flight and claimed ahead), and
    /// forgets hosts idle for long.
    pub fn rooms(&self) -> Rooms {
        let mut hosts = self.lock();
        hosts.retain(|_, s| {
            s.in_flight > 0 || !s.ready.is_empty() || s.last_used.elapsed() < FORGET_AFTER
        });
        let mut rooms = Rooms {
            default: i64::try_from(ConcurrencyLimit::new(self.ceiling).current())
                .unwrap_or(i64::MAX),
            ..Rooms::default()
        };
        for (host, state) in hosts.iter() {
            let ahead = state.limit.ahead();
            rooms.ahead += ahead;
            // A window ahead is refilled once it is half empty, so claims come in a few large
            // batches rather than one per freed slot (each claim costs about the same, whatever
            // it takes).
            let refill = state.ready.len() <= ahead / 2;
            let room = if refill {
                (state.limit.current() + ahead).saturating_sub(state.in_flight + state.ready.len())
            } else {
                0
            };
            if room == 0 {
                rooms.full.push(host.clone());
            } else {
                rooms.hosts.push(host.clone());
                rooms.rooms.push(i64::try_from(room).unwrap_or(i64::MAX));
            }
        }
        rooms
    }

    /// Counts one callback to `host` in flight until the returned slot is finished or dropped.
    pub fn start(self: &Arc<Self>, host: &str) -> HostSlot {
        let mut hosts = self.lock();
        let state = hosts
            .entry(host.to_owned())
            .or_insert_with(|| HostState::new(self.ceiling));
        state.in_flight += 1;
        state.last_used = Instant::now();
        self.slot(host)
    }

    fn slot(self: &Arc<Self>, host: &str) -> HostSlot {
        HostSlot {
            limits: Arc::clone(self),
            host: host.to_owned(),
            load: Load::Neutral,
            counted: true,
        }
    }

    /// A claimed delivery, kept behind those claimed before it for its host; the first of them
    /// started now (with its slot) if the host has a free slot. Those whose lease would no
    /// longer cover an attempt of `timeout` go to `stale`, to be given back.
    pub fn admit(
        self: &Arc<Self>,
        ready: Ready,
        now: Millis,
        timeout: Duration,
        stale: &mut Vec<Ready>,
    ) -> Option<(Ready, HostSlot)> {
        let host = ready.delivery.host.clone();
        let mut hosts = self.lock();
        let state = hosts
            .entry(host.clone())
            .or_insert_with(|| HostState::new(self.ceiling));
        state.ready.push_back(ready);
        let first = take_covered(state, now, timeout, stale)?;
        state.in_flight += 1;
        state.last_used = Instant::now();
        drop(hosts);
        Some((first, self.slot(&host)))
    }

    /// Keeps a claimed delivery to start when a slot of its host frees.
    pub fn keep(&self, ready: Ready) {
        let host = ready.delivery.host.clone();
        self.lock()
            .entry(host)
            .or_insert_with(|| HostState::new(self.ceiling))
            .ready
            .push_back(ready);
    }

    /// A delivery claimed ahead whose host has a free slot (its limit grew, or a slot freed
    /// while no attempt was there to take the next), started; or none. Those whose lease would
    /// no longer cover an attempt of `timeout` are put in `stale`, to be given back.
    pub fn next_startable(
        self: &Arc<Self>,
        now: Millis,
        timeout: Duration,
        stale: &mut Vec<Ready>,
    ) -> Option<(Ready, HostSlot)> {
        let mut hosts = self.lock();
        for (host, state) in hosts.iter_mut() {
            if let Some(ready) = take_covered(state, now, timeout, stale) {
                state.in_flight += 1;
                state.last_used = Instant::now();
                let host = host.clone();
                drop(hosts);
                return Some((ready, self.slot(&host)));
            }
        }
        None
    }

    /// Takes every delivery claimed ahead for `url` (its receiver just failed: its breaker may
    /// pause it, and the next attempts should follow what the database decides then).
    pub fn take_url(&self, host: &str, url: &str) -> Vec<Ready> {
        let mut hosts = self.lock();
        let Some(state) = hosts.get_mut(host) else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for ready in std::mem::take(&mut state.ready) {
            if ready.delivery.url == url {
                gone.push(ready);
            } else {
                state.ready.push_back(ready);
            }
        }
        gone
    }

    /// Takes every delivery claimed ahead (the node is stopping).
    pub fn take_all(&self) -> Vec<Ready> {
        self.lock()
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.ready))
            .collect()
    }

    /// Deliveries claimed ahead, over all hosts.
    pub fn ready_len(&self) -> usize {
        self.lock().values().map(|s| s.ready.len()).sum()
    }

    /// Every host this node knows, by name.
    pub fn snapshot(&self) -> Vec<HostConcurrency> {
        let mut all: Vec<HostConcurrency> = self
            .lock()
            .iter()
            .map(|(host, s)| HostConcurrency {
                host: host.clone(),
                limit: s.limit.current(),
                in_flight: s.in_flight,
                claimed_ahead: s.ready.len(),
            })
            .collect();
        all.sort_by(|a, b| a.host.cmp(&b.host));
        all
    }

    /// Whether `host`'s receiver holds it back now ([`ConcurrencyLimit::restrained`]).
    pub fn restrained(&self, host: &str, now: Millis) -> bool {
        self.lock()
            .get(host)
            .is_some_and(|s| s.limit.restrained(now.0))
    }

    /// Whether every slot `host`'s adaptive limit allows is busy on this node.
    pub fn at_limit(&self, host: &str) -> bool {
        self.lock()
            .get(host)
            .is_some_and(|s| s.in_flight >= s.limit.current())
    }

    /// One host, if this node knows it.
    pub fn of(&self, host: &str) -> Option<HostConcurrency> {
        self.lock().get(host).map(|s| HostConcurrency {
            host: host.to_owned(),
            limit: s.limit.current(),
            in_flight: s.in_flight,
            claimed_ahead: s.ready.len(),
        })
    }
}

/// The first delivery claimed ahead for `state`'s host whose lease still covers an attempt, if
/// the host has a free slot; the stale ones before it go to `stale`.
fn take_covered(
    state: &mut HostState,
    now: Millis,
    timeout: Duration,
    stale: &mut Vec<Ready>,
) -> Option<Ready> {
    if !state.has_slot() {
        return None;
    }
    while let Some(ready) = state.ready.pop_front() {
        if ready.covered(now, timeout) {
            return Some(ready);
        }
        stale.push(ready);
    }
    None
}

/// One callback in flight to a host. Finishing it reports how it went to the host's limit;
/// dropped unfinished (its task ended early), it only stops counting.
pub struct HostSlot {
    limits: Arc<HostLimits>,
    host: String,
    load: Load,
    /// Still counted in flight (the slot has not been handed on or released).
    counted: bool,
}

impl HostSlot {
    /// Ends the callback with what it said about the receiver's load.
    pub fn finish(mut self, load: Load) {
        self.load = load;
    }

    /// Ends the callback with what it said about the receiver's load and, in the same step,
    /// starts the next delivery claimed ahead for the host if the host's limit still has room
    /// for it (`go_on`: the attempt succeeded and the node is not stopping). Those whose lease
    /// would no longer cover an attempt of `timeout` go to `stale`, to be given back.
    pub fn finish_then_next(
        mut self,
        load: Load,
        go_on: bool,
        timeout: Duration,
        stale: &mut Vec<Ready>,
    ) -> Option<(Ready, HostSlot)> {
        self.load = load;
        let now = Millis::now();
        let mut hosts = self.limits.lock();
        let state = hosts.get_mut(&self.host)?;
        self.counted = false;
        release(state, load, now);
        let ready = if go_on {
            take_covered(state, now, timeout, stale)
        } else {
            None
        };
        let ready = ready?;
        state.in_flight += 1;
        let refill = state.ready.len() <= state.limit.ahead() / 2;
        drop(hosts);
        if refill {
            self.limits.refill.notify_one();
        }
        Some((ready, self.limits.slot(&self.host)))
    }
}

/// One callback to `state`'s host ended with `load`.
fn release(state: &mut HostState, load: Load, now: Millis) {
    let in_flight = state.in_flight;
    state.in_flight = in_flight.saturating_sub(1);
    state.last_used = Instant::now();
    state.limit.observe(load, in_flight, now.0);
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut hosts = self.limits.lock();
        if let Some(state) = hosts.get_mut(&self.host) {
            release(state, self.load, Millis::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_follow_each_hosts_limit_and_what_is_in_flight() {
        let limits = Arc::new(HostLimits::new(64));
        let rooms = limits.rooms();
        assert!(rooms.hosts.is_empty() && rooms.full.is_empty());
        assert_eq!(rooms.default, 8);
        let slots: Vec<HostSlot> = (0..8).map(|_| limits.start("a:80")).collect();
        let _one = limits.start("b:80");
        let rooms = limits.rooms();
        assert_eq!(rooms.full, vec!["a:80".to_owned()]);
        assert_eq!(rooms.hosts, vec!["b:80".to_owned()]);
        assert_eq!(rooms.rooms, vec![7]);
        // Eight fast successes while the host was at its limit raise it.
        for slot in slots {
            slot.finish(Load::Served(Duration::from_millis(1)));
        }
        let a = limits.of("a:80").unwrap();
        assert_eq!(a.in_flight, 0);
        assert!(a.limit > 8, "{a:?}");
    }

    fn ready(key: i64, host: &str, url: &str, lease_until: Millis) -> Ready {
        Ready {
            delivery: ClaimedDelivery {
                key,
                workspace_id: crate::storage::WorkspaceId(1),
                test: false,
                id: crate::domain::DeliveryId::generate(),
                event_type: crate::domain::EventType::Created,
                instance_id: format!("i{key}"),
                process_name: "p".into(),
                url: url.into(),
                host: host.into(),
                attempts: 0,
                due_at: Millis(0),
                occurred_at: Millis(0),
                format: crate::domain::CallbackFormat::Kianda,
                instance: None,
                trace_parent: None,
            },
            keys: Arc::new(SigningKeys {
                current: crate::domain::SigningSecret::parse(
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                )
                .unwrap(),
                previous: None,
            }),
            lease_until,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A host whose receiver answered quickly at its limit a few times.
    fn quick_host(limits: &Arc<HostLimits>, host: &str) {
        for _ in 0..3 {
            let slots: Vec<HostSlot> = (0..limits.of(host).map_or(8, |h| h.limit))
                .map(|_| limits.start(host))
                .collect();
            for slot in slots {
                slot.finish(Load::Served(Duration::from_millis(1)));
            }
        }
    }

    #[test]
    fn a_quick_host_gets_a_window_ahead_and_each_freed_slot_takes_the_next_at_once() {
        let limits = Arc::new(HostLimits::new(256));
        assert_eq!(
            limits.rooms().default,
            8,
            "an unknown host: no window ahead"
        );
        quick_host(&limits, "a:80");
        let limit = limits.of("a:80").unwrap().limit;
        assert!(limit > 8);
        let rooms = limits.rooms();
        let window = (1 + crate::domain::concurrency::AHEAD_ROUNDS) * limit;
        assert_eq!(
            rooms.room_of("a:80"),
            window,
            "its limit and its window ahead"
        );

        let lease = Millis::now().plus(TIMEOUT + Duration::from_secs(5));
        let (now, mut stale) = (Millis::now(), Vec::new());
        let mut running = Vec::new();
        for key in 0..i64::try_from(window).unwrap() {
            let r = ready(key, "a:80", "http://a/x", lease);
            if let Some(started) = limits.admit(r, now, TIMEOUT, &mut stale) {
                running.push(started);
            }
        }
        assert!(stale.is_empty());
        assert_eq!(running.len(), limit, "as many start as the limit allows");
        assert_eq!(
            limits.ready_len(),
            window - limit,
            "the rest wait, claimed ahead"
        );
        assert_eq!(limits.rooms().room_of("a:80"), 0);
        // A slot that frees hands on to the oldest one waiting, in the same step.
        let (first, slot) = running.remove(0);
        assert_eq!(first.delivery.key, 0);
        let next = slot.finish_then_next(
            Load::Served(Duration::from_millis(1)),
            true,
            TIMEOUT,
            &mut stale,
        );
        let (next, _slot) = next.expect("the next one starts at once");
        assert_eq!(next.delivery.key, i64::try_from(limit).unwrap());
        assert_eq!(limits.of("a:80").unwrap().in_flight, limit);
        assert_eq!(limits.ready_len(), window - limit - 1);
    }

    #[test]
    fn a_failure_stops_the_chain_and_takes_back_what_waits_for_its_url() {
        let limits = Arc::new(HostLimits::new(256));
        quick_host(&limits, "a:80");
        let limit = limits.of("a:80").unwrap().limit;
        let lease = Millis::now().plus(TIMEOUT + Duration::from_secs(5));
        let (now, mut stale) = (Millis::now(), Vec::new());
        let mut running = Vec::new();
        for key in 0..i64::try_from(limit + 4).unwrap() {
            let url = if key % 2 == 0 {
                "http://a/x"
            } else {
                "http://a/y"
            };
            if let Some(s) = limits.admit(ready(key, "a:80", url, lease), now, TIMEOUT, &mut stale)
            {
                running.push(s);
            }
        }
        let (_, slot) = running.remove(0);
        assert!(
            slot.finish_then_next(Load::Overloaded, false, TIMEOUT, &mut stale)
                .is_none()
        );
        let gone = limits.take_url("a:80", "http://a/x");
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|r| r.delivery.url == "http://a/x"));
        assert_eq!(limits.ready_len(), 2);
        assert_eq!(
            limits.rooms().room_of("a:80"),
            0,
            "an overloaded host gets nothing ahead"
        );
        assert_eq!(limits.take_all().len(), 2);
        assert_eq!(limits.ready_len(), 0);
    }

    #[test]
    fn a_delivery_whose_lease_no_longer_covers_an_attempt_is_never_started() {
        let limits = Arc::new(HostLimits::new(256));
        let mut stale = Vec::new();
        let now = Millis::now();
        let short = now.plus(TIMEOUT);
        assert!(
            limits
                .admit(
                    ready(1, "a:80", "http://a/x", short),
                    now,
                    TIMEOUT,
                    &mut stale
                )
                .is_none()
        );
        assert_eq!(stale.len(), 1, "to be given back");
        let long = now.plus(TIMEOUT + Duration::from_secs(5));
        limits.keep(ready(2, "a:80", "http://a/x", short));
        limits.keep(ready(3, "a:80", "http://a/x", long));
        let (started, _slot) = limits
            .next_startable(now, TIMEOUT, &mut stale)
            .expect("a slot is free");
        assert_eq!(started.delivery.key, 3);
        assert_eq!(
            stale.iter().map(|r| r.delivery.key).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn a_slot_dropped_unfinished_only_stops_counting() {
        let limits = Arc::new(HostLimits::new(64));
        drop(limits.start("a:80"));
        assert_eq!(
            limits.of("a:80"),
            Some(HostConcurrency {
                host: "a:80".into(),
                limit: 8,
                in_flight: 0,
                claimed_ahead: 0,
            })
        );
    }
}
