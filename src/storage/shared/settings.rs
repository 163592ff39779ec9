//! The callback settings and the signing secrets of a workspace, written once for both backends.

/// Implements [`crate::storage::Settings`] for a store that implements [`super::Pools`].
macro_rules! settings {
    ($store:ty) => {
        #[allow(unused_imports)] // Each expansion imports it; one per module is used.
        use $crate::storage::shared::Pools as _;

        #[async_trait::async_trait]
        impl $crate::storage::Settings for $store {
            async fn webhook_settings(&self, workspace: WorkspaceId) -> Result<WebhookSettings> {
                let enabled: Vec<(String, bool)> = sqlx::query_as(
                    "SELECT event_type, enabled FROM webhook_events WHERE workspace_id = $1",
                )
                .bind(workspace.0)
                .fetch_all(self.reads())
                .await?;
                let urls: Vec<(String, String)> = sqlx::query_as(
                    "SELECT event_type, url FROM webhook_urls WHERE workspace_id = $1 ORDER BY event_type, position",
                )
                .bind(workspace.0)
                .fetch_all(self.reads())
                .await?;
                let mut settings = $crate::storage::settings_from_rows(enabled, urls);
                let format: Option<String> =
                    sqlx::query_scalar("SELECT webhook_format FROM workspaces WHERE id = $1")
                        .bind(workspace.0)
                        .fetch_optional(self.reads())
                        .await?;
                settings.format = format
                    .as_deref()
                    .map($crate::storage::format_from_stored)
                    .transpose()?
                    .unwrap_or_default();
                Ok(settings)
            }

            async fn save_webhook_settings(
                &self,
                workspace: WorkspaceId,
                settings: &WebhookSettings,
            ) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE workspaces SET webhook_format = $1 WHERE id = $2")
                    .bind(settings.format.as_str())
                    .bind(workspace.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM webhook_urls WHERE workspace_id = $1")
                    .bind(workspace.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM webhook_events WHERE workspace_id = $1")
                    .bind(workspace.0)
                    .execute(&mut *tx)
                    .await?;
                for event in EventType::ALL {
                    let s = settings.event(event);
                    sqlx::query("INSERT INTO webhook_events (workspace_id, event_type, enabled) VALUES ($1, $2, $3)")
                        .bind(workspace.0)
                        .bind(event.as_str())
                        .bind(s.enabled)
                        .execute(&mut *tx)
                        .await?;
                    for (position, url) in s.urls.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO webhook_urls (workspace_id, event_type, position, url, host) VALUES ($1, $2, $3, $4, $5)",
                        )
                            .bind(workspace.0)
                            .bind(event.as_str())
                            .bind(i64::try_from(position).unwrap_or(i64::MAX))
                            .bind(url.as_str())
                            .bind(url.host_key())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                // Saving a URL says it should be called: one disabled because its receiver was gone is
                // enabled again.
                sqlx::query($crate::storage::health::ENABLE_LISTED_SQL)
                    .bind(workspace.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn signing_keys(&self, workspace: WorkspaceId, now: Millis) -> Result<SigningKeys> {
                // The first secret of a workspace is made on first use; the condition keeps two nodes
                // from each setting a different one.
                sqlx::query(
                    "UPDATE workspaces SET signing_secret = $1 WHERE id = $2 AND signing_secret IS NULL",
                )
                .bind(SigningSecret::generate().expose())
                .bind(workspace.0)
                .execute(self.writes())
                .await?;
                let (current, previous, rotated_at): (String, Option<String>, Option<i64>) = sqlx::query_as(
                    "SELECT signing_secret, previous_secret, secret_rotated_at FROM workspaces WHERE id = $1",
                )
                .bind(workspace.0)
                .fetch_one(self.reads())
                .await?;
                $crate::storage::keys_from_stored(&current, previous, rotated_at, now)
            }

            async fn rotate_signing_secret(
                &self,
                workspace: WorkspaceId,
                new: &SigningSecret,
                now: Millis,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE workspaces SET previous_secret = signing_secret, signing_secret = $1, secret_rotated_at = $2
                     WHERE id = $3",
                )
                .bind(new.expose())
                .bind(now.0)
                .bind(workspace.0)
                .execute(self.writes())
                .await?;
                Ok(())
            }

        }
    };
}

pub(crate) use settings;
