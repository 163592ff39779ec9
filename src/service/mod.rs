//! Herald's operations, shared by the REST API and the web UI: each takes the caller, checks
//! what the rules require, calls storage, and wakes the delivery worker after a change.

mod accounts;
mod deliveries;
mod idempotency;
mod instances;
pub mod login_guard;
mod readiness;
mod tokens;
mod webhooks;

pub use deliveries::{DeliverySearch, SearchText};
pub use idempotency::KEY_LIFETIME;
pub use readiness::WorkerRunning;
pub use tokens::CreatedToken;
pub use webhooks::{PENDING_COUNTED, RemovedUrl};

use crate::delivery::CallbackClient;
use crate::domain::TokenHash;
use crate::domain::{
    ApiToken, BreakerPolicy, CallbackUrl, DisplayName, Email, EventType, Password, RetrySchedule,
};
use crate::domain::{
    DeliveryId, InstanceData, InstanceId, InstanceStatus, Millis, ProcessName, ProcessTitle, Role,
    WebhookSettings,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::storage::{
    AttemptRecord, Caller, DeliveryFilter, DeliveryRecord, InstanceRecord, InstanceUpdate, NewUser,
    Page, ProcessRecord, Store, UserRecord, Written,
};
use crate::storage::{ClaimRequest, DestinationRecord, SessionRecord, UserChange};

/// How long a browser session lasts.
pub const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
use std::sync::Arc;
use tokio::sync::Notify;

/// The application: storage, the worker's wake-up signal, and what test callbacks need.
/// Cheap to clone.
#[derive(Clone)]
pub struct Herald {
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    outbound: Arc<Outbound>,
    callers: Arc<CallerCache>,
    login_guard: Arc<login_guard::LoginGuard>,
    worker_running: Arc<WorkerRunning>,
}

/// How long a resolved API token is trusted without asking the database again. A change made
/// on this node (role, deactivation) takes effect at once; one made on another node of a fleet
/// within this time.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a token's `lastUsedAt` is written at most, per node.
pub const TOKEN_TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A cached token: when it was looked up, its caller, and when the token expires.
type CachedCaller = (std::time::Instant, Caller, Option<Millis>);

/// API tokens resolved in the last [`TOKEN_CACHE_TTL`], so a busy client costs no query per
/// request. Keyed by the token's hash; only successful lookups are kept.
#[derive(Default)]
struct CallerCache {
    entries: std::sync::Mutex<std::collections::HashMap<TokenHash, CachedCaller>>,
    /// When each token's use was last written down by this node.
    touched: std::sync::Mutex<std::collections::HashMap<TokenHash, std::time::Instant>>,
}

impl CallerCache {
    /// Most tokens kept; beyond this the cache starts over (a flood of distinct tokens cannot
    /// grow memory).
    const MAX_ENTRIES: usize = 10_000;

    fn get(&self, hash: &TokenHash, now: Millis) -> Option<Caller> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(at, _, expires)| {
                at.elapsed() < TOKEN_CACHE_TTL && expires.is_none_or(|e| e > now)
            })
            .map(|(_, caller, _)| caller.clone())
    }

    fn put(&self, hash: TokenHash, caller: Caller, expires: Option<Millis>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (std::time::Instant::now(), caller, expires));
    }

    /// Whether this token's use is due to be written down, marking it written if so.
    fn touch_due(&self, hash: &TokenHash) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        if touched
            .get(hash)
            .is_some_and(|at| at.elapsed() < TOKEN_TOUCH_EVERY)
        {
            return false;
        }
        if touched.len() >= Self::MAX_ENTRIES {
            touched.clear();
        }
        touched.insert(hash.clone(), std::time::Instant::now());
        true
    }

    fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What the API needs to make a test callback itself.
pub struct Outbound {
    pub client: CallbackClient,
    /// The operator's egress rule, also applied when URLs are saved.
    pub egress: crate::delivery::EgressPolicy,
    pub node_id: String,
    pub retry: RetrySchedule,
    pub breaker: BreakerPolicy,
    pub lease_margin: std::time::Duration,
    pub per_host_cap: usize,
    /// The worker's adaptive limit per receiving host, as the API and metrics show it.
    pub limits: Arc<crate::delivery::HostLimits>,
    /// Instance writes wait here while the worker is behind (`--backpressure-lag`).
    pub gate: Arc<crate::delivery::WriteGate>,
}

