//! The roles whose SQL is the same on both backends, written once. Each file holds a macro that
//! a backend expands for its own store (`shared::accounts!(SqliteStore)`), so the one body is
//! type-checked against each driver: the SQL texts use `$N` parameters, which sqlx binds on
//! SQLite too, and rows decode through the `#[derive(sqlx::FromRow)]` types below, which are
//! generic over the row. A backend supplies only where its statements run ([`Pools`]).
//!
//! **Invariant:** nothing here names a backend; what differs between the engines stays in
//! `sqlite/` and `postgres/`.

mod accounts;
mod idempotency;
mod instances;
mod log;
mod queue;
mod settings;

pub(crate) use accounts::accounts;
pub(crate) use idempotency::idempotency_keys;
pub(crate) use instances::instances;
pub(crate) use log::delivery_log;
pub(crate) use queue::queue_upkeep;
pub(crate) use settings::settings;

use super::{
    AttemptRecord, Caller, DeliveryRecord, InstanceRecord, Page, ProcessRecord, Result,
    TokenRecord, UserId, UserRecord, WorkspaceId,
};
use crate::domain::{
    AttemptOutcome, DeliveryId, DeliveryStatus, EventType, InstanceData, InstanceId, Millis,
    ProcessName, Role, TokenScope,
};

/// Where a backend runs the shared statements: reads, single writes, and write transactions
/// (SQLite: its one write connection, `BEGIN IMMEDIATE`; PostgreSQL: its main pool).
#[allow(async_fn_in_trait)] // Only used by the shared macros, within the crate.
pub(crate) trait Pools {
    type Db: sqlx::Database;
    fn reads(&self) -> &sqlx::Pool<Self::Db>;
    fn writes(&self) -> &sqlx::Pool<Self::Db>;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>>;
    /// The group commit every instance write goes through.
    fn group_commit(&self) -> &super::group::GroupCommit;
    /// Makes the first-start bootstrap run once when several nodes start on an empty database.
    async fn serialize_bootstrap(
        &self,
        tx: &mut sqlx::Transaction<'static, Self::Db>,
    ) -> Result<()>;
    /// Tells every node that deliveries became due (PostgreSQL: `NOTIFY`; SQLite has one node,
    /// woken in process).
    async fn announce_due(&self) -> Result<()>;
}

/// The process name of test callbacks.
pub(crate) const TEST_PROCESS: &str = "herald-test";

/// A delivery as a claim hands it out (the columns every claim and test delivery return).
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimedRow {
    id: i64,
    workspace_id: i64,
    test: bool,
    webhook_id: String,
    event_type: String,
    instance_id: String,
    process_name: String,
    url: String,
    host: String,
    attempts: i64,
    next_attempt_at: i64,
    created_at: i64,
    format: String,
    instance: Option<String>,
    trace_parent: Option<String>,
}

impl ClaimedRow {
    pub(crate) fn key(&self) -> i64 {
        self.id
    }

    pub(crate) fn claimed(self) -> Result<super::ClaimedDelivery, sqlx::Error> {
        Ok(super::ClaimedDelivery {
            key: self.id,
            workspace_id: WorkspaceId(self.workspace_id),
            test: self.test,
            id: DeliveryId::from_stored(self.webhook_id),
            event_type: super::event_from_stored(&self.event_type)?,
            instance_id: self.instance_id,
            process_name: self.process_name,
            url: self.url,
            host: self.host,
            attempts: self.attempts,
            due_at: Millis(self.next_attempt_at),
            occurred_at: Millis(self.created_at),
            format: super::format_from_stored(&self.format)?,
            instance: self.instance,
            trace_parent: self.trace_parent,
        })
    }
}

/// Whether the database refused a row for a unique constraint.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A stored value the code does not know is a decode error, never a default.
pub(crate) fn unknown(what: &str, error: crate::domain::Invalid) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what}: {}", error.0).into())
}

/// The user and workspace a token or session resolves to.
#[derive(sqlx::FromRow)]
pub(crate) struct CallerRow {
    id: i64,
    workspace_id: i64,
    email: String,
    role: String,
}

impl CallerRow {
    /// The caller, with every right of the role (a session's).
    pub fn caller(self) -> Result<Caller> {
        Ok(Caller {
            user_id: UserId(self.id),
            workspace_id: WorkspaceId(self.workspace_id),
            email: self.email,
            role: Role::parse(&self.role).map_err(|e| unknown("role", e))?,
            scope: TokenScope::All,
        })
    }
}

/// The one text that stores a token, for bootstrap and for `add_token`.
macro_rules! insert_token {
    () => {
        "INSERT INTO api_tokens (user_id, token_hash, created_at, name, prefix, scope, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    };
}
pub(crate) use insert_token;
pub(crate) const INSERT_TOKEN: &str = insert_token!();

/// The caller a token resolves to, with its scope and expiry.
#[derive(sqlx::FromRow)]
pub(crate) struct TokenCallerRow {
    #[sqlx(flatten)]
    caller: CallerRow,
    scope: String,
    expires_at: Option<i64>,
}

impl TokenCallerRow {
    pub fn caller(self) -> Result<(Caller, Option<Millis>)> {
        let scope = TokenScope::parse(&self.scope).map_err(|e| unknown("token scope", e))?;
        let caller = Caller {
            scope,
            ..self.caller.caller()?
        };
        Ok((caller, self.expires_at.map(Millis)))
    }
}

/// A token as its holder's list shows it.
#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: i64,
    name: String,
    prefix: String,
    scope: String,
    created_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
}

