//! Herald's operations, shared by the REST API and the web UI: each takes the caller, checks
//! what the rules require, calls storage, and wakes the delivery worker after a change.

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
}

/// How long a resolved API token is trusted without asking the database again. A change made
/// on this node (role, deactivation) takes effect at once; one made on another node of a fleet
/// within this time.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// API tokens resolved in the last [`TOKEN_CACHE_TTL`], so a busy client costs no query per
/// request. Keyed by the token's hash; only successful lookups are kept.
#[derive(Default)]
struct CallerCache {
    entries: std::sync::Mutex<std::collections::HashMap<TokenHash, (std::time::Instant, Caller)>>,
}

impl CallerCache {
    /// Most tokens kept; beyond this the cache starts over (a flood of distinct tokens cannot
    /// grow memory).
    const MAX_ENTRIES: usize = 10_000;

    fn get(&self, hash: &TokenHash) -> Option<Caller> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(_, caller)| caller.clone())
    }

    fn put(&self, hash: TokenHash, caller: Caller) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (std::time::Instant::now(), caller));
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
        }
    }

    /// This node's counters, which its worker shares.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Prometheus text of this node's counters and of the queue; administrators and
    /// developers only, like the delivery log.
    pub async fn metrics_text(&self, caller: &Caller) -> Result<String> {
        require_webhook_manager(caller)?;
        let queue = self.store.queue_stats(Millis::now()).await?;
        Ok(self.metrics.render(&queue))
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

    /// Resolves an API token to its caller.
    pub async fn authenticate(&self, token: &crate::domain::ApiToken) -> Result<Caller> {
        let hash = token.hash();
        if let Some(caller) = self.callers.get(&hash) {
            return Ok(caller);
        }
        let caller = self
            .store
            .caller_by_token(&hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        self.callers.put(hash, caller.clone());
        Ok(caller)
    }

    // --- users ------------------------------------------------------------------------------

    /// Adds a user with a new API token; administrators only.
    pub async fn create_user(
        &self,
        caller: &Caller,
        request: NewUserRequest,
    ) -> Result<CreatedUser> {
        require_administrator(caller, "add users")?;
        let (password, generated) = match request.password {
            Some(p) => (p, false),
            None => (Password::generate(), true),
        };
        let user = NewUser {
            email: request.email.clone(),
            display_name: request.display_name.as_str().to_owned(),
            role: request.role,
            password_hash: password.hash(),
        };
        let id = self
            .store
            .create_user(caller.workspace_id, &user)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict { code, .. } => Error::Conflict {
                    code,
                    message: format!(
                        "a user with the email {} already exists",
                        request.email.as_str()
                    ),
                },
                other => other,
            })?;
        let token = ApiToken::generate();
        self.store.add_token(id, &token.hash()).await?;
        tracing::info!(by = %caller.email, email = %request.email.as_str(), role = %request.role, "user added");
        Ok(CreatedUser {
            user: UserRecord {
                email: request.email.as_str().to_owned(),
                display_name: user.display_name,
                role: request.role,
                active: true,
                created_at: Millis::now(),
            },
            token,
            generated_password: generated.then_some(password),
        })
    }

    /// Changes a user's role, active flag or password; administrators only, and never their own
    /// role or active flag (so a workspace cannot lose its last administrator by accident).
    pub async fn change_user(
        &self,
        caller: &Caller,
        email: &Email,
        change: &UserChange,
    ) -> Result<()> {
        require_administrator(caller, "change users")?;
        if email.as_str() == caller.email && !matches!(change, UserChange::PasswordHash(_)) {
            return Err(Error::Conflict {
                code: "own_account",
                message: "you cannot change your own role or deactivate yourself".into(),
            });
        }
        if !self
            .store
            .change_user(caller.workspace_id, email, change)
            .await?
        {
            return Err(Error::NotFound(format!(
                "no user with the email {}",
                email.as_str()
            )));
        }
        self.callers.clear();
        tracing::info!(by = %caller.email, user = %email.as_str(), "user changed");
        Ok(())
    }

    /// Checks an email and password and opens a browser session. The same error answers an
    /// unknown email, a wrong password and a deactivated user, and the password is hashed even
    /// for an unknown email, so neither the answer nor its timing tells which.
    pub async fn login(&self, email: &str, password: &str) -> Result<(String, SessionRecord)> {
        // A real hash of a random password, so an unknown email costs the same as a known one.
        static DUMMY: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| Password::generate().hash());
        let wrong = || Error::Unauthenticated;
        let record = match Email::parse(email) {
            Ok(email) => self.store.user_for_login(&email).await?,
            Err(_) => None,
        };
        let candidate = Password::parse(password).ok();
        let hash = record
            .as_ref()
            .map_or(DUMMY.as_str(), |r| r.password_hash.as_str())
            .to_owned();
        let matches = match candidate {
            Some(p) => tokio::task::spawn_blocking(move || p.verify(&hash))
                .await
                .unwrap_or(false),
            None => false,
        };
        let record = record.filter(|r| matches && r.active).ok_or_else(wrong)?;
        let token = ApiToken::generate();
        let csrf = ApiToken::generate().expose().to_owned();
        let now = Millis::now();
        self.store
            .create_session(
                &token.hash(),
                record.caller.user_id,
                &csrf,
                now,
                now.plus(SESSION_LIFETIME),
            )
            .await?;
        tracing::info!(user = %record.caller.email, "signed in");
        Ok((
            token.expose().to_owned(),
            SessionRecord {
                caller: record.caller,
                display_name: record.display_name,
                csrf,
            },
        ))
    }

    /// The session a cookie names, if still valid.
    pub async fn session(&self, cookie: &str) -> Result<Option<SessionRecord>> {
        let Ok(token) = ApiToken::parse(cookie) else {
            return Ok(None);
        };
        Ok(self.store.session(&token.hash(), Millis::now()).await?)
    }

    /// Ends a session.
    pub async fn logout(&self, cookie: &str) -> Result<()> {
        if let Ok(token) = ApiToken::parse(cookie) {
            self.store.delete_session(&token.hash()).await?;
        }
        Ok(())
    }

    /// Succeeded and failed attempts per hour over the last 24 hours, oldest first, 24 entries.
    pub async fn hourly_outcomes(&self, caller: &Caller) -> Result<Vec<(Millis, i64, i64)>> {
        require_webhook_manager(caller)?;
        let hour = 3_600_000;
        let now = Millis::now();
        let first = (now.0 / hour - 23) * hour;
        let rows = self
            .store
            .hourly_outcomes(caller.workspace_id, Millis(first))
            .await?;
        Ok((0..24)
            .map(|i| {
                let at = first + i * hour;
                let (ok, bad) = rows
                    .iter()
                    .find(|(h, _, _)| h.0 == at)
                    .map_or((0, 0), |(_, ok, bad)| (*ok, *bad));
                (Millis(at), ok, bad)
            })
            .collect())
    }

    pub async fn users(&self, caller: &Caller) -> Result<Vec<UserRecord>> {
        require_administrator(caller, "list users")?;
        Ok(self.store.users(caller.workspace_id).await?)
    }

    // --- webhooks ---------------------------------------------------------------------------

    pub async fn webhook_settings(&self, caller: &Caller) -> Result<WebhookSettings> {
        require_webhook_manager(caller)?;
        Ok(self.store.webhook_settings(caller.workspace_id).await?)
    }

    pub async fn save_webhook_settings(
        &self,
        caller: &Caller,
        settings: &WebhookSettings,
    ) -> Result<WebhookSettings> {
        require_webhook_manager(caller)?;
        self.store
            .save_webhook_settings(caller.workspace_id, settings)
            .await?;
        tracing::info!(by = %caller.email, "webhook settings saved");
        Ok(self.store.webhook_settings(caller.workspace_id).await?)
    }

    /// Calls `url` now with a test callback of `event` (instance `herald-test-<n>`, header
    /// `webhook-test: true`), logs it like any delivery, and returns the outcome.
    pub async fn test_callback(
        &self,
        caller: &Caller,
        event: EventType,
        url: &CallbackUrl,
    ) -> Result<TestOutcome> {
        require_webhook_manager(caller)?;
        self.outbound
            .egress
            .check_url(url)
            .map_err(|e| Error::Invalid(format!("url: {e}")))?;
        let out = &self.outbound;
        let now = Millis::now();
        let instance_id = format!("herald-test-{}", now.0);
        let request = ClaimRequest {
            node: &out.node_id,
            now,
            lease_until: now.plus(out.client.timeout() + out.lease_margin),
            limit: 1,
            per_host_cap: out.per_host_cap as i64,
            full_hosts: &[],
        };
        let keys = self.store.signing_keys(caller.workspace_id, now).await?;
        let claimed = self
            .store
            .create_test_delivery(caller.workspace_id, event, url, &instance_id, request)
            .await?;
        let result =
            crate::delivery::attempt(&out.client, &claimed, &keys, &out.retry, &out.node_id).await;
        // Stored as the worker stores results: one the database refuses is stored without the
        // receiver's response rather than failing the request.
        crate::delivery::store_results(
            self.store.as_ref(),
            &mut vec![result.clone()],
            &out.breaker,
            &mut Vec::new(),
        )
        .await?;
        Ok(TestOutcome {
            delivery_id: claimed.id,
            instance_id,
            attempt: result.attempt,
        })
    }

    /// The egress rule URLs are checked against when saved.
    pub fn egress(&self) -> &crate::delivery::EgressPolicy {
        &self.outbound.egress
    }

    /// The workspace's signing secrets.
    pub async fn signing_keys(&self, caller: &Caller) -> Result<crate::domain::SigningKeys> {
        require_webhook_manager(caller)?;
        Ok(self
            .store
            .signing_keys(caller.workspace_id, Millis::now())
            .await?)
    }

    /// Replaces the signing secret; the old one keeps signing alongside for 24 hours.
    pub async fn rotate_signing_secret(
        &self,
        caller: &Caller,
    ) -> Result<crate::domain::SigningKeys> {
        require_webhook_manager(caller)?;
        let now = Millis::now();
        // Make sure a first secret exists, so the rotation keeps it as the previous one.
        self.store.signing_keys(caller.workspace_id, now).await?;
        self.store
            .rotate_signing_secret(
                caller.workspace_id,
                &crate::domain::SigningSecret::generate(),
                now,
            )
            .await?;
        tracing::info!(by = %caller.email, "signing secret rotated");
        Ok(self.store.signing_keys(caller.workspace_id, now).await?)
    }

    /// The health of every destination that has failed at least once.
    pub async fn destinations(&self, caller: &Caller) -> Result<Vec<DestinationRecord>> {
        require_webhook_manager(caller)?;
        Ok(self.store.destinations(caller.workspace_id).await?)
    }

    /// Enables a URL that was disabled because its receiver answered 410 Gone. `url` is the URL
    /// as configured or as the health listing shows it (without credentials). Returns the
    /// destinations enabled.
    pub async fn enable_destination(&self, caller: &Caller, url: &str) -> Result<usize> {
        require_webhook_manager(caller)?;
        let url = url.trim();
        let mut enabled = 0;
        for d in self.store.destinations(caller.workspace_id).await? {
            let matches = d.url == url || crate::domain::webhook::redact(&d.url) == url;
            if matches
                && d.disabled.is_some()
                && self
                    .store
                    .enable_destination(caller.workspace_id, &d.url)
                    .await?
            {
                tracing::info!(by = %caller.email, url = %crate::domain::webhook::redact(&d.url), "callback URL enabled again");
                enabled += 1;
            }
        }
        if enabled == 0 {
            return Err(Error::NotFound(format!(
                "no disabled callback URL is `{}`; GET /api/v1/webhooks/health lists them",
                crate::domain::webhook::redact(url)
            )));
        }
        Ok(enabled)
    }

    // --- processes --------------------------------------------------------------------------

    pub async fn create_process(
        &self,
        caller: &Caller,
        name: &ProcessName,
        title: &ProcessTitle,
    ) -> Result<ProcessRecord> {
        self.store
            .create_process(caller.workspace_id, name, title, &caller.email)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict { code, .. } => Error::Conflict {
                    code,
                    message: format!("a process named `{name}` already exists"),
                },
                other => other,
            })
    }

    pub async fn processes(&self, caller: &Caller) -> Result<Vec<ProcessRecord>> {
        Ok(self.store.processes(caller.workspace_id).await?)
    }

    pub async fn process(&self, caller: &Caller, name: &ProcessName) -> Result<ProcessRecord> {
        self.store
            .process(caller.workspace_id, name)
            .await?
            .ok_or_else(|| process_not_found(name))
    }

    // --- instances --------------------------------------------------------------------------

    pub async fn create_instance(
        &self,
        caller: &Caller,
        process: &ProcessName,
        data: &InstanceData,
        status: Option<InstanceStatus>,
    ) -> Result<InstanceRecord> {
        let status = status.unwrap_or_else(InstanceStatus::default_status);
        let started = std::time::Instant::now();
        let created = self
            .store
            .create_instance(caller.workspace_id, process, data, &status, &caller.email)
            .await?
            .ok_or_else(|| process_not_found(process))?;
        self.committed(EventType::Created, started);
        Ok(created)
    }

    pub async fn instance(&self, caller: &Caller, id: &InstanceId) -> Result<InstanceRecord> {
        self.store
            .instance(caller.workspace_id, id)
            .await?
            .ok_or_else(|| instance_not_found(id))
    }

    pub async fn instances(
        &self,
        caller: &Caller,
        process: &ProcessName,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>> {
        self.process(caller, process).await?;
        Ok(self
            .store
            .instances(caller.workspace_id, process, cursor, limit)
            .await?)
    }

    /// Applies a change with optimistic concurrency. Without `If-Match`, a concurrent writer
    /// makes this re-read and re-apply the patch (a merge patch composes); with it, the client
    /// gets 412 instead.
    pub async fn update_instance(
        &self,
        caller: &Caller,
        id: &InstanceId,
        change: &InstanceChange,
    ) -> Result<Updated> {
        for _ in 0..20 {
            let current = self.instance(caller, id).await?;
            if current.deleted_at.is_some() {
                return Err(in_recycle_bin(id));
            }
            if let Some(expected) = change.if_match
                && expected != current.version
            {
                return Err(Error::PreconditionFailed(format!(
                    "instance {id} is at version {}, not {expected}; read it again and retry",
                    current.version
                )));
            }
            let data = match &change.data {
                Some(patch) => current.data.merge_patch(patch)?,
                None => current.data.clone(),
            };
            let status = change.status.clone().unwrap_or_else(|| {
                InstanceStatus::parse(&current.status)
                    .unwrap_or_else(|_| InstanceStatus::default_status())
            });
            if data == current.data && status.as_str() == current.status {
                return Ok(Updated {
                    instance: current,
                    changed: false,
                });
            }
            let update = InstanceUpdate {
                data,
                status,
                expected_version: current.version,
            };
            let started = std::time::Instant::now();
            match self
                .store
                .update_instance(caller.workspace_id, id, &update, &caller.email)
                .await?
            {
                Written::Done(instance) => {
                    self.committed(EventType::Updated, started);
                    return Ok(Updated {
                        instance: *instance,
                        changed: true,
                    });
                }
                Written::NotFound => return Err(instance_not_found(id)),
                Written::WrongState => return Err(in_recycle_bin(id)),
                Written::VersionChanged => continue,
            }
        }
        Err(Error::Conflict {
            code: "too_much_contention",
            message: format!("instance {id} is being changed by too many writers at once; retry"),
        })
    }

    pub async fn delete_instance(&self, caller: &Caller, id: &InstanceId) -> Result<()> {
        let started = std::time::Instant::now();
        match self
            .store
            .delete_instance(caller.workspace_id, id, &caller.email)
            .await?
        {
            Written::Done(_) => {
                self.committed(EventType::Deleted, started);
                Ok(())
            }
            Written::NotFound => Err(instance_not_found(id)),
            Written::WrongState | Written::VersionChanged => Err(in_recycle_bin(id)),
        }
    }

    /// Brings an instance back from the recycle bin; administrators only, as in the original.
    pub async fn restore_instance(
        &self,
        caller: &Caller,
        id: &InstanceId,
    ) -> Result<InstanceRecord> {
        if caller.role != Role::Administrator {
            return Err(Error::Forbidden(
                "only administrators may restore instances from the recycle bin".into(),
            ));
        }
        let started = std::time::Instant::now();
        match self
            .store
            .restore_instance(caller.workspace_id, id, &caller.email)
            .await?
        {
            Written::Done(instance) => {
                self.committed(EventType::Created, started);
                Ok(*instance)
            }
            Written::NotFound => Err(instance_not_found(id)),
            Written::WrongState | Written::VersionChanged => Err(Error::Conflict {
                code: "instance_not_deleted",
                message: format!("instance {id} is not in the recycle bin"),
            }),
        }
    }

    pub async fn recycle_bin(
        &self,
        caller: &Caller,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>> {
        if caller.role != Role::Administrator {
            return Err(Error::Forbidden(
                "only administrators may open the recycle bin".into(),
            ));
        }
        Ok(self
            .store
            .recycle_bin(caller.workspace_id, cursor, limit)
            .await?)
    }

    // --- deliveries -------------------------------------------------------------------------

    pub async fn deliveries(
        &self,
        caller: &Caller,
        filter: &DeliveryFilter,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<DeliveryRecord>> {
        require_webhook_manager(caller)?;
        Ok(self
            .store
            .deliveries(caller.workspace_id, filter, cursor, limit)
            .await?)
    }

    pub async fn delivery(
        &self,
        caller: &Caller,
        id: &DeliveryId,
    ) -> Result<(DeliveryRecord, Vec<AttemptRecord>)> {
        require_webhook_manager(caller)?;
        self.store
            .delivery(caller.workspace_id, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no delivery with ID {id}")))
    }

    /// Queues a new attempt now, with the same `webhook-id`, whatever the delivery's state.
    pub async fn redeliver(&self, caller: &Caller, id: &DeliveryId) -> Result<()> {
        require_webhook_manager(caller)?;
        if !self
            .store
            .redeliver(caller.workspace_id, id, Millis::now())
            .await?
        {
            return Err(Error::NotFound(format!("no delivery with ID {id}")));
        }
        self.announce();
        Ok(())
    }
}

impl Herald {
    /// Redelivers every delivery matching a filter (at least one criterion); returns how many.
    pub async fn redeliver_matching(
        &self,
        caller: &Caller,
        filter: &DeliveryFilter,
    ) -> Result<u64> {
        require_webhook_manager(caller)?;
        let empty = filter.status.is_none()
            && filter.event_type.is_none()
            && filter.instance_id.is_none()
            && filter.url.is_none()
            && filter.since.is_none()
            && filter.until.is_none();
        if empty {
            return Err(Error::Invalid(
                "give at least one of status, eventType, instanceId, url, since, until".into(),
            ));
        }
        let n = self
            .store
            .redeliver_matching(caller.workspace_id, filter, Millis::now())
            .await?;
        tracing::info!(by = %caller.email, deliveries = n, "bulk redelivery");
        self.announce();
        Ok(n)
    }
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
