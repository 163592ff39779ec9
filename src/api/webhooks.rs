//! `GET/PUT /api/v1/webhooks`: the "Instance Callback URLs" settings.

use super::extract::{ApiJson, Auth};
use crate::domain::{EventType, WebhookSettings};
use crate::error::{Error, Result};
use crate::service::Herald;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<Herald> {
    Router::new().route("/webhooks", get(read).put(replace))
}

/// One event's slider and URLs, as the API shows and takes them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    pub enabled: bool,
    pub urls: Vec<String>,
}

/// The settings body: exactly `created`, `updated`, `deleted`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    pub created: EventBody,
    pub updated: EventBody,
    pub deleted: EventBody,
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
        }
    }
}

impl SettingsBody {
    /// Validates every URL at once; nothing is saved when any is invalid.
    pub fn parse(&self) -> Result<WebhookSettings> {
        WebhookSettings::parse([
            (self.created.enabled, &self.created.urls),
            (self.updated.enabled, &self.updated.urls),
            (self.deleted.enabled, &self.deleted.urls),
        ])
        .map_err(Error::InvalidUrls)
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
) -> Result<Json<SettingsBody>> {
    // Check the role before validating, so a `user` learns nothing from validation errors.
    herald.webhook_settings(&caller).await?;
    let settings = body.parse()?;
    let saved = herald.save_webhook_settings(&caller, &settings).await?;
    Ok(Json(SettingsBody::from(&saved)))
}
