//! The pages. Each handler takes the session (so it cannot run signed out), calls `Herald`, and
//! renders a template; forms are checked against the session's CSRF token first.

use super::{Me, SESSION_COOKIE, UiSession, error_page, render, session_cookie};
use crate::domain::{
    CallbackFormat, DeliveryId, DeliveryStatus, DisplayName, Email, EventType, InstanceData,
    InstanceId, InstanceStatus, Password, ProcessName, ProcessTitle, Role, UrlProblem,
};
use crate::error::Error;
use crate::service::{Herald, InstanceChange, NewUserRequest};
use crate::storage::{DeliveryFilter, SessionRecord, UserChange};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Fields = Vec<(String, String)>;

pub fn router() -> Router<Herald> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/processes") }))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/ui/processes", get(processes).post(create_process))
        .route("/ui/processes/{name}", get(process))
        .route("/ui/processes/{name}/instances", post(create_instance))
        .route("/ui/instances/{id}", get(instance).post(save_instance))
        .route("/ui/instances/{id}/delete", post(delete_instance))
        .route("/ui/admin", get(admin))
        .route("/ui/admin/developer", get(developer))
        .route("/ui/admin/developer/webhooks", post(save_webhooks))
        .route("/ui/admin/developer/secret/rotate", post(rotate_secret))
        .route("/ui/admin/developer/test", post(send_test))
        .route("/ui/admin/developer/enable", post(enable_url))
        .route("/ui/admin/deliveries", get(deliveries))
        .route("/ui/admin/deliveries/{id}", get(delivery))
        .route("/ui/admin/deliveries/{id}/redeliver", post(redeliver))
        .route("/ui/admin/recycle-bin", get(recycle_bin))
        .route("/ui/admin/recycle-bin/{id}/restore", post(restore))
        .route("/ui/admin/users", get(users).post(create_user))
        .route("/ui/admin/users/change", post(change_user))
}

