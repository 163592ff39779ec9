//! This node's concurrency per receiving host: each host's adaptive limit
//! ([`ConcurrencyLimit`]) and its callbacks in flight, shared by the delivery loop (which claims
//! no more for a host than its limit leaves room for), the attempts (which report how each one
//! went) and the API and metrics (which show it).
//!
//! Across a fleet, the operator's ceiling (`--max-per-host`) still bounds the leases every node
//! together holds for a host; each node adapts its own share below it.

use crate::domain::{ConcurrencyLimit, Load, Millis};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A host with nothing in flight and no callback for this long is forgotten: its next callback
/// starts again from the initial limit.
const FORGET_AFTER: Duration = Duration::from_secs(600);

struct HostState {
    limit: ConcurrencyLimit,
    in_flight: usize,
    last_used: Instant,
}

/// A host's limit and callbacks in flight on this node, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConcurrency {
    pub host: String,
    pub limit: usize,
    pub in_flight: usize,
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
}

impl HostLimits {
    /// Limits that never pass `ceiling` for any host.
    pub fn new(ceiling: usize) -> Self {
        Self {
            ceiling,
            hosts: Mutex::default(),
        }
    }

    /// The operator's ceiling per host.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostState>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many more callbacks each host may take now (its limit less what is in flight), and
    /// forgets hosts idle for long.
    pub fn rooms(&self) -> Rooms {
        let mut hosts = self.lock();
        hosts.retain(|_, s| s.in_flight > 0 || s.last_used.elapsed() < FORGET_AFTER);
        let mut rooms = Rooms {
            default: i64::try_from(ConcurrencyLimit::new(self.ceiling).current())
                .unwrap_or(i64::MAX),
            ..Rooms::default()
        };
        for (host, state) in hosts.iter() {
            let room = state.limit.current().saturating_sub(state.in_flight);
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
        let state = hosts.entry(host.to_owned()).or_insert_with(|| HostState {
            limit: ConcurrencyLimit::new(self.ceiling),
            in_flight: 0,
            last_used: Instant::now(),
        });
        state.in_flight += 1;
        state.last_used = Instant::now();
        HostSlot {
            limits: Arc::clone(self),
            host: host.to_owned(),
            load: Load::Neutral,
        }
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

    /// One host, if this node knows it.
    pub fn of(&self, host: &str) -> Option<HostConcurrency> {
        self.lock().get(host).map(|s| HostConcurrency {
            host: host.to_owned(),
            limit: s.limit.current(),
            in_flight: s.in_flight,
        })
    }
}

/// One callback in flight to a host. Finishing it reports how it went to the host's limit;
/// dropped unfinished (its task ended early), it only stops counting.
pub struct HostSlot {
    limits: Arc<HostLimits>,
    host: String,
    load: Load,
}

impl HostSlot {
    /// Ends the callback with what it said about the receiver's load.
    pub fn finish(mut self, load: Load) {
        self.load = load;
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut hosts = self.limits.lock();
        if let Some(state) = hosts.get_mut(&self.host) {
            let in_flight = state.in_flight;
            state.in_flight = in_flight.saturating_sub(1);
            state.last_used = Instant::now();
            state.limit.observe(self.load, in_flight, Millis::now().0);
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

    #[test]
    fn a_slot_dropped_unfinished_only_stops_counting() {
        let limits = Arc::new(HostLimits::new(64));
        drop(limits.start("a:80"));
        assert_eq!(
            limits.of("a:80"),
            Some(HostConcurrency {
                host: "a:80".into(),
                limit: 8,
                in_flight: 0
            })
        );
    }
}
