//! Instances: `/api/v1/processes/{name}/instances`, `/api/v1/instances/{id}` and the recycle bin.

use super::Paging;
use super::extract::{ApiJson, ApiQuery, Auth};
use super::schema::{ErrorBody, Page};
use crate::domain::{InstanceData, InstanceId, InstanceStatus, ProcessName};
use crate::error::{Error, Result};
use crate::service::{Herald, InstanceChange};
use crate::storage::InstanceRecord;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

routes! {
    get "/processes/{name}/instances" => list, Member;
    post "/processes/{name}/instances" => create, Member;
    get "/instances/{id}" => read, Member;
    patch "/instances/{id}" => update, Member;
    delete "/instances/{id}" => remove, Member;
    post "/instances/{id}/restore" => restore, Administrator;
    get "/recycle-bin" => recycle_bin, Administrator;
    delete "/recycle-bin/{id}" => purge, Administrator;
}

/// Deletes an instance in the recycle bin for good (it would be purged after the retention
/// anyway).
#[utoipa::path(delete, path = "/recycle-bin/{id}", params(("id" = InstanceId, Path, description = "The instance's ID.")), responses(
    (status = 204, description = "Purged."),
    (status = 404, description = "No such instance.", body = ErrorBody),
    (status = 409, description = "The instance is not in the recycle bin.", body = ErrorBody),
))]
async fn purge(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = InstanceId::parse(&id)?;
    herald.purge_instance(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new instance.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewInstance {
    /// The instance's fields; `{}` when not given.
    #[serde(default)]
    #[schema(value_type = Option<InstanceData>)]
    data: Option<Value>,
    /// One line of 1 to 64 characters; `Active` when not given.
    #[serde(default)]
    #[schema(example = "Active")]
    status: Option<String>,
}

/// A change to an instance: its fields merged, its status replaced.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Patch {
    /// A JSON merge patch (RFC 7396) of the instance's fields: a field given replaces the
    /// stored one, `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<InstanceData>)]
    data: Option<Value>,
    /// One line of 1 to 64 characters.
    #[serde(default)]
    status: Option<String>,
}

/// The instance with its version as an `ETag`, for `If-Match`.
fn with_etag(status: StatusCode, instance: InstanceRecord) -> Response {
    crate::telemetry::record_instance(&instance.id);
    let etag = HeaderValue::from_str(&format!("\"{}\"", instance.version)).ok();
    let mut response = (status, Json(instance)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// Creates an instance of a process; its `created` callbacks are queued in the same commit.
#[utoipa::path(post, path = "/processes/{name}/instances", params(("name" = ProcessName, Path, description = "The process's name.")), request_body = NewInstance, responses(
    (status = 201, description = "The new instance; `ETag` is its version.", body = InstanceRecord, headers(("ETag" = String, description = "The instance's version, for `If-Match`."))),
    (status = 404, description = "No such process.", body = ErrorBody),
))]
async fn create(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NewInstance>,
) -> Result<Response> {
    let process = ProcessName::parse(&name)?;
    let data = match body.data {
        Some(value) => InstanceData::parse(value)?,
        None => InstanceData::empty(),
    };
    let status = body
        .status
        .as_deref()
        .map(InstanceStatus::parse)
        .transpose()?;
    let created = herald
        .create_instance(&caller, &process, &data, status)
        .await?;
    Ok(with_etag(StatusCode::CREATED, created))
}

