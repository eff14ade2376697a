//! Configuration: the YAML file (`file`), checked and compiled into the plain runtime
//! settings below. Every problem found is reported with the path of the offending key, e.g.
//! `routes[2].upstream: unknown upstream "userz"`, and all of them are reported at once.
//!
//! One room per part of the file: `server`, `listeners` (and the admin address),
//! `upstreams`, `forwarding` (the identity header namespace, trusted proxies), `providers`,
//! `routes` (with `policies`, their `auth`), `limits` and `credentials` (API keys, request
//! signing, client certificates, revocation). Each reports through a `check::Check`.

mod check;
mod cors;
mod credentials;
pub mod file;
mod forward_auth;
mod forwarding;
mod limits;
mod listeners;
mod opa;
mod policies;
mod providers;
mod routes;
mod server;
mod upstreams;

#[cfg(test)]
mod tests;

pub use server::{default_runtime_dir, DEFAULT_CONNECTION_LIMITS};

use crate::auth::api_key::ApiKeys;
use crate::auth::http_sig::{SignatureRules, SigningKeys};
use crate::auth::mtls::CertIdentities;
use crate::auth::provider::Provider;
use crate::auth::revocation;
use crate::forward::IdentityNamespace;
use crate::policy::networks::Cidr;
use crate::ratelimit::LimitSettings;
use crate::routing::Route;
use crate::upstream::PoolSpec;
use check::Check;
use file::ConfigFile;
use std::error::Error;
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One thing wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem of a configuration that was rejected.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Error for Problems {}

/// A validated configuration: plain settings, compiled into the types of the modules that
/// own them. Nothing here is running yet: `app::App::build` makes the live parts (stores,
/// Redis connections, limiters) from it.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    pub admin_address: SocketAddr,
    /// `None` when access logging is off; `Some("-")` for standard output.
    pub access_log: Option<String>,
    pub providers: Vec<Provider>,
    pub upstreams: Vec<PoolSpec>,
    pub routes: Vec<Route>,
    /// Proxies whose `X-Forwarded-For` entries are believed when they are the peer.
    pub trusted_proxies: Vec<Cidr>,
    /// The header names the gateway owns.
    pub identity_namespace: IdentityNamespace,
    /// API keys and their consumers file, when configured.
    pub api_keys: Option<Arc<ApiKeys>>,
    /// How often the consumers file (and every other reloaded file) is checked for changes.
    pub consumers_reload_interval: Duration,
    /// Every rate limit and where they are counted.
    pub rate_limits: LimitSettings,
    /// The revocation list and its admin API, when configured.
    pub revocation: Option<RevocationSettings>,
    /// How a verified client certificate names the caller and is forwarded.
    pub client_certs: Arc<CertIdentities>,
    /// HMAC-signed requests, when configured.
    pub signing: Option<SigningSettings>,
    /// The ForwardAuth services, in the order routes' credentials name them.
    pub forward_auth: Vec<Arc<crate::auth::forward_auth::ForwardAuth>>,
}

/// HMAC-signed requests (RFC 9421): the keys in force, what a signature must cover, and
/// where nonces are to be remembered.
#[derive(Debug)]
pub struct SigningSettings {
    pub keys: Arc<SigningKeys>,
    pub rules: SignatureRules,
    pub nonces: NonceSettings,
}

/// Where the nonces of signed requests are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceSettings {
    /// In this process, at most `max_entries` at a time.
    Memory { max_entries: usize },
    /// In Redis, shared by a fleet (replays to another gateway are caught too).
    Redis {
        url: String,
        timeout: Duration,
        key_prefix: String,
    },
}

/// The revocation list: where it is kept, how large it may grow, and its admin API.
#[derive(Debug, Clone)]
pub struct RevocationSettings {
    pub backend: revocation::Backend,
    pub max_entries: usize,
    pub admin: RevocationAdmin,
}

impl RevocationSettings {
    /// Shared through Redis (then a background task keeps it in sync).
    pub fn shared(&self) -> bool {
        matches!(self.backend, revocation::Backend::Redis { .. })
    }

    /// Where a local list is kept (its directory is made at start).
    pub fn state_file(&self) -> Option<&Path> {
        match &self.backend {
            revocation::Backend::File(p) => Some(p),
            _ => None,
        }
    }
}

/// The revocation admin API's settings.
#[derive(Clone)]
pub struct RevocationAdmin {
    /// The admin API's bearer token; `None`: the API is closed.
    pub token: Option<Arc<[u8]>>,
    /// Kept for `jti` and token entries posted without `expires_at`.
    pub default_ttl: Duration,
}

impl fmt::Debug for RevocationAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("RevocationAdmin")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("default_ttl", &self.default_ttl)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    /// Idle time allowed between requests on a client connection (HTTP/2: with no stream).
    pub keepalive_timeout: Duration,
    /// Requests a client connection may carry.
    pub max_requests_per_connection: u32,
    /// Deadlines and sizes every client connection is held to.
    pub connections: ConnectionLimits,
}

/// What a client connection may take of the gateway: time to finish its TLS handshake and
/// each request head, bytes of a head, and the pace of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub tls_handshake_timeout: Duration,
    pub request_header_timeout: Duration,
    pub max_request_head_size: usize,
    pub max_request_line_size: usize,
    pub request_body_timeout: Duration,
    pub request_body_min_rate: u64,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<ListenerTlsSpec>,
    /// Most client connections open at once; more are refused at accept.
    pub max_connections: usize,
    /// Bytes of each connection's read buffer below HTTP and TLS (0: none).
    pub read_buffer_size: usize,
    /// A cleartext listener that also takes HTTP/2 by prior knowledge.
    pub h2c: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerTlsSpec {
    pub certificate: String,
    pub key: String,
    /// Client certificates (mTLS), when asked for.
    pub client: Option<ClientCertSpec>,
}

