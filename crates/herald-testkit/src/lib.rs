//! What Herald's integration tests and its benchmark share: a `herald serve` in a child process,
//! and a fresh database for it (a SQLite file in a temporary folder, or a new database on a
//! PostgreSQL server, dropped afterwards).
//!
//! This crate does not depend on `herald`: the tests depend on it, and a second copy of Herald's
//! types would not match theirs.

use anyhow::Context;
use std::path::Path;
use std::str::FromStr;
use tokio::io::AsyncBufReadExt;

/// A `herald serve` in a child process, killed when dropped.
pub struct Node {
    pub child: tokio::process::Child,
    /// Where its API listens, as `http://host:port`.
    pub base: String,
    pub pid: u32,
}

/// Starts `binary` with `args` (and `env`), and waits until it says where it listens. Its
/// standard output is read on (so it never blocks) and its errors go to the caller's.
pub async fn spawn_node(
    binary: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Node> {
    let mut child = tokio::process::Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().unwrap_or(0);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let base = loop {
        let line = lines
            .next_line()
            .await?
            .context("herald exited before it listened")?;
        if let Some(address) = line.strip_prefix("Herald is listening on ") {
            break address.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Node { child, base, pid })
}

/// A database of its own for one test or one benchmark scenario.
pub enum FreshDatabase {
    /// A SQLite file in a temporary folder, removed with it.
    Sqlite {
        url: String,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    },
    /// `<prefix>_<random>` on a PostgreSQL server, dropped (with its sessions) when this is.
    Postgres {
        url: String,
        name: String,
        admin: String,
    },
}

impl FreshDatabase {
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("herald.db");
        Ok(Self::Sqlite {
            url: format!("sqlite://{}", path.display()),
            path,
            _dir: dir,
        })
    }

    /// Creates a new database named `<prefix>_<random>` on the server `admin` names.
    pub async fn postgres(admin: &str, prefix: &str) -> anyhow::Result<Self> {
        let mut conn = connect(admin)
            .await
            .with_context(|| format!("PostgreSQL at {admin} is unreachable"))?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let mut url = url::Url::parse(admin)?;
        url.set_path(&name);
        Ok(Self::Postgres {
            url: url.to_string(),
            name,
            admin: admin.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }
}

/// A connection to the server `url` names, without TLS (the kit talks to local servers).
async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    use sqlx::ConnectOptions;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?
        .ssl_mode(sqlx::postgres::PgSslMode::Disable);
    Ok(options.connect().await?)
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let Self::Postgres { name, admin, .. } = self else {
            return;
        };
        let (name, admin) = (name.clone(), admin.clone());
        // Drop may run inside or outside a runtime: a thread with its own runtime does either.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
