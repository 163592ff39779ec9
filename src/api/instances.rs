//! Instances: `/api/v1/processes/{name}/instances`, `/api/v1/instances/{id}` and the recycle bin.

use super::Paging;
use super::extract::{ApiJson, ApiQuery, Auth};
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
/// anyway): 204, 404 for no such instance, 409 for one that is not in the bin.
async fn purge(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = InstanceId::parse(&id)?;
    herald.purge_instance(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInstance {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    status: Option<String>,
}

/// The instance with its version as an `ETag`, for `If-Match`.
fn with_etag(status: StatusCode, instance: InstanceRecord) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", instance.version)).ok();
    let mut response = (status, Json(instance)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

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

async fn list(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Value>> {
    let process = ProcessName::parse(&name)?;
    let (cursor, limit) = paging.parse()?;
    let page = herald.instances(&caller, &process, cursor, limit).await?;
    Ok(Json(super::page_json(page.items, page.next_cursor)))
}

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

/// Parses `If-Match: 3`, `If-Match: "3"` or `If-Match: W/"3"`.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<i64>().map(Some).map_err(|_| {
        Error::Invalid(format!(
            "If-Match must be an instance version such as \"3\", not `{text}`"
        ))
    })
}

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

async fn remove(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = InstanceId::parse(&id)?;
    herald.delete_instance(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

async fn recycle_bin(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<Value>> {
    let (cursor, limit) = paging.parse()?;
    let page = herald.recycle_bin(&caller, cursor, limit).await?;
    Ok(Json(super::page_json(page.items, page.next_cursor)))
}
