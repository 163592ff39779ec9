//! Workspaces, users, API tokens and browser sessions, written once for both backends.

/// Implements [`crate::storage::Accounts`] for a store that implements [`super::Pools`].
macro_rules! accounts {
    ($store:ty) => {
        #[allow(unused_imports)] // Each expansion imports it; one per module is used.
        use $crate::storage::shared::Pools as _;

        #[async_trait::async_trait]
        impl $crate::storage::Accounts for $store {
            async fn bootstrap(
                &self,
                name: &str,
                admin: &NewUser,
                token: &$crate::storage::NewToken,
            ) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                // Nodes starting together on an empty database: one bootstraps, the others see
                // it done (SQLite's `BEGIN IMMEDIATE` already runs one writer at a time).
                self.serialize_bootstrap(&mut tx).await?;
                let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces")
                    .fetch_one(&mut *tx)
                    .await?;
                if existing > 0 {
                    return Ok(false);
                }
                let now = Millis::now().0;
                let ws: i64 = sqlx::query_scalar(
                    "INSERT INTO workspaces (name, created_at) VALUES ($1, $2) RETURNING id",
                )
                .bind(name)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let user: i64 = sqlx::query_scalar(
                    "INSERT INTO users (workspace_id, email, display_name, role, password_hash, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(ws)
                .bind(admin.email.as_str())
                .bind(&admin.display_name)
                .bind(admin.role.as_str())
                .bind(&admin.password_hash)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query($crate::storage::shared::INSERT_TOKEN)
                    .bind(user)
                    .bind(token.hash.as_str())
                    .bind(now)
                    .bind(token.name.as_str())
                    .bind(&token.prefix)
                    .bind(token.scope.as_str())
                    .bind(token.expires_at.map(|t| t.0))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn workspace_id(&self, name: &str) -> Result<Option<WorkspaceId>> {
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM workspaces WHERE name = $1")
                        .bind(name)
                        .fetch_optional(self.reads())
                        .await?;
                Ok(id.map(WorkspaceId))
            }

            async fn create_user(&self, workspace: WorkspaceId, user: &NewUser) -> Result<UserId> {
                let id = sqlx::query_scalar(
                    "INSERT INTO users (workspace_id, email, display_name, role, password_hash, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(workspace.0)
                .bind(user.email.as_str())
                .bind(&user.display_name)
                .bind(user.role.as_str())
                .bind(&user.password_hash)
                .bind(Millis::now().0)
                .fetch_one(self.writes())
                .await
                .map_err(|e| {
                    if $crate::storage::shared::is_unique_violation(&e) {
                        StorageError::Duplicate("a user with this email")
                    } else {
                        e.into()
                    }
                })?;
                Ok(UserId(id))
            }

            async fn users(&self, workspace: WorkspaceId) -> Result<Vec<UserRecord>> {
                use $crate::storage::shared::UserRow;
                let rows: Vec<UserRow> = sqlx::query_as(
                    "SELECT email, display_name, role, active, created_at FROM users
                     WHERE workspace_id = $1 ORDER BY email",
                )
                .bind(workspace.0)
                .fetch_all(self.reads())
                .await?;
                rows.into_iter().map(UserRow::record).collect()
            }

            async fn user_for_login(&self, email: &Email) -> Result<Option<LoginRecord>> {
                use $crate::storage::shared::LoginRow;
                let row: Option<LoginRow> = sqlx::query_as(
                    "SELECT id, workspace_id, email, display_name, role, active, password_hash
                     FROM users WHERE email = $1",
                )
                .bind(email.as_str())
                .fetch_optional(self.reads())
                .await?;
                row.map(|r| {
                    Ok(LoginRecord {
                        caller: r.caller.caller()?,
                        display_name: r.display_name,
                        active: r.active,
                        password_hash: r.password_hash,
                    })
                })
                .transpose()
            }

            async fn change_user(
                &self,
                workspace: WorkspaceId,
                email: &Email,
                change: &UserChange,
            ) -> Result<bool> {
                let query = match change {
                    UserChange::Role(role) => sqlx::query(
                        "UPDATE users SET role = $1 WHERE workspace_id = $2 AND email = $3",
                    )
                    .bind(role.as_str()),
                    UserChange::Active(active) => sqlx::query(
                        "UPDATE users SET active = $1 WHERE workspace_id = $2 AND email = $3",
                    )
                    .bind(*active),
                    UserChange::PasswordHash(hash) => sqlx::query(
                        "UPDATE users SET password_hash = $1 WHERE workspace_id = $2 AND email = $3",
                    )
                    .bind(hash.clone()),
                };
                let mut tx = self.begin_write().await?;
                let done = query
                    .bind(workspace.0)
                    .bind(email.as_str())
                    .execute(&mut *tx)
                    .await?;
                if change.ends_sessions() {
                    sqlx::query(
                        "DELETE FROM sessions WHERE user_id =
                            (SELECT id FROM users WHERE workspace_id = $1 AND email = $2)",
                    )
                    .bind(workspace.0)
                    .bind(email.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn create_session(
                &self,
                token: &TokenHash,
                user: UserId,
                csrf: &str,
                now: Millis,
                expires: Millis,
            ) -> Result<()> {
                sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
                    .bind(now.0)
                    .execute(self.writes())
                    .await?;
                sqlx::query(
                    "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token.as_str())
                .bind(user.0)
                .bind(csrf)
                .bind(now.0)
                .bind(expires.0)
                .execute(self.writes())
                .await?;
                Ok(())
            }

            async fn session(
                &self,
                token: &TokenHash,
                now: Millis,
            ) -> Result<Option<SessionRecord>> {
                use $crate::storage::shared::SessionRow;
                let row: Option<SessionRow> = sqlx::query_as(
                    "SELECT u.id, u.workspace_id, u.email, u.role, u.display_name, s.csrf
                     FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.active",
                )
                .bind(token.as_str())
                .bind(now.0)
                .fetch_optional(self.reads())
                .await?;
                row.map(|r| {
                    Ok(SessionRecord {
                        caller: r.caller.caller()?,
                        display_name: r.display_name,
                        csrf: r.csrf,
                    })
                })
                .transpose()
            }

            async fn delete_session(&self, token: &TokenHash) -> Result<()> {
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token.as_str())
                    .execute(self.writes())
                    .await?;
                Ok(())
            }

            async fn add_token(
                &self,
                user: UserId,
                token: &$crate::storage::NewToken,
            ) -> Result<i64> {
                let id: i64 = sqlx::query_scalar(concat!(
                    $crate::storage::shared::insert_token!(),
                    " RETURNING id"
                ))
                .bind(user.0)
                .bind(token.hash.as_str())
                .bind(Millis::now().0)
                .bind(token.name.as_str())
                .bind(&token.prefix)
                .bind(token.scope.as_str())
                .bind(token.expires_at.map(|t| t.0))
                .fetch_one(self.writes())
                .await
                .map_err(|e| {
                    if $crate::storage::shared::is_unique_violation(&e) {
                        StorageError::Duplicate("this API token")
                    } else {
                        e.into()
                    }
                })?;
                Ok(id)
            }

            async fn tokens(&self, user: UserId) -> Result<Vec<$crate::storage::TokenRecord>> {
                use $crate::storage::shared::TokenRow;
                let rows: Vec<TokenRow> = sqlx::query_as(
                    "SELECT id, name, prefix, scope, created_at, last_used_at, expires_at
                     FROM api_tokens WHERE user_id = $1 ORDER BY id DESC",
                )
                .bind(user.0)
                .fetch_all(self.reads())
                .await?;
                rows.into_iter().map(TokenRow::record).collect()
            }

            async fn revoke_token(&self, user: UserId, id: i64) -> Result<bool> {
                let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND id = $2")
                    .bind(user.0)
                    .bind(id)
                    .execute(self.writes())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_token(&self, token: &TokenHash, at: Millis) -> Result<()> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2")
                    .bind(at.0)
                    .bind(token.as_str())
                    .execute(self.writes())
                    .await?;
                Ok(())
            }

            async fn caller_by_token(
                &self,
                token: &TokenHash,
                now: Millis,
            ) -> Result<Option<(Caller, Option<Millis>)>> {
                use $crate::storage::shared::TokenCallerRow;
                let row: Option<TokenCallerRow> = sqlx::query_as(
                    "SELECT u.id, u.workspace_id, u.email, u.role, t.scope, t.expires_at
                     FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = $1 AND u.active
                       AND (t.expires_at IS NULL OR t.expires_at > $2)",
                )
                .bind(token.as_str())
                .bind(now.0)
                .fetch_optional(self.reads())
                .await?;
                row.map(TokenCallerRow::caller).transpose()
            }
        }
    };
}

pub(crate) use accounts;
