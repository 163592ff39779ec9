//! The delivery log: `/api/v1/deliveries`, one delivery with its attempts, and redelivery.

use super::Paging;
use super::extract::{ApiQuery, Auth};
use crate::domain::webhook::redact;
use crate::domain::{DeliveryId, DeliveryStatus, EventType, Millis};
use crate::error::Result;
use crate::service::{DeliverySearch, Herald, SearchText};
use crate::storage::{AttemptRecord, DeliveryRecord};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

routes! {
    get "/deliveries" => list, Manager;
    get "/deliveries/{id}" => read, Manager;
    post "/deliveries/{id}/redeliver" => redeliver, Manager;
    post "/deliveries/redeliver" => redeliver_matching, Manager;
    post "/deliveries/{id}/cancel" => cancel, Manager;
    post "/deliveries/cancel" => cancel_matching, Manager;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BulkBody {
    status: Option<String>,
    event_type: Option<String>,
    instance_id: Option<String>,
    url: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl BulkBody {
    fn search(&self) -> Result<DeliverySearch> {
        DeliverySearch::parse(SearchText {
            status: self.status.as_deref(),
            event_type: self.event_type.as_deref(),
            instance_id: self.instance_id.as_deref(),
            url: self.url.as_deref(),
            since: self.since.as_deref(),
            until: self.until.as_deref(),
        })
    }
}

/// Redelivers every delivery that matches a filter.
async fn redeliver_matching(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    super::extract::ApiJson(body): super::extract::ApiJson<BulkBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let n = herald.redeliver_matching(&caller, &body.search()?).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"redelivered": n}))))
}

/// Cancels one pending delivery: `409` when it is finished or its attempt is under way.
async fn cancel(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let id = DeliveryId::parse(&id)?;
    herald.cancel_delivery(&caller, &id).await?;
    let (delivery, _) = herald.delivery(&caller, &id).await?;
    Ok(Json(json!(deliveries_view(delivery))))
}

/// Cancels every pending delivery that matches a filter and is not being attempted right now.
async fn cancel_matching(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    super::extract::ApiJson(body): super::extract::ApiJson<BulkBody>,
) -> Result<Json<Value>> {
    let n = herald.cancel_matching(&caller, &body.search()?).await?;
    Ok(Json(json!({"cancelled": n})))
}

/// A delivery as the log shows it; the URL never carries credentials.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    id: DeliveryId,
    event_type: EventType,
    instance_id: String,
    process_name: String,
    url: String,
    status: DeliveryStatus,
    /// Held back because its URL is paused by the circuit breaker.
    paused: bool,
    test: bool,
    attempt_count: i64,
    next_attempt_at: Option<Millis>,
    last_attempt_at: Option<Millis>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: Millis,
}

/// The log's view of a delivery (shared with the web UI).
pub fn deliveries_view(d: DeliveryRecord) -> DeliveryView {
    d.into()
}

/// The log's view of an attempt (shared with the web UI).
pub fn attempt_view(a: AttemptRecord) -> AttemptView {
    a.into()
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            id: d.id,
            event_type: d.event_type,
            instance_id: d.instance_id,
            process_name: d.process_name,
            url: redact(&d.url),
            status: d.status,
            paused: d
                .next_attempt_at
                .is_some_and(|t| t.0 >= crate::storage::HELD),
            test: d.test,
            attempt_count: d.attempts,
            next_attempt_at: d.next_attempt_at.filter(|t| t.0 < crate::storage::HELD),
            last_attempt_at: d.last_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
        }
    }
}

/// One attempt in the log.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    started_at: Millis,
    duration_ms: i64,
    outcome: &'static str,
    status_code: Option<i64>,
    error: Option<String>,
    response_excerpt: Option<String>,
    node: String,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> Self {
        Self {
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            outcome: a.outcome.as_str(),
            status_code: a.status_code,
            error: a.error,
            response_excerpt: a.response_excerpt,
            node: a.node,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filter {
    status: Option<String>,
    event_type: Option<String>,
    instance_id: Option<String>,
    url: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl Filter {
    fn parse(&self) -> Result<(DeliverySearch, Option<i64>, i64)> {
        let search = DeliverySearch::parse(SearchText {
            status: self.status.as_deref(),
            event_type: self.event_type.as_deref(),
            instance_id: self.instance_id.as_deref(),
            url: self.url.as_deref(),
            since: self.since.as_deref(),
            until: self.until.as_deref(),
        })?;
        let (cursor, limit) = Paging {
            limit: self.limit.clone(),
            cursor: self.cursor.clone(),
        }
        .parse()?;
        Ok((search, cursor, limit))
    }
}

async fn list(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiQuery(filter): ApiQuery<Filter>,
) -> Result<Json<Value>> {
    let (search, cursor, limit) = filter.parse()?;
    let page = herald.deliveries(&caller, &search, cursor, limit).await?;
    let items: Vec<DeliveryView> = page.items.into_iter().map(Into::into).collect();
    Ok(Json(super::page_json(items, page.next_cursor)))
}

async fn read(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let id = DeliveryId::parse(&id)?;
    let (delivery, attempts) = herald.delivery(&caller, &id).await?;
    let mut body = serde_json::to_value(DeliveryView::from(delivery)).unwrap_or_default();
    let attempts: Vec<AttemptView> = attempts.into_iter().map(Into::into).collect();
    body["attempts"] = json!(attempts);
    Ok(Json(body))
}

async fn redeliver(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = DeliveryId::parse(&id)?;
    herald.redeliver(&caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "pending"})),
    ))
}
