//! Idempotency keys of API writes: the rule for how long a key lives and when an unfinished one
//! may be taken over; `api::idempotency` applies it to requests.

use super::*;
use crate::storage::KeyClaim;
use std::time::Duration;

/// How long a key's first answer is kept and given again.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// An unfinished first request older than this is taken to have died with its node.
const STALE_CLAIM: Duration = Duration::from_secs(60);

impl Herald {
    pub async fn claim_idempotency_key(
        &self,
        token: &TokenHash,
        key: &str,
        request_hash: &str,
    ) -> Result<KeyClaim> {
        let now = Millis::now();
        let stale = Millis(now.0 - STALE_CLAIM.as_millis() as i64);
        let expired = Millis(now.0 - KEY_LIFETIME.as_millis() as i64);
        Ok(self
            .store
            .claim_key(token.as_str(), key, request_hash, now, stale, expired)
            .await?)
    }

    /// Forgets keys past their lifetime; returns how many.
    pub async fn prune_idempotency_keys(&self) -> Result<u64> {
        let expired = Millis(Millis::now().0 - KEY_LIFETIME.as_millis() as i64);
        Ok(self.store.prune_keys(expired).await?)
    }

    pub async fn finish_idempotency_key(
        &self,
        token: &TokenHash,
        key: &str,
        status: u16,
        headers: &str,
        body: &[u8],
    ) -> Result<()> {
        Ok(self
            .store
            .finish_key(token.as_str(), key, status, headers, body)
            .await?)
    }

    pub async fn release_idempotency_key(&self, token: &TokenHash, key: &str) -> Result<()> {
        Ok(self.store.release_key(token.as_str(), key).await?)
    }
}
