//! The YAML file format, exactly as a user writes it.
//!
//! Every struct denies unknown fields: a misspelt key is an error, never a silently ignored
//! setting. Nothing here is used on the hot path; `config::compile` turns these into runtime
//! structures once, at start-up.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    pub listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    pub upstreams: BTreeMap<String, UpstreamSection>,
    pub routes: Vec<RouteSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Worker threads of the proxy service.
    pub threads: Option<usize>,
    /// Let idle worker threads steal work from busy ones (Pingora's `work_stealing`).
    pub work_stealing: Option<bool>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    /// How long a terminating instance keeps accepting before it starts shutting down.
    #[serde(default, with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    /// How long in-flight requests get to finish once shutdown has started.
    #[serde(default, with = "humantime_serde")]
    pub graceful_shutdown_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: String,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificate: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_address")]
    pub address: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `-` (standard output, the default) or a file path, opened for appending.
    #[serde(default = "default_access_log_path")]
    pub path: String,
}

impl Default for AccessLogSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path: default_access_log_path(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_access_log_path() -> String {
    "-".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub backends: Vec<BackendEntry>,
    #[serde(default)]
    pub selection: Selection,
    pub hash_key: Option<HashKeySection>,
    pub health_check: Option<HealthCheckSection>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Further attempts on other healthy backends after a connection failure.
    pub retries: Option<usize>,
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BackendEntry {
    Address(String),
    Weighted(WeightedBackend),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackend {
    pub address: String,
    #[serde(default = "one")]
    pub weight: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    #[default]
    RoundRobin,
    Random,
    ConsistentHash,
}

/// `hash_key: { header: X-Session-ID }` or `hash_key: client_address`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HashKeySection {
    /// Hash the value of this request header (requests without it hash the empty string).
    Header(HeaderHashKey),
    Named(NamedHashKey),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderHashKey {
    pub header: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedHashKey {
    /// Hash the client's IP address.
    ClientAddress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    #[serde(rename = "type", default)]
    pub kind: HealthCheckKind,
    /// HTTP checks: the path requested (default `/`).
    pub path: Option<String>,
    /// HTTP checks: the Host header sent (default: the backend address).
    pub host: Option<String>,
    /// HTTP checks: the status that means healthy (default 200).
    pub expected_status: Option<u16>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive successes that bring an unhealthy backend back (default 1).
    pub healthy_threshold: Option<usize>,
    /// Consecutive failures that take a healthy backend out (default 1).
    pub unhealthy_threshold: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name sent in the TLS handshake and checked against the certificate.
    pub sni: String,
    /// Verify the backend's certificate chain and name (default true).
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM file of the CA certificates to trust for this pool (default: the system roots).
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchSection,
    pub upstream: String,
    pub timeouts: Option<RouteTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub read: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write: Option<Duration>,
}