fn field<'a>(form: &'a Fields, name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// The refusal of a form without the session's CSRF token, if it lacks one.
fn check_csrf(session: &SessionRecord, form: &Fields) -> Option<Response> {
    let sent = field(form, "csrf");
    if !sent.is_empty()
        && sent.len() == session.csrf.len()
        && constant_eq(sent.as_bytes(), session.csrf.as_bytes())
    {
        None
    } else {
        Some(error_page(
            Some(session),
            Error::Forbidden(
                "the form has expired or did not come from Herald; reload the page and try again"
                    .into(),
            ),
        ))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The context every page shares.
fn base(session: &SessionRecord, nav: &str) -> minijinja::Value {
    context! { me => Me::of(session), csrf => session.csrf.clone(), nav => nav }
}

fn page(name: &str, session: &SessionRecord, nav: &str, extra: minijinja::Value) -> Response {
    render(name, context! { ..base(session, nav), ..extra })
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

// --- login ------------------------------------------------------------------------------------

/// Failed logins per email: each failure doubles the wait before the next answer (up to 8 s), so
/// guessing is slow. Kept in memory: losing it on restart only forgets some slowness.
static FAILURES: Mutex<Option<HashMap<String, (u32, Instant)>>> = Mutex::new(None);

fn failure_delay(email: &str) -> Duration {
    let guard = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref().and_then(|m| m.get(email)) {
        Some((n, at)) if at.elapsed() < Duration::from_secs(900) => {
            Duration::from_millis(250u64.saturating_mul(1 << (*n).min(5)))
                .min(Duration::from_secs(8))
        }
        _ => Duration::ZERO,
    }
}

fn note_failure(email: &str, failed: bool) {
    let mut guard = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if failed {
        let entry = map.entry(email.to_owned()).or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
    } else {
        map.remove(email);
    }
    if map.len() > 10_000 {
        map.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(900));
    }
}

async fn login_form(State(herald): State<Herald>, headers: HeaderMap) -> Response {
    if let Some(cookie) = session_cookie(&headers)
        && let Ok(Some(_)) = herald.session(&cookie).await
    {
        return see_other("/ui/processes");
    }
    render("login.html", context! { email => "", error => "" })
}

async fn login(
    State(herald): State<Herald>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let email = field(&form, "email").trim().to_lowercase();
    tokio::time::sleep(failure_delay(&email)).await;
    match herald.login(&email, field(&form, "password")).await {
        Ok((token, _)) => {
            note_failure(&email, false);
            let secure = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"));
            let cookie = format!(
                "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                crate::service::SESSION_LIFETIME.as_secs(),
                if secure { "; Secure" } else { "" }
            );
            let mut response = see_other("/ui/processes");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(Error::Unauthenticated) => {
            note_failure(&email, true);
            let mut response = render(
                "login.html",
                context! { email => email, error => "Wrong email or password." },
            );
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
        Err(other) => error_page(None, other),
    }
}

async fn logout(
    State(herald): State<Herald>,
    UiSession(session): UiSession,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&session, &form) {
        return r;
    }
    if let Some(cookie) = session_cookie(&headers) {
        let _ = herald.logout(&cookie).await;
    }
    let mut response = see_other("/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("herald_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

// --- processes and instances --------------------------------------------------------------------

async fn processes(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    processes_page(&herald, &s, "", json!({})).await
}

async fn processes_page(herald: &Herald, s: &SessionRecord, error: &str, form: Value) -> Response {
    match herald.processes(&s.caller).await {
        Ok(list) => {
            let views: Vec<Value> = list
                .into_iter()
                .map(|p| json!({"name": p.name.as_str(), "title": p.title, "instanceCount": p.instance_count, "createdAt": p.created_at}))
                .collect();
            page(
                "processes.html",
                s,
                "processes",
                context! { processes => views, error => error, form => form },
            )
        }
        Err(e) => error_page(Some(s), e),
    }
}

async fn create_process(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let name = ProcessName::parse(field(&form, "name").trim())?;
        let title = ProcessTitle::parse(field(&form, "title"))?;
        herald.create_process(&s.caller, &name, &title).await
    }
    .await;
    match result {
        Ok(p) => see_other(&format!("/ui/processes/{}", p.name)),
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => {
            let kept = json!({"name": field(&form, "name"), "title": field(&form, "title")});
            let mut r = processes_page(&herald, &s, &e.to_string(), kept).await;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
    }
}

#[derive(serde::Deserialize)]
struct Cursor {
    cursor: Option<i64>,
}

async fn process(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(name): Path<String>,
    Query(c): Query<Cursor>,
) -> Response {
    process_page(&herald, &s, &name, c.cursor, "").await
}

async fn process_page(
    herald: &Herald,
    s: &SessionRecord,
    name: &str,
    cursor: Option<i64>,
    error: &str,
) -> Response {
    let result = async {
        let name = ProcessName::parse(name)?;
        let process = herald.process(&s.caller, &name).await?;
        let page = herald.instances(&s.caller, &name, cursor, 25).await?;
        Ok::<_, Error>((process, page))
    }
    .await;
    match result {
        Ok((p, list)) => page(
            "process.html",
            s,
            "processes",
            context! {
                process => json!({"name": p.name.as_str(), "title": p.title}),
                instances => to_json(&list.items),
                next_cursor => list.next_cursor,
                error => error,
            },
        ),
        Err(e) => error_page(Some(s), e),
    }
}

/// Key/value rows of a form as a JSON object: a value that parses as JSON is kept as JSON,
/// anything else as text; rows without a key are skipped.
fn data_from_fields(form: &Fields) -> Result<serde_json::Map<String, Value>, Error> {
    let keys: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.as_str())
        .collect();
    let values: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "value")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut map = serde_json::Map::new();
    for (key, value) in keys.iter().zip(values.iter().chain(std::iter::repeat(&""))) {
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(value)
            .unwrap_or_else(|_| Value::String((*value).to_owned()));
        if map.insert(key.to_owned(), parsed).is_some() {
            return Err(Error::Invalid(format!("the field `{key}` appears twice")));
        }
    }
    Ok(map)
}

async fn create_instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(name): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let process = ProcessName::parse(&name)?;
        let data = InstanceData::parse(Value::Object(data_from_fields(&form)?))?;
        herald
            .create_instance(&s.caller, &process, &data, None)
            .await
    }
    .await;
    match result {
        Ok(i) => see_other(&format!("/ui/instances/{}", i.id)),
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => process_page(&herald, &s, &name, None, &e.to_string()).await,
    }
}

async fn instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
) -> Response {
    instance_page(&herald, &s, &id, "").await
}

