//! API tokens: each signed-in person's own, listed, made (the secret shown once) and revoked.

use super::*;
use crate::domain::{TokenLifetime, TokenName, TokenScope};

pub(super) async fn tokens(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    tokens_page(&herald, &s, "", false).await
}

async fn tokens_page(herald: &Herald, s: &SessionRecord, flash: &str, bad: bool) -> Response {
    match herald.tokens(&s.caller).await {
        Ok(list) => page(
            "tokens.html",
            s,
            "tokens",
            context! {
                tokens => to_json(&list),
                scopes => TokenScope::ALL.map(TokenScope::as_str),
                flash => flash,
                flash_bad => bad,
            },
        ),
        Err(e) => error_page(Some(s), e),
    }
}

pub(super) async fn create_token(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let name = TokenName::parse(field(&form, "name"))?;
        let scope = TokenScope::parse(field(&form, "scope"))?;
        let days = match field(&form, "expires_in_days").trim() {
            "" => None,
            text => Some(
                text.parse::<i64>()
                    .map_err(|_| Error::Invalid(format!("`{text}` is not a number of days")))?,
            ),
        };
        let lifetime = TokenLifetime::days(days)?;
        herald.create_token(&s.caller, name, scope, lifetime).await
    }
    .await;
    match result {
        Ok(created) => {
            let flash = format!(
                "Token “{}” made. Copy it now, it is not shown again: {}",
                created.token.name,
                created.secret.expose()
            );
            tokens_page(&herald, &s, &flash, false).await
        }
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => tokens_page(&herald, &s, &e.to_string(), true).await,
    }
}

pub(super) async fn revoke_token(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let id = field(&form, "id")
            .parse::<i64>()
            .map_err(|_| Error::Invalid("no such token".into()))?;
        herald.revoke_token(&s.caller, id).await
    }
    .await;
    match result {
        Ok(()) => tokens_page(&herald, &s, "Token revoked.", false).await,
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => tokens_page(&herald, &s, &e.to_string(), true).await,
    }
}
