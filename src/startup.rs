//! Wiring: open storage, migrate, bootstrap the first workspace, start the worker and the HTTP
//! server, and shut both down gracefully.

use crate::config::Config;
use crate::delivery::{CallbackClient, EgressPolicy, Worker, WorkerConfig};
use crate::domain::{ApiToken, Password, Role};
use crate::service::{Herald, Outbound};
use crate::storage::{self, NewUser};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The name of the workspace created on first start.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Credentials of the administrator created on first start, shown once.
pub struct Bootstrapped {
    pub email: String,
    pub password: Password,
    /// `None` when the token came from `HERALD_ADMIN_TOKEN` (the operator already has it).
    pub generated_token: Option<ApiToken>,
}

/// A running Herald: its address, and the handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub bootstrapped: Option<Bootstrapped>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Asks the server and the worker to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that stops Herald when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until both have stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Installs the process-wide TLS provider once (ring: small and quick to build).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Creates the first workspace and administrator on an empty database.
pub async fn bootstrap(
    store: &dyn storage::Store,
    config: &Config,
) -> anyhow::Result<Option<Bootstrapped>> {
    let password = Password::generate();
    let (token, generated) = match &config.admin_token {
        Some(t) => (t.clone(), false),
        None => (ApiToken::generate(), true),
    };
    let admin = NewUser {
        email: config.admin_email.clone(),
        display_name: "Administrator".to_owned(),
        role: Role::Administrator,
        password_hash: password.hash(),
    };
    let created = store
        .bootstrap(
            DEFAULT_WORKSPACE,
            &admin,
            &crate::storage::NewToken::first(&token),
        )
        .await
        .context("creating the first workspace")?;
    if !created && config.admin_token.is_some() {
        tracing::warn!(
            "HERALD_ADMIN_TOKEN is set, but this database has its administrator already: the token was ignored (it works only on the first start; `herald users add` makes new tokens)"
        );
    }
    Ok(created.then(|| Bootstrapped {
        email: config.admin_email.as_str().to_owned(),
        password,
        generated_token: generated.then_some(token),
    }))
}

/// Starts Herald: binds the listener, then serves and delivers until shut down.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    install_tls_provider();
    let store = storage::open(&config.database_url).await?;
    if config.migrate {
        store.migrate().await.context("migrating the database")?;
    } else {
        store
            .check_schema()
            .await
            .context("checking the database schema")?;
    }
    let wake = Arc::new(Notify::new());
    store
        .subscribe(Arc::clone(&wake))
        .await
        .context("subscribing to new work")?;
    let egress = EgressPolicy {
        allow_private_network: config.allow_private_network,
        allowed_networks: config.allowed_networks.clone(),
        resolve_overrides: config.resolve_overrides.clone(),
    };
    let client = CallbackClient::new(egress.clone(), config.callback_timeout, config.max_per_host)?;
    // Bound first: the node's name is its host and port, which no other live process can hold.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Only once the port is ours: a start that fails before serving must not create the first
    // administrator, whose password is shown only when it is created.
    let bootstrapped = bootstrap(store.as_ref(), &config).await?;
    let node_id = format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        addr.port()
    );
    let ended = store
        .start_node(&node_id)
        .await
        .context("starting the delivery node")?;
    if ended > 0 {
        tracing::info!(
            leases = ended,
            node = %node_id,
            "ended the leases a previous process of this node left: their deliveries are due again"
        );
    }
    let lease_margin = Duration::from_secs(5);
    let limits = Arc::new(crate::delivery::HostLimits::new(config.max_per_host));
    let gate = Arc::new(crate::delivery::WriteGate::new(config.backpressure));
    let outbound = Outbound {
        client: client.clone(),
        egress,
        node_id: node_id.clone(),
        retry: config.retry_schedule.clone(),
        breaker: config.breaker,
        lease_margin,
        per_host_cap: config.max_per_host,
        limits: Arc::clone(&limits),
        gate: Arc::clone(&gate),
    };
    let herald = Herald::new(Arc::clone(&store), Arc::clone(&wake), Arc::new(outbound));
    let worker = Worker::new(
        Arc::clone(&store) as Arc<dyn storage::Queue>,
        Arc::clone(&store) as Arc<dyn storage::Settings>,
        client,
        WorkerConfig {
            node_id,
            max_in_flight: config.max_in_flight,
            per_host_cap: config.max_per_host,
            // As many as a results write stores at once, so a refill of a quick host's window
            // ahead (half of it: its limit) is one claim.
            claim_batch: 256,
            lease_margin,
            idle_poll: config.idle_poll,
            retry: config.retry_schedule.clone(),
            breaker: config.breaker,
            retention: config.retention,
            prune_interval: config.prune_interval,
        },
        wake,
        Arc::clone(herald.metrics()),
        limits,
    )
    .with_gate(gate);

    let app = crate::router(herald.clone());
    let shutdown = CancellationToken::new();
    let worker_running = Arc::clone(herald.worker_running());
    tokio::spawn(housekeeping(
        herald,
        config.prune_interval,
        config.recycle_bin_retention,
        shutdown.clone(),
    ));

    let server_stop = shutdown.clone();
    let server_limits = config.server.clone();
    let worker_stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let worker = tokio::spawn(async move {
            let _running = worker_running.enter();
            worker.run(worker_stop).await;
        });
        crate::server::serve(listener, app, server_limits, server_stop).await;
        worker.await.context("delivery worker panicked")?;
        Ok(())
    });
    tracing::info!(%addr, database = %storage::redact_db_url(&config.database_url), "Herald is listening");
    Ok(Running {
        addr,
        bootstrapped,
        shutdown,
        task,
    })
}

/// Every `every` until `stop`: forgets idempotency keys past their lifetime and purges the
/// instances that have been in the recycle bin longer than `keep`.
async fn housekeeping(herald: Herald, every: Duration, keep: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match herald.prune_idempotency_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(keys = n, "forgot expired idempotency keys"),
            Err(error) => tracing::warn!(%error, "pruning idempotency keys failed"),
        }
        match herald.purge_recycle_bin(keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                instances = n,
                "purged instances past the recycle bin's retention"
            ),
            Err(error) => tracing::warn!(%error, "purging the recycle bin failed"),
        }
    }
}

/// Registers for SIGINT and SIGTERM now, and returns a future that resolves when either arrives.
/// Registering before the listening address is printed means a signal sent right after start is
/// never lost to the default handler.
#[cfg(unix)]
pub fn termination_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn termination_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
