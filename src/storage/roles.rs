//! What storage offers, one trait per role, so that each caller holds only what it uses: the
//! worker holds the [`Queue`] (and the signing keys of [`Settings`]), the API and UI the whole
//! [`Store`]. Each backend implements every role in a file of its own.

use super::*;

/// The schema and the node: migrations, wake-ups from other nodes, the start of a delivery node.
#[async_trait]
pub trait Schema: Send + Sync + 'static {
    /// Applies pending migrations; fails if the schema is newer than this build knows.
    /// Applies the migrations this build knows and the database lacks; returns their versions
    /// and the schema version now.
    async fn migrate(&self) -> Result<(Vec<i64>, i64)>;

    /// Wakes `wake` whenever another node queues deliveries (PostgreSQL `LISTEN`). SQLite has a
    /// single node, whose own writes wake its worker directly.
    async fn subscribe(&self, _wake: Arc<tokio::sync::Notify>) -> Result<()> {
        Ok(())
    }

    /// Whether [`Schema::subscribe`] also announces this node's own writes. The service then does
    /// not wake the worker itself: two wake-ups per write make the second claim find nothing,
    /// which on PostgreSQL was a third of all claims at 1,000 events/s.
    fn announces_own_writes(&self) -> bool {
        false
    }

    /// Starts this process as the delivery node `node`, and ends the leases a previous process
    /// of the same node left behind: that process is provably gone, so its deliveries need not
    /// wait for their leases to run out (and its dead leases no longer count against the
    /// per-host cap). SQLite serves one node: it takes the database's node lock, held while the
    /// store lives (a second `herald serve` on the same file is refused), and ends every lease.
    /// PostgreSQL ends the leases held under `node`, a name only one live process can hold
    /// (host name and listening port); other nodes' leases end by time. Returns how many ended.
    async fn start_node(&self, node: &str) -> Result<u64>;

    /// Fails with [`SchemaError`] unless the schema is exactly current (used with `--no-migrate`).
    async fn check_schema(&self) -> Result<()>;
}

/// Workspaces, users, API tokens and browser sessions.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// Creates the workspace `name` with its first administrator and token, unless a workspace
    /// already exists. Returns whether it created anything. Safe to race from several nodes.
    async fn bootstrap(&self, name: &str, admin: &NewUser, token: &NewToken) -> Result<bool>;

    /// The ID of a workspace by name.
    async fn workspace_id(&self, name: &str) -> Result<Option<WorkspaceId>>;

    /// Adds a user to a workspace.
    async fn create_user(&self, workspace: WorkspaceId, user: &NewUser) -> Result<UserId>;

    /// The users of a workspace, by email.
    async fn users(&self, workspace: WorkspaceId) -> Result<Vec<UserRecord>>;

    /// A user by email, for login.
    async fn user_for_login(&self, email: &Email) -> Result<Option<LoginRecord>>;

    /// Changes a user of a workspace; `false` if there is no such user.
    async fn change_user(
        &self,
        workspace: WorkspaceId,
        email: &Email,
        change: &UserChange,
    ) -> Result<bool>;

    /// Stores a new session (the hash of its cookie).
    async fn create_session(
        &self,
        token: &TokenHash,
        user: UserId,
        csrf: &str,
        now: Millis,
        expires: Millis,
    ) -> Result<()>;

    /// The session of a cookie, if it exists, has not expired and its user is active.
    async fn session(&self, token: &TokenHash, now: Millis) -> Result<Option<SessionRecord>>;

    /// Ends a session.
    async fn delete_session(&self, token: &TokenHash) -> Result<()>;

    /// Stores a token (its hash) for a user; returns its ID.
    async fn add_token(&self, user: UserId, token: &NewToken) -> Result<i64>;

    /// A user's tokens, newest first.
    async fn tokens(&self, user: UserId) -> Result<Vec<TokenRecord>>;

    /// Deletes one of a user's tokens; `false` if the user holds no token of this ID.
    async fn revoke_token(&self, user: UserId, id: i64) -> Result<bool>;

    /// Notes that a token was used at `at`.
    async fn touch_token(&self, token: &TokenHash, at: Millis) -> Result<()>;

    /// The active user holding this token, if it has not expired by `now`, with the token's
    /// scope and expiry.
    async fn caller_by_token(
        &self,
        token: &TokenHash,
        now: Millis,
    ) -> Result<Option<(Caller, Option<Millis>)>>;
}

/// The callback settings and the signing secrets of a workspace.
#[async_trait]
pub trait Settings: Send + Sync + 'static {
    async fn webhook_settings(&self, workspace: WorkspaceId) -> Result<WebhookSettings>;

    /// Replaces the settings atomically.
    async fn save_webhook_settings(
        &self,
        workspace: WorkspaceId,
        settings: &WebhookSettings,
    ) -> Result<()>;

    /// The signing secrets of a workspace (creating the first one if there is none yet); the
    /// previous secret is included for 24 hours after a rotation.
    async fn signing_keys(&self, workspace: WorkspaceId, now: Millis) -> Result<SigningKeys>;

    /// Makes `new` the current secret and keeps the old one as the previous.
    async fn rotate_signing_secret(
        &self,
        workspace: WorkspaceId,
        new: &SigningSecret,
        now: Millis,
    ) -> Result<()>;
}

