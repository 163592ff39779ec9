//! The records storage reads and writes, as callers above `storage` hold them: plain data, no
//! SQL and no backend type.

use crate::domain::{
    ApiToken, AttemptOutcome, CallbackFormat, DeliveryId, DeliveryStatus, Email, EventType,
    InstanceData, InstanceId, InstanceStatus, Millis, NextStep, ProcessName, Role, Signal,
    TokenHash, TokenName, TokenScope,
};

/// Internal numeric key of a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkspaceId(pub i64);

/// Internal numeric key of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

/// Who is calling: resolved from an API token or a browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub workspace_id: WorkspaceId,
    pub email: String,
    pub role: Role,
    /// What the token may do within the role; a session may do all the role allows.
    pub scope: TokenScope,
}

/// A token to store: its hash and what its holder sees of it.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub hash: TokenHash,
    pub name: TokenName,
    /// The first characters of a generated token, or empty for one an operator chose.
    pub prefix: String,
    pub scope: TokenScope,
    pub expires_at: Option<Millis>,
}

impl NewToken {
    /// The stored form of `token`, with what its holder named and scoped it.
    pub fn of(
        token: &ApiToken,
        name: TokenName,
        scope: TokenScope,
        expires_at: Option<Millis>,
    ) -> Self {
        Self {
            hash: token.hash(),
            name,
            prefix: token.shown_prefix(),
            scope,
            expires_at,
        }
    }

    /// The token a new user gets with their account: every right of the role, no expiry.
    pub fn first(token: &ApiToken) -> Self {
        Self::of(token, TokenName::first(), TokenScope::All, None)
    }
}

/// A token as its holder's list shows it: never the secret, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// What `DELETE /tokens/{id}` takes.
    pub id: i64,
    pub name: String,
    /// The token's first characters (`hrld_` and four more), to tell it apart; empty for a
    /// token an operator chose.
    pub prefix: String,
    pub scope: TokenScope,
    pub created_at: Millis,
    /// To the minute: a token's use is written down at most once a minute.
    pub last_used_at: Option<Millis>,
    pub expires_at: Option<Millis>,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub display_name: String,
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// What login needs to know about a user.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub caller: Caller,
    pub display_name: String,
    pub active: bool,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A signed-in browser session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub caller: Caller,
    pub display_name: String,
    /// The session's anti-forgery token, embedded in every form.
    pub csrf: String,
}

/// A change an administrator makes to a user.
#[derive(Debug, Clone)]
pub enum UserChange {
    Role(Role),
    Active(bool),
    /// A new argon2id PHC string.
    PasswordHash(String),
}

impl UserChange {
    /// Whether the change signs the user out everywhere: a deactivation (so that reactivating
    /// brings no old session back) and a new password (whoever knew the old one is out).
    pub fn ends_sessions(&self) -> bool {
        matches!(
            self,
            UserChange::Active(false) | UserChange::PasswordHash(_)
        )
    }
}

/// A user as listings show it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub active: bool,
    pub created_at: Millis,
}

/// A stored process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: ProcessName,
    pub title: String,
    pub created_at: Millis,
    pub created_by: String,
    /// Instances that are not in the recycle bin.
    pub instance_count: i64,
}

/// A stored instance. Its JSON form (camelCase) is what the API returns and what the event
/// snapshot keeps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub unique_id: String,
    pub process_name: String,
    pub status: String,
    pub version: i64,
    pub data: InstanceData,
    pub created_at: Millis,
    pub created_by: String,
    pub modified_at: Millis,
    pub modified_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Millis>,
}

/// The new state of an instance after an update, written only if the stored version is still
/// `expected_version`.
#[derive(Debug, Clone)]
pub struct InstanceUpdate {
    pub data: InstanceData,
    pub status: InstanceStatus,
    pub expected_version: i64,
}

/// Result of a compare-and-set write on an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Done(Box<InstanceRecord>),
    NotFound,
    /// The instance is in the recycle bin (delete, update) or not in it (restore).
    WrongState,
    /// Another writer changed the version first.
    VersionChanged,
}

/// A page of results and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<EventType>,
    pub instance_id: Option<String>,
    /// The URLs, exactly as configured, that a delivery may have; the service picks them by
    /// what people see of a URL, never by its credentials.
    pub urls: Option<ExactUrls>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

/// A set of configured URLs as one text both dialects match with `replace`: each URL between
/// spaces, which a parsed URL never contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactUrls(String);

impl ExactUrls {
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut text = String::from(" ");
        for url in urls {
            debug_assert!(!url.contains(' '), "a stored URL holds no space");
            text.push_str(url);
            text.push(' ');
        }
        Self(text)
    }

    /// Whether the set is empty, so that no delivery can match.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 1
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One delivery as the log shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub key: i64,
    /// A test callback from `POST /webhooks/test`.
    pub test: bool,
    pub id: DeliveryId,
    pub event_type: EventType,
    pub instance_id: String,
    pub process_name: String,
    /// As configured; may hold credentials, so show it through `domain::webhook::redact`.
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<Millis>,
    pub last_attempt_at: Option<Millis>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Millis,
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: Millis,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// The node that made the attempt.
    pub node: String,
}

