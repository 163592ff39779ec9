//! The error type of Herald's operations. The HTTP edge (`api::error`) turns it into a response.

use crate::domain::{Invalid, UrlProblems};
use crate::storage::StorageError;

/// What an operation can fail with. Every variant but `Internal` is the caller's to fix and is
/// shown to them; `Internal` is logged with its causes and shown as an opaque 500.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input broke a rule; the message names what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Some callback URLs are invalid; nothing was saved.
    #[error("{} problem(s) with the callback URLs; nothing was saved", .0.total)]
    InvalidUrls(UrlProblems),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (duplicate name, wrong recycle-bin state).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// `If-Match` named a version that is no longer current.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("a valid API token is required: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    /// Too much of this is going on at once; the caller may retry after `retry_after`.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The database cannot be reached (or is shutting down): nothing was done; retry later.
    #[error("the database is unavailable; nothing was changed, retry in a few seconds")]
    DatabaseUnavailable,
    /// The database's disk is full: reads still work, writes are refused until space is freed.
    #[error(
        "the database's disk is full, so nothing was written; reads still work. An operator must free space on the volume that holds the database"
    )]
    StorageFull,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Self {
        Error::Invalid(e.0)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Duplicate(what) => Error::Conflict {
                code: "already_exists",
                message: format!("{what} already exists"),
            },
            other => match other.outage() {
                Some(crate::storage::Outage::Unavailable) => {
                    tracing::warn!(error = %error_chain(&other), "the database is unavailable");
                    Error::DatabaseUnavailable
                }
                Some(crate::storage::Outage::Full) => {
                    tracing::warn!(error = %error_chain(&other), "the database's disk is full");
                    Error::StorageFull
                }
                None => Error::Internal(anyhow::Error::new(other)),
            },
        }
    }
}

/// An error with its causes, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // A driver often wraps the server's message and gives it again as the source.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
