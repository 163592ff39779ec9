//! Users: add, change role, deactivate, reset password.

use super::*;

pub(super) async fn users(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    users_page(&herald, &s, "", false).await
}

pub(super) async fn users_page(
    herald: &Herald,
    s: &SessionRecord,
    flash: &str,
    bad: bool,
) -> Response {
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

pub(super) async fn create_user(
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

pub(super) async fn change_user(
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
                new_password = Some(herald.reset_password(&s.caller, &email).await?);
                return Ok(email);
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
