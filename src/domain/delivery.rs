//! Deliveries (one callback of one event to one URL) and the outcome of each attempt.

use super::Invalid;
use super::retry::MAX_RETRY_AFTER;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The public ID of a delivery, also sent as the `webhook-id` header (`msg_` + 32 hex).
/// It stays the same across retries and redeliveries so receivers can drop duplicates.
/// The hex starts with the creation time in milliseconds (12 digits, as a UUIDv7 does), then
/// random digits: IDs sort by creation time, and new rows go at the end of the index on them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DeliveryId(String);

impl DeliveryId {
    pub const PREFIX: &'static str = "msg_";
    /// What [`DeliveryId::parse`] takes, as a regular expression (for the OpenAPI document).
    pub const PATTERN: &'static str = "^msg_[0-9a-fA-F]{32}$";

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, uuid::Uuid::now_v7().simple()))
    }

    /// A new ID for a delivery created at `at`: a UUIDv7 of that time, so IDs sort by creation
    /// time and show it (their first 12 hex digits are `at` in milliseconds).
    pub fn created_at(at: super::Millis) -> Self {
        let millis = u64::try_from(at.0).unwrap_or(0);
        let time = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            u32::try_from(millis % 1000).unwrap_or(0) * 1_000_000,
        );
        Self(format!(
            "{}{}",
            Self::PREFIX,
            uuid::Uuid::new_v7(time).simple()
        ))
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let ok = text
            .strip_prefix(Self::PREFIX)
            .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(Invalid::new(format!("`{text}` is not a delivery ID")));
        }
        Ok(Self(text.to_owned()))
    }

    /// Wraps an ID read back from Herald's own storage.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a delivery stands. `Pending` covers waiting, leased and scheduled for retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    /// Called off by an administrator or developer before it was sent (or while it waited for
    /// a retry); redelivery makes it pending again.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "pending" => Ok(DeliveryStatus::Pending),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            "cancelled" => Ok(DeliveryStatus::Cancelled),
            other => Err(Invalid::new(format!(
                "`{other}` is not a delivery status; use pending, succeeded, failed or cancelled"
            ))),
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Success,
    Timeout,
    ConnectionRefused,
    ConnectionError,
    DnsFailure,
    TlsError,
    HttpStatus,
    Redirect,
    PrivateAddress,
}

impl AttemptOutcome {
    /// Every outcome, success first.
    pub const ALL: [AttemptOutcome; 9] = [
        AttemptOutcome::Success,
        AttemptOutcome::Timeout,
        AttemptOutcome::ConnectionRefused,
        AttemptOutcome::ConnectionError,
        AttemptOutcome::DnsFailure,
        AttemptOutcome::TlsError,
        AttemptOutcome::HttpStatus,
        AttemptOutcome::Redirect,
        AttemptOutcome::PrivateAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::ConnectionRefused => "connection_refused",
            AttemptOutcome::ConnectionError => "connection_error",
            AttemptOutcome::DnsFailure => "dns_failure",
            AttemptOutcome::TlsError => "tls_error",
            AttemptOutcome::HttpStatus => "http_status",
            AttemptOutcome::Redirect => "redirect",
            AttemptOutcome::PrivateAddress => "private_address",
        }
    }

    /// The outcome a stored name stands for; an unknown name is an error, never a default.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| Invalid::new(format!("`{text}` is not an attempt outcome")))
    }
}

impl AttemptOutcome {
    /// The outcome of an answer with this HTTP status, and the error it records: any 2xx is
    /// success; a 3xx is a failure that names the redirect (redirects are never followed); any
    /// other status is a failure by status.
    pub fn of_status(code: u16) -> (Self, Option<String>) {
        match code {
            200..=299 => (AttemptOutcome::Success, None),
            300..=399 => (
                AttemptOutcome::Redirect,
                Some(format!("HTTP {code}: redirect not followed")),
            ),
            _ => (AttemptOutcome::HttpStatus, Some(format!("HTTP {code}"))),
        }
    }
}

/// What one attempt says about its receiver: the facts the retry schedule and the circuit
/// breaker decide by, classified once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A 2xx answer.
    Success,
    /// `410 Gone`: the receiver asks for no more callbacks (Standard Webhooks). The delivery
    /// fails, and so does every other pending one to the URL, which is disabled.
    Gone,
    /// Any other failure. `retry_after` is the receiver's `Retry-After` on a 429 or 503, capped
    /// at [`MAX_RETRY_AFTER`]: no request to the URL may start before it has passed.
    Failure { retry_after: Option<Duration> },
}

impl Signal {
    /// Classifies an attempt by its outcome, HTTP status and `Retry-After` header. A
    /// `Retry-After` counts on 429 and 503 only, the statuses that define it as a pause.
    pub fn of(outcome: AttemptOutcome, status: Option<u16>, retry_after: Option<Duration>) -> Self {
        match (outcome, status) {
            (AttemptOutcome::Success, _) => Signal::Success,
            (AttemptOutcome::HttpStatus, Some(410)) => Signal::Gone,
            (_, Some(429 | 503)) => Signal::Failure {
                retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
            },
            _ => Signal::Failure { retry_after: None },
        }
    }
}

/// Text from a receiver or a network error, made storable by every backend: PostgreSQL refuses
/// the NUL character in text (`invalid byte sequence for encoding "UTF8": 0x00`), so each one
/// becomes U+2400 (␀), which shows where it was. One receiver's odd body must never stop the
/// results of others from being stored.
pub fn storable_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{2400}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(AttemptOutcome::of_status(204).0, AttemptOutcome::Success);
        assert_eq!(
            AttemptOutcome::of_status(301),
            (
                AttemptOutcome::Redirect,
                Some("HTTP 301: redirect not followed".into())
            )
        );
        assert_eq!(
            AttemptOutcome::of_status(410),
            (AttemptOutcome::HttpStatus, Some("HTTP 410".into()))
        );
        let minute = Some(Duration::from_secs(60));
        assert_eq!(
            Signal::of(AttemptOutcome::HttpStatus, Some(410), None),
            Signal::Gone
        );
        assert_eq!(
            Signal::of(AttemptOutcome::HttpStatus, Some(429), minute),
            Signal::Failure {
                retry_after: minute
            }
        );
        assert_eq!(
            Signal::of(AttemptOutcome::HttpStatus, Some(500), minute),
            Signal::Failure { retry_after: None },
            "Retry-After means a pause on 429 and 503 only"
        );
        assert_eq!(
            Signal::of(
                AttemptOutcome::HttpStatus,
                Some(503),
                Some(Duration::from_secs(90_000_000))
            ),
            Signal::Failure {
                retry_after: Some(MAX_RETRY_AFTER)
            }
        );
        assert_eq!(
            Signal::of(AttemptOutcome::Timeout, None, None),
            Signal::Failure { retry_after: None }
        );
    }

    #[test]
    fn nul_characters_are_made_storable() {
        assert_eq!(storable_text("before\0after".into()), "before\u{2400}after");
        assert_eq!(storable_text("plain".into()), "plain");
    }

    #[test]
    fn delivery_ids() {
        let id = DeliveryId::generate();
        assert!(id.as_str().starts_with("msg_"));
        assert_eq!(DeliveryId::parse(id.as_str()).unwrap(), id);
        assert!(DeliveryId::parse("msg_xyz").is_err());
        assert!(DeliveryId::parse("1").is_err());
    }

    #[test]
    fn outcomes_round_trip() {
        for o in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Ok(o));
        }
        assert!(AttemptOutcome::parse("teapot").is_err());
    }
}
