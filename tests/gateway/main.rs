//! Black-box tests: the real `portcullis` binary against real origins. One test binary; the
//! shared harness is `support`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod api_keys;
mod config_check;
mod decisions;
mod errors;
mod headers;
mod health;
mod introspection;
mod jwks;
mod jwt;
mod mtls;
mod mtls_policy;
mod paths;
mod policy;
mod proxying;
mod rate_limits;
mod redis_limits;
mod revocations;
mod signing;
mod smuggling;
mod tls;
mod upgrade;
