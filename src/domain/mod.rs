//! The domain: types that can only be built valid, and the rules that act on them.
//!
//! **Architecture Invariant:** nothing in this module performs I/O or imports axum, sqlx or
//! reqwest. Storage, delivery and the HTTP edge depend on the domain, never the reverse.

pub mod backpressure;
pub mod breaker;
pub mod concurrency;
pub mod delivery;
pub mod instance;
pub mod process;
pub mod retry;
pub mod signing;
pub mod text;
pub mod token;
pub mod user;
pub mod webhook;

pub use backpressure::Backpressure;
pub use breaker::{AfterFailure, BreakerPolicy, Change, Health};
pub use concurrency::{ConcurrencyLimit, Load};
pub use delivery::{AttemptOutcome, DeliveryId, DeliveryStatus, Signal, storable_text};
pub use instance::{InstanceData, InstanceId, InstanceStatus, UniqueId};
pub use process::{ProcessName, ProcessTitle};
pub use retry::{MAX_RETRY_AFTER, NextStep, RetrySchedule, next_step};
pub use signing::{SigningKeys, SigningSecret};
pub use token::{Area, TokenLifetime, TokenName, TokenScope};
pub use user::{ApiToken, DisplayName, Email, Password, Role, TokenHash};
pub use webhook::{
    CallbackFormat, CallbackUrl, EventType, UrlProblem, UrlProblems, WebhookSettings,
};

/// A rule broken by some input, phrased for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Milliseconds since the Unix epoch: how Herald stores every point in time, on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Millis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
    }

    /// This time plus a duration, saturating.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Whole seconds since the epoch (the `webhook-timestamp` header).
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// RFC 3339 with millisecond precision, in UTC.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Parses RFC 3339 text (API filters).
    pub fn parse_rfc3339(text: &str) -> Result<Self, Invalid> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
            Invalid::new(format!(
                "`{text}` is not an RFC 3339 time such as 2026-01-31T12:00:00Z"
            ))
        })?;
        Ok(Self(
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
        ))
    }
}

impl serde::Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_rfc3339() {
        let t = Millis(1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(Millis::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert!(Millis::parse_rfc3339("yesterday").is_err());
    }
}
