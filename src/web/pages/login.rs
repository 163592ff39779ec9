//! Signing in and out, and the slow-down of repeated failed logins.

use super::*;

/// Failed logins per email: each failure doubles the wait before the next answer (up to 8 s), so
/// guessing is slow. Kept in memory: losing it on restart only forgets some slowness.
pub(super) static FAILURES: Mutex<Option<HashMap<String, (u32, Instant)>>> = Mutex::new(None);

pub(super) fn failure_delay(email: &str) -> Duration {
    let guard = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref().and_then(|m| m.get(email)) {
        Some((n, at)) if at.elapsed() < Duration::from_secs(900) => {
            Duration::from_millis(250u64.saturating_mul(1 << (*n).min(5)))
                .min(Duration::from_secs(8))
        }
        _ => Duration::ZERO,
    }
}

pub(super) fn note_failure(email: &str, failed: bool) {
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

pub(super) async fn login_form(State(herald): State<Herald>, headers: HeaderMap) -> Response {
    if let Some(cookie) = session_cookie(&headers)
        && let Ok(Some(_)) = herald.session(&cookie).await
    {
        return see_other("/ui/processes");
    }
    render("login.html", context! { email => "", error => "" })
}

pub(super) async fn login(
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
}
