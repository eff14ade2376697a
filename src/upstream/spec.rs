//! A pool's settings, as the configuration compiles them: its backends, how one is chosen,
//! health checks, timeouts, retries, TLS to the backends and the identity assertion.

use crate::assertion::Assertion;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: String,
    /// Each backend with its weight.
    pub backends: Vec<(SocketAddr, usize)>,
    pub selection: Selection,
    pub hash_key: HashKey,
    pub health_check: Option<HealthCheckSpec>,
    pub timeouts: Timeouts,
    pub retries: usize,
    pub tls: Option<TlsSpec>,
    pub protocol: Protocol,
    pub assertion: Option<Arc<Assertion>>,
}

/// The HTTP version spoken to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 only: by ALPN over TLS, by prior knowledge (h2c) in cleartext. No fallback to
    /// HTTP/1.1, which would lose gRPC's trailers.
    Http2,
}

/// How a backend is chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    RoundRobin,
    Random,
    /// Ketama consistent hashing on the `HashKey`.
    ConsistentHash,
}

/// What a consistent-hash pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// Not a hashing pool.
    None,
    /// Lower-case header name.
    Header(http::HeaderName),
    ClientAddress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP (or TLS) connect.
    Tcp,
    /// A `GET` that must answer the expected status.
    Http,
}

#[derive(Debug, Clone)]
pub struct HealthCheckSpec {
    pub kind: HealthCheckKind,
    pub path: String,
    pub host: Option<String>,
    pub expected_status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    read: Duration::from_secs(30),
    write: Duration::from_secs(30),
    idle: Duration::from_secs(60),
};
pub const DEFAULT_RETRIES: usize = 1;
pub const MAX_RETRIES: usize = 10;

#[derive(Debug, Clone)]
pub struct TlsSpec {
    pub sni: String,
    pub verify: bool,
    /// CA certificates to trust instead of the system roots.
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// The certificate and key the gateway presents to the backend (mTLS upstream).
    pub client_cert_key: Option<Arc<pingora::utils::tls::CertKey>>,
}
