//! The slow-down of password guessing at the login form (issue 19, items 1 and 2).
//!
//! Two budgets: failures per **account** (the normalised email) and per **client address**.
//! Each failure makes the next attempt on that budget wait longer (doubling up to 8 s; an
//! address gets a few failures free, since many people may share one), and while an attempt
//! on a budget with failures is waiting or being checked, another on the same budget is
//! refused with 429 and `Retry-After`: guesses wait in turn, they never run in parallel.
//!
//! Locking the guessing, not the owner: a browser that signed in to an account before holds a
//! device cookie for it, and its attempts skip that account's budget (the address budget still
//! applies), so someone else's failures never make the owner wait. Everything is kept in
//! memory, bounded in entries and pruned by age; a restart forgets some slowness, nothing else.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest email address (RFC 5321's limit on a path); longer ones are refused first.
pub const MAX_EMAIL_LEN: usize = 254;
/// Most accounts, addresses or remembered devices kept each.
const MAX_ENTRIES: usize = 10_000;
/// A failure older than this no longer slows anything.
const FAILURE_MEMORY: Duration = Duration::from_secs(900);
/// How long a device that signed in is remembered.
pub const DEVICE_MEMORY: Duration = Duration::from_secs(30 * 86_400);
/// Failures an address makes before it is slowed down.
const FREE_ADDRESS_FAILURES: u32 = 5;

/// The budgets of one Herald process.
#[derive(Default)]
pub struct LoginGuard {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    accounts: Budgets<String>,
    addresses: Budgets<IpAddr>,
    /// Device cookie values (as given at sign-in) by account.
    devices: HashMap<String, (Vec<String>, Instant)>,
}

/// Failures per key, bounded and pruned by age.
struct Budgets<K> {
    map: HashMap<K, Budget>,
}

impl<K> Default for Budgets<K> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
}

#[derive(Clone, Copy)]
struct Budget {
    failures: u32,
    last: Instant,
    /// An attempt on this budget is waiting or being checked.
    busy: bool,
}

impl<K: Hash + Eq + Clone> Budgets<K> {
    fn delay(&self, key: &K, free: u32) -> Duration {
        match self.map.get(key) {
            Some(b) if b.last.elapsed() < FAILURE_MEMORY && b.failures > free => {
                let n = (b.failures - free).min(6);
                Duration::from_millis(250u64 << n).min(Duration::from_secs(8))
            }
            _ => Duration::ZERO,
        }
    }

    fn busy(&self, key: &K) -> bool {
        self.map.get(key).is_some_and(|b| b.busy)
    }

    fn entry(&mut self, key: &K) -> &mut Budget {
        if !self.map.contains_key(key) && self.map.len() >= MAX_ENTRIES {
            self.map
                .retain(|_, b| b.busy || b.last.elapsed() < FAILURE_MEMORY);
            if self.map.len() >= MAX_ENTRIES
                && let Some(oldest) = self
                    .map
                    .iter()
                    .filter(|(_, b)| !b.busy)
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.entry(key.clone()).or_insert(Budget {
            failures: 0,
            last: Instant::now(),
            busy: false,
        })
    }

    fn release(&mut self, key: &K, outcome: Outcome) {
        let Some(b) = self.map.get_mut(key) else {
            return;
        };
        b.busy = false;
        match outcome {
            Outcome::Failed => {
                b.failures = b.failures.saturating_add(1);
                b.last = Instant::now();
            }
            Outcome::Succeeded => {
                self.map.remove(key);
            }
            Outcome::Unchecked => {
                if b.failures == 0 {
                    self.map.remove(key);
                }
            }
        }
    }
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Failed,
    Succeeded,
    /// Not decided (the client left, or the check could not run).
    Unchecked,
}

/// An attempt let through: wait `delay`, check the password, then [`Ticket::finish`]. Dropped
/// unfinished (the client left), it frees its budgets without counting a failure.
pub struct Ticket {
    pub delay: Duration,
    guard: std::sync::Arc<LoginGuard>,
    email: String,
    address: IpAddr,
    /// The attempt holds the account's budget (it came from no known device).
    holds_account: bool,
    done: bool,
}

impl Ticket {
    pub fn finish(mut self, outcome: Outcome) {
        self.release(outcome);
    }