#[derive(Debug, Clone)]
pub struct ClientCertSpec {
    pub required: bool,
    pub ca_file: String,
    pub max_chain_depth: u32,
    /// Revocation lists, reloaded when the file changes.
    pub crl_file: Option<String>,
}

/// Read, parse and validate a configuration file. Relative file paths in it (certificates,
/// keys, secrets) are relative to the file's own directory.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_in(&text, base)
}

/// Parse and validate configuration text; relative paths are relative to the current
/// directory.
pub fn parse(text: &str) -> Result<Config, Problems> {
    parse_in(text, Path::new("."))
}

/// `path` as written when absolute, else under `base`.
pub(crate) fn resolve_path(base: &Path, path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() || base.as_os_str().is_empty() {
        path.to_string()
    } else {
        base.join(p).display().to_string()
    }
}

fn parse_in(text: &str, base: &Path) -> Result<Config, Problems> {
    let file: ConfigFile = serde_yaml::from_str(text).map_err(|e| {
        // serde_yaml prefixes the key path ("routes[0]: unknown field `x`, ...") itself.
        Problems(vec![Problem {
            path: String::new(),
            message: e.to_string(),
        }])
    })?;
    compile(file, base)
}

/// Every section in the order its problems are reported; later sections use what earlier
/// ones compiled (routes name upstreams and providers, API keys name rate-limit tiers).
fn compile(file: ConfigFile, base: &Path) -> Result<Config, Problems> {
    let mut problems = Vec::new();
    let mut c = Check::root(&mut problems);
    let server = server::compile(&file.server, &mut c.at("server"));
    let listeners = listeners::compile(&file.listeners, base, &mut c);
    let admin_address = listeners::admin_address(&file.admin, &listeners, &mut c.at("admin"));
    let access_log = server::access_log(&file.access_log, &mut c.at("access_log"));
    let upstreams = upstreams::compile(&file.upstreams, base, &mut c);
    let identity_namespace = forwarding::identity_namespace(
        &file.identity_headers,
        &upstreams.pools,
        &mut c.at("identity_headers"),
    );
    let providers =
        providers::compile_all(&file.identity_providers, base, &identity_namespace, &mut c);
    if let Some(shared) = &file.cors {
        cors::compile(shared, &[], &mut c.at("cors"));
    }
    let opa = opa::compile(&file.opa, &identity_namespace, &mut c);
    let named = policies::Named {
        file: &file,
        providers: &providers,
        opa: &opa,
        namespace: &identity_namespace,
    };
    let mut routes = routes::compile(&file, base, &upstreams, &named, &mut c);
    let rate_limits = limits::compile(file.rate_limits.as_ref(), &file.routes, &mut routes, &mut c);
    let tiers = rate_limits.tier_names();
    let (api_keys, consumers_reload_interval) = credentials::api_keys(&file, base, &tiers, &mut c);
    let trusted_proxies = forwarding::trusted_proxies(&file.trusted_proxies, &mut c);
    let client_certs = credentials::cert_identities(&file, &tiers, &listeners, &mut c);
    let signing = credentials::signing(&file, base, &tiers, &mut c);
    let revocation = credentials::revocation(file.revocation.as_ref(), base, &mut c);
    let forward_auth = forward_auth::compile(&file.forward_auth, &identity_namespace, &mut c);

    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let Some(admin_address) = admin_address else {
        return Err(Problems(vec![Problem {
            path: "admin.address".into(),
            message: "missing".into(),
        }]));
    };
    Ok(Config {
        server,
        listeners,
        admin_address,
        access_log,
        providers: providers.list,
        upstreams: upstreams.pools,
        routes,
        trusted_proxies,
        identity_namespace,
        api_keys,
        consumers_reload_interval,
        rate_limits,
        revocation,
        client_certs,
        signing,
        forward_auth,
    })
}

/// The services of a top-level map (`forward_auth`, `opa`) that compile, in the map's order,
/// each by `build` at its own key; a name routes could not use is reported too.
fn named_services<S, T>(
    sections: &std::collections::BTreeMap<String, S>,
    key: &str,
    c: &mut Check<'_>,
    mut build: impl FnMut(&str, &S, &mut Check<'_>) -> Option<T>,
) -> Vec<Arc<T>> {
    let mut c = c.at(key);
    let mut out = Vec::new();
    for (name, section) in sections {
        if !valid_name(name) {
            c.problem(name, "names use only letters, digits, `-` and `_`");
        }
        if let Some(service) = build(name, section, &mut c.at(name)) {
            out.push(Arc::new(service));
        }
    }
    out
}

/// A service's `url`: https, or plain http to a loopback address only (what it is sent may
/// be a credential).
fn service_url(url: &str, c: &mut Check<'_>) -> bool {
    let allowed = crate::auth::fetch::allowed_uri(url);
    if !allowed {
        c.problem(
            "url",
            "must be https (plain http only to a loopback address)",
        );
    }
    allowed
}

/// How many of a service's `max_concurrent` calls one client address may have in flight
/// (`max_concurrent_per_client`): by default a quarter, at least one.
fn per_client(limit: Option<usize>, max_concurrent: usize, c: &mut Check<'_>) -> usize {
    let Some(limit) = limit else {
        return (max_concurrent / 4).max(1);
    };
    c.range(
        "max_concurrent_per_client",
        limit,
        1..=max_concurrent,
        "between 1 and max_concurrent",
    );
    limit
}

/// Upstream, provider and route names: letters, digits, `-` and `_`, at most 64.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
