//! Tokens, users, browser sessions.

use super::*;
use crate::storage::NewToken;

impl Herald {
    /// Resolves an API token to its caller (an expired token is no token), and writes down
    /// that it was used, at most once a minute per token and node, off the request's path.
    pub async fn authenticate(&self, token: &crate::domain::ApiToken) -> Result<Caller> {
        let hash = token.hash();
        let now = Millis::now();
        let caller = match self.callers.get(&hash, now) {
            Some(caller) => caller,
            None => {
                let (caller, expires) = self
                    .store
                    .caller_by_token(&hash, now)
                    .await?
                    .ok_or(Error::Unauthenticated)?;
                self.callers.put(hash.clone(), caller.clone(), expires);
                caller
            }
        };
        if self.callers.touch_due(&hash) {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.touch_token(&hash, now).await {
                    tracing::debug!(%error, "noting a token's use failed");
                }
            });
        }
        Ok(caller)
    }

    /// Adds a user with a new API token; administrators only.
    pub async fn create_user(
        &self,
        caller: &Caller,
        request: NewUserRequest,
    ) -> Result<CreatedUser> {
        require_administrator(caller, "add users")?;
        let (password, generated) = match request.password {
            Some(p) => (p, false),
            None => (Password::generate(), true),
        };
        let user = NewUser {
            email: request.email.clone(),
            display_name: request.display_name.as_str().to_owned(),
            role: request.role,
            password_hash: hash_password(&password).await?,
        };
        let id = self
            .store
            .create_user(caller.workspace_id, &user)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict { code, .. } => Error::Conflict {
                    code,
                    message: format!(
                        "a user with the email {} already exists",
                        request.email.as_str()
                    ),
                },
                other => other,
            })?;
        let token = ApiToken::generate();
        self.store.add_token(id, &NewToken::first(&token)).await?;
        tracing::info!(by = %caller.email, email = %request.email.as_str(), role = %request.role, "user added");
        Ok(CreatedUser {
            user: UserRecord {
                email: request.email.as_str().to_owned(),
                display_name: user.display_name,
                role: request.role,
                active: true,
                created_at: Millis::now(),
            },
            token,
            generated_password: generated.then_some(password),
        })
    }

    /// Changes a user's role, active flag or password; administrators only, and never their own
    /// role or active flag (so a workspace cannot lose its last administrator by accident).
    pub async fn change_user(
        &self,
        caller: &Caller,
        email: &Email,
        change: &UserChange,
    ) -> Result<()> {
        require_administrator(caller, "change users")?;
        if email.as_str() == caller.email && !matches!(change, UserChange::PasswordHash(_)) {
            return Err(Error::Conflict {
                code: "own_account",
                message: "you cannot change your own role or deactivate yourself".into(),
            });
        }
        if !self
            .store
            .change_user(caller.workspace_id, email, change)
            .await?
        {
            return Err(Error::NotFound(format!(
                "no user with the email {}",
                email.as_str()
            )));
        }
        self.callers.clear();
        tracing::info!(by = %caller.email, user = %email.as_str(), "user changed");
        Ok(())
    }

    /// Gives a user a new generated password (shown once, to the administrator) and signs them
    /// out everywhere; administrators only.
    pub async fn reset_password(&self, caller: &Caller, email: &Email) -> Result<Password> {
        require_administrator(caller, "reset passwords")?;
        let password = Password::generate();
        let hash = hash_password(&password).await?;
        self.change_user(caller, email, &UserChange::PasswordHash(hash))
            .await?;
        Ok(password)
    }

    /// Checks an email and password and opens a browser session. The same error answers an
    /// unknown email, a wrong password and a deactivated user, and the password is hashed even
    /// for an unknown email, so neither the answer nor its timing tells which.
    pub async fn login(&self, email: &str, password: &str) -> Result<(String, SessionRecord)> {
        // A real hash of a random password, so an unknown email costs the same as a known one.
        static DUMMY: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| Password::generate().hash());
        let wrong = || Error::Unauthenticated;
        let record = match Email::parse(email) {
            Ok(email) => self.store.user_for_login(&email).await?,
            Err(_) => None,
        };
        let candidate = Password::parse(password).ok();
        let hash = record
            .as_ref()
            .map_or(DUMMY.as_str(), |r| r.password_hash.as_str())
            .to_owned();
        let matches = match candidate {
            Some(p) => check_password(p, hash).await?,
            None => false,
        };
        let record = record.filter(|r| matches && r.active).ok_or_else(wrong)?;
        let token = ApiToken::generate();
        let csrf = ApiToken::generate().expose().to_owned();
        let now = Millis::now();
        self.store
            .create_session(
                &token.hash(),
                record.caller.user_id,
                &csrf,
                now,
                now.plus(SESSION_LIFETIME),
            )
            .await?;
        tracing::info!(user = %record.caller.email, "signed in");
        Ok((
            token.expose().to_owned(),
            SessionRecord {
                caller: record.caller,
                display_name: record.display_name,
                csrf,
            },
        ))
    }

    /// The session a cookie names, if still valid.
    pub async fn session(&self, cookie: &str) -> Result<Option<SessionRecord>> {
        let Ok(token) = ApiToken::parse(cookie) else {
            return Ok(None);
        };
        Ok(self.store.session(&token.hash(), Millis::now()).await?)
    }

    /// Ends a session.
    pub async fn logout(&self, cookie: &str) -> Result<()> {
        if let Ok(token) = ApiToken::parse(cookie) {
            self.store.delete_session(&token.hash()).await?;
        }
        Ok(())
    }

    pub async fn users(&self, caller: &Caller) -> Result<Vec<UserRecord>> {
        require_administrator(caller, "list users")?;
        Ok(self.store.users(caller.workspace_id).await?)
    }
}

/// Password checks running at once. Each argon2 check takes about 19 MiB and a core for its
/// time; unbounded, 200 concurrent sign-ins with unknown emails took the process to 2 GiB
/// (issue 19). As many as the machine has cores.
static CHECKS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        std::sync::Arc::new(tokio::sync::Semaphore::new(cores))
    });

/// Sign-ins waiting for a check; beyond [`MAX_WAITING_CHECKS`] they are refused at once.
static WAITING_CHECKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MAX_WAITING_CHECKS: usize = 16;

/// Counts one sign-in waiting for a check until dropped (also when its request is abandoned).
struct Waiting;

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING_CHECKS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether `candidate` matches `hash`, checked on a blocking thread, at most [`CHECKS`] at
/// once; `Busy` when too many sign-ins wait already.
/// Hashes a password (argon2id) on the blocking pool, at most one per core at once, as checks
/// are: a hash costs as much as a check.
pub(crate) async fn hash_password(password: &Password) -> Result<String> {
    let permit = std::sync::Arc::clone(&CHECKS)
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(anyhow::Error::new(e)))?;
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        password.hash()
    })
    .await
    .map_err(|e| Error::Internal(anyhow::Error::new(e)))
}

async fn check_password(candidate: Password, hash: String) -> Result<bool> {
    let waiting = Waiting;
    if WAITING_CHECKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_WAITING_CHECKS {
        return Err(Error::Busy {
            message: "too many sign-ins at once; try again in a moment".into(),
            retry_after: std::time::Duration::from_secs(1),
        });
    }
    let permit = std::sync::Arc::clone(&CHECKS)
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(anyhow::Error::new(e)))?;
    drop(waiting);
    // The permit travels with the check: an abandoned request's check still counts until done.
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        candidate.verify(&hash)
    })
    .await
    .unwrap_or(false))
}
