//! `GET/PUT /api/v1/webhooks`: the "Instance Callback URLs" settings.

use super::extract::{ApiJson, Auth};
use super::schema::ErrorBody;
use crate::domain::{
    AttemptOutcome, CallbackFormat, DeliveryId, EventType, Millis, WebhookSettings,
};
use crate::error::{Error, Result};
use crate::service::{Herald, RemovedUrl};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

routes! {
    get "/webhooks" => read, Manager;
    put "/webhooks" => replace, Manager;
    post "/webhooks/test" => test, Manager;
    get "/webhooks/health" => health, Manager;
    post "/webhooks/enable" => enable, Manager;
    get "/webhooks/secret" => secret, Manager;
    post "/webhooks/secret/rotate" => rotate, Manager;
}

/// The signing secrets receivers verify callbacks with.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SigningSecrets {
    /// Signs every callback (`whsec_` and base64).
    secret: String,
    /// The secret before the last rotation, which also signs callbacks for 24 hours after it.
    previous_secret: Option<String>,
}

impl From<crate::domain::SigningKeys> for SigningSecrets {
    fn from(keys: crate::domain::SigningKeys) -> Self {
        Self {
            secret: keys.current.expose().to_owned(),
            previous_secret: keys.previous.as_ref().map(|p| p.expose().to_owned()),
        }
    }
}

/// The signing secret receivers verify callbacks with (and the previous one while it still signs).
#[utoipa::path(get, path = "/webhooks/secret", responses(
    (status = 200, description = "The signing secrets.", body = SigningSecrets),
))]
async fn secret(State(herald): State<Herald>, Auth(caller): Auth) -> Result<Json<SigningSecrets>> {
    Ok(Json(herald.signing_keys(&caller).await?.into()))
}

/// Replaces the signing secret; for 24 hours callbacks carry signatures with both.
#[utoipa::path(post, path = "/webhooks/secret/rotate", responses(
    (status = 200, description = "The new secret and the one it replaces.", body = SigningSecrets),
))]
async fn rotate(State(herald): State<Herald>, Auth(caller): Auth) -> Result<Json<SigningSecrets>> {
    Ok(Json(herald.rotate_signing_secret(&caller).await?.into()))
}

/// A test callback to send now.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestBody {
    #[schema(value_type = EventType)]
    event_type: String,
    #[schema(example = "https://hooks.example.com/herald")]
    url: String,
}

/// What a test callback came to.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TestOutcome {
    delivery_id: DeliveryId,
    event_type: EventType,
    /// The made-up instance the test callback names.
    instance_id: String,
    /// The URL called, without credentials.
    url: String,
    succeeded: bool,
    outcome: AttemptOutcome,
    status_code: Option<i64>,
    duration_ms: i64,
    error: Option<String>,
    /// The start of the receiver's answer.
    response_excerpt: Option<String>,
}

/// Calls a URL now with a test callback and answers with the outcome.
#[utoipa::path(post, path = "/webhooks/test", request_body = TestBody, responses(
    (status = 200, description = "The attempt's outcome, whether the receiver took it or not.", body = TestOutcome),
))]
async fn test(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<Json<TestOutcome>> {
    let event = EventType::parse(&body.event_type)?;
    let url = crate::domain::CallbackUrl::parse(&body.url)
        .map_err(|e| Error::Invalid(format!("url: {e}")))?;
    let outcome = herald.test_callback(&caller, event, &url).await?;
    let a = outcome.attempt;
    Ok(Json(TestOutcome {
        delivery_id: outcome.delivery_id,
        event_type: event,
        instance_id: outcome.instance_id,
        url: url.redacted(),
        succeeded: a.outcome == AttemptOutcome::Success,
        outcome: a.outcome,
        status_code: a.status_code,
        duration_ms: a.duration_ms,
        error: a.error,
        response_excerpt: a.response_excerpt,
    }))
}

/// Where a destination URL stands.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum DestinationState {
    /// Its last attempt succeeded.
    Healthy,
    /// Its last attempts failed, but the breaker is closed.
    Failing,
    /// The circuit breaker holds its deliveries until `pausedUntil`.
    Paused,
    /// Its receiver answered 410 Gone; no new callbacks are queued to it.
    Disabled,
}

/// One destination URL that has failed at least once.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct DestinationHealth {
    /// Without credentials.
    url: String,
    state: DestinationState,
    consecutive_failures: i64,
    paused_until: Option<Millis>,
    last_success_at: Option<Millis>,
    last_failure_at: Option<Millis>,
    last_error: Option<String>,
    disabled_at: Option<Millis>,
    disabled_reason: Option<String>,
}

/// How many requests Herald lets one receiving host have at once.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct HostConcurrency {
    host: String,
    /// The adaptive limit now.
    concurrency_limit: usize,
    in_flight: usize,
    /// Deliveries claimed ahead for the host, each to start the moment one of its requests
    /// ends (only while the receiver answers quickly and successfully).
    claimed_ahead: usize,
    /// The most the limit may reach (`--max-per-host`).
    ceiling: usize,
}