impl TokenRow {
    pub fn record(self) -> Result<TokenRecord> {
        Ok(TokenRecord {
            id: self.id,
            name: self.name,
            prefix: self.prefix,
            scope: TokenScope::parse(&self.scope).map_err(|e| unknown("token scope", e))?,
            created_at: Millis(self.created_at),
            last_used_at: self.last_used_at.map(Millis),
            expires_at: self.expires_at.map(Millis),
        })
    }
}

/// A user with what login needs.
#[derive(sqlx::FromRow)]
pub(crate) struct LoginRow {
    #[sqlx(flatten)]
    pub caller: CallerRow,
    pub display_name: String,
    pub active: bool,
    pub password_hash: String,
}

/// A signed-in session.
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    #[sqlx(flatten)]
    pub caller: CallerRow,
    pub display_name: String,
    pub csrf: String,
}

/// A user as listings show it.
#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    email: String,
    display_name: String,
    role: String,
    active: bool,
    created_at: i64,
}

impl UserRow {
    pub fn record(self) -> Result<UserRecord> {
        Ok(UserRecord {
            email: self.email,
            display_name: self.display_name,
            role: Role::parse(&self.role).map_err(|e| unknown("role", e))?,
            active: self.active,
            created_at: Millis(self.created_at),
        })
    }
}

/// Turns `limit + 1` fetched items into a page and the cursor of the next one.
pub(crate) fn page<T>(mut items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> i64) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more { items.last().map(cursor) } else { None };
    Page { items, next_cursor }
}

/// The columns of [`DeliveryRow`], named: a `SELECT *` would break, with a statement prepared
/// before a migration added a column, on a node that keeps running beside a newer one.
macro_rules! delivery_columns {
    () => {
        "id, test, webhook_id, event_type, instance_id, process_name, url, status, attempts,
         next_attempt_at, last_attempt_at, last_status_code, last_error, created_at"
    };
}
pub(crate) use delivery_columns;

/// A delivery as the log shows it (the columns of `delivery_columns!`).
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: i64,
    test: bool,
    webhook_id: String,
    event_type: String,
    instance_id: String,
    process_name: String,
    url: String,
    status: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
}

impl DeliveryRow {
    pub fn record(self) -> Result<DeliveryRecord> {
        Ok(DeliveryRecord {
            key: self.id,
            test: self.test,
            id: DeliveryId::from_stored(self.webhook_id),
            event_type: EventType::parse(&self.event_type).map_err(|e| unknown("event type", e))?,
            instance_id: self.instance_id,
            process_name: self.process_name,
            url: self.url,
            status: DeliveryStatus::parse(&self.status)
                .map_err(|e| unknown("delivery status", e))?,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at.map(Millis),
            last_attempt_at: self.last_attempt_at.map(Millis),
            last_status_code: self.last_status_code,
            last_error: self.last_error,
            created_at: Millis(self.created_at),
        })
    }
}

/// One recorded attempt.
#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    started_at: i64,
    duration_ms: i64,
    outcome: String,
    status_code: Option<i64>,
    error: Option<String>,
    response_excerpt: Option<String>,
    node: String,
}

impl AttemptRow {
    pub fn record(self) -> Result<AttemptRecord> {
        Ok(AttemptRecord {
            started_at: Millis(self.started_at),
            duration_ms: self.duration_ms,
            outcome: AttemptOutcome::parse(&self.outcome).map_err(|e| unknown("outcome", e))?,
            status_code: self.status_code,
            error: self.error,
            response_excerpt: self.response_excerpt,
            node: self.node,
        })
    }
}

/// The columns of an instance as [`InstanceRow`] reads them.
pub(crate) const INSTANCE_COLUMNS: &str = "instance_id, unique_id, status, version, data, created_at, created_by, modified_at, modified_by, deleted_at";

/// An instance, and in a listing the cursor its page goes on from.
#[derive(sqlx::FromRow)]
pub(crate) struct InstanceRow {
    instance_id: String,
    unique_id: String,
    status: String,
    version: i64,
    data: String,
    created_at: i64,
    created_by: String,
    modified_at: i64,
    modified_by: String,
    deleted_at: Option<i64>,
    #[sqlx(default)]
    cursor: i64,
}

impl InstanceRow {
    pub fn record(self) -> Result<InstanceRecord> {
        let id = InstanceId::parse(&self.instance_id).map_err(|e| unknown("instance ID", e))?;
        Ok(InstanceRecord {
            process_name: id.process_name().to_owned(),
            id,
            unique_id: self.unique_id,
            status: self.status,
            version: self.version,
            data: InstanceData::from_stored(&self.data).map_err(|e| unknown("instance data", e))?,
            created_at: Millis(self.created_at),
            created_by: self.created_by,
            modified_at: Millis(self.modified_at),
            modified_by: self.modified_by,
            deleted_at: self.deleted_at.map(Millis),
        })
    }

    /// `limit + 1` fetched rows as a page of instances.
    pub fn page(rows: Vec<Self>, limit: i64) -> Result<Page<InstanceRecord>> {
        let page = page(rows, limit, |r| r.cursor);
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(Self::record)
                .collect::<Result<_>>()?,
            next_cursor: page.next_cursor,
        })
    }
}

/// A process with its count of instances not in the recycle bin (`n`).
#[derive(sqlx::FromRow)]
pub(crate) struct ProcessRow {
    name: String,
    title: String,
    created_at: i64,
    created_by: String,
    n: i64,
}

impl ProcessRow {
    pub fn record(self) -> Result<ProcessRecord> {
        Ok(ProcessRecord {
            name: ProcessName::parse(&self.name).map_err(|e| unknown("process name", e))?,
            title: self.title,
            created_at: Millis(self.created_at),
            created_by: self.created_by,
            instance_count: self.n,
        })
    }
}