/// Processes and their instances; every instance write also writes its event and deliveries (the outbox).
#[async_trait]
pub trait Instances: Send + Sync + 'static {
    async fn create_process(
        &self,
        workspace: WorkspaceId,
        name: &ProcessName,
        title: &ProcessTitle,
        by: &str,
    ) -> Result<ProcessRecord>;

    async fn processes(&self, workspace: WorkspaceId) -> Result<Vec<ProcessRecord>>;

    async fn process(
        &self,
        workspace: WorkspaceId,
        name: &ProcessName,
    ) -> Result<Option<ProcessRecord>>;

    /// Creates the next instance of a process (numbered gap-free per process) and fires
    /// `created`. `None` when the process does not exist.
    async fn create_instance(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        data: &InstanceData,
        status: &InstanceStatus,
        by: &str,
    ) -> Result<Option<InstanceRecord>>;

    /// An instance, including one in the recycle bin.
    async fn instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>>;

    /// Instances of a process, newest first; `deleted` picks the recycle bin instead.
    async fn instances(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>>;

    /// The recycle bin of a workspace, most recently deleted first.
    async fn recycle_bin(
        &self,
        workspace: WorkspaceId,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<InstanceRecord>>;

    /// Deletes one instance for good if it is in the recycle bin; `false` if no instance of
    /// that ID is there. No event fires: it was deleted already.
    async fn purge_instance(&self, workspace: WorkspaceId, id: &InstanceId) -> Result<bool>;

    /// Deletes for good up to `batch` instances (of every workspace) moved to the recycle bin
    /// before `before`; returns how many.
    async fn purge_recycle_bin(&self, before: Millis, batch: i64) -> Result<u64>;

    /// Writes new data and status if the version still matches, bumps the version and fires
    /// `updated`.
    async fn update_instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        update: &InstanceUpdate,
        by: &str,
    ) -> Result<Written>;

    /// Moves an instance to the recycle bin and fires `deleted`.
    async fn delete_instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        by: &str,
    ) -> Result<Written>;

    /// Brings an instance back from the recycle bin and fires `created`.
    async fn restore_instance(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        by: &str,
    ) -> Result<Written>;
}

/// The delivery queue, as the worker sees it: claims under a lease, results, the breaker's unfinished steps, probes, pruning.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Claims due deliveries under a lease. A delivery is due when it is pending, its time has
    /// come, nobody holds an unexpired lease on it, no earlier delivery for the same instance and
    /// URL is still pending (per-instance ordering), and its host has fewer than
    /// `per_host_cap` leases; of a host, the claim takes no more than the request's room for it.
    async fn claim_due(&self, request: ClaimRequest<'_>) -> Result<Vec<ClaimedDelivery>>;

    /// Writes the results of attempts, all in one transaction, and updates the health of their
    /// destinations under `breaker` (`health::record_health`: pausing a failing URL's
    /// deliveries, releasing them, or disabling a URL whose receiver is gone). Returns the URLs
    /// whose pause held a full [`HOLD_CHUNK`], or whose recovery released (or disabling failed)
    /// a full [`BREAKER_CHUNK`]: the caller does the rest with [`Queue::resume`].
    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        breaker: &BreakerPolicy,
    ) -> Result<Vec<Unfinished>>;

    /// Gives back deliveries this node claimed ahead and will not attempt (their receiver
    /// failed, their lease would no longer cover an attempt, or the node is stopping), each
    /// given with the lease it was claimed under: those leases end now, so any node may claim
    /// the deliveries at once. A lease that is no longer this one is left alone.
    async fn give_back(&self, node: &str, leases: &[(i64, Millis)]) -> Result<()>;

    /// Holds (while the URL's breaker is still open) or releases (while it is still closed) the
    /// next [`HOLD_CHUNK`] or [`BREAKER_CHUNK`] deliveries of a URL, in one transaction; nothing once the breaker
    /// has changed again. Returns whether more may remain.
    async fn resume(&self, work: &Unfinished) -> Result<bool>;

    /// Housekeeping run every few seconds by each worker: every paused URL whose pause is over,
    /// and which has no delivery due or in flight, gets its oldest held delivery made due (the
    /// probe), or its oldest pending one when none is held. A delivery that escaped the hold
    /// with a later retry time does not stop the probe from going out when the pause ends.
    async fn promote_probes(&self, now: Millis) -> Result<()>;

    /// URLs whose breaker is closed and which still have held deliveries: a release that stopped
    /// part way (its node stopped, or the database failed between chunks). Housekeeping finishes
    /// them with [`Queue::resume`], so no delivery stays held once its URL recovered.
    async fn stranded_releases(&self) -> Result<Vec<Unfinished>>;

    /// The state of the delivery queue over every workspace.
    async fn queue_stats(&self, now: Millis) -> Result<QueueStats>;

    /// Creates a test delivery of `event` to `url`, already leased to `request.node`, for an
    /// immediate attempt by the caller.
    async fn create_test_delivery(
        &self,
        workspace: WorkspaceId,
        event: EventType,
        url: &crate::domain::CallbackUrl,
        instance_id: &str,
        request: ClaimRequest<'_>,
    ) -> Result<ClaimedDelivery>;

    /// Deletes up to `batch` finished deliveries (with their attempts) last changed before
    /// `before`, and up to `batch` events from before `before` that no delivery refers to.
    async fn prune(&self, before: Millis, batch: i64) -> Result<Pruned>;
}

