//! Deliveries (one callback of one event to one URL) and the outcome of each attempt.

use super::Invalid;
use serde::Serialize;
use std::fmt;

/// The public ID of a delivery, also sent as the `webhook-id` header (`msg_` + 32 hex).
/// It stays the same across retries and redeliveries so receivers can drop duplicates.
/// The hex starts with the creation time in milliseconds (12 digits, as a UUIDv7 does), then
/// random digits: IDs sort by creation time, and new rows go at the end of the index on them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DeliveryId(String);

impl DeliveryId {
    pub const PREFIX: &'static str = "msg_";

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, uuid::Uuid::now_v7().simple()))
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "pending" => Ok(DeliveryStatus::Pending),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(Invalid::new(format!(
                "`{other}` is not a delivery status; use pending, succeeded or failed"
            ))),
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

    pub fn from_stored(text: &str) -> Self {
        match text {
            "success" => AttemptOutcome::Success,
            "timeout" => AttemptOutcome::Timeout,
            "connection_refused" => AttemptOutcome::ConnectionRefused,
            "dns_failure" => AttemptOutcome::DnsFailure,
            "tls_error" => AttemptOutcome::TlsError,
            "http_status" => AttemptOutcome::HttpStatus,
            "redirect" => AttemptOutcome::Redirect,
            "private_address" => AttemptOutcome::PrivateAddress,
            _ => AttemptOutcome::ConnectionError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(AttemptOutcome::from_stored(o.as_str()), o);
        }
    }
}
