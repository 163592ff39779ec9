//! `/api/v1/processes`: create, list and read processes.

use super::extract::{ApiJson, Auth};
use super::schema::{ErrorBody, Items};
use crate::domain::{Millis, ProcessName, ProcessTitle};
use crate::error::Result;
use crate::service::Herald;
use crate::storage::ProcessRecord;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

routes! {
    get "/processes" => list, Member;
    post "/processes" => create, Member;
    get "/processes/{name}" => read, Member;
}

/// A new process.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewProcess {
    #[schema(value_type = ProcessName)]
    name: String,
    /// One line, at most 200 characters.
    #[schema(example = "Leave request")]
    title: String,
}

/// A process as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessView {
    name: String,
    title: String,
    created_at: Millis,
    created_by: String,
    instance_count: i64,
}

impl From<ProcessRecord> for ProcessView {
    fn from(p: ProcessRecord) -> Self {
        Self {
            name: p.name.as_str().to_owned(),
            title: p.title,
            created_at: p.created_at,
            created_by: p.created_by,
            instance_count: p.instance_count,
        }
    }
}

/// Creates a process.
#[utoipa::path(post, path = "/processes", request_body = NewProcess, responses(
    (status = 201, description = "The new process.", body = ProcessView),
    (status = 409, description = "A process of this name exists.", body = ErrorBody),
))]
async fn create(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<NewProcess>,
) -> Result<(StatusCode, Json<ProcessView>)> {
    let name = ProcessName::parse(&body.name)?;
    let title = ProcessTitle::parse(&body.title)?;
    let created = herald.create_process(&caller, &name, &title).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Lists every process.
#[utoipa::path(get, path = "/processes", responses(
    (status = 200, description = "Every process.", body = Items<ProcessView>),
))]
async fn list(
    State(herald): State<Herald>,
    Auth(caller): Auth,
) -> Result<Json<Items<ProcessView>>> {
    let items: Vec<ProcessView> = herald
        .processes(&caller)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(Items { items }))
}

/// Reads one process.
#[utoipa::path(get, path = "/processes/{name}", params(("name" = ProcessName, Path, description = "The process's name.")), responses(
    (status = 200, description = "The process.", body = ProcessView),
    (status = 404, description = "No such process.", body = ErrorBody),
))]
async fn read(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Json<ProcessView>> {
    let name = ProcessName::parse(&name)?;
    Ok(Json(herald.process(&caller, &name).await?.into()))
}