/// The delivery log and the health of destinations, as people read and act on them.
#[async_trait]
pub trait DeliveryLog: Send + Sync + 'static {
    /// Succeeded and failed attempts per hour since `since` (hour start, succeeded, failed).
    async fn hourly_outcomes(
        &self,
        workspace: WorkspaceId,
        since: Millis,
    ) -> Result<Vec<(Millis, i64, i64)>>;

    /// The destinations of a workspace that have failed at least once.
    async fn destinations(&self, workspace: WorkspaceId) -> Result<Vec<DestinationRecord>>;

    /// Enables a URL that was disabled (its receiver answered 410 Gone), with a fresh breaker;
    /// `false` if it was not disabled. Saving settings that list a URL enables it too.
    async fn enable_destination(&self, workspace: WorkspaceId, url: &str) -> Result<bool>;

    /// Every URL, as configured, that a delivery of the workspace in the log was made to.
    async fn delivery_urls(&self, workspace: WorkspaceId) -> Result<Vec<String>>;

    /// Makes every (non-test) delivery matching the filter pending and due now; returns how many.
    async fn redeliver_matching(
        &self,
        workspace: WorkspaceId,
        filter: &DeliveryFilter,
        now: Millis,
    ) -> Result<u64>;

    async fn deliveries(
        &self,
        workspace: WorkspaceId,
        filter: &DeliveryFilter,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<DeliveryRecord>>;

    async fn delivery(
        &self,
        workspace: WorkspaceId,
        id: &DeliveryId,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>>;

    /// Makes a delivery pending and due now, whatever its state; `false` if it does not exist.
    async fn redeliver(&self, workspace: WorkspaceId, id: &DeliveryId, now: Millis)
    -> Result<bool>;

    /// Cancels a delivery if it is pending and not in flight at `now`; otherwise says how it
    /// stands ([`Cancel`]).
    async fn cancel(&self, workspace: WorkspaceId, id: &DeliveryId, now: Millis) -> Result<Cancel>;

    /// Cancels every (non-test) delivery matching the filter that is pending and not in flight
    /// at `now`; returns how many.
    async fn cancel_matching(
        &self,
        workspace: WorkspaceId,
        filter: &DeliveryFilter,
        now: Millis,
    ) -> Result<u64>;
}

/// What a request to cancel one delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    Cancelled,
    NotFound,
    /// Its attempt is under way (leased until after now): it is on the wire and cannot be
    /// called back.
    InFlight,
    /// It is no longer pending.
    Finished(crate::domain::DeliveryStatus),
}

/// What an `Idempotency-Key` finds when a write arrives with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// First use (or a stale, unfinished one taken over): go ahead, then finish or release.
    Fresh,
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    OtherRequest,
    /// The first request's answer, to give again.
    Answered {
        status: u16,
        headers: String,
        body: Vec<u8>,
    },
}

/// The first answers to writes sent with an `Idempotency-Key`, per API token.
#[async_trait]
pub trait IdempotencyKeys: Send + Sync + 'static {
    /// Claims `key` for a request (identified by `request_hash`), or says what it holds. An
    /// unfinished claim made before `stale_before`, or any made before `expired_before`, is
    /// taken over as new.
    async fn claim_key(
        &self,
        token: &str,
        key: &str,
        request_hash: &str,
        now: Millis,
        stale_before: Millis,
        expired_before: Millis,
    ) -> Result<KeyClaim>;

    /// Stores the answer of the request that claimed `key`.
    async fn finish_key(
        &self,
        token: &str,
        key: &str,
        status: u16,
        headers: &str,
        body: &[u8],
    ) -> Result<()>;

    /// Gives up an unfinished claim (the request failed in a way a retry may fix).
    async fn release_key(&self, token: &str, key: &str) -> Result<()>;

    /// Deletes keys created before `before`; returns how many.
    async fn prune_keys(&self, before: Millis) -> Result<u64>;
}

/// Everything Herald keeps: every role. Implemented by [`super::sqlite::SqliteStore`] and
/// [`super::postgres::PostgresStore`].
pub trait Store:
    Schema + Accounts + Settings + Instances + Queue + DeliveryLog + IdempotencyKeys
{
}

impl<T: Schema + Accounts + Settings + Instances + Queue + DeliveryLog + IdempotencyKeys> Store
    for T
{
}
