//! Callback settings, test callbacks, signing keys, the health of destinations.

use super::*;

impl Herald {
    pub async fn webhook_settings(&self, caller: &Caller) -> Result<WebhookSettings> {
        require_webhook_manager(caller)?;
        Ok(self.store.webhook_settings(caller.workspace_id).await?)
    }

    pub async fn save_webhook_settings(
        &self,
        caller: &Caller,
        settings: &WebhookSettings,
    ) -> Result<WebhookSettings> {
        require_webhook_manager(caller)?;
        self.store
            .save_webhook_settings(caller.workspace_id, settings)
            .await?;
        tracing::info!(by = %caller.email, "webhook settings saved");
        Ok(self.store.webhook_settings(caller.workspace_id).await?)
    }

    /// The URLs `before` listed that `after` does not, each with how many of its deliveries are
    /// still pending (counted up to [`PENDING_COUNTED`]), for those with any: what saving
    /// settings offers to cancel.
    pub async fn pending_to_removed(
        &self,
        caller: &Caller,
        before: &WebhookSettings,
        after: &WebhookSettings,
    ) -> Result<Vec<RemovedUrl>> {
        require_webhook_manager(caller)?;
        let kept = after.all_urls();
        let mut out = Vec::new();
        for url in before.all_urls().difference(&kept) {
            let pending = self.pending_to(caller, url).await?;
            if pending > 0 {
                out.push(RemovedUrl {
                    url: (*url).to_owned(),
                    shown: crate::domain::webhook::redact(url),
                    pending,
                });
            }
        }
        Ok(out)
    }

    async fn pending_to(&self, caller: &Caller, url: &str) -> Result<usize> {
        let filter = pending_to_filter(url);
        let page = self
            .store
            .deliveries(caller.workspace_id, &filter, None, PENDING_COUNTED as i64)
            .await?;
        Ok(page.items.len())
    }

    /// Cancels every pending delivery to `url`, exactly as it was configured (those being
    /// attempted right now go ahead); how many.
    pub async fn cancel_pending_to(&self, caller: &Caller, url: &str) -> Result<u64> {
        require_webhook_manager(caller)?;
        let filter = pending_to_filter(url);
        let n = self
            .store
            .cancel_matching(caller.workspace_id, &filter, Millis::now())
            .await?;
        tracing::info!(by = %caller.email, url = %crate::domain::webhook::redact(url), deliveries = n, "pending deliveries to a removed URL cancelled");
        Ok(n)
    }

    /// Calls `url` now with a test callback of `event` (instance `herald-test-<n>`, header
    /// `webhook-test: true`), logs it like any delivery, and returns the outcome.
    pub async fn test_callback(
        &self,
        caller: &Caller,
        event: EventType,
        url: &CallbackUrl,
    ) -> Result<TestOutcome> {
        require_webhook_manager(caller)?;
        self.outbound
            .egress
            .check_url(url)
            .map_err(|e| Error::Invalid(format!("url: {e}")))?;
        let out = &self.outbound;
        let now = Millis::now();
        let instance_id = format!("herald-test-{}", now.0);
        let request = ClaimRequest {
            node: &out.node_id,
            now,
            lease_until: now.plus(out.client.timeout() + out.lease_margin),
            limit: 1,
            per_host_cap: out.per_host_cap as i64,
            full_hosts: &[],
            room_hosts: &[],
            rooms: &[],
            default_room: 1,
        };
        let keys = self.store.signing_keys(caller.workspace_id, now).await?;
        let claimed = self
            .store
            .create_test_delivery(caller.workspace_id, event, url, &instance_id, request)
            .await?;
        let result = crate::delivery::attempt(
            &out.client,
            &crate::delivery::UrlCache::default(),
            &claimed,
            &keys,
            &out.retry,
            &out.node_id,
        )
        .await;
        // Stored as the worker stores results: one the database refuses is stored without the
        // receiver's response rather than failing the request.
        crate::delivery::store_results(
            self.store.as_ref(),
            &mut vec![result.clone()],
            &out.breaker,
            &mut Vec::new(),
        )
        .await?;
        Ok(TestOutcome {
            delivery_id: claimed.id,
            instance_id,
            attempt: result.attempt,
        })
    }

