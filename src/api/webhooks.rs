//! `GET/PUT /api/v1/webhooks`: the "Instance Callback URLs" settings.

use super::extract::{ApiJson, Auth};
use crate::domain::{CallbackFormat, EventType, WebhookSettings};
use crate::error::{Error, Result};
use crate::service::Herald;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

routes! {
    get "/webhooks" => read, Manager;
    put "/webhooks" => replace, Manager;
    post "/webhooks/test" => test, Manager;
    get "/webhooks/health" => health, Manager;
    post "/webhooks/enable" => enable, Manager;
    get "/webhooks/secret" => secret, Manager;
    post "/webhooks/secret/rotate" => rotate, Manager;
}

fn keys_json(keys: &crate::domain::SigningKeys) -> serde_json::Value {
    serde_json::json!({
        "secret": keys.current.expose(),
        "previousSecret": keys.previous.as_ref().map(|p| p.expose()),
    })
}

/// The signing secret receivers verify callbacks with (and the previous one while it still signs).
async fn secret(
    State(herald): State<Herald>,
    Auth(caller): Auth,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(keys_json(&herald.signing_keys(&caller).await?)))
}

/// Replaces the signing secret; for 24 hours callbacks carry signatures with both.
async fn rotate(
    State(herald): State<Herald>,
    Auth(caller): Auth,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(keys_json(
        &herald.rotate_signing_secret(&caller).await?,
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestBody {
    event_type: String,
    url: String,
}

/// Calls a URL now with a test callback and answers with the outcome.
async fn test(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<Json<serde_json::Value>> {
    let event = EventType::parse(&body.event_type)?;
    let url = crate::domain::CallbackUrl::parse(&body.url)
        .map_err(|e| Error::Invalid(format!("url: {e}")))?;
    let outcome = herald.test_callback(&caller, event, &url).await?;
    let a = &outcome.attempt;
    Ok(Json(serde_json::json!({
        "deliveryId": outcome.delivery_id,
        "eventType": event,
        "instanceId": outcome.instance_id,
        "url": url.redacted(),
        "succeeded": a.outcome == crate::domain::AttemptOutcome::Success,
        "outcome": a.outcome.as_str(),
        "statusCode": a.status_code,
        "durationMs": a.duration_ms,
        "error": a.error,
        "responseExcerpt": a.response_excerpt,
    })))
}

/// The health of each destination URL that has failed at least once.
async fn health(
    State(herald): State<Herald>,
    Auth(caller): Auth,
) -> Result<Json<serde_json::Value>> {
    let items: Vec<serde_json::Value> = herald
        .destinations(&caller)
        .await?
        .into_iter()
        .map(|d| {
            let state = match (&d.disabled, d.open) {
                (Some(_), _) => "disabled",
                (None, true) => "paused",
                // Its breaker is closed, but its last attempts failed.
                (None, false) if d.consecutive_failures > 0 => "failing",
                (None, false) => "healthy",
            };
            serde_json::json!({
                "url": crate::domain::webhook::redact(&d.url),
                "state": state,
                "consecutiveFailures": d.consecutive_failures,
                "pausedUntil": d.paused_until.filter(|_| d.open),
                "lastSuccessAt": d.last_success_at,
                "lastFailureAt": d.last_failure_at,
                "lastError": d.last_error,
                "disabledAt": d.disabled.as_ref().map(|(at, _)| *at),
                "disabledReason": d.disabled.as_ref().map(|(_, why)| why),
            })
        })
        .collect();
    let ceiling = herald.per_host_ceiling();
    let hosts: Vec<serde_json::Value> = herald
        .host_concurrency(&caller)
        .await?
        .into_iter()
        .map(|h| {
            serde_json::json!({
                "host": h.host,
                "concurrencyLimit": h.limit,
                "inFlight": h.in_flight,
                "ceiling": ceiling,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items, "hosts": hosts })))
}

/// The body of `POST /webhooks/enable`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableBody {
    url: String,
}

/// Enables a URL disabled because its receiver answered 410 Gone (as saving the settings with
/// it does): new events queue callbacks to it again.
async fn enable(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<EnableBody>,
) -> Result<Json<serde_json::Value>> {
    let enabled = herald.enable_destination(&caller, &body.url).await?;
    Ok(Json(serde_json::json!({ "enabled": enabled })))
}

/// One event's slider and URLs, as the API shows and takes them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    pub enabled: bool,
    pub urls: Vec<String>,
}

/// The settings body: `created`, `updated`, `deleted` and the callback `format` (which a client
/// may omit when saving, keeping the current one).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    pub created: EventBody,
    pub updated: EventBody,
    pub deleted: EventBody,
    #[serde(default)]
    pub format: Option<CallbackFormat>,
}

impl From<&WebhookSettings> for SettingsBody {
    fn from(s: &WebhookSettings) -> Self {
        let event = |e: EventType| {
            let es = s.event(e);
            EventBody {
                enabled: es.enabled,
                urls: es.urls.iter().map(|u| u.as_str().to_owned()).collect(),
            }
        };
        Self {
            created: event(EventType::Created),
            updated: event(EventType::Updated),
            deleted: event(EventType::Deleted),
            format: Some(s.format),
        }
    }
}

impl SettingsBody {
    /// Validates every URL at once (the egress policy included); nothing is saved when any is
    /// invalid. A missing `format` keeps `current`.
    pub fn parse(
        &self,
        egress: &crate::delivery::EgressPolicy,
        current: CallbackFormat,
    ) -> Result<WebhookSettings> {
        let mut settings = WebhookSettings::parse_with(
            [
                (self.created.enabled, &self.created.urls),
                (self.updated.enabled, &self.updated.urls),
                (self.deleted.enabled, &self.deleted.urls),
            ],
            |url| egress.check_url(url),
        )
        .map_err(Error::InvalidUrls)?;
        settings.format = self.format.unwrap_or(current);
        Ok(settings)
    }
}

async fn read(State(herald): State<Herald>, Auth(caller): Auth) -> Result<Json<SettingsBody>> {
    let settings = herald.webhook_settings(&caller).await?;
    Ok(Json(SettingsBody::from(&settings)))
}

async fn replace(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<Json<Value>> {
    // Reading first checks the role before validating, so a `user` learns nothing from
    // validation errors, and gives the format to keep when the body has none.
    let current = herald.webhook_settings(&caller).await?;
    let settings = body.parse(herald.egress(), current.format)?;
    let saved = herald.save_webhook_settings(&caller, &settings).await?;
    // URLs taken out whose deliveries are still pending: named, so the client can cancel them
    // (`POST /deliveries/cancel` with the URL) or let them go.
    let removed = herald.pending_to_removed(&caller, &current, &saved).await?;
    let mut answer =
        serde_json::to_value(SettingsBody::from(&saved)).map_err(|e| Error::Internal(e.into()))?;
    if !removed.is_empty() {
        answer["pendingToRemovedUrls"] = json!(removed);
    }
    Ok(Json(answer))
}
