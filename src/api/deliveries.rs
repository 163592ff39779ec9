//! The delivery log: `/api/v1/deliveries`, one delivery with its attempts, and redelivery.

use super::Paging;
use super::extract::{ApiQuery, Auth};
use super::schema::{ErrorBody, Page};
use crate::domain::webhook::redact;
use crate::domain::{AttemptOutcome, DeliveryId, DeliveryStatus, EventType, InstanceId, Millis};
use crate::error::Result;
use crate::service::{DeliverySearch, Herald, SearchText};
use crate::storage::{AttemptRecord, DeliveryRecord};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

routes! {
    get "/deliveries" => list, Manager;
    get "/deliveries/{id}" => read, Manager;
    post "/deliveries/{id}/redeliver" => redeliver, Manager;
    post "/deliveries/redeliver" => redeliver_matching, Manager;
    post "/deliveries/{id}/cancel" => cancel, Manager;
    post "/deliveries/cancel" => cancel_matching, Manager;
}

/// Which deliveries a bulk action takes: all that match every field given (at least one).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BulkBody {
    #[schema(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    #[schema(value_type = Option<EventType>)]
    event_type: Option<String>,
    #[schema(value_type = Option<InstanceId>)]
    instance_id: Option<String>,
    /// A piece of the URL, as shown (without credentials).
    url: Option<String>,
    /// Created at or after (RFC 3339).
    #[schema(value_type = Option<Millis>)]
    since: Option<String>,
    /// Created before (RFC 3339).
    #[schema(value_type = Option<Millis>)]
    until: Option<String>,
}

impl BulkBody {
    fn search(&self) -> Result<DeliverySearch> {
        DeliverySearch::parse(
            SearchText {
                status: self.status.as_deref(),
                event_type: self.event_type.as_deref(),
                instance_id: self.instance_id.as_deref(),
                url: self.url.as_deref(),
                since: self.since.as_deref(),
                until: self.until.as_deref(),
            }
            .strict()?,
        )
    }
}

/// How many deliveries a bulk redelivery made pending again.
#[derive(Serialize, utoipa::ToSchema)]
struct Redelivered {
    redelivered: u64,
}

/// Redelivers every delivery that matches a filter.
#[utoipa::path(post, path = "/deliveries/redeliver", request_body = BulkBody, responses(
    (status = 202, description = "The matching deliveries are pending again.", body = Redelivered),
))]
async fn redeliver_matching(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    super::extract::ApiJson(body): super::extract::ApiJson<BulkBody>,
) -> Result<(StatusCode, Json<Redelivered>)> {
    let redelivered = herald.redeliver_matching(&caller, &body.search()?).await?;
    Ok((StatusCode::ACCEPTED, Json(Redelivered { redelivered })))
}

/// Cancels one pending delivery.
#[utoipa::path(post, path = "/deliveries/{id}/cancel", params(("id" = DeliveryId, Path, description = "The delivery's ID.")), responses(
    (status = 200, description = "The delivery, cancelled.", body = DeliveryView),
    (status = 404, description = "No such delivery.", body = ErrorBody),
    (status = 409, description = "The delivery is finished or its attempt is under way.", body = ErrorBody),
))]
async fn cancel(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>> {
    let id = DeliveryId::parse(&id)?;
    herald.cancel_delivery(&caller, &id).await?;
    let (delivery, _) = herald.delivery(&caller, &id).await?;
    Ok(Json(deliveries_view(delivery)))
}

/// How many deliveries a bulk cancellation called off.
#[derive(Serialize, utoipa::ToSchema)]
struct Cancelled {
    cancelled: u64,
}

/// Cancels every pending delivery that matches a filter and is not being attempted right now.
#[utoipa::path(post, path = "/deliveries/cancel", request_body = BulkBody, responses(
    (status = 200, description = "How many were cancelled.", body = Cancelled),
))]
async fn cancel_matching(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    super::extract::ApiJson(body): super::extract::ApiJson<BulkBody>,
) -> Result<Json<Cancelled>> {
    let cancelled = herald.cancel_matching(&caller, &body.search()?).await?;
    Ok(Json(Cancelled { cancelled }))
}

/// A delivery as the log shows it; the URL never carries credentials.
#[derive(Serialize, utoipa::ToSchema)]
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
    /// Sent by `POST /webhooks/test`.
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
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    started_at: Millis,
    duration_ms: i64,
    outcome: AttemptOutcome,
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
            outcome: a.outcome,
            status_code: a.status_code,
            error: a.error,
            response_excerpt: a.response_excerpt,
            node: a.node,
        }
    }
}

/// The log's filter: deliveries that match every field given, newest first.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Filter {
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    #[param(value_type = Option<EventType>)]
    event_type: Option<String>,
    #[param(value_type = Option<InstanceId>)]
    instance_id: Option<String>,
    /// A piece of the URL, as shown (without credentials).
    url: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// How many items a page holds: 1 to 200, 50 when not given.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The previous page's `nextCursor`.
    #[param(pattern = "^[0-9]{1,18}$")]
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

/// The delivery log.
#[utoipa::path(get, path = "/deliveries", params(Filter), responses(
    (status = 200, description = "A page of deliveries.", body = Page<DeliveryView>),
))]
async fn list(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiQuery(filter): ApiQuery<Filter>,
) -> Result<Json<Page<DeliveryView>>> {
    let (search, cursor, limit) = filter.parse()?;
    let page = herald.deliveries(&caller, &search, cursor, limit).await?;
    let items: Vec<DeliveryView> = page.items.into_iter().map(Into::into).collect();
    Ok(Json(Page::new(items, page.next_cursor)))
}

/// A delivery with every attempt, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    attempts: Vec<AttemptView>,
}

/// One delivery with its attempts.
#[utoipa::path(get, path = "/deliveries/{id}", params(("id" = DeliveryId, Path, description = "The delivery's ID.")), responses(
    (status = 200, description = "The delivery.", body = DeliveryDetail),
    (status = 404, description = "No such delivery.", body = ErrorBody),
))]
async fn read(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>> {
    let id = DeliveryId::parse(&id)?;
    let (delivery, attempts) = herald.delivery(&caller, &id).await?;
    Ok(Json(DeliveryDetail {
        delivery: delivery.into(),
        attempts: attempts.into_iter().map(Into::into).collect(),
    }))
}

/// A delivery made pending again.
#[derive(Serialize, utoipa::ToSchema)]
struct Redelivery {
    id: DeliveryId,
    status: DeliveryStatus,
}

/// Sends a delivery again, with the same `webhook-id`, whatever its state.
#[utoipa::path(post, path = "/deliveries/{id}/redeliver", params(("id" = DeliveryId, Path, description = "The delivery's ID.")), responses(
    (status = 202, description = "The delivery is pending again.", body = Redelivery),
    (status = 404, description = "No such delivery.", body = ErrorBody),
))]
async fn redeliver(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Redelivery>)> {
    let id = DeliveryId::parse(&id)?;
    herald.redeliver(&caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            id,
            status: DeliveryStatus::Pending,
        }),
    ))
}
