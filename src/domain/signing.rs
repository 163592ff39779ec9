//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"<webhook-id>.<webhook-timestamp>.<payload>"`, keyed by a `whsec_` secret.

use super::Invalid;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// A workspace's signing secret: `whsec_` and the base64 of 32 random bytes. Never printed by
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl SigningSecret {
    pub const PREFIX: &'static str = "whsec_";

    /// A new random secret.
    pub fn generate() -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            text: format!("{}{}", Self::PREFIX, STANDARD.encode(key)),
            key: key.to_vec(),
        }
    }

    /// Parses `whsec_<base64>` (the key must be 24 to 64 bytes).
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let bad =
            || Invalid::new("a signing secret is `whsec_` followed by base64 of 24 to 64 bytes");
        let encoded = text.strip_prefix(Self::PREFIX).ok_or_else(bad)?;
        let key = STANDARD.decode(encoded).map_err(|_| bad())?;
        if !(24..=64).contains(&key.len()) {
            return Err(bad());
        }
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret as receivers configure it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, payload: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The secrets a callback is signed with: the current one, and during the 24 hours after a
/// rotation the previous one too (receivers may still hold it).
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub current: SigningSecret,
    pub previous: Option<SigningSecret>,
}

impl SigningKeys {
    /// How long the previous secret keeps signing after a rotation.
    pub const OVERLAP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

    /// The `webhook-signature` header value: one `v1,…` per secret, space-separated.
    pub fn header(&self, id: &str, timestamp: i64, payload: &[u8]) -> String {
        let mut value = self.current.sign(id, timestamp, payload);
        if let Some(previous) = &self.previous {
            value.push(' ');
            value.push_str(&previous.sign(id, timestamp, payload));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test vectors.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_well_formed_and_hidden() {
        let s = SigningSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(s.expose()).unwrap(), s);
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
        assert!(SigningSecret::parse("whsec_short").is_err());
        assert!(SigningSecret::parse("nope").is_err());
    }

    #[test]
    fn both_secrets_sign_during_the_overlap() {
        let keys = SigningKeys {
            current: SigningSecret::generate(),
            previous: Some(SigningSecret::generate()),
        };
        let header = keys.header("msg_1", 1, b"x");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], keys.current.sign("msg_1", 1, b"x"));
    }
}
