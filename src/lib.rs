//! Portcullis: an edge API gateway on Cloudflare's Pingora.
//!
//! Layout (see ARCHITECTURE.md): `config` parses and validates the YAML file, `routing` and
//! `upstream` are the runtime structures compiled from it, `identity` is header hygiene, and
//! `gateway` is the only module that touches Pingora's proxy hooks.

/// Seconds since the Unix epoch (0 if the clock is before it): the one clock every
/// expiry, window and timestamp of the gateway is read from.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub mod access_log;
pub mod app;
pub mod assertion;
pub mod auth;
pub mod cli;
pub mod config;
pub mod engine;
pub mod forward;
pub mod gateway;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod redis_conn;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod upstream;