async fn instance_page(herald: &Herald, s: &SessionRecord, id: &str, error: &str) -> Response {
    let result = async {
        let id = InstanceId::parse(id)?;
        herald.instance(&s.caller, &id).await
    }
    .await;
    match result {
        Ok(i) => {
            let mut fields: Vec<Value> = i
                .data
                .as_map()
                .iter()
                .map(|(k, v)| json!({"key": k, "value": match v { Value::String(t) => t.clone(), other => other.to_string() }}))
                .collect();
            fields.extend((0..2).map(|_| json!({"key": "", "value": ""})));
            page(
                "instance.html",
                s,
                "processes",
                context! { instance => to_json(&i), fields => fields, error => error },
            )
        }
        Err(e) => error_page(Some(s), e),
    }
}

async fn save_instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let id = InstanceId::parse(&id)?;
        let current = herald.instance(&s.caller, &id).await?;
        let wanted = data_from_fields(&form)?;
        // The form shows the whole data: fields left out are removed (null in a merge patch).
        let mut patch = wanted.clone();
        for key in current.data.as_map().keys() {
            if !wanted.contains_key(key) {
                patch.insert(key.clone(), Value::Null);
            }
        }
        let change = InstanceChange {
            data: Some(InstanceData::parse(Value::Object(patch))?),
            status: Some(InstanceStatus::parse(field(&form, "status"))?),
            if_match: field(&form, "version").parse().ok(),
        };
        herald.update_instance(&s.caller, &id, &change).await
    }
    .await;
    match result {
        Ok(u) => see_other(&format!("/ui/instances/{}", u.instance.id)),
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => instance_page(&herald, &s, &id, &e.to_string()).await,
    }
}

async fn delete_instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let id = InstanceId::parse(&id)?;
        herald.delete_instance(&s.caller, &id).await?;
        Ok::<_, Error>(id)
    }
    .await;
    match result {
        Ok(id) => see_other(&format!("/ui/processes/{}", id.process_name())),
        Err(e) => error_page(Some(&s), e),
    }
}

// --- administration ----------------------------------------------------------------------------

fn require_manager(s: &SessionRecord) -> Option<Response> {
    if s.caller.role.manages_webhooks() {
        None
    } else {
        Some(error_page(
            Some(s),
            Error::Forbidden("only administrators and developers may open Administration".into()),
        ))
    }
}

async fn admin(UiSession(s): UiSession) -> Response {
    if let Some(r) = require_manager(&s) {
        return r;
    }
    page("admin.html", &s, "admin", context! {})
}

/// What a person typed in the dialog: per event, the slider and the text; and the format.
type Typed = (HashMap<&'static str, (bool, String)>, String);

/// What the developer page shows besides the settings.
#[derive(Default)]
struct DeveloperView {
    /// Submitted lines per event and their problems, when a save failed.
    typed: Option<Typed>,
    problems: Vec<UrlProblem>,
    test: Value,
    flash: String,
    flash_bad: bool,
}

async fn developer(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    developer_page(&herald, &s, DeveloperView::default()).await
}

async fn developer_page(herald: &Herald, s: &SessionRecord, view: DeveloperView) -> Response {
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
        },
    );
    if !view.problems.is_empty() {
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    response
}

