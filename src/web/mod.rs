//! The web UI: server-rendered pages from autoescaping templates (minijinja), a stylesheet and a
//! little JavaScript, all embedded in the binary. Sessions live in the database (a cookie holds
//! a random token; the database keeps its hash), every form carries the session's CSRF token,
//! and every page goes through [`Herald`], like the REST API.
//!
//! **Architecture Invariant:** no page builds HTML with `format!`; every value reaches the page
//! through a template that escapes it.

mod pages;

use crate::error::Error;
use crate::service::Herald;
use crate::storage::SessionRecord;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::Environment;
use serde::Serialize;
use std::sync::LazyLock;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "herald_session";

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    let templates: [(&str, &str); 13] = [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("processes.html", include_str!("templates/processes.html")),
        ("process.html", include_str!("templates/process.html")),
        ("instance.html", include_str!("templates/instance.html")),
        ("admin.html", include_str!("templates/admin.html")),
        ("developer.html", include_str!("templates/developer.html")),
        ("deliveries.html", include_str!("templates/deliveries.html")),
        ("delivery.html", include_str!("templates/delivery.html")),
        ("recycle.html", include_str!("templates/recycle.html")),
        ("users.html", include_str!("templates/users.html")),
        ("tokens.html", include_str!("templates/tokens.html")),
    ];
    for (name, source) in templates {
        env.add_template(name, source)
            .expect("built-in templates parse");
    }
    env
});

/// The content security policy of every UI response: only the UI's own script and stylesheet
/// run or apply (no inline script or style anywhere), forms post only to Herald, and no other
/// site may frame a page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every UI response carries: the policy above, no framing (for browsers older than
/// `frame-ancestors`), no content sniffing, no referrer (page URLs can name instances), and
/// nothing stored in a cache but the assets, which set their own `Cache-Control` (pages show
/// signing secrets and new users' passwords).
async fn security_headers(mut response: Response) -> Response {
    use axum::http::HeaderValue;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A compiled-in asset, cached for five minutes.
fn asset(content_type: &'static str, body: &'static str) -> axum::routing::MethodRouter<Herald> {
    axum::routing::get(move || async move {
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            body,
        )
    })
}

/// All UI routes and assets.
pub fn router() -> Router<Herald> {
    const JS: &str = "text/javascript; charset=utf-8";
    pages::router()
        .route(
            "/assets/app.css",
            asset("text/css; charset=utf-8", include_str!("assets/app.css")),
        )
        .route("/assets/app.js", asset(JS, include_str!("assets/app.js")))
        .route(
            "/assets/api-reference.js",
            asset(JS, include_str!("assets/api-reference.js")),
        )
        // The API reference, rendered in the browser from `/api/v1/openapi.json`; like the
        // document, it needs no sign-in.
        .route(
            "/api/docs",
            axum::routing::get(|| async { Html(include_str!("assets/api.html")) }),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// Renders a template; a template error is a bug, logged and shown as a 500.
fn render(name: &str, context: impl Serialize) -> Response {
    match TEMPLATES.get_template(name).and_then(|t| t.render(context)) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, template = name, "rendering a page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// The signed-in person on a page: who they are and the CSRF token of their session.
pub struct UiSession(pub SessionRecord);

impl FromRequestParts<Herald> for UiSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        herald: &Herald,
    ) -> Result<Self, Self::Rejection> {
        let cookie =
            session_cookie(&parts.headers).ok_or_else(|| Redirect::to("/login").into_response())?;
        match herald.session(&cookie).await {
            Ok(Some(session)) => Ok(Self(session)),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(error) => Err(error_page(None, error)),
        }
    }
}

/// The value of the session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of the request's cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
}

/// What every page's layout needs to know about the person.
#[derive(Serialize)]
struct Me {
    email: String,
    display_name: String,
    role: &'static str,
    manages: bool,
    is_admin: bool,
}

impl Me {
    fn of(session: &SessionRecord) -> Self {
        let role = session.caller.role;
        Self {
            email: session.caller.email.clone(),
            display_name: session.display_name.clone(),
            role: role.as_str(),
            manages: role.manages_webhooks(),
            is_admin: role == crate::domain::Role::Administrator,
        }
    }
}

/// An error as a page: 403 and 404 get their own wording; internal errors stay opaque.
fn error_page(session: Option<&SessionRecord>, error: Error) -> Response {
    let (status, _) = error.status_and_code();
    let (heading, message) = match &error {
        Error::Forbidden(m) => ("Not allowed".to_owned(), m.clone()),
        Error::NotFound(m) => ("Not found".to_owned(), m.clone()),
        Error::Internal(e) => {
            tracing::error!(error = format!("{e:#}"), "internal error on a page");
            (
                "Something went wrong".to_owned(),
                "An internal error occurred; the server log has the details.".to_owned(),
            )
        }
        other => ("Cannot do that".to_owned(), other.to_string()),
    };
    let me = session.map(Me::of);
    let csrf = session.map(|s| s.csrf.clone()).unwrap_or_default();
    let mut response = render(
        "error.html",
        minijinja::context! { heading, message, me, csrf, nav => "" },
    );
    *response.status_mut() = status;
    if let Some(value) = error.retry_after() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
