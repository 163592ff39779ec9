//! `/api/v1/users`: administrators add users (each gets an API token and a password, shown once),
//! list them, change a user's role, deactivate and reactivate them, and reset their password.

use super::extract::{ApiJson, Auth};
use super::schema::{ErrorBody, Items};
use crate::domain::{DisplayName, Email, Password, Role};
use crate::error::{Error, Result};
use crate::service::{Herald, NewUserRequest};
use crate::storage::{UserChange, UserRecord};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

routes! {
    get "/users" => list, Administrator;
    post "/users" => create, Administrator;
    patch "/users/{email}" => change, Administrator;
    post "/users/{email}/reset-password" => reset_password, Administrator;
}

/// A change to a user: their role, whether they may sign in, or both.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangeBody {
    #[schema(value_type = Option<Role>)]
    role: Option<String>,
    active: Option<bool>,
}

/// Changes a user's role and/or active flag; a deactivation signs them out everywhere and
/// their tokens stop working at once.
#[utoipa::path(patch, path = "/users/{email}", params(("email" = String, Path, description = "The user's email address.", example = "ada@example.com")), request_body = ChangeBody, responses(
    (status = 200, description = "The user as changed.", body = UserRecord),
    (status = 404, description = "No such user.", body = ErrorBody),
    (status = 409, description = "Administrators cannot change their own role or deactivate themselves.", body = ErrorBody),
))]
async fn change(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(email): Path<String>,
    ApiJson(body): ApiJson<ChangeBody>,
) -> Result<Json<UserRecord>> {
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
    Ok(Json(user))
}

/// A user's new password, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
struct NewPassword {
    email: String,
    password: String,
}

/// A new generated password for a user, shown once; their sessions end.
#[utoipa::path(post, path = "/users/{email}/reset-password", params(("email" = String, Path, description = "The user's email address.", example = "ada@example.com")), responses(
    (status = 200, description = "The new password, shown this once.", body = NewPassword),
    (status = 404, description = "No such user.", body = ErrorBody),
))]
async fn reset_password(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(email): Path<String>,
) -> Result<Json<NewPassword>> {
    let email = Email::parse(&email)?;
    let password = herald.reset_password(&caller, &email).await?;
    Ok(Json(NewPassword {
        email: email.as_str().to_owned(),
        password: password.expose().to_owned(),
    }))
}

/// A new user.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewUserBody {
    #[schema(example = "ada@example.com")]
    email: String,
    #[schema(value_type = Role)]
    role: String,
    /// The email address when not given.
    display_name: Option<String>,
    /// At least 10 characters; one is generated (and shown once) when not given.
    password: Option<String>,
}

/// A new user with their API token and, when one was generated, their password: both shown
/// this once.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreatedUser {
    #[serde(flatten)]
    user: UserRecord,
    api_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// Adds a user.
#[utoipa::path(post, path = "/users", request_body = NewUserBody, responses(
    (status = 201, description = "The new user, with secrets shown this once.", body = CreatedUser),
    (status = 409, description = "A user with this email exists.", body = ErrorBody),
))]
async fn create(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<(StatusCode, Json<CreatedUser>)> {
    let email = Email::parse(&body.email)?;
    let request = NewUserRequest {
        display_name: DisplayName::parse(body.display_name.as_deref().unwrap_or(email.as_str()))?,
        email,
        role: Role::parse(&body.role)?,
        password: body.password.as_deref().map(Password::parse).transpose()?,
    };
    let created = herald.create_user(&caller, request).await?;
    let view = CreatedUser {
        user: created.user,
        api_token: created.token.expose().to_owned(),
        password: created
            .generated_password
            .as_ref()
            .map(|p| p.expose().to_owned()),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists every user of the workspace.
#[utoipa::path(get, path = "/users", responses(
    (status = 200, description = "Every user.", body = Items<UserRecord>),
))]
async fn list(State(herald): State<Herald>, Auth(caller): Auth) -> Result<Json<Items<UserRecord>>> {
    let items = herald.users(&caller).await?;
    Ok(Json(Items { items }))
}
