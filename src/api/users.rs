//! `/api/v1/users`: administrators add users (each gets an API token and a password, shown once),
//! list them, change a user's role, deactivate and reactivate them, and reset their password.

use super::extract::{ApiJson, Auth};
use crate::domain::{DisplayName, Email, Password, Role};
use crate::error::{Error, Result};
use crate::service::{Herald, NewUserRequest};
use crate::storage::UserChange;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

routes! {
    get "/users" => list, Administrator;
    post "/users" => create, Administrator;
    patch "/users/{email}" => change, Administrator;
    post "/users/{email}/reset-password" => reset_password, Administrator;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangeBody {
    role: Option<String>,
    active: Option<bool>,
}

/// Changes a user's role and/or active flag; a deactivation signs them out everywhere and
/// their tokens stop working at once.
async fn change(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(email): Path<String>,
    ApiJson(body): ApiJson<ChangeBody>,
) -> Result<Json<Value>> {
    let email = Email::parse(&email)?;
    let role = body.role.as_deref().map(Role::parse).transpose()?;
    if role.is_none() && body.active.is_none() {
        return Err(Error::Invalid("give `role`, `active` or both".into()));
    }
    if let Some(role) = role {
        herald
            .change_user(&caller, &email, &UserChange::Role(role))
            .await?;
    }
    if let Some(active) = body.active {
        herald
            .change_user(&caller, &email, &UserChange::Active(active))
            .await?;
    }
    let users = herald.users(&caller).await?;
    let user = users
        .into_iter()
        .find(|u| u.email == email.as_str())
        .ok_or_else(|| Error::NotFound(format!("no user with the email {}", email.as_str())))?;
    Ok(Json(json!(user)))
}

/// A new generated password for a user, shown once; their sessions end.
async fn reset_password(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(email): Path<String>,
) -> Result<Json<Value>> {
    let email = Email::parse(&email)?;
    let password = herald.reset_password(&caller, &email).await?;
    Ok(Json(
        json!({"email": email.as_str(), "password": password.expose()}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewUserBody {
    email: String,
    role: String,
    display_name: Option<String>,
    password: Option<String>,
}

async fn create(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let email = Email::parse(&body.email)?;
    let request = NewUserRequest {
        display_name: DisplayName::parse(body.display_name.as_deref().unwrap_or(email.as_str()))?,
        email,
        role: Role::parse(&body.role)?,
        password: body.password.as_deref().map(Password::parse).transpose()?,
    };
    let created = herald.create_user(&caller, request).await?;
    let mut view = json!(created.user);
    view["apiToken"] = json!(created.token.expose());
    if let Some(password) = &created.generated_password {
        view["password"] = json!(password.expose());
    }
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list(State(herald): State<Herald>, Auth(caller): Auth) -> Result<Json<Value>> {
    let users = herald.users(&caller).await?;
    Ok(Json(json!({ "items": users })))
}
