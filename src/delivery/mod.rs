//! Delivery: the worker that claims due deliveries, calls their URLs and records the results.
//!
//! **Architecture Invariant:** this is the only module that makes outbound HTTP requests, and
//! every request goes through [`client::CallbackClient`], which enforces the egress policy.

pub mod backpressure;
pub mod client;
pub mod egress;
pub mod limits;
mod results;
mod worker;

pub use backpressure::WriteGate;
pub use client::{Attempt, Callback, CallbackClient};
pub use egress::EgressPolicy;
pub use limits::{HostConcurrency, HostLimits};
pub use results::SHUTDOWN_RESULTS_GRACE;
pub(crate) use results::store_results;
pub use worker::{UrlCache, Worker, WorkerConfig, attempt};
