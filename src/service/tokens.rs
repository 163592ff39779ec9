//! A user's own API tokens: list, create (the secret shown once), revoke.

use super::*;
use crate::domain::{ApiToken, TokenLifetime, TokenName, TokenScope};
use crate::storage::{NewToken, TokenRecord};

/// A token just made: what lists show of it, and the secret, which is never shown again.
pub struct CreatedToken {
    pub token: TokenRecord,
    pub secret: ApiToken,
}

impl Herald {
    /// The caller's tokens, newest first.
    pub async fn tokens(&self, caller: &Caller) -> Result<Vec<TokenRecord>> {
        Ok(self.store.tokens(caller.user_id).await?)
    }

    /// Makes the caller a new token.
    pub async fn create_token(
        &self,
        caller: &Caller,
        name: TokenName,
        scope: TokenScope,
        lifetime: TokenLifetime,
    ) -> Result<CreatedToken> {
        let secret = ApiToken::generate();
        let now = Millis::now();
        let new = NewToken::of(&secret, name, scope, lifetime.expires_at(now));
        let id = self.store.add_token(caller.user_id, &new).await?;
        tracing::info!(user = %caller.email, token = id, scope = %scope, "API token created");
        Ok(CreatedToken {
            token: TokenRecord {
                id,
                name: new.name.as_str().to_owned(),
                prefix: new.prefix,
                scope,
                created_at: now,
                last_used_at: None,
                expires_at: new.expires_at,
            },
            secret,
        })
    }

    /// Revokes one of the caller's tokens: it stops working at once on this node and within
    /// [`TOKEN_CACHE_TTL`] on the others.
    pub async fn revoke_token(&self, caller: &Caller, id: i64) -> Result<()> {
        if !self.store.revoke_token(caller.user_id, id).await? {
            return Err(Error::NotFound(format!("you hold no API token {id}")));
        }
        self.callers.clear();
        tracing::info!(user = %caller.email, token = id, "API token revoked");
        Ok(())
    }
}
