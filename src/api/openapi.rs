//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`. Each resource module
//! describes its own handlers (`#[utoipa::path]` and the types they return); this adds, from
//! one place, what every route shares: the `/api/v1` prefix, bearer authentication, who may call
//! each route (from the route tables that also build the router), the error answers any route
//! can give, and `Idempotency-Key` on writes.

use super::schema::ErrorBody;
use super::{Access, deliveries, instances, processes, tokens, users, webhooks};
use crate::domain::{Area, TokenScope};
use std::sync::LazyLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
    Required, Tag,
};
use utoipa::{PartialSchema, ToSchema};

/// The name of the bearer scheme in the document.
const BEARER: &str = "bearer";

const DESCRIPTION: &str = "Herald keeps records of business processes and their instances, and \
calls the URLs an administrator or developer configured the moment an instance is created, \
updated or deleted. Every route takes an API token as `Authorization: Bearer <token>`. Writes \
take an `Idempotency-Key`: sent again with the same key and body within 24 hours, a write is \
answered as the first time and done once. Errors are `{\"code\", \"message\"}` with a stable \
`code`.";

/// The resource modules and the tag their routes carry.
fn parts() -> [(&'static str, &'static str, OpenApi); 6] {
    [
        (
            "processes",
            "Business processes: each has instances.",
            processes::openapi(),
        ),
        (
            "instances",
            "Instances of a process; their changes are what callbacks report. Deleted ones wait in the recycle bin.",
            instances::openapi(),
        ),
        (
            "webhooks",
            "The Instance Callback URLs settings, test callbacks, destination health and the signing secret.",
            webhooks::openapi(),
        ),
        (
            "deliveries",
            "The delivery log: each callback of an event to a URL, its attempts, redelivery and cancellation.",
            deliveries::openapi(),
        ),
        (
            "users",
            "The workspace's users and their roles.",
            users::openapi(),
        ),
        (
            "tokens",
            "The caller's own API tokens: named, scoped, optionally expiring.",
            tokens::openapi(),
        ),
    ]
}

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: LazyLock<OpenApi> = LazyLock::new(build);
    &DOCUMENT
}

/// The document as JSON, as served.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    &JSON
}

fn build() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Herald API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION))
                .license(Some(LicenseBuilder::new().name("Apache-2.0").build())),
        )
        .components(Some(components()))
        .security(Some([SecurityRequirement::new(BEARER, [] as [&str; 0])]))
        .build();
    let mut tags = Vec::new();
    for (tag, about, mut part) in parts() {
        for (path, item) in std::mem::take(&mut part.paths.paths) {
            let mut item = item;
            for (_, operation) in operations_mut(&mut item) {
                let name = operation.operation_id.take().unwrap_or_default();
                operation.operation_id = Some(format!("{tag}_{name}"));
                operation.tags = Some(vec![tag.to_owned()]);
            }
            part.paths.paths.insert(format!("/api/v1{path}"), item);
        }
        doc.merge(part);
        let mut described = Tag::new(tag);
        described.description = Some(about.to_owned());
        tags.push(described);
    }
    let mut operations = Tag::new("operations");
    operations.description = Some("What an operator scrapes: this node's metrics.".to_owned());
    tags.push(operations);
    doc.tags = Some(tags);
    doc.paths.paths.insert(
        super::METRICS.path.to_owned(),
        PathItem::new(HttpMethod::Get, metrics_operation()),
    );
    for (method, path, access, area) in super::areas() {
        let Some(item) = doc.paths.paths.get_mut(&path) else {
            continue; // The test of the document names any route it lacks.
        };
        if let Some((_, operation)) = operations_mut(item).find(|(m, _)| *m == method) {
            shared_answers(operation, method, access, area);
        }
    }
    doc
}

/// The operations of a path, with their methods as the route tables spell them.
pub(crate) fn operations_mut(
    item: &mut PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|o| (method, o)))
}

fn components() -> Components {
    let mut components = Components::new();
    components.security_schemes.insert(
        BEARER.to_owned(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token: each user gets one with their account (`herald users add`, \
                     the Users page, or the operator's `HERALD_ADMIN_TOKEN` for the first \
                     administrator) and makes more with `POST /api/v1/tokens`.",
                ))
                .build(),
        )),
    );
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    let mut schemas = Vec::new();
    ErrorBody::schemas(&mut schemas);
    components.schemas.extend(schemas);
    for (name, description, retry_after) in SHARED {
        components.responses.insert(
            (*name).to_owned(),
            RefOr::T(error_response(description, *retry_after)),
        );
    }
    components
}