/// The health of the destinations and the receiving hosts.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    items: Vec<DestinationHealth>,
    hosts: Vec<HostConcurrency>,
}

/// The health of each destination URL that has failed at least once, and each host's
/// concurrency limit.
#[utoipa::path(get, path = "/webhooks/health", responses(
    (status = 200, description = "Destinations and hosts.", body = Health),
))]
async fn health(State(herald): State<Herald>, Auth(caller): Auth) -> Result<Json<Health>> {
    let items = herald
        .destinations(&caller)
        .await?
        .into_iter()
        .map(|d| {
            let state = match (&d.disabled, d.open) {
                (Some(_), _) => DestinationState::Disabled,
                (None, true) => DestinationState::Paused,
                // Its breaker is closed, but its last attempts failed.
                (None, false) if d.consecutive_failures > 0 => DestinationState::Failing,
                (None, false) => DestinationState::Healthy,
            };
            let (disabled_at, disabled_reason) = d.disabled.unzip();
            DestinationHealth {
                url: crate::domain::webhook::redact(&d.url),
                state,
                consecutive_failures: d.consecutive_failures,
                paused_until: d.paused_until.filter(|_| d.open),
                last_success_at: d.last_success_at,
                last_failure_at: d.last_failure_at,
                last_error: d.last_error,
                disabled_at,
                disabled_reason,
            }
        })
        .collect();
    let ceiling = herald.per_host_ceiling();
    let hosts = herald
        .host_concurrency(&caller)
        .await?
        .into_iter()
        .map(|h| HostConcurrency {
            host: h.host,
            concurrency_limit: h.limit,
            in_flight: h.in_flight,
            claimed_ahead: h.claimed_ahead,
            ceiling,
        })
        .collect();
    Ok(Json(Health { items, hosts }))
}

/// The body of `POST /webhooks/enable`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EnableBody {
    /// The URL as configured.
    url: String,
}

/// How many destinations were disabled and are now enabled.
#[derive(Serialize, utoipa::ToSchema)]
struct Enabled {
    enabled: usize,
}

/// Enables a URL disabled because its receiver answered 410 Gone (as saving the settings with
/// it does): new events queue callbacks to it again.
#[utoipa::path(post, path = "/webhooks/enable", request_body = EnableBody, responses(
    (status = 200, description = "How many destinations were enabled.", body = Enabled),
    (status = 404, description = "No disabled URL is this one.", body = ErrorBody),
))]
async fn enable(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<EnableBody>,
) -> Result<Json<Enabled>> {
    let enabled = herald.enable_destination(&caller, &body.url).await?;
    Ok(Json(Enabled { enabled }))
}

/// One event's slider and URLs, as the API shows and takes them.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The slider: whether this event is sent at all.
    pub enabled: bool,
    /// The callback URLs, one per line in the dialog; each gets every event of this type.
    #[schema(example = json!(["https://hooks.example.com/herald"]))]
    pub urls: Vec<String>,
}

/// The settings body: `created`, `updated`, `deleted` and the callback `format` (which a client
/// may omit when saving, keeping the current one).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The settings after a save, and the URLs taken out that still have deliveries pending.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SavedSettings {
    #[serde(flatten)]
    settings: SettingsBody,
    /// Cancel them with `POST /deliveries/cancel` and the URL, or let them go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pending_to_removed_urls: Vec<RemovedUrl>,
}

/// The "Instance Callback URLs" settings.
#[utoipa::path(get, path = "/webhooks", responses(
    (status = 200, description = "The settings.", body = SettingsBody),
))]
async fn read(State(herald): State<Herald>, Auth(caller): Auth) -> Result<Json<SettingsBody>> {
    let settings = herald.webhook_settings(&caller).await?;
    Ok(Json(SettingsBody::from(&settings)))
}

/// Saves the settings: every URL is checked first, and nothing is saved when any is wrong.
#[utoipa::path(put, path = "/webhooks", request_body = SettingsBody, responses(
    (status = 200, description = "The settings as saved.", body = SavedSettings),
    (status = 422, description = "What is wrong with which URL (`errors`), or another invalid value.", body = ErrorBody),
))]
async fn replace(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<Json<SavedSettings>> {
    // Reading first checks the role before validating, so a `user` learns nothing from
    // validation errors, and gives the format to keep when the body has none.
    let current = herald.webhook_settings(&caller).await?;
    let settings = body.parse(herald.egress(), current.format)?;
    let saved = herald.save_webhook_settings(&caller, &settings).await?;
    // URLs taken out whose deliveries are still pending: named, so the client can cancel them
    // (`POST /deliveries/cancel` with the URL) or let them go.
    let pending_to_removed_urls = herald.pending_to_removed(&caller, &current, &saved).await?;
    Ok(Json(SavedSettings {
        settings: SettingsBody::from(&saved),
        pending_to_removed_urls,
    }))
}