/// The outcome of a test callback.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub delivery_id: DeliveryId,
    pub instance_id: String,
    pub attempt: AttemptRecord,
}

/// A change to an instance: a merge patch of its data and/or a new status.
#[derive(Debug, Clone, Default)]
pub struct InstanceChange {
    pub data: Option<InstanceData>,
    pub status: Option<InstanceStatus>,
    /// The version the client last saw (`If-Match`); a different current version is refused.
    pub if_match: Option<i64>,
}

/// A user an administrator adds.
#[derive(Debug, Clone)]
pub struct NewUserRequest {
    pub email: Email,
    pub display_name: DisplayName,
    pub role: Role,
    /// `None` generates one, returned once.
    pub password: Option<Password>,
}

/// A user just added, with the secrets shown only now.
#[derive(Debug)]
pub struct CreatedUser {
    pub user: UserRecord,
    pub token: ApiToken,
    pub generated_password: Option<Password>,
}

/// The outcome of an update: the instance as it now is, and whether anything changed.
#[derive(Debug, Clone)]
pub struct Updated {
    pub instance: InstanceRecord,
    pub changed: bool,
}

impl Herald {
    pub fn new(store: Arc<dyn Store>, wake: Arc<Notify>, outbound: Arc<Outbound>) -> Self {
        Self {
            store,
            wake,
            metrics: Arc::default(),
            outbound,
            callers: Arc::default(),
            login_guard: Arc::default(),
            worker_running: Arc::default(),
        }
    }

    /// The operator's ceiling on any host's concurrency (`--max-per-host`).
    pub fn per_host_ceiling(&self) -> usize {
        self.outbound.per_host_cap
    }

    /// This node's counters, which its worker shares.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The slow-down of password guessing at sign-in.
    pub fn login_guard(&self) -> &Arc<login_guard::LoginGuard> {
        &self.login_guard
    }

    /// The Prometheus text of this node's counters and of the queue; administrators and
    /// developers only, like the delivery log.
    pub async fn metrics_text(&self, caller: &Caller) -> Result<String> {
        require_webhook_manager(caller)?;
        let queue = self.store.queue_stats(Millis::now()).await?;
        Ok(self.metrics.render(
            &queue,
            &self.outbound.limits.snapshot(),
            &self.outbound.gate,
        ))
    }

    /// Counts an event this node committed (its write began at `started`) and wakes the worker
    /// for its deliveries.
    fn committed(&self, event: EventType, started: std::time::Instant) {
        self.metrics
            .instance_write_duration
            .observe(started.elapsed());
        self.metrics.event(event);
        self.announce();
    }

    /// Wakes this node's worker after a write that queued deliveries, unless the store
    /// announces it anyway (PostgreSQL's `NOTIFY` reaches this node's listener too).
    fn announce(&self) {
        if !self.store.announces_own_writes() {
            self.wake.notify_one();
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // --- users ------------------------------------------------------------------------------

    // --- webhooks ---------------------------------------------------------------------------

    // --- processes --------------------------------------------------------------------------

    // --- instances --------------------------------------------------------------------------

    // --- deliveries -------------------------------------------------------------------------
}

fn require_administrator(caller: &Caller, what: &str) -> Result<()> {
    if caller.role == Role::Administrator {
        Ok(())
    } else {
        Err(Error::Forbidden(format!("only administrators may {what}")))
    }
}

fn require_webhook_manager(caller: &Caller) -> Result<()> {
    if caller.role.manages_webhooks() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "only administrators and developers may manage webhooks".into(),
        ))
    }
}

fn process_not_found(name: &ProcessName) -> Error {
    Error::NotFound(format!("no process named `{name}`"))
}

fn instance_not_found(id: &InstanceId) -> Error {
    Error::NotFound(format!("no instance with ID {id}"))
}

fn in_recycle_bin(id: &InstanceId) -> Error {
    Error::Conflict {
        code: "instance_deleted",
        message: format!(
            "instance {id} is in the recycle bin; an administrator can restore it first"
        ),
    }
}
