//! Herald: a process-instance service whose changes reach other applications as webhooks.
//!
//! Read `ARCHITECTURE.md` first. In short: [`domain`] holds the types and rules, [`storage`] the
//! database behind one trait, [`delivery`] the worker that makes callbacks, [`api`] the REST
//! API, [`service`] the operations both share, and [`startup`] wires them together.

pub mod api;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod forwarded;
pub mod metrics;
pub mod server;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod web;

pub use config::Config;
pub use error::{Error, Result};
pub use startup::{Running, start};

use axum::Router;
use axum::routing::get;

/// Every HTTP route Herald serves.
pub fn router(herald: service::Herald) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(api::readyz))
        .route(api::METRICS.path, get(api::metrics))
        .merge(api::router(herald.clone()))
        .merge(web::router())
        .route_layer(axum::middleware::from_fn(telemetry::request_span))
        .with_state(herald)
}
