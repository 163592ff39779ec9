//! The pages. Each handler takes the session (so it cannot run signed out), calls `Herald`, and
//! renders a template; forms are checked against the session's CSRF token first.

use super::{Me, SESSION_COOKIE, UiSession, cookie, error_page, render, session_cookie};
use crate::domain::{
    CallbackFormat, DeliveryId, DisplayName, Email, EventType, InstanceData, InstanceId,
    InstanceStatus, ProcessName, ProcessTitle, Role, UrlProblem,
};
use crate::error::Error;
use crate::service::{DeliverySearch, Herald, InstanceChange, NewUserRequest, SearchText};
use crate::storage::{SessionRecord, UserChange};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde_json::{Value, json};
use std::collections::HashMap;

mod deliveries;
mod developer;
mod instances;
mod login;
mod tokens;
mod users;

use deliveries::*;
use developer::*;
use instances::*;
use login::*;
use tokens::*;
use users::*;

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
        .route("/ui/admin/developer/cancel-removed", post(cancel_removed))
        .route("/ui/admin/deliveries", get(deliveries))
        .route("/ui/admin/deliveries/{id}", get(delivery))
        .route("/ui/admin/deliveries/cancel", post(cancel_matching))
        .route("/ui/admin/deliveries/{id}/redeliver", post(redeliver))
        .route("/ui/admin/deliveries/{id}/cancel", post(cancel))
        .route("/ui/admin/recycle-bin", get(recycle_bin))
        .route("/ui/admin/recycle-bin/{id}/restore", post(restore))
        .route("/ui/admin/recycle-bin/{id}/purge", post(purge))
        .route("/ui/admin/users", get(users).post(create_user))
        .route("/ui/admin/users/change", post(change_user))
        .route("/ui/tokens", get(tokens).post(create_token))
        .route("/ui/tokens/revoke", post(revoke_token))
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

// --- administration ----------------------------------------------------------------------------

pub(super) fn require_manager(s: &SessionRecord) -> Option<Response> {
    if s.caller.role.manages_webhooks() {
        None
    } else {
        Some(error_page(
            Some(s),
            Error::Forbidden("only administrators and developers may open Administration".into()),
        ))
    }
}

pub(super) async fn admin(UiSession(s): UiSession) -> Response {
    if let Some(r) = require_manager(&s) {
        return r;
    }
    page("admin.html", &s, "admin", context! {})
}
