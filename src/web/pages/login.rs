//! Signing in and out, and the slow-down of repeated failed logins.

use super::*;

use crate::service::login_guard::{DEVICE_MEMORY, MAX_EMAIL_LEN, Outcome};

/// The cookie a browser that signed in keeps: its attempts for that account skip the
/// account's slow-down, so others' guessing never locks the owner out.
const DEVICE_COOKIE: &str = "herald_device";

/// The cookie holding the login form's anti-forgery token, which the form sends back (double
/// submit): a page on another site can neither read the cookie nor, `SameSite=Strict`, make the
/// browser send it, so it cannot sign a victim in to the attacker's account.
const LOGIN_COOKIE: &str = "herald_login";

/// The login form's token: the one the browser holds already, or a new one.
fn login_token(headers: &HeaderMap) -> String {
    cookie(headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

/// Whether the form came with the token its browser holds.
fn login_token_matches(headers: &HeaderMap, form: &Fields) -> bool {
    let sent = field(form, "csrf");
    cookie(headers, LOGIN_COOKIE).is_some_and(|held| {
        !sent.is_empty()
            && sent.len() == held.len()
            && constant_eq(sent.as_bytes(), held.as_bytes())
    })
}

/// The login page with `error`, answering `status`, its form carrying `token` (also set as the
/// cookie, for an hour).
fn login_page(email: &str, error: &str, status: StatusCode, token: &str) -> Response {
    let mut response = render(
        "login.html",
        context! { email => email, error => error, csrf => token },
    );
    *response.status_mut() = status;
    let cookie =
        format!("{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub(super) async fn login_form(State(herald): State<Herald>, headers: HeaderMap) -> Response {
    if let Some(cookie) = session_cookie(&headers)
        && let Ok(Some(_)) = herald.session(&cookie).await
    {
        return see_other("/ui/processes");
    }
    login_page("", "", StatusCode::OK, &login_token(&headers))
}

pub(super) async fn login(
    State(herald): State<Herald>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let token = login_token(&headers);
    if !login_token_matches(&headers, &form) {
        return login_page(
            "",
            "This sign-in form has expired or did not come from Herald; please sign in again.",
            StatusCode::FORBIDDEN,
            &token,
        );
    }
    let email = field(&form, "email").trim().to_lowercase();
    if email.len() > MAX_EMAIL_LEN {
        // No account has such an email: refused before anything is kept or checked.
        return login_page(
            "",
            "Wrong email or password.",
            StatusCode::UNAUTHORIZED,
            &token,
        );
    }
    let device = cookie(&headers, DEVICE_COOKIE);
    let ticket = match herald
        .login_guard()
        .admit(&email, peer.ip(), device.as_deref())
    {
        Ok(ticket) => ticket,
        Err(retry_after) => {
            let mut response = login_page(
                &email,
                "Too many sign-in attempts; try again in a moment.",
                StatusCode::TOO_MANY_REQUESTS,
                &token,
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs_f64().ceil() as u64),
            );
            return response;
        }
    };
    tokio::time::sleep(ticket.delay).await;
    match herald.login(&email, field(&form, "password")).await {
        Ok((token, _)) => {
            ticket.finish(Outcome::Succeeded);
            let secure = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"));
            let secure = if secure { "; Secure" } else { "" };
            let session = format!(
                "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                crate::service::SESSION_LIFETIME.as_secs(),
            );
            let device = format!("{:032x}", rand::random::<u128>());
            herald.login_guard().remember_device(&email, &device);
            let device = format!(
                "{DEVICE_COOKIE}={device}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                DEVICE_MEMORY.as_secs(),
            );
            let mut response = see_other("/ui/processes");
            for cookie in [session, device] {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(Error::Unauthenticated) => {
            ticket.finish(Outcome::Failed);
            login_page(
                &email,
                "Wrong email or password.",
                StatusCode::UNAUTHORIZED,
                &token,
            )
        }
        Err(busy @ Error::Busy { .. }) => {
            ticket.finish(Outcome::Unchecked);
            let mut response = login_page(
                &email,
                "Too many sign-ins at once; try again in a moment.",
                StatusCode::TOO_MANY_REQUESTS,
                &token,
            );
            if let Some(value) = busy.retry_after() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Err(other) => error_page(None, other),
    }
}

pub(super) async fn logout(
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