/// Lists a process's instances, newest first.
#[utoipa::path(get, path = "/processes/{name}/instances", params(("name" = ProcessName, Path, description = "The process's name."), Paging), responses(
    (status = 200, description = "A page of instances.", body = Page<InstanceRecord>),
    (status = 404, description = "No such process.", body = ErrorBody),
))]
async fn list(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Page<InstanceRecord>>> {
    let process = ProcessName::parse(&name)?;
    let (cursor, limit) = paging.parse()?;
    let page = herald.instances(&caller, &process, cursor, limit).await?;
    Ok(Json(Page::new(page.items, page.next_cursor)))
}

/// Reads one instance.
#[utoipa::path(get, path = "/instances/{id}", params(("id" = InstanceId, Path, description = "The instance's ID.")), responses(
    (status = 200, description = "The instance; `ETag` is its version.", body = InstanceRecord, headers(("ETag" = String, description = "The instance's version, for `If-Match`."))),
    (status = 404, description = "No such instance (or it is in the recycle bin).", body = ErrorBody),
))]
async fn read(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = InstanceId::parse(&id)?;
    Ok(with_etag(
        StatusCode::OK,
        herald.instance(&caller, &id).await?,
    ))
}

/// Parses `If-Match: 3`, `If-Match: "3"`, `If-Match: W/"3"` or `If-Match: *` (any version).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let version = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    let digits = (1..=18).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_digit());
    match version.parse::<i64>() {
        Ok(n) if digits => Ok(Some(n)),
        _ => Err(Error::Invalid(format!(
            "If-Match must be an instance version such as \"3\", not `{text}`"
        ))),
    }
}

/// Changes an instance; its `updated` callbacks are queued in the same commit.
#[utoipa::path(patch, path = "/instances/{id}",
    params(
        ("id" = InstanceId, Path, description = "The instance's ID."),
        ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?("[0-9]{1,18}"|[0-9]{1,18}))$"#, description = "Change only if the instance is still at this version (its `ETag`); `*` for any."),
    ),
    request_body = Patch, responses(
    (status = 200, description = "The changed instance; `ETag` is its new version.", body = InstanceRecord, headers(("ETag" = String, description = "The instance's version, for `If-Match`."))),
    (status = 404, description = "No such instance.", body = ErrorBody),
    (status = 412, description = "The instance is no longer at the `If-Match` version.", body = ErrorBody),
))]
async fn update(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Patch>,
) -> Result<Response> {
    let id = InstanceId::parse(&id)?;
    let change = InstanceChange {
        data: body.data.map(InstanceData::parse).transpose()?,
        status: body
            .status
            .as_deref()
            .map(InstanceStatus::parse)
            .transpose()?,
        if_match: if_match(&headers)?,
    };
    let updated = herald.update_instance(&caller, &id, &change).await?;
    Ok(with_etag(StatusCode::OK, updated.instance))
}

/// Moves an instance to the recycle bin; its `deleted` callbacks are queued in the same commit.
#[utoipa::path(delete, path = "/instances/{id}", params(("id" = InstanceId, Path, description = "The instance's ID.")), responses(
    (status = 204, description = "Deleted."),
    (status = 404, description = "No such instance.", body = ErrorBody),
))]
async fn remove(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = InstanceId::parse(&id)?;
    herald.delete_instance(&caller, &id).await?;
    crate::telemetry::record_instance(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Brings an instance back from the recycle bin; its `created` callbacks fire again.
#[utoipa::path(post, path = "/instances/{id}/restore", params(("id" = InstanceId, Path, description = "The instance's ID.")), responses(
    (status = 200, description = "The restored instance.", body = InstanceRecord, headers(("ETag" = String, description = "The instance's version, for `If-Match`."))),
    (status = 404, description = "No such instance.", body = ErrorBody),
    (status = 409, description = "The instance is not in the recycle bin.", body = ErrorBody),
))]
async fn restore(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = InstanceId::parse(&id)?;
    Ok(with_etag(
        StatusCode::OK,
        herald.restore_instance(&caller, &id).await?,
    ))
}

/// Lists deleted instances, most recently deleted first; each is purged after the retention.
#[utoipa::path(get, path = "/recycle-bin", params(Paging), responses(
    (status = 200, description = "A page of deleted instances.", body = Page<InstanceRecord>),
))]
async fn recycle_bin(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Page<InstanceRecord>>> {
    let (cursor, limit) = paging.parse()?;
    let page = herald.recycle_bin(&caller, cursor, limit).await?;
    Ok(Json(Page::new(page.items, page.next_cursor)))
}
