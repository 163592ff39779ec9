//! `herald users …`: the user lifecycle from the command line, on the database directly (the
//! first administrator's way in, and scripts'). Changes reach running nodes within their
//! one-second caches.

use super::{DbArgs, database_url};
use crate::config::FileConfig;
use crate::domain::{ApiToken, DisplayName, Email, Password, Role};
use crate::startup::{self, DEFAULT_WORKSPACE};
use crate::storage::{self, NewToken, NewUser, Store, UserChange, WorkspaceId};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user to the default workspace and print a new API token and password once.
    Add(AddUserArgs),
    /// List the users: email, role, active, display name.
    List(DbArgs),
    /// Change a user's role.
    SetRole(RoleArgs),
    /// Deactivate a user: their sessions end and their tokens stop working.
    Deactivate(UserArgs),
    /// Reactivate a deactivated user (old sessions stay ended).
    Reactivate(UserArgs),
    /// Give a user a new generated password, printed once; their sessions end.
    ResetPassword(UserArgs),
}

#[derive(Debug, Args)]
pub struct AddUserArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The user's email address (their login).
    #[arg(long)]
    email: String,
    /// administrator, developer or user.
    #[arg(long)]
    role: String,
    /// Display name [default: the email address].
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The user's email address.
    #[arg(long)]
    email: String,
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    user: UserArgs,
    /// administrator, developer or user.
    #[arg(long)]
    role: String,
}

impl UsersCommand {
    pub(super) async fn run(self, file: FileConfig) -> anyhow::Result<()> {
        match self {
            UsersCommand::Add(args) => add(file, args).await,
            UsersCommand::List(db) => list(file, db).await,
            UsersCommand::SetRole(args) => {
                let role = Role::parse(&args.role)?;
                change(
                    file,
                    args.user,
                    UserChange::Role(role),
                    &format!("is now {role}"),
                )
                .await
            }
            UsersCommand::Deactivate(args) => {
                change(file, args, UserChange::Active(false), "is deactivated").await
            }
            UsersCommand::Reactivate(args) => {
                change(file, args, UserChange::Active(true), "is active again").await
            }
            UsersCommand::ResetPassword(args) => reset_password(file, args).await,
        }
    }
}

/// The store, migrated, and its default workspace.
pub(super) async fn open(
    file: &FileConfig,
    db: DbArgs,
) -> anyhow::Result<(Arc<dyn Store>, WorkspaceId)> {
    startup::install_tls_provider();
    let url = database_url(file, db)?;
    let store = storage::open(&url).await?;
    store.migrate().await.context("migrating the database")?;
    match store.workspace_id(DEFAULT_WORKSPACE).await? {
        Some(ws) => Ok((store, ws)),
        None => anyhow::bail!("the database has no workspace yet: run `herald serve` once first"),
    }
}

async fn add(file: FileConfig, args: AddUserArgs) -> anyhow::Result<()> {
    let email = Email::parse(&args.email)?;
    let role = Role::parse(&args.role)?;
    let name = DisplayName::parse(args.name.as_deref().unwrap_or(email.as_str()))?;
    let (store, workspace) = open(&file, args.db).await?;
    let password = Password::generate();
    let token = ApiToken::generate();
    let user = NewUser {
        email: email.clone(),
        display_name: name.as_str().to_owned(),
        role,
        password_hash: password.hash(),
    };
    let id = store.create_user(workspace, &user).await?;
    store.add_token(id, &NewToken::first(&token)).await?;
    println!("added {} as {role} (shown once):", email.as_str());
    println!("  password:  {}", password.expose());
    println!("  API token: {}", token.expose());
    Ok(())
}

async fn list(file: FileConfig, db: DbArgs) -> anyhow::Result<()> {
    let (store, workspace) = open(&file, db).await?;
    for user in store.users(workspace).await? {
        println!(
            "{}\t{}\t{}\t{}",
            user.email,
            user.role,
            if user.active { "active" } else { "deactivated" },
            user.display_name
        );
    }
    Ok(())
}

async fn change(
    file: FileConfig,
    args: UserArgs,
    change: UserChange,
    done: &str,
) -> anyhow::Result<()> {
    let email = Email::parse(&args.email)?;
    let (store, workspace) = open(&file, args.db).await?;
    if !store.change_user(workspace, &email, &change).await? {
        anyhow::bail!("no user with the email {}", email.as_str());
    }
    println!("{} {done}", email.as_str());
    Ok(())
}

async fn reset_password(file: FileConfig, args: UserArgs) -> anyhow::Result<()> {
    let email = Email::parse(&args.email)?;
    let (store, workspace) = open(&file, args.db).await?;
    let password = Password::generate();
    let change = UserChange::PasswordHash(password.hash());
    if !store.change_user(workspace, &email, &change).await? {
        anyhow::bail!("no user with the email {}", email.as_str());
    }
    println!("new password for {} (shown once):", email.as_str());
    println!("  password:  {}", password.expose());
    Ok(())
}
