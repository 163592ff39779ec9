//! What the events of a group commit write: the events and their deliveries, every ID and
//! snapshot made here, in Rust, once for both backends; each backend only inserts the rows.
//!
//! An event makes one delivery per URL its type has enabled at the moment its write commits, in
//! the settings' order; none to a disabled URL; a delivery to a URL whose breaker is open is held
//! at once. An event with no delivery is not stored: it is kept only for its deliveries (their
//! payload and their log).

use super::{InstanceRecord, WorkspaceId, group};
use crate::domain::{DeliveryId, EventType, Millis};

/// The URLs an event of type `event` in `workspace` is delivered to at this moment, in the
/// settings' order, each with its first due time (`now`, or `held` when the URL's breaker is
/// open). The arguments are SQL expressions; the columns are [`Target`]'s, then `position`.
pub fn targets_sql(workspace: &str, event: &str, now: &str, held: &str) -> String {
    format!(
        "SELECT u.url, u.host, w.webhook_format AS format,
                CASE WHEN x.state = 'open' THEN {held} ELSE {now} END AS next_attempt_at, u.position
         FROM webhook_urls u
         JOIN webhook_events e ON e.workspace_id = u.workspace_id AND e.event_type = u.event_type
         JOIN workspaces w ON w.id = u.workspace_id
         LEFT JOIN destinations x ON x.workspace_id = u.workspace_id AND x.url = u.url
         WHERE u.workspace_id = {workspace} AND u.event_type = {event} AND e.enabled
           AND x.disabled_at IS NULL
         ORDER BY u.position"
    )
}

/// One URL an event is delivered to (a row of [`targets_sql`]; its position only orders them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub host: String,
    pub format: String,
    pub next_attempt_at: i64,
}

/// An event to insert.
#[derive(Debug)]
pub struct NewEvent<'a> {
    pub workspace: WorkspaceId,
    pub event_type: EventType,
    pub record: &'a InstanceRecord,
    /// The instance as the event keeps it (`None` for `deleted`).
    pub snapshot: Option<String>,
    /// The `traceparent` of the request that made the event, which its deliveries keep.
    pub trace_parent: Option<&'a str>,
}

/// A delivery to insert: of the event at `event` in [`Fanout::events`], to `target`.
#[derive(Debug)]
pub struct NewDelivery<'a> {
    pub event: usize,
    pub webhook_id: DeliveryId,
    pub target: &'a Target,
}

/// The rows the events of a batch write, in order: events in the order of the writes,
/// deliveries in the order of their events and, within one, of the URLs (the queue's ids follow
/// this order, which per-instance ordering relies on).
#[derive(Debug, Default)]
pub struct Fanout<'a> {
    pub events: Vec<NewEvent<'a>>,
    pub deliveries: Vec<NewDelivery<'a>>,
}

impl<'a> Fanout<'a> {
    /// Plans the rows of `fired` (see [`group::fired`]), written at `now`, given the targets of
    /// each workspace's event type as the transaction reads them.
    pub fn plan(
        fired: &[group::Fired<'a>],
        now: Millis,
        mut targets: impl FnMut(WorkspaceId, EventType) -> &'a [Target],
    ) -> Self {
        let mut plan = Self::default();
        for &(workspace, event_type, record, trace_parent) in fired {
            let urls = targets(workspace, event_type);
            if urls.is_empty() {
                continue;
            }
            let event = plan.events.len();
            plan.events.push(NewEvent {
                workspace,
                event_type,
                record,
                snapshot: group::snapshot(event_type, record),
                trace_parent,
            });
            plan.deliveries
                .extend(urls.iter().map(|target| NewDelivery {
                    event,
                    webhook_id: DeliveryId::created_at(now),
                    target,
                }));
        }
        plan
    }

    /// The distinct (workspace, event type) pairs of `fired`, in a fixed order: the targets a
    /// batch must read.
    pub fn pairs(fired: &[group::Fired<'_>]) -> Vec<(WorkspaceId, EventType)> {
        let mut pairs: Vec<(WorkspaceId, EventType)> =
            fired.iter().map(|&(w, e, _, _)| (w, e)).collect();
        pairs.sort_by_key(|(w, e)| (w.0, e.as_str()));
        pairs.dedup();
        pairs
    }
}