    /// The egress rule URLs are checked against when saved.
    pub fn egress(&self) -> &crate::delivery::EgressPolicy {
        &self.outbound.egress
    }

    /// The workspace's signing secrets.
    pub async fn signing_keys(&self, caller: &Caller) -> Result<crate::domain::SigningKeys> {
        require_webhook_manager(caller)?;
        Ok(self
            .store
            .signing_keys(caller.workspace_id, Millis::now())
            .await?)
    }

    /// Replaces the signing secret; the old one keeps signing alongside for 24 hours.
    pub async fn rotate_signing_secret(
        &self,
        caller: &Caller,
    ) -> Result<crate::domain::SigningKeys> {
        require_webhook_manager(caller)?;
        let now = Millis::now();
        // Make sure a first secret exists, so the rotation keeps it as the previous one.
        self.store.signing_keys(caller.workspace_id, now).await?;
        self.store
            .rotate_signing_secret(
                caller.workspace_id,
                &crate::domain::SigningSecret::generate(),
                now,
            )
            .await?;
        tracing::info!(by = %caller.email, "signing secret rotated");
        Ok(self.store.signing_keys(caller.workspace_id, now).await?)
    }

    /// The health of every destination that has failed at least once.
    pub async fn destinations(&self, caller: &Caller) -> Result<Vec<DestinationRecord>> {
        require_webhook_manager(caller)?;
        Ok(self.store.destinations(caller.workspace_id).await?)
    }

    /// This node's adaptive concurrency for each host of the workspace's callback URLs that it
    /// has called lately: the limit it allows now and the callbacks in flight.
    pub async fn host_concurrency(
        &self,
        caller: &Caller,
    ) -> Result<Vec<crate::delivery::HostConcurrency>> {
        require_webhook_manager(caller)?;
        let settings = self.store.webhook_settings(caller.workspace_id).await?;
        let mut hosts: Vec<String> = EventType::ALL
            .iter()
            .flat_map(|e| settings.event(*e).urls.iter().map(|u| u.host_key()))
            .collect();
        hosts.sort();
        hosts.dedup();
        let limits = &self.outbound.limits;
        Ok(hosts.iter().filter_map(|h| limits.of(h)).collect())
    }

    /// Enables a URL that was disabled because its receiver answered 410 Gone. `url` is the URL
    /// as configured or as the health listing shows it (without credentials). Returns the
    /// destinations enabled.
    pub async fn enable_destination(&self, caller: &Caller, url: &str) -> Result<usize> {
        require_webhook_manager(caller)?;
        let url = url.trim();
        let mut enabled = 0;
        for d in self.store.destinations(caller.workspace_id).await? {
            let matches = d.url == url || crate::domain::webhook::redact(&d.url) == url;
            if matches
                && d.disabled.is_some()
                && self
                    .store
                    .enable_destination(caller.workspace_id, &d.url)
                    .await?
            {
                tracing::info!(by = %caller.email, url = %crate::domain::webhook::redact(&d.url), "callback URL enabled again");
                enabled += 1;
            }
        }
        if enabled == 0 {
            return Err(Error::NotFound(format!(
                "no disabled callback URL is `{}`; GET /api/v1/webhooks/health lists them",
                crate::domain::webhook::redact(url)
            )));
        }
        Ok(enabled)
    }
}

/// The pending deliveries to one URL exactly as configured.
fn pending_to_filter(url: &str) -> crate::storage::DeliveryFilter {
    crate::storage::DeliveryFilter {
        status: Some(crate::domain::DeliveryStatus::Pending),
        urls: Some(crate::storage::ExactUrls::new([url])),
        ..Default::default()
    }
}

/// The most pending deliveries counted per removed URL.
pub const PENDING_COUNTED: usize = 1000;

/// A URL the settings no longer list, with deliveries still pending to it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemovedUrl {
    /// As configured (credentials included): what a cancel names.
    #[serde(skip)]
    pub url: String,
    /// As shown, without credentials.
    #[serde(rename = "url")]
    pub shown: String,
    /// Pending deliveries to it, up to [`PENDING_COUNTED`].
    pub pending: usize,
}
