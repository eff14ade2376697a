//! The black-box harness every integration test uses: the real `portcullis` binary on
//! ephemeral loopback ports with a generated configuration, real origins (`portcullis echo`
//! processes), and origins that misbehave on purpose (a closed port, one that never answers).
//! Everything started here is stopped when its handle is dropped.
//!
//! The parts, each re-exported here so a test needs only `use crate::support::*`:
//! - `gateway`: the gateway under test (start, stop, metrics, access log) and `eventually`;
//! - `origins`: echo origins, a stalled origin, and the YAML that routes to them;
//! - `idp`: identity providers that serve a JWKS or sign tokens, and `corp_gateway`;
//! - `conf`: a typed builder for the configuration a test's world is made of;
//! - `client`: HTTP clients, `curl` over HTTPS, and the checks on refusals;
//! - `raw`: raw HTTP/1.1 bytes on a socket;
//! - `keys`: API keys minted with `portcullis keys new`;
//! - `redis`: a real `redis-server`;
//! - `process`: the binary, free ports, and starting and stopping child processes.
//!
//! Five parts are reached by name instead: `introspection` (a token introspection server),
//! `oidc` (a real OpenID Provider, panva's `oidc-provider` under Node.js), `grpc` (grpcio's
//! server and client), `opa` (OPA's Data API over rego-cpp) and `pki` (CAs and client
//! certificates; only `self_signed_cert` is re-exported).

#![allow(dead_code)]

mod client;
mod conf;
mod gateway;
pub mod grpc;
mod idp;
pub mod introspection;
mod keys;
pub mod oidc;
pub mod opa;
mod origins;
pub mod pki;
mod process;
mod raw;
mod redis;

// `self::` so that `redis` names the module below, not the Redis client crate.
pub use self::client::*;
pub use self::conf::*;
pub use self::gateway::*;
pub use self::idp::*;
pub use self::keys::*;
pub use self::origins::*;
pub use self::pki::self_signed_cert;
pub use self::process::*;
pub use self::raw::*;
pub use self::redis::*;
