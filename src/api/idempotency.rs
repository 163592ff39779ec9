//! `Idempotency-Key` on API writes (issue 19, item 17): a write sent again with the same key
//! and the same request, by the same token, within 24 hours gets the first answer (status,
//! body and the headers that matter) and does nothing again; the same key with another
//! request is refused with 422. Keys live in the database, so every node of a fleet agrees.
//!
//! The first request runs in a task of its own, so a client that gives up mid-request cannot
//! cancel it halfway: its answer is stored for the retry. A retry that arrives while the first
//! request still runs gets 409 and `Retry-After`. Answers that a retry should not get again
//! (5xx, 401, 429) are not kept.

use super::error::HttpError;
use super::extract::bearer_token;
use crate::service::Herald;
use crate::storage::KeyClaim;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The header, as Stripe and the IETF draft name it.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Marks an answer given again from a key.
const REPLAYED: &str = "idempotent-replayed";
/// The most a request body may hold (the API's limit).
const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Headers of an answer that are kept with it.
const KEPT_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LOCATION,
    header::RETRY_AFTER,
];

fn refuse(status: StatusCode, code: &'static str, message: &str) -> Response {
    HttpError {
        status,
        code,
        message: message.to_owned(),
    }
    .into_response()
}

/// The middleware: passes requests without a key (and reads) straight through.
pub async fn layer(State(herald): State<Herald>, request: Request, next: Next) -> Response {
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY).filter(|_| writes) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_idempotency_key",
                "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
            );
        }
    };
    // Keys belong to a token; without a valid one the handler answers 401 as usual.
    let token = match bearer_token(request.headers()) {
        Some(token) if herald.authenticate(&token).await.is_ok() => token.hash(),
        _ => return next.run(request).await,
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than 2 MiB, the most Herald accepts",
        );
    };
    let fingerprint = {
        let mut hash = Sha256::new();
        hash.update(parts.method.as_str());
        hash.update(b"\n");
        hash.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
        hash.update(b"\n");
        hash.update(&body);
        hex::encode(hash.finalize())
    };
    match herald
        .claim_idempotency_key(&token, &key, &fingerprint)
        .await
    {
        Err(error) => return error.into_response(),
        Ok(KeyClaim::Fresh) => {}
        Ok(KeyClaim::InProgress) => {
            let mut response = refuse(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            return response;
        }
        Ok(KeyClaim::OtherRequest) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request; use a new key for a new request",
            );
        }
        Ok(KeyClaim::Answered {
            status,
            headers,
            body,
        }) => return replay(status, &headers, body),
    }
    let request = Request::from_parts(parts, Body::from(body));
    // Run to the end even if the client goes: the answer is the retry's.
    let first = tokio::spawn(async move {
        let response = next.run(request).await;
        keep(&herald, &token, &key, response).await
    });
    match first.await {
        Ok(response) => response,
        Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; the server log has the details",
        ),
    }
}

/// Stores the first answer (or frees the key when a retry should try again), and returns it.
async fn keep(
    herald: &Herald,
    token: &crate::domain::TokenHash,
    key: &str,
    response: Response,
) -> Response {
    let status = response.status();
    let kept = !(status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::TOO_MANY_REQUESTS);
    if !kept {
        if let Err(error) = herald.release_idempotency_key(token, key).await {
            tracing::warn!(%error, "freeing an idempotency key failed");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    };
    let headers = kept_headers(&parts.headers);
    if let Err(error) = herald
        .finish_idempotency_key(token, key, status.as_u16(), &headers, &body)
        .await
    {
        // The write happened; its answer still goes to this client.
        tracing::warn!(%error, "storing an idempotent answer failed");
    }
    Response::from_parts(parts, Body::from(body))
}

fn kept_headers(headers: &HeaderMap) -> String {
    let kept: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.into()))
        })
        .collect();
    serde_json::Value::Object(kept).to_string()
}

fn replay(status: u16, headers: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(serde_json::Value::Object(kept)) = serde_json::from_str(headers) {
        for (name, value) in kept {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
