//! Turns [`Error`] into HTTP: a stable JSON body `{"code", "message"}` (plus `errors` for bad
//! callback URLs). Internal errors are logged with their causes and answered with an opaque 500.

use super::schema::ErrorBody;
use crate::error::Error;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

impl Error {
    /// The HTTP status and machine code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            Error::InvalidUrls(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_callback_urls"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Error::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "version_mismatch"),
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Error::DatabaseUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Error::StorageFull => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            Error::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                ErrorBody::new(
                    code,
                    "an internal error occurred; the server log has the details",
                )
            }
            Error::InvalidUrls(problems) => ErrorBody {
                errors: Some(problems.shown.clone()),
                error_count: Some(problems.total),
                ..ErrorBody::new(code, self.to_string())
            },
            other => ErrorBody::new(code, other.to_string()),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(value) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, Error::Unauthenticated) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl Error {
    /// The `Retry-After` header of a `Busy` error (whole seconds, at least one) and of an
    /// unavailable database.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            Error::Busy { retry_after, .. } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                Some(HeaderValue::from(secs))
            }
            Error::DatabaseUnavailable => Some(HeaderValue::from(2u64)),
            _ => None,
        }
    }
}

/// A client error raised by the HTTP layer itself (bad JSON, bad query string, unknown route).
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody::new(self.code, self.message)),
        )
            .into_response()
    }
}