async fn save_webhooks(
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
        herald.save_webhook_settings(&s.caller, &settings).await
    }
    .await;
    match result {
        Ok(_) => {
            developer_page(
                &herald,
                &s,
                DeveloperView {
                    flash: "Instance Callback URLs saved.".into(),
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
                    problems,
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => error_page(Some(&s), e),
    }
}

async fn rotate_secret(
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
async fn enable_url(
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

async fn send_test(
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

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeliveryQuery {
    status: Option<String>,
    event_type: Option<String>,
    url: Option<String>,
    cursor: Option<i64>,
}

async fn deliveries(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Query(q): Query<DeliveryQuery>,
) -> Response {
    if let Some(r) = require_manager(&s) {
        return r;
    }
    let result = async {
        let filter = DeliveryFilter {
            status: q
                .status
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(DeliveryStatus::parse)
                .transpose()?,
            event_type: q
                .event_type
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(EventType::parse)
                .transpose()?,
            url: q.url.clone().filter(|v| !v.is_empty()),
            ..Default::default()
        };
        let page = herald.deliveries(&s.caller, &filter, q.cursor, 50).await?;
        let chart = herald.hourly_outcomes(&s.caller).await?;
        Ok::<_, Error>((page, chart))
    }
    .await;
    let (list, chart) = match result {
        Ok(v) => v,
        Err(e) => return error_page(Some(&s), e),
    };
    let items: Vec<Value> = list
        .items
        .into_iter()
        .map(|d| to_json(&crate::api::deliveries_view(d)))
        .collect();
    let most = chart
        .iter()
        .map(|(_, ok, bad)| (*ok).max(*bad))
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<Value> = chart
        .iter()
        .enumerate()
        .map(|(i, (at, ok, bad))| {
            let h = |n: i64| (n * 90 / most).max(i64::from(n > 0));
            let label = at.to_rfc3339().get(11..16).unwrap_or_default().to_owned();
            json!({"x": i * 20, "ok": ok, "bad": bad, "ok_h": h(*ok), "ok_y": 100 - h(*ok), "bad_h": h(*bad), "bad_y": 100 - h(*bad), "label": label})
        })
        .collect();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("status", q.status.as_deref().unwrap_or_default())
        .append_pair("eventType", q.event_type.as_deref().unwrap_or_default())
        .append_pair("url", q.url.as_deref().unwrap_or_default())
        .finish();
    page(
        "deliveries.html",
        &s,
        "developer",
        context! {
            deliveries => items,
            chart => bars,
            next_cursor => list.next_cursor,
            query => query,
            filter => json!({
                "status": q.status.clone().unwrap_or_default(),
                "eventType": q.event_type.clone().unwrap_or_default(),
                "url": q.url.clone().unwrap_or_default(),
            }),
        },
    )
}

async fn delivery(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
) -> Response {
    delivery_page(&herald, &s, &id, "").await
}

async fn delivery_page(herald: &Herald, s: &SessionRecord, id: &str, flash: &str) -> Response {
    let result = async {
        let id = DeliveryId::parse(id)?;
        herald.delivery(&s.caller, &id).await
    }
    .await;
    match result {
        Ok((d, attempts)) => {
            let mut view = to_json(&crate::api::deliveries_view(d));
            view["attempts"] = to_json(
                &attempts
                    .into_iter()
                    .map(crate::api::attempt_view)
                    .collect::<Vec<_>>(),
            );
            page(
                "delivery.html",
                s,
                "developer",
                context! { d => view, flash => flash },
            )
        }
        Err(e) => error_page(Some(s), e),
    }
}

async fn redeliver(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let id = DeliveryId::parse(&id)?;
        herald.redeliver(&s.caller, &id).await
    }
    .await;
    match result {
        Ok(()) => {
            delivery_page(
                &herald,
                &s,
                &id,
                "Redelivery queued: a new attempt with the same webhook-id is on its way.",
            )
            .await
        }
        Err(e) => error_page(Some(&s), e),
    }
}

async fn recycle_bin(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    match herald.recycle_bin(&s.caller, None, 200).await {
        Ok(list) => page(
            "recycle.html",
            &s,
            "recycle",
            context! { instances => to_json(&list.items) },
        ),
        Err(e) => error_page(Some(&s), e),
    }
}

async fn restore(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let id = InstanceId::parse(&id)?;
        herald.restore_instance(&s.caller, &id).await
    }
    .await;
    match result {
        Ok(i) => see_other(&format!("/ui/instances/{}", i.id)),
        Err(e) => error_page(Some(&s), e),
    }
}

async fn users(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    users_page(&herald, &s, "", false).await
}

async fn users_page(herald: &Herald, s: &SessionRecord, flash: &str, bad: bool) -> Response {
    match herald.users(&s.caller).await {
        Ok(list) => page(
            "users.html",
            s,
            "users",
            context! { users => to_json(&list), flash => flash, flash_bad => bad },
        ),
        Err(e) => error_page(Some(s), e),
    }
}

async fn create_user(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let email = Email::parse(field(&form, "email"))?;
        let name = field(&form, "display_name").trim();
        let request = NewUserRequest {
            display_name: DisplayName::parse(if name.is_empty() {
                email.as_str()
            } else {
                name
            })?,
            email,
            role: Role::parse(field(&form, "role"))?,
            password: None,
        };
        herald.create_user(&s.caller, request).await
    }
    .await;
    match result {
        Ok(created) => {
            let password = created
                .generated_password
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            let flash = format!(
                "Added {}. Give them these once: password {password} · API token {}",
                created.user.email,
                created.token.expose()
            );
            users_page(&herald, &s, &flash, false).await
        }
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => users_page(&herald, &s, &e.to_string(), true).await,
    }
}

async fn change_user(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let mut new_password = None;
    let result = async {
        let email = Email::parse(field(&form, "email"))?;
        let change = match field(&form, "action") {
            "deactivate" => UserChange::Active(false),
            "activate" => UserChange::Active(true),
            "reset-password" => {
                let p = Password::generate();
                let hash = p.hash();
                new_password = Some(p);
                UserChange::PasswordHash(hash)
            }
            other => match other.strip_prefix("role:") {
                Some(role) => UserChange::Role(Role::parse(role)?),
                None => return Err(Error::Invalid(format!("`{other}` is not a change"))),
            },
        };
        herald.change_user(&s.caller, &email, &change).await?;
        Ok::<_, Error>(email)
    }
    .await;
    match result {
        Ok(email) => {
            let flash = match new_password {
                Some(p) => format!(
                    "New password for {}: {} (shown once)",
                    email.as_str(),
                    p.expose()
                ),
                None => format!("{} changed.", email.as_str()),
            };
            users_page(&herald, &s, &flash, false).await
        }
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => users_page(&herald, &s, &e.to_string(), true).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_slow_the_next_login_and_success_clears_them() {
        let email = "slow@example.com";
        assert_eq!(failure_delay(email), Duration::ZERO);
        note_failure(email, true);
        let one = failure_delay(email);
        note_failure(email, true);
        note_failure(email, true);
        let three = failure_delay(email);
        assert!(
            one > Duration::ZERO && three > one,
            "{one:?} then {three:?}"
        );
        for _ in 0..20 {
            note_failure(email, true);
        }
        assert!(failure_delay(email) <= Duration::from_secs(8));
        note_failure(email, false);
        assert_eq!(failure_delay(email), Duration::ZERO);
    }

    #[test]
    fn key_value_fields_become_json_data() {
        let form: Fields = vec![
            ("key".into(), "days".into()),
            ("value".into(), "3".into()),
            ("key".into(), "reason".into()),
            ("value".into(), "holiday".into()),
            ("key".into(), "".into()),
            ("value".into(), "ignored".into()),
        ];
        assert_eq!(
            Value::Object(data_from_fields(&form).unwrap()),
            json!({"days": 3, "reason": "holiday"})
        );
        let twice: Fields = vec![
            ("key".into(), "a".into()),
            ("value".into(), "1".into()),
            ("key".into(), "a".into()),
            ("value".into(), "2".into()),
        ];
        assert!(data_from_fields(&twice).is_err());
    }
}