    fn release(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let guard = std::sync::Arc::clone(&self.guard);
        guard.with_state(|s| {
            s.addresses.release(&self.address, outcome);
            if self.holds_account {
                s.accounts.release(&self.email, outcome);
            } else if outcome == Outcome::Failed {
                // A known device's failure still counts against the account.
                let b = s.accounts.entry(&self.email);
                b.failures = b.failures.saturating_add(1);
                b.last = Instant::now();
            }
        });
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release(Outcome::Unchecked);
    }
}

impl LoginGuard {
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Lets an attempt for `email` from `address` through, or says how long to wait before
    /// retrying. `device` is the device cookie the browser sent, if any.
    pub fn admit(
        self: &std::sync::Arc<Self>,
        email: &str,
        address: IpAddr,
        device: Option<&str>,
    ) -> Result<Ticket, Duration> {
        self.with_state(|s| {
            let known = device.is_some_and(|d| {
                s.devices.get(email).is_some_and(|(ds, at)| {
                    at.elapsed() < DEVICE_MEMORY && ds.iter().any(|k| k == d)
                })
            });
            let by_address = s.addresses.delay(&address, FREE_ADDRESS_FAILURES);
            let by_account = if known {
                Duration::ZERO
            } else {
                s.accounts.delay(&email.to_owned(), 0)
            };
            let delay = by_address.max(by_account);
            let address_taken = by_address > Duration::ZERO && s.addresses.busy(&address);
            let account_taken = by_account > Duration::ZERO && s.accounts.busy(&email.to_owned());
            if address_taken || account_taken {
                return Err(delay.max(Duration::from_secs(1)));
            }
            s.addresses.entry(&address).busy = true;
            if !known {
                s.accounts.entry(&email.to_owned()).busy = true;
            }
            Ok(Ticket {
                delay,
                guard: std::sync::Arc::clone(self),
                email: email.to_owned(),
                address,
                holds_account: !known,
                done: false,
            })
        })
    }

    /// Remembers `device` (a fresh cookie value) as one that signed in to `email`.
    pub fn remember_device(&self, email: &str, device: &str) {
        self.with_state(|s| {
            if !s.devices.contains_key(email) && s.devices.len() >= MAX_ENTRIES {
                s.devices.retain(|_, (_, at)| at.elapsed() < DEVICE_MEMORY);
                if s.devices.len() >= MAX_ENTRIES
                    && let Some(oldest) = s
                        .devices
                        .iter()
                        .min_by_key(|(_, (_, at))| *at)
                        .map(|(k, _)| k.clone())
                {
                    s.devices.remove(&oldest);
                }
            }
            let (devices, at) = s
                .devices
                .entry(email.to_owned())
                .or_insert_with(|| (Vec::new(), Instant::now()));
            if !devices.iter().any(|d| d == device) {
                devices.push(device.to_owned());
                if devices.len() > 8 {
                    devices.remove(0);
                }
            }
            *at = Instant::now();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> std::sync::Arc<LoginGuard> {
        std::sync::Arc::new(LoginGuard::default())
    }

    fn addr(n: u8) -> IpAddr {
        IpAddr::from([10, 9, 8, n])
    }

    #[test]
    fn failures_slow_the_account_and_guesses_wait_in_turn() {
        let g = guard();
        let email = "guard-a@example.com";
        let t = g.admit(email, addr(1), None).unwrap();
        assert_eq!(t.delay, Duration::ZERO);
        t.finish(Outcome::Failed);
        let t = g.admit(email, addr(1), None).unwrap();
        assert!(t.delay > Duration::ZERO);
        // While it waits, a parallel guess for the account, from anywhere, is refused.
        assert!(g.admit(email, addr(2), None).is_err());
        t.finish(Outcome::Failed);
        let t = g.admit(email, addr(3), None).unwrap();
        t.finish(Outcome::Succeeded);
        assert_eq!(g.admit(email, addr(3), None).unwrap().delay, Duration::ZERO);
    }

    #[test]
    fn a_known_device_skips_the_account_budget() {
        let g = guard();
        let email = "guard-b@example.com";
        g.remember_device(email, "device-1");
        let attacker = {
            g.admit(email, addr(10), None)
                .unwrap()
                .finish(Outcome::Failed);
            g.admit(email, addr(10), None).unwrap()
        };
        assert!(attacker.delay > Duration::ZERO);
        let owner = g
            .admit(email, addr(11), Some("device-1"))
            .expect("the owner is let in");
        assert_eq!(owner.delay, Duration::ZERO);
        assert!(g.admit(email, addr(12), Some("forged")).is_err());
        drop(attacker);
        owner.finish(Outcome::Succeeded);
    }

    #[test]
    fn spraying_from_one_address_is_slowed_after_a_few_failures() {
        let g = guard();
        for i in 0..=FREE_ADDRESS_FAILURES {
            let t = g
                .admit(&format!("spray-{i}@example.com"), addr(20), None)
                .unwrap();
            t.finish(Outcome::Failed);
        }
        let t = g.admit("spray-next@example.com", addr(20), None).unwrap();
        assert!(t.delay > Duration::ZERO);
        assert!(g.admit("spray-other@example.com", addr(20), None).is_err());
        // Another address is not slowed by it.
        assert_eq!(
            g.admit("spray-x@example.com", addr(21), None)
                .unwrap()
                .delay,
            Duration::ZERO
        );
    }

    #[test]
    fn the_budgets_stay_bounded() {
        let mut budgets: Budgets<String> = Budgets::default();
        for i in 0..(MAX_ENTRIES + 50) {
            let key = format!("k{i}");
            budgets.entry(&key);
            budgets.release(&key, Outcome::Failed);
        }
        assert!(budgets.map.len() <= MAX_ENTRIES);
    }
}
