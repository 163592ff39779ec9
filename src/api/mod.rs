//! The REST API under `/api/v1`. Each resource has its own module exporting `router()`; they
//! are merged here. Handlers parse input into domain types, call [`Herald`], and return JSON.
//!
//! **Architecture Invariant:** handlers never touch storage directly; every operation goes
//! through [`crate::service::Herald`], which the web UI shares.

/// Who may call an API route. The route tables below are the one list of routes: the router
/// is built from them, and the authorisation matrix test (`tests/api/authorization.rs`) calls
/// every route with every kind of caller and checks the answer against this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any active user.
    Member,
    /// Administrators and developers.
    Manager,
    Administrator,
}

/// One route: method, path under `/api/v1` (or the root for `/metrics`), and who may call it.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// A module's route table and its router, from one list.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:ident, $access:ident;)+) => {
        pub(super) const ROUTES: &[super::RouteSpec] = &[$(super::RouteSpec {
            method: stringify!($method),
            path: $path,
            access: super::Access::$access,
        }),+];

        pub(super) fn router() -> axum::Router<crate::service::Herald> {
            axum::Router::new()$(.route($path, axum::routing::$method($handler)))+
        }

        /// This module's part of the OpenAPI document, from its handlers' `#[utoipa::path]`.
        pub(super) fn openapi() -> utoipa::openapi::OpenApi {
            #[derive(utoipa::OpenApi)]
            #[openapi(paths($($handler),+))]
            struct Doc;
            <Doc as utoipa::OpenApi>::openapi()
        }
    };
}

mod deliveries;
pub use deliveries::{AttemptView, DeliveryView, attempt_view, deliveries_view};
pub mod error;
mod extract;
pub mod idempotency;
mod instances;
pub mod openapi;
mod processes;
pub mod schema;
mod tokens;
mod users;
mod webhooks;

use crate::domain::Area;
use crate::error::{Error, Result};
use crate::service::Herald;
use axum::Router;
use axum::http::StatusCode;
use error::HttpError;
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /readyz`, for load balancers and orchestrators, without a token: 200 when this node
/// can serve (database reachable, schema current, worker running), else 503 with the reason.
/// `/healthz` only says the process is alive.
pub async fn readyz(
    axum::extract::State(herald): axum::extract::State<Herald>,
) -> (StatusCode, axum::Json<Value>) {
    match herald.readiness().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "reason": reason})),
        ),
    }
}

/// `GET /metrics`, served beside the API at the root.
pub const METRICS: RouteSpec = RouteSpec {
    method: "get",
    path: "/metrics",
    access: Access::Manager,
};

/// Every API route as a client calls it: the `/api/v1` routes with their prefix, and
/// `/metrics`.
pub fn routes() -> Vec<(&'static str, String, Access)> {
    areas()
        .into_iter()
        .map(|(method, path, access, _)| (method, path, access))
        .collect()
}

/// Every API route with what it works on, for token scopes: the one list `routes` and
/// [`area`] read.
pub(crate) fn areas() -> Vec<(&'static str, String, Access, Area)> {
    let v1 = [
        (webhooks::ROUTES, Area::Webhooks),
        (processes::ROUTES, Area::Instances),
        (instances::ROUTES, Area::Instances),
        (deliveries::ROUTES, Area::Webhooks),
        (users::ROUTES, Area::Users),
        (tokens::ROUTES, Area::Tokens),
    ];
    v1.into_iter()
        .flat_map(|(routes, area)| routes.iter().map(move |r| (r, area)))
        .map(|(r, area)| (r.method, format!("/api/v1{}", r.path), r.access, area))
        .chain([(
            METRICS.method,
            METRICS.path.to_owned(),
            METRICS.access,
            Area::Webhooks,
        )])
        .collect()
}

/// What the route of `method` (lower case) and matched `path` works on.
pub(crate) fn area(method: &str, path: &str) -> Option<Area> {
    static AREAS: std::sync::LazyLock<Vec<(&'static str, String, Access, Area)>> =
        std::sync::LazyLock::new(areas);
    AREAS
        .iter()
        .find(|(m, p, _, _)| *m == method && p == path)
        .map(|(_, _, _, area)| *area)
}

/// All API routes, with JSON answers for unknown routes and methods. `Idempotency-Key` is
/// honoured on the routes themselves only, so an unknown route or method gets its 404 or 405
/// whatever key it carries.
pub fn router(herald: Herald) -> Router<Herald> {
    let v1 = Router::new()
        .merge(webhooks::router())
        .merge(processes::router())
        .merge(instances::router())
        .merge(deliveries::router())
        .merge(users::router())
        .merge(tokens::router())
        .route_layer(axum::middleware::from_fn_with_state(
            herald,
            idempotency::layer,
        ))
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .method_not_allowed_fallback(|| async {
            HttpError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "this method is not allowed on this resource".into(),
            }
        });
    Router::new().nest("/api/v1", v1).fallback(|| async {
        HttpError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "no such route".into(),
        }
    })
}

/// `GET /metrics`: this node's counters and the queue's state in OpenMetrics text, for
/// an administrator's or developer's token (`Authorization: Bearer`, as Prometheus's
/// `authorization` setting sends it).
pub async fn metrics(
    axum::extract::State(herald): axum::extract::State<Herald>,
    extract::Auth(caller): extract::Auth,
) -> Result<impl axum::response::IntoResponse> {
    let text = herald.metrics_text(&caller).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    ))
}

/// `?limit=&cursor=` of a list.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    /// How many items a page holds: 1 to 200, 50 when not given.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The previous page's `nextCursor`.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

impl Paging {
    pub const DEFAULT_LIMIT: i64 = 50;
    pub const MAX_LIMIT: i64 = 200;

    /// The cursor and page size, checked.
    pub fn parse(&self) -> Result<(Option<i64>, i64)> {
        let limit = match self.limit.as_deref() {
            None | Some("") => Self::DEFAULT_LIMIT,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (1..=Self::MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(Error::Invalid(format!(
                        "`limit` must be a number from 1 to {}",
                        Self::MAX_LIMIT
                    )));
                }
            },
        };
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|_| text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        Error::Invalid("`cursor` is not a cursor this API returned".into())
                    })?,
            ),
        };
        Ok((cursor, limit))
    }
}