/// The error answers that many routes share: name, description, and whether `Retry-After`
/// comes with it.
const SHARED: &[(&str, &str, bool)] = &[
    (
        "BadRequest",
        "Malformed JSON or query string (`malformed_json`, `invalid_query`).",
        false,
    ),
    (
        "Unauthenticated",
        "No token, or not the token of an active user (`unauthenticated`).",
        false,
    ),
    (
        "Forbidden",
        "The caller's role may not do this (`forbidden`).",
        false,
    ),
    (
        "IdempotencyConflict",
        "A request with this `Idempotency-Key` is still running (`idempotency_key_in_use`), \
         or the answer is a conflict of the operation itself.",
        true,
    ),
    (
        "BodyTooLarge",
        "The body is larger than 2 MiB (`body_too_large`).",
        false,
    ),
    (
        "UnsupportedMediaType",
        "The body is not `application/json` (`unsupported_media_type`).",
        false,
    ),
    (
        "Invalid",
        "A value is not valid; `message` says which and why (`invalid_input`, `invalid_body`).",
        false,
    ),
    (
        "TooManyRequests",
        "Too many requests; wait for `Retry-After` seconds (`too_many_requests`).",
        true,
    ),
    (
        "Internal",
        "An internal error; the server log has the details (`internal_error`).",
        false,
    ),
    (
        "Unavailable",
        "The database is unreachable; retry after `Retry-After` seconds \
         (`database_unavailable`).",
        true,
    ),
    (
        "StorageFull",
        "The database's disk is full; nothing was stored (`storage_full`).",
        false,
    ),
];

fn error_response(description: &str, retry_after: bool) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some("Seconds to wait before trying again."))
                .build(),
        );
    }
    response.build()
}

/// Adds what every route shares to one operation: the error answers it can give beyond its
/// own, `Idempotency-Key` on writes, and who may call it.
fn shared_answers(operation: &mut Operation, method: &str, access: Access, area: Area) {
    let write = method != "get";
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let takes_input = operation.request_body.is_some() || !parameters.is_empty();
    let query = parameters
        .iter()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
    let body = operation.request_body.is_some();
    let mut add = |status: &str, name: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
    };
    add("401", "Unauthenticated");
    if access != Access::Member {
        add("403", "Forbidden");
    }
    if body || query {
        add("400", "BadRequest");
    }
    if takes_input {
        add("422", "Invalid");
    }
    if body {
        add("415", "UnsupportedMediaType");
    }
    if write {
        add("409", "IdempotencyConflict");
        add("413", "BodyTooLarge");
        add("422", "Invalid");
        add("507", "StorageFull");
    }
    add("429", "TooManyRequests");
    add("500", "Internal");
    add("503", "Unavailable");
    if write {
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::T(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "1 to 255 visible ASCII characters. The same key with the same request, by \
                     the same token, within 24 hours gets the first answer again (with \
                     `Idempotent-Replayed: true`); with another request, 422.",
                    ))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(255)),
                    ))
                    .build(),
            ));
    }
    let who = match access {
        Access::Member => "any active user",
        Access::Manager => "administrators and developers",
        Access::Administrator => "administrators",
    };
    let scopes: Vec<String> = TokenScope::ALL
        .into_iter()
        .filter(|scope| scope.allows(area, write))
        .map(|scope| format!("`{scope}`"))
        .collect();
    let description = operation.description.take().unwrap_or_default();
    operation.description = Some(
        format!(
            "{description}\n\nWho may call: {who}, with a token of scope {}.",
            scopes.join(" or ")
        )
        .trim_start()
        .to_owned(),
    );
}

fn metrics_operation() -> Operation {
    let mut operation = Operation::new();
    operation.operation_id = Some("metrics".to_owned());
    operation.summary = Some("This node's metrics in OpenMetrics text, for Prometheus.".to_owned());
    operation.tags = Some(vec!["operations".to_owned()]);
    operation.responses.responses.insert(
        "200".to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("Counters, gauges and histograms of this node and the queue.")
                .content(
                    "application/openmetrics-text",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                )
                .build(),
        ),
    );
    operation
}

/// `GET /api/v1/openapi.json`: the document, to anyone (it describes the API, not its data).
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "max-age=300"),
        ],
        json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every route of the route tables is in the document with its method and path, and
    /// nothing else is: the document cannot drift from the router.
    #[test]
    fn the_document_has_exactly_the_routes() {
        let mut doc = build();
        let mut documented = BTreeSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, _) in operations_mut(item) {
                documented.insert((method.to_owned(), path.clone()));
            }
        }
        let routed: BTreeSet<(String, String)> = super::super::routes()
            .into_iter()
            .map(|(method, path, _)| (method.to_owned(), path))
            .collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn operation_ids_are_unique_and_every_operation_says_who_may_call_it() {
        let mut doc = build();
        let mut ids = BTreeSet::new();
        for item in doc.paths.paths.values_mut() {
            for (_, operation) in operations_mut(item) {
                let id = operation.operation_id.clone().expect("an operation ID");
                assert!(ids.insert(id.clone()), "{id} twice");
                let text = operation.description.as_deref().unwrap_or_default();
                assert!(text.contains("Who may call:"), "{id}: {text}");
                assert!(operation.responses.responses.contains_key("401"), "{id}");
            }
        }
    }
}
