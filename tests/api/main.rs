//! Integration tests: Herald driven through its HTTP API, with real receiving servers.
//! One binary for all of them keeps link time down.

mod authorization;
mod backup;
mod browser;
mod cli;
mod concurrency;
#[macro_use]
mod db;
mod backpressure;
mod cancel;
mod conformance;
mod delivery;
mod fanout;
mod faults;
mod fleet;
mod helpers;
mod hostile;
mod idempotency;
mod instances;
mod lifecycle;
mod metrics;
mod migrations;
mod outage;
mod recycle_bin;
mod reliability;
mod signing;
mod slow_clients;
mod storage;
mod stored_values;
mod telemetry;
mod tokens;
mod users;
mod web;
mod webhooks;
