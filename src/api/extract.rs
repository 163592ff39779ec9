//! Extractors whose rejections use Herald's JSON error body, and the caller's identity.

use super::error::HttpError;
use crate::domain::{ApiToken, TokenScope};
use crate::error::Error;
use crate::service::Herald;
use crate::storage::Caller;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `axum::Json`, but malformed JSON, wrong types and unknown fields answer with Herald's error
/// body: 400 for syntax, 415 for a missing content type, 422 for a body of the wrong shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// The most a request body may hold: axum's default limit, which Herald keeps.
const BODY_LIMIT: &str = "2 MiB";

fn json_rejection(rejection: JsonRejection) -> HttpError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return HttpError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!(
                "the request body is larger than {BODY_LIMIT}, the most Herald accepts"
            ),
        };
    }
    let (status, code) = match &rejection {
        JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    HttpError {
        status,
        code,
        message: rejection.body_text(),
    }
}

/// `axum::extract::Query` with Herald's error body: 400 on a bad query string, 422 on an empty
/// value.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // An empty value is refused rather than read as "not given", so what the API takes is
        // what its OpenAPI document says (a number, an enum value, a time).
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        if let Some((name, _)) = url::form_urlencoded::parse(query).find(|(_, v)| v.is_empty()) {
            return Err(HttpError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_query",
                message: format!("`{name}` is empty; leave it out instead"),
            });
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> HttpError {
    HttpError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_query",
        message: rejection.body_text(),
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`. A handler that takes one
/// can only be reached with a valid, unexpired token of an active user whose scope allows the
/// route (read from the route tables by the matched path).
pub struct Auth(pub Caller);

impl FromRequestParts<Herald> for Auth {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        herald: &Herald,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or(Error::Unauthenticated)?;
        let caller = herald.authenticate(&token).await?;
        if caller.scope != TokenScope::All {
            let method = parts.method.as_str().to_ascii_lowercase();
            let route = parts
                .extensions
                .get::<MatchedPath>()
                .map(MatchedPath::as_str);
            let area = route.and_then(|path| super::area(&method, path));
            let write = parts.method != axum::http::Method::GET;
            if !area.is_some_and(|area| caller.scope.allows(area, write)) {
                return Err(Error::Forbidden(format!(
                    "this token's scope, `{}`, does not allow {} {}",
                    caller.scope,
                    parts.method,
                    route.unwrap_or("this route")
                )));
            }
        }
        Ok(Self(caller))
    }
}

/// The token of `Authorization: Bearer <token>`, if it has a token's form.
pub(super) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<ApiToken> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    ApiToken::parse(token.trim()).ok()
}
