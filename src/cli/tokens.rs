//! `herald tokens …`: a user's API tokens from the command line, on the database directly:
//! list them, make one (its secret printed once), revoke one. A revocation reaches running
//! nodes within their one-second caches.

use super::DbArgs;
use super::users::open;
use crate::config::FileConfig;
use crate::domain::{ApiToken, Email, Millis, TokenLifetime, TokenName, TokenScope};
use crate::storage::{NewToken, Store, UserId};
use clap::{Args, Subcommand};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List a user's tokens: ID, name, prefix, scope, made, last used, expiry; never a secret.
    List(HolderArgs),
    /// Make a user a new token and print it once.
    Create(CreateArgs),
    /// Revoke one of a user's tokens.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct HolderArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The email address of the token's holder.
    #[arg(long)]
    email: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    holder: HolderArgs,
    /// What the token is for, to tell it apart.
    #[arg(long)]
    name: String,
    /// all (what the role allows), read, instances or webhooks.
    #[arg(long, default_value = "all")]
    scope: String,
    /// Days until it stops working, 1 to 3650 [default: never].
    #[arg(long)]
    expires_in_days: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    holder: HolderArgs,
    /// The token's ID, as `herald tokens list` shows it.
    #[arg(long)]
    id: i64,
}

impl TokensCommand {
    pub(super) async fn run(self, file: FileConfig) -> anyhow::Result<()> {
        match self {
            TokensCommand::List(holder) => {
                let (store, user) = holder_of(&file, holder).await?;
                for t in store.tokens(user).await? {
                    let shown =
                        |at: Option<Millis>| at.map_or("never".to_owned(), |t| t.to_rfc3339());
                    println!(
                        "{}\t{}\t{}\t{}\tmade {}\tlast used {}\texpires {}",
                        t.id,
                        t.name,
                        if t.prefix.is_empty() {
                            "(chosen)"
                        } else {
                            &t.prefix
                        },
                        t.scope,
                        t.created_at.to_rfc3339(),
                        shown(t.last_used_at),
                        shown(t.expires_at),
                    );
                }
                Ok(())
            }
            TokensCommand::Create(args) => {
                let name = TokenName::parse(&args.name)?;
                let scope = TokenScope::parse(&args.scope)?;
                let lifetime = TokenLifetime::days(args.expires_in_days)?;
                let (store, user) = holder_of(&file, args.holder).await?;
                let secret = ApiToken::generate();
                let new = NewToken::of(&secret, name, scope, lifetime.expires_at(Millis::now()));
                let id = store.add_token(user, &new).await?;
                println!("token {id} made (shown once): {}", secret.expose());
                Ok(())
            }
            TokensCommand::Revoke(args) => {
                let (store, user) = holder_of(&file, args.holder).await?;
                if !store.revoke_token(user, args.id).await? {
                    anyhow::bail!("that user holds no token {}", args.id);
                }
                println!("token {} revoked", args.id);
                Ok(())
            }
        }
    }
}

/// The store and the user an email names.
async fn holder_of(
    file: &FileConfig,
    args: HolderArgs,
) -> anyhow::Result<(Arc<dyn Store>, UserId)> {
    let email = Email::parse(&args.email)?;
    let (store, _) = open(file, args.db).await?;
    let Some(user) = store.user_for_login(&email).await? else {
        anyhow::bail!("no user with the email {}", email.as_str());
    };
    Ok((store, user.caller.user_id))
}
