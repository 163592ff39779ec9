//! `/api/v1/users`: administrators add users (each gets an API token and a password, shown once)
//! and list them.

use super::extract::{ApiJson, Auth};
use crate::domain::{DisplayName, Email, Password, Role};
use crate::error::Result;
use crate::service::{Herald, NewUserRequest};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

routes! {
    get "/users" => list, Administrator;
    post "/users" => create, Administrator;
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
