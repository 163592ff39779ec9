//! Developer resources: the Instance Callback URLs dialog, the signing secret, test callbacks and disabled URLs.

use super::*;

/// What a person typed in the dialog: per event, the slider and the text; and the format.
pub(super) type Typed = (HashMap<&'static str, (bool, String)>, String);

/// What the developer page shows besides the settings.
#[derive(Default)]
pub(super) struct DeveloperView {
    /// Submitted lines per event and their problems, when a save failed.
    typed: Option<Typed>,
    problems: Vec<UrlProblem>,
    test: Value,
    flash: String,
    flash_bad: bool,
    /// URLs just taken out whose deliveries are still pending: offered for cancelling.
    removed: Vec<crate::service::RemovedUrl>,
}

pub(super) async fn developer(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    developer_page(&herald, &s, DeveloperView::default()).await
}

pub(super) async fn developer_page(
    herald: &Herald,
    s: &SessionRecord,
    view: DeveloperView,
) -> Response {
    if let Some(r) = require_manager(s) {
        return r;
    }
    let loaded = async {
        let settings = herald.webhook_settings(&s.caller).await?;
        let keys = herald.signing_keys(&s.caller).await?;
        let destinations = herald.destinations(&s.caller).await?;
        Ok::<_, Error>((settings, keys, destinations))
    }
    .await;
    let (settings, keys, destinations) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page(Some(s), e),
    };
    let labels = [
        (EventType::Created, "created", "Enable Created Callback"),
        (EventType::Updated, "updated", "Enable Updated Callback"),
        (EventType::Deleted, "deleted", "Enable Deleted Callback"),
    ];
    let events: Vec<Value> = labels
        .iter()
        .map(|(event, key, label)| {
            let (enabled, text) = match &view.typed {
                Some((typed, _)) => typed.get(key).cloned().unwrap_or_default(),
                None => {
                    let e = settings.event(*event);
                    (
                        e.enabled,
                        e.urls
                            .iter()
                            .map(|u| u.as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    )
                }
            };
            let errors: Vec<&UrlProblem> = view
                .problems
                .iter()
                .filter(|p| p.event_type == *event)
                .collect();
            json!({"key": key, "label": label, "enabled": enabled, "text": text, "errors": errors})
        })
        .collect();
    // URLs disabled because their receiver answered 410 Gone, with when and why.
    let disabled: Vec<Value> = destinations
        .iter()
        .filter_map(|d| {
            let (at, why) = d.disabled.as_ref()?;
            Some(json!({
                "url": crate::domain::webhook::redact(&d.url),
                "at": at.to_rfc3339(),
                "reason": why,
            }))
        })
        .collect();
    let form_format = match &view.typed {
        Some((_, format)) => format.clone(),
        None => settings.format.as_str().to_owned(),
    };
    let mut response = page(
        "developer.html",
        s,
        "developer",
        context! {
            events => events,
            settings => json!({"format": settings.format.as_str()}),
            form_format => form_format,
            open_dialog => view.typed.is_some(),
            secret => keys.current.expose(),
            disabled => disabled,
            test => view.test,
            flash => view.flash,
            flash_bad => view.flash_bad,
            removed => view.removed.iter().map(|r| json!({
                "url": r.url, "shown": r.shown, "pending": r.pending,
                "more": r.pending >= crate::service::PENDING_COUNTED,
            })).collect::<Vec<_>>(),
        },
    );
    if !view.problems.is_empty() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    response
}

pub(super) async fn save_webhooks(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    if let Some(r) = require_manager(&s) {
        return r;
    }
    let mut typed = HashMap::new();
    let mut lines: Vec<(bool, Vec<String>)> = Vec::new();
    for key in ["created", "updated", "deleted"] {
        let enabled = field(&form, &format!("{key}_enabled")) == "on";
        let text = field(&form, &format!("{key}_urls")).replace("\r\n", "\n");
        lines.push((enabled, text.split('\n').map(str::to_owned).collect()));
        typed.insert(key, (enabled, text));
    }
    let format_text = field(&form, "format").to_owned();
    let result = async {
        let format = CallbackFormat::parse(&format_text)?;
        let mut settings = crate::domain::WebhookSettings::parse_with(
            [
                (lines[0].0, &lines[0].1),
                (lines[1].0, &lines[1].1),
                (lines[2].0, &lines[2].1),
            ],
            |url| herald.egress().check_url(url),
        )
        .map_err(Error::InvalidUrls)?;
        settings.format = format;
        let before = herald.webhook_settings(&s.caller).await?;
        let saved = herald.save_webhook_settings(&s.caller, &settings).await?;
        herald.pending_to_removed(&s.caller, &before, &saved).await
    }
    .await;
    match result {
        Ok(removed) => {
            developer_page(
                &herald,
                &s,
                DeveloperView {
                    flash: "Instance Callback URLs saved.".into(),
                    removed,
                    ..Default::default()
                },
            )
            .await
        }
        Err(Error::InvalidUrls(problems)) => {
            developer_page(
                &herald,
                &s,
                DeveloperView {
                    typed: Some((typed, format_text)),
                    problems: problems.shown,
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => error_page(Some(&s), e),
    }
}

pub(super) async fn rotate_secret(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    match herald.rotate_signing_secret(&s.caller).await {
        Ok(_) => {
            developer_page(
                &herald,
                &s,
                DeveloperView {
                    flash: "Signing secret rotated; the old one keeps signing for 24 hours.".into(),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => error_page(Some(&s), e),
    }
}

/// Enables a URL disabled because its receiver answered 410 Gone.
pub(super) async fn enable_url(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let url = field(&form, "url").to_owned();
    let (flash, flash_bad) = match herald.enable_destination(&s.caller, &url).await {
        Ok(_) => (format!("{url} is enabled again."), false),
        Err(Error::NotFound(message)) => (message, true),
        Err(e) => return error_page(Some(&s), e),
    };
    developer_page(
        &herald,
        &s,
        DeveloperView {
            flash,
            flash_bad,
            ..Default::default()
        },
    )
    .await
}

pub(super) async fn send_test(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let event_text = field(&form, "event_type").to_owned();
    let url_text = field(&form, "url").trim().to_owned();
    let event = match EventType::parse(&event_text) {
        Ok(event) => event,
        Err(e) => return error_page(Some(&s), e.into()),
    };
    // The typed URL, or every URL configured for the event.
    let urls: Result<Vec<crate::domain::CallbackUrl>, Error> = if url_text.is_empty() {
        herald
            .webhook_settings(&s.caller)
            .await
            .map(|settings| settings.event(event).urls.clone())
    } else {
        crate::domain::CallbackUrl::parse(&url_text)
            .map(|u| vec![u])
            .map_err(Error::from)
    };
    let mut lines = Vec::new();
    match urls {
        Ok(urls) if urls.is_empty() => lines.push(json!({"succeeded": false,
            "text": format!("No URLs are configured for {event} callbacks: add some in the Webhooks dialog, or type one above.")})),
        Ok(urls) => {
            for url in urls {
                let line = match herald.test_callback(&s.caller, event, &url).await {
                    Ok(outcome) => {
                        let a = &outcome.attempt;
                        let succeeded = a.outcome == crate::domain::AttemptOutcome::Success;
                        let detail = match (a.status_code, &a.error) {
                            (Some(code), _) if succeeded => format!("HTTP {code}"),
                            (_, Some(error)) => error.clone(),
                            (Some(code), None) => format!("HTTP {code}"),
                            (None, None) => a.outcome.as_str().to_owned(),
                        };
                        let verdict = if succeeded { "Delivered" } else { "Failed" };
                        json!({"succeeded": succeeded, "text": format!(
                            "{}: {verdict}: {detail} in {} ms (delivery {}).", url.redacted(), a.duration_ms, outcome.delivery_id)})
                    }
                    Err(Error::Internal(e)) => return error_page(Some(&s), Error::Internal(e)),
                    Err(e) => json!({"succeeded": false, "text": format!("{}: {e}", url.redacted())}),
                };
                lines.push(line);
            }
        }
        Err(Error::Internal(e)) => return error_page(Some(&s), Error::Internal(e)),
        Err(e) => lines.push(json!({"succeeded": false, "text": e.to_string()})),
    }
    let test = json!({"event_type": event_text, "url": url_text, "lines": lines});
    developer_page(
        &herald,
        &s,
        DeveloperView {
            test,
            ..Default::default()
        },
    )
    .await
}

/// Cancels the pending deliveries to a URL the settings no longer list (the offer made when
/// they were saved without it).
pub(super) async fn cancel_removed(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let url = field(&form, "url");
    match herald.cancel_pending_to(&s.caller, url).await {
        Ok(n) => {
            let shown = crate::domain::webhook::redact(url);
            let flash = match n {
                1 => format!("Cancelled 1 pending delivery to {shown}."),
                n => format!("Cancelled {n} pending deliveries to {shown}."),
            };
            developer_page(
                &herald,
                &s,
                DeveloperView {
                    flash,
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => error_page(Some(&s), e),
    }
}
