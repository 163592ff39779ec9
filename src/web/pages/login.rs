//! Signing in and out, and the slow-down of repeated failed logins.

use super::*;

/// Failed logins per email: each failure doubles the wait before the next answer (up to 8 s), so
/// guessing is slow. Kept in memory: losing it on restart only forgets some slowness. Keyed by
/// the normalised email, never over [`MAX_EMAIL_LEN`] (longer ones are refused before anything
/// is kept), and never more than [`MAX_FAILURE_ENTRIES`] of them: a few MiB at most, however
/// many emails are tried.
pub(super) static FAILURES: Mutex<Option<HashMap<String, (u32, Instant)>>> = Mutex::new(None);

/// The longest email address (RFC 5321's limit on a path).
const MAX_EMAIL_LEN: usize = 254;
const MAX_FAILURE_ENTRIES: usize = 10_000;
/// A failure older than this no longer slows anything.
const FAILURE_MEMORY: Duration = Duration::from_secs(900);

pub(super) fn failure_delay(email: &str) -> Duration {
    let guard = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref().and_then(|m| m.get(email)) {
        Some((n, at)) if at.elapsed() < FAILURE_MEMORY => {
            Duration::from_millis(250u64.saturating_mul(1 << (*n).min(5)))
                .min(Duration::from_secs(8))
        }
        _ => Duration::ZERO,
    }
}

pub(super) fn note_failure(email: &str, failed: bool) {
    let mut guard = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    remember(guard.get_or_insert_with(HashMap::new), email, failed);
}

/// Counts a failure of `email` in `map` (or forgets its failures after a success), keeping
/// the map within its bounds.
fn remember(map: &mut HashMap<String, (u32, Instant)>, email: &str, failed: bool) {
    if !failed {
        map.remove(email);
        return;
    }
    if email.len() > MAX_EMAIL_LEN {
        return;
    }
    if !map.contains_key(email) && map.len() >= MAX_FAILURE_ENTRIES {
        map.retain(|_, (_, at)| at.elapsed() < FAILURE_MEMORY);
        // Still full of recent failures: forget the oldest one.
        if map.len() >= MAX_FAILURE_ENTRIES
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    let entry = map.entry(email.to_owned()).or_insert((0, Instant::now()));
    entry.0 = entry.0.saturating_add(1);
    entry.1 = Instant::now();
}

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
            login_page(
                &email,
                "Wrong email or password.",
                StatusCode::UNAUTHORIZED,
                &token,
            )
        }
        Err(busy @ Error::Busy { .. }) => {
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
    fn the_failure_memory_stays_bounded() {
        let mut map = HashMap::new();
        remember(&mut map, &"x".repeat(MAX_EMAIL_LEN + 1), true);
        assert!(map.is_empty(), "an over-long email is not kept");
        for i in 0..(MAX_FAILURE_ENTRIES + 50) {
            remember(&mut map, &format!("guess-{i}@example.com"), true);
        }
        assert!(map.len() <= MAX_FAILURE_ENTRIES, "{}", map.len());
        assert!(map.keys().all(|k| k.len() <= MAX_EMAIL_LEN));
        assert!(map.contains_key(&format!("guess-{}@example.com", MAX_FAILURE_ENTRIES + 49)));
    }
}
