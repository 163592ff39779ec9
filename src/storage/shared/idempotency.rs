//! Idempotency keys, written once for both backends.

/// Implements [`crate::storage::IdempotencyKeys`] for a store that implements
/// [`super::Pools`].
macro_rules! idempotency_keys {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::IdempotencyKeys for $store {
            async fn claim_key(
                &self,
                token: &str,
                key: &str,
                request_hash: &str,
                now: Millis,
                stale_before: Millis,
                expired_before: Millis,
            ) -> Result<$crate::storage::KeyClaim> {
                use $crate::storage::KeyClaim;
                let fresh = sqlx::query(
                    "INSERT INTO idempotency_keys (token_hash, key, request_hash, created_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash, key) DO NOTHING",
                )
                .bind(token)
                .bind(key)
                .bind(request_hash)
                .bind(now.0)
                .execute(self.writes())
                .await?
                .rows_affected();
                if fresh == 1 {
                    return Ok(KeyClaim::Fresh);
                }
                // A first request that never finished (its node died) leaves the key pending;
                // after a while a retry may take it over. A key past its lifetime is new.
                let taken = sqlx::query(
                    "UPDATE idempotency_keys
                     SET request_hash = $3, created_at = $4, status = NULL, headers = NULL, body = NULL
                     WHERE token_hash = $1 AND key = $2
                       AND ((status IS NULL AND created_at < $5) OR created_at < $6)",
                )
                .bind(token)
                .bind(key)
                .bind(request_hash)
                .bind(now.0)
                .bind(stale_before.0)
                .bind(expired_before.0)
                .execute(self.writes())
                .await?
                .rows_affected();
                if taken == 1 {
                    return Ok(KeyClaim::Fresh);
                }
                let row: Option<(String, Option<i64>, Option<String>, Option<Vec<u8>>)> =
                    sqlx::query_as(
                        "SELECT request_hash, status, headers, body FROM idempotency_keys
                         WHERE token_hash = $1 AND key = $2",
                    )
                    .bind(token)
                    .bind(key)
                    .fetch_optional(self.writes())
                    .await?;
                Ok(match row {
                    // Released between the two statements: the caller may simply try again.
                    None => KeyClaim::InProgress,
                    Some((hash, _, _, _)) if hash != request_hash => KeyClaim::OtherRequest,
                    Some((_, None, _, _)) => KeyClaim::InProgress,
                    Some((_, Some(status), headers, body)) => KeyClaim::Answered {
                        status: u16::try_from(status).unwrap_or(500),
                        headers: headers.unwrap_or_default(),
                        body: body.unwrap_or_default(),
                    },
                })
            }

            async fn finish_key(
                &self,
                token: &str,
                key: &str,
                status: u16,
                headers: &str,
                body: &[u8],
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5
                     WHERE token_hash = $1 AND key = $2",
                )
                .bind(token)
                .bind(key)
                .bind(i64::from(status))
                .bind(headers)
                .bind(body)
                .execute(self.writes())
                .await?;
                Ok(())
            }

            async fn release_key(&self, token: &str, key: &str) -> Result<()> {
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE token_hash = $1 AND key = $2 AND status IS NULL",
                )
                .bind(token)
                .bind(key)
                .execute(self.writes())
                .await?;
                Ok(())
            }

            async fn prune_keys(&self, before: Millis) -> Result<u64> {
                Ok(sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(before.0)
                    .execute(self.writes())
                    .await?
                    .rows_affected())
            }
        }
    };
}

pub(crate) use idempotency_keys;
