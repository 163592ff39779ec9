//! Serving HTTP: the accept loop, with a cap on open connections and a deadline for each
//! request's head, so slow or idle clients cannot hold the API (issue 19, item 5).
//!
//! `axum::serve` offers neither (hyper's header timeout is off without a timer), so the loop
//! is Herald's own: hyper's HTTP/1 connection with a Tokio timer, the router as its service,
//! each request told its client's address, and graceful shutdown that lets requests in flight
//! finish.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections open at once; beyond it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, idle keep-alive time included.
    pub header_read_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client ([`crate::forwarded`]).
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            trusted_proxies: Arc::new([]),
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then waits for requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let trusted = Arc::clone(&limits.trusted_proxies);
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                let client = crate::forwarded::client_address(
                    remote.ip(),
                    request
                        .headers()
                        .get("x-forwarded-for")
                        .and_then(|v| v.to_str().ok()),
                    &trusted,
                );
                let client = std::net::SocketAddr::new(client, remote.port());
                request.extensions_mut().insert(ConnectInfo(client));
                app.clone().oneshot(request)
            },
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that leaves or times out ends its connection; nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
