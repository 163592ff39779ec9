//! `/api/v1/tokens`: the caller's own API tokens. Only a token of scope `all` (or the web UI)
//! makes or revokes tokens, so no token can mint a wider one.

use super::extract::{ApiJson, Auth};
use super::schema::{ErrorBody, Items};
use crate::domain::{TokenLifetime, TokenName, TokenScope};
use crate::error::{Error, Result};
use crate::service::Herald;
use crate::storage::TokenRecord;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

routes! {
    get "/tokens" => list, Member;
    post "/tokens" => create, Member;
    delete "/tokens/{id}" => revoke, Member;
}

/// A new token.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewTokenBody {
    /// One line of 1 to 100 characters, to tell the token apart.
    #[schema(example = "CI deploys")]
    name: String,
    /// `all` (every right of the role, the default), `read`, `instances` or `webhooks`.
    #[schema(value_type = Option<TokenScope>)]
    scope: Option<String>,
    /// Days until it stops working, 1 to 3650; never, when left out.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<i64>,
}

/// A new token with its secret, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreatedTokenView {
    #[serde(flatten)]
    token: TokenRecord,
    /// The token to send as `Authorization: Bearer …`; Herald keeps only its hash.
    secret: String,
}

/// Lists the caller's tokens, newest first; never their secrets.
#[utoipa::path(get, path = "/tokens", responses(
    (status = 200, description = "The caller's tokens.", body = Items<TokenRecord>),
))]
async fn list(
    State(herald): State<Herald>,
    Auth(caller): Auth,
) -> Result<Json<Items<TokenRecord>>> {
    let items = herald.tokens(&caller).await?;
    Ok(Json(Items { items }))
}

/// Makes the caller a new token.
#[utoipa::path(post, path = "/tokens", request_body = NewTokenBody, responses(
    (status = 201, description = "The new token, with its secret shown this once.", body = CreatedTokenView),
))]
async fn create(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<NewTokenBody>,
) -> Result<(StatusCode, Json<CreatedTokenView>)> {
    let name = TokenName::parse(&body.name)?;
    let scope = body
        .scope
        .as_deref()
        .map(TokenScope::parse)
        .transpose()?
        .unwrap_or(TokenScope::All);
    let lifetime = TokenLifetime::days(body.expires_in_days)?;
    let created = herald.create_token(&caller, name, scope, lifetime).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenView {
            token: created.token,
            secret: created.secret.expose().to_owned(),
        }),
    ))
}

/// Revokes one of the caller's tokens; it stops working within a second on every node.
#[utoipa::path(delete, path = "/tokens/{id}", params(("id" = i64, Path, description = "The token's ID.")), responses(
    (status = 204, description = "Revoked."),
    (status = 404, description = "The caller holds no token of this ID.", body = ErrorBody),
))]
async fn revoke(
    State(herald): State<Herald>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Error::Invalid(format!("`{id}` is not a token ID")))?;
    herald.revoke_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
