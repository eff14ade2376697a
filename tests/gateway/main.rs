//! Black-box tests: the real `portcullis` binary against real origins.
//!
//! Every test file here is a module of this ONE test binary (Cargo builds `tests/gateway/`
//! as the test target `gateway` because it holds a `main.rs`), not a binary of its own: the
//! suite links the crate and the harness once instead of once per file, and every test shares
//! one harness, `support`. A new test file goes in `tests/gateway/` and is listed below as a
//! `mod`; a file that is not listed is not compiled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod api_keys;
mod config_check;
mod connections;
mod cors;
mod decisions;
mod demo;
mod errors;
mod forward_auth;
mod grpc;
mod headers;
mod health;
mod introspection;
mod jwks;
mod jwt;
mod monitoring;
mod mtls;
mod mtls_policy;
mod oidc_provider;
mod opa;
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
mod websocket;