/// What one pass of [`Queue::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
}

impl Pruned {
    /// Whether a pass of `batch` filled either of its batches, so more may be left to prune.
    pub fn filled(&self, batch: i64) -> bool {
        let batch = u64::try_from(batch).unwrap_or(0);
        self.deliveries >= batch || self.events >= batch
    }
}

/// What a results write left to do on a URL whose breaker opened or closed, one [`HOLD_CHUNK`]
/// or [`BREAKER_CHUNK`] at a time ([`Queue::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerStep {
    /// The breaker opened: hold the URL's pending deliveries.
    Hold,
    /// The breaker closed: release what it held.
    Release,
    /// The receiver is gone: fail what is pending to the disabled URL.
    FailGone,
}

/// A URL whose breaker opened or closed with more deliveries to hold or release than one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unfinished {
    pub workspace_id: WorkspaceId,
    pub url: String,
    pub step: BreakerStep,
}

/// What a worker asks for when it claims work.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub node: &'a str,
    pub now: Millis,
    pub lease_until: Millis,
    /// Most deliveries to return.
    pub limit: i64,
    /// Most leases of one host (`host:port`) across all nodes: the operator's ceiling.
    pub per_host_cap: i64,
    /// Hosts with no room on this node: the claim need not count their leases.
    pub full_hosts: &'a [String],
    /// Hosts whose room this node limits (its adaptive limit less what is in flight), and the
    /// most the claim takes for each (`room_hosts[i]` takes at most `rooms[i]`).
    pub room_hosts: &'a [String],
    pub rooms: &'a [i64],
    /// The most the claim takes for any other host.
    pub default_room: i64,
}

/// The state of the whole delivery queue (every workspace), for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Pending deliveries, held ones included.
    pub pending: u64,
    /// Pending deliveries that could be sent now: their time has come, no lease holds them and
    /// no earlier delivery of their instance to their URL is pending.
    pub due: u64,
    /// How long the oldest of those has waited past its time.
    pub oldest_due_lag: std::time::Duration,
    /// Destination URLs whose breaker is open.
    pub paused_urls: u64,
    /// Deliveries whose time has come but that wait for an earlier one of their instance and
    /// URL (which is being retried): per-instance order, not a late queue.
    pub waiting_behind_earlier: u64,
    /// Deliveries held by a paused URL's breaker.
    pub held: u64,
}

/// The answer of the queue-statistics query: pending, due, oldest due time, paused URLs,
/// waiting behind an earlier delivery, held.
pub(crate) type QueueRow = (i64, i64, Option<i64>, i64, i64, i64);

impl QueueStats {
    pub(super) fn from_row(
        (pending, due, oldest, paused, behind, held): QueueRow,
        now: Millis,
    ) -> Self {
        let lag = oldest.map_or(0, |at| now.0.saturating_sub(at).max(0));
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Self {
            pending: count(pending),
            due: count(due),
            oldest_due_lag: std::time::Duration::from_millis(u64::try_from(lag).unwrap_or(0)),
            paused_urls: count(paused),
            waiting_behind_earlier: count(behind),
            held: count(held),
        }
    }
}

/// The health of one destination URL, as `GET /api/v1/webhooks/health` shows it.
#[derive(Debug, Clone)]
pub struct DestinationRecord {
    /// As configured; show it through `domain::webhook::redact`.
    pub url: String,
    pub open: bool,
    pub consecutive_failures: i64,
    pub paused_until: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_failure_at: Option<Millis>,
    pub last_error: Option<String>,
    /// When and why the URL was disabled (its receiver answered 410 Gone); `None` while enabled.
    pub disabled: Option<(Millis, String)>,
}

/// A delivery handed to a worker under a lease.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub key: i64,
    pub workspace_id: WorkspaceId,
    /// A test callback (`POST /webhooks/test`): marked with `webhook-test: true`, never retried.
    pub test: bool,
    pub id: DeliveryId,
    pub event_type: EventType,
    pub instance_id: String,
    pub process_name: String,
    pub url: String,
    /// The URL's `host:port`, the unit of the per-host cap.
    pub host: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When this attempt became due (how late the worker is shows in it).
    pub due_at: Millis,
    pub occurred_at: Millis,
    pub format: CallbackFormat,
    /// The instance as the API showed it at the event (JSON), for the standard format; `None`
    /// for `deleted` events and for the Kianda format.
    pub instance: Option<String>,
    /// The W3C `traceparent` of the request that queued it, when traces were on.
    pub trace_parent: Option<String>,
}

/// The result of one attempt, to be written back.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub key: i64,
    pub workspace_id: WorkspaceId,
    /// The destination URL as configured (the circuit breaker's key).
    pub url: String,
    /// Test callbacks do not count towards a destination's health.
    pub test: bool,
    pub attempt: AttemptRecord,
    /// What the attempt said about its receiver, for the circuit breaker.
    pub signal: Signal,
    pub next: NextStep,
}
