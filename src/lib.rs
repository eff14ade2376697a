//! Portcullis: an edge API gateway on Cloudflare's Pingora.
//!
//! The map, top floor first (`docs/architecture.md` tells the request's path through it; an
//! arrow only ever points down a floor, and `.ci/layers.py` keeps it so):
//!
//! - `cli`: the subcommands (`check`, `explain`, `stdio`, `keys`, `sign`); never the glue.
//! - `gateway`: the only Pingora glue: the proxy's hooks, refusals on the wire, the admin
//!   listener, background services, the echo origin.
//! - `app`: the composition root, `Config -> App`.
//! - `engine`: `decide(&RequestFacts) -> Decision`, the pure core every front end shares;
//!   `config`: the YAML file checked and compiled into the owners' types.
//! - `forward` (what goes upstream), `ratelimit`, `upstream` (pools).
//! - `routing` (routes, the canonical path).
//! - `policy` (what a route demands), `assertion` (the signed identity assertion).
//! - `auth`: each authentication method, over plain data.
//! - `metrics`, `access_log`, `reload`, `redis_conn`, `request_id`: the ground floor.

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
