//! Configuration: the YAML file (`file`), checked and compiled into the plain runtime
//! settings below. Every problem found is reported with the path of the offending key, e.g.
//! `routes[2].upstream: unknown upstream "userz"`, and all of them are reported at once.

pub mod file;
pub mod limits;
mod policies;
mod providers;

use file::{BackendEntry, ConfigFile, HashKeySection};
pub use file::{HealthCheckKind, Selection};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
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

impl std::error::Error for Problems {}

/// A validated configuration, ready to build a server from.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    pub admin_address: SocketAddr,
    /// `None` when access logging is off; `Some("-")` for standard output.
    pub access_log: Option<String>,
    pub providers: Vec<crate::auth::provider::Provider>,
    pub upstreams: Vec<UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    /// Proxies whose `X-Forwarded-For` entries are believed when they are the peer.
    pub trusted_proxies: Vec<crate::policy::networks::Cidr>,
    /// The header names the gateway owns.
    pub identity_namespace: crate::identity::IdentityNamespace,
    /// API keys and their consumers file, when configured.
    pub api_keys: Option<std::sync::Arc<crate::auth::api_key::ApiKeys>>,
    /// How often the consumers file is checked for changes.
    pub consumers_reload_interval: Duration,
    /// Every rate limit and the backend counting them.
    pub rate_limits: limits::RateLimits,
    /// The revocation list and its admin API, when configured.
    pub revocation: Option<RevocationSpec>,
    /// How a verified client certificate names the caller and is forwarded.
    pub client_certs: std::sync::Arc<crate::auth::mtls::ClientCertPolicy>,
    /// HMAC-signed requests, when configured.
    pub signing: Option<std::sync::Arc<SigningSpec>>,
}

/// HMAC-signed requests (RFC 9421): the keys in force, what a signature must cover, and
/// where nonces are remembered.
#[derive(Debug)]
pub struct SigningSpec {
    pub keys: std::sync::Arc<crate::auth::http_sig::SigningKeys>,
    pub rules: crate::auth::http_sig::SignatureRules,
    pub nonces: crate::auth::nonces::NonceStore,
}

/// The revocation list, compiled.
#[derive(Clone)]
pub struct RevocationSpec {
    pub list: std::sync::Arc<crate::auth::revocation::Revocations>,
    /// The admin API's bearer token; `None`: the API is closed.
    pub admin_token: Option<std::sync::Arc<[u8]>>,
    /// Kept for `jti` and token entries posted without `expires_at`.
    pub default_ttl: Duration,
    /// Shared through Redis (then a background task keeps it in sync).
    pub shared: bool,
    /// Where a local list is kept (its directory is made at start).
    pub state_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RevocationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationSpec")
            .field("default_ttl", &self.default_ttl)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

pub use crate::policy::Policy;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<ListenerTlsSpec>,
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

#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    pub backends: Vec<(SocketAddr, usize)>,
    pub selection: Selection,
    pub hash_key: HashKey,
    pub health_check: Option<HealthCheckSpec>,
    pub timeouts: Timeouts,
    pub retries: usize,
    pub tls: Option<TlsSpec>,
    pub assertion: Option<std::sync::Arc<Assertion>>,
}

/// A pool's identity assertion: the signer and the header it goes in.
#[derive(Debug)]
pub struct Assertion {
    pub signer: crate::assertion::AssertionSigner,
    pub header: http::HeaderName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// Not a hashing pool.
    None,
    /// Lower-case header name.
    Header(http::HeaderName),
    ClientAddress,
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

#[derive(Debug, Clone)]
pub struct TlsSpec {
    pub sni: String,
    pub verify: bool,
    /// CA certificates to trust instead of the system roots.
    pub ca: Option<std::sync::Arc<pingora::protocols::tls::CaType>>,
    /// The certificate and key the gateway presents to the backend (mTLS upstream).
    pub client_cert_key: Option<std::sync::Arc<pingora::utils::tls::CertKey>>,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    /// Lower case, without a port.
    pub host: Option<String>,
    pub path: PathMatch,
    /// Upper case; empty means every method.
    pub methods: Vec<http::Method>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub auth: Policy,
    /// Index into `RateLimits::limits`.
    pub rate_limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    read: Duration::from_secs(30),
    write: Duration::from_secs(30),
    idle: Duration::from_secs(60),
};
pub const DEFAULT_RETRIES: usize = 1;
pub const MAX_RETRIES: usize = 10;

/// Read, parse and validate a configuration file. Relative file paths in it (certificates,
/// keys, secrets) are relative to the file's own directory.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
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

fn compile(file: ConfigFile, base: &Path) -> Result<Config, Problems> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });

    let server = compile_server(&file.server, &mut problem);

    if file.listeners.is_empty() {
        problem(
            "listeners".into(),
            "at least one listener is required".into(),
        );
    }
    let mut listeners = Vec::new();
    let mut seen_addrs = HashSet::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        let Some(address) = parse_socket_addr(&l.address, &format!("{at}.address"), &mut problem)
        else {
            continue;
        };
        if !seen_addrs.insert(address) {
            problem(
                format!("{at}.address"),
                format!("{address} is used by another listener"),
            );
        }
        let tls = l.tls.as_ref().map(|t| {
            // Relative paths are relative to the configuration file, as everywhere.
            let certificate = resolve_path(base, &t.certificate);
            let key = resolve_path(base, &t.key);
            check_readable(&certificate, &format!("{at}.tls.certificate"), &mut problem);
            check_readable(&key, &format!("{at}.tls.key"), &mut problem);
            let client = client_certificates(t, base, &format!("{at}.tls"), &mut problem);
            ListenerTlsSpec {
                certificate,
                key,
                client,
            }
        });
        listeners.push(Listener { address, tls });
    }

    let admin_address = parse_socket_addr(&file.admin.address, "admin.address", &mut problem);
    if let Some(a) = admin_address {
        if seen_addrs.contains(&a) {
            problem(
                "admin.address".into(),
                format!("{a} is also a public listener; the admin listener must be separate"),
            );
        }
    }

    let access_log = if file.access_log.enabled {
        if file.access_log.path.trim().is_empty() {
            problem(
                "access_log.path".into(),
                "must be `-` (standard output) or a file path".into(),
            );
        }
        Some(file.access_log.path.clone())
    } else {
        None
    };

    if file.upstreams.is_empty() {
        problem(
            "upstreams".into(),
            "at least one upstream is required".into(),
        );
    }
    let mut upstreams = Vec::new();
    let mut upstream_index = BTreeMap::new();
    for (name, u) in &file.upstreams {
        let at = format!("upstreams.{name}");
        if !valid_name(name) {
            problem(
                at.clone(),
                "names use only letters, digits, `-` and `_`".into(),
            );
        }
        if let Some(spec) = compile_upstream(name, u, &at, base, &mut problem) {
            upstream_index.insert(name.clone(), upstreams.len());
            upstreams.push(spec);
        }
    }

    let ih = &file.identity_headers;
    for (key, list) in [
        ("prefixes", &ih.prefixes),
        ("names", &ih.names),
        ("allow", &ih.allow),
    ] {
        for (i, name) in list.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || name.len() < 3 {
                problem(
                    format!("identity_headers.{key}[{i}]"),
                    format!("\"{name}\" is not a header name (or prefix)"),
                );
            }
        }
    }
    for (i, name) in ih.allow.iter().enumerate() {
        if crate::identity::IdentityNamespace::is_injected(name) {
            problem(
                format!("identity_headers.allow[{i}]"),
                format!("{name} is set by the gateway from the verified identity; a client's copy is never forwarded"),
            );
        }
    }
    // A custom assertion header is the gateway's too: a client's copy never passes.
    let mut owned_names = ih.names.clone();
    for u in &upstreams {
        if let Some(a) = &u.assertion {
            owned_names.push(a.header.as_str().to_string());
            if ih
                .allow
                .iter()
                .any(|n| n.eq_ignore_ascii_case(a.header.as_str()))
            {
                problem(
                    "identity_headers.allow".into(),
                    format!(
                        "{} carries upstream {}'s identity assertion",
                        a.header, u.name
                    ),
                );
            }
        }
    }
    let identity_namespace =
        crate::identity::IdentityNamespace::new(&ih.prefixes, &owned_names, &ih.allow);

    let mut providers = Vec::new();
    let mut provider_index = BTreeMap::new();
    for (name, p) in &file.identity_providers {
        let at = format!("identity_providers.{name}");
        if !valid_name(name) {
            problem(
                at.clone(),
                "names use only letters, digits, `-` and `_`".into(),
            );
        }
        if let Some(provider) =
            providers::compile(name, p, &at, base, &identity_namespace, &mut problem)
        {
            provider_index.insert(name.clone(), providers.len());
            providers.push(provider);
        }
    }

    if file.routes.is_empty() {
        problem("routes".into(), "at least one route is required".into());
    }
    let mut routes: Vec<RouteSpec> = Vec::new();
    let mut route_names = HashSet::new();
    for (i, r) in file.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if !valid_name(&r.name) {
            problem(
                format!("{at}.name"),
                "names use only letters, digits, `-` and `_`, and are not empty".into(),
            );
        } else if !route_names.insert(r.name.clone()) {
            problem(
                format!("{at}.name"),
                format!("route name \"{}\" is used twice", r.name),
            );
        }
        let upstream = match upstream_index.get(&r.upstream) {
            Some(idx) => Some(*idx),
            None => {
                if !file.upstreams.contains_key(&r.upstream) {
                    problem(
                        format!("{at}.upstream"),
                        format!("unknown upstream \"{}\"", r.upstream),
                    );
                }
                None
            }
        };
        let m = &r.matcher;
        let path = match (&m.path, &m.path_prefix) {
            (Some(p), None) => check_route_path(p, &format!("{at}.match.path"), &mut problem)
                .then(|| PathMatch::Exact(p.clone())),
            (None, Some(p)) => {
                check_route_path(p, &format!("{at}.match.path_prefix"), &mut problem)
                    .then(|| PathMatch::Prefix(p.clone()))
            }
            (Some(_), Some(_)) => {
                problem(
                    format!("{at}.match"),
                    "give either `path` or `path_prefix`, not both".into(),
                );
                None
            }
            (None, None) => {
                problem(
                    format!("{at}.match"),
                    "one of `path` (exact) or `path_prefix` is required".into(),
                );
                None
            }
        };
        let host = m.host.as_ref().and_then(|h| {
            let h = h.to_ascii_lowercase();
            if h.is_empty()
                || h.contains(':')
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                problem(
                    format!("{at}.match.host"),
                    format!("\"{h}\" is not a host name (no port, no wildcard)"),
                );
                None
            } else {
                Some(h)
            }
        });
        let mut methods = Vec::new();
        if let Some(ms) = &m.methods {
            if ms.is_empty() {
                problem(
                    format!("{at}.match.methods"),
                    "leave `methods` out to match every method; an empty list matches nothing"
                        .into(),
                );
            }
            for (j, name) in ms.iter().enumerate() {
                let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase());
                match http::Method::from_bytes(name.as_bytes()) {
                    Ok(method) if valid => {
                        if methods.contains(&method) {
                            problem(
                                format!("{at}.match.methods[{j}]"),
                                format!("{name} is listed twice"),
                            );
                        }
                        methods.push(method);
                    }
                    _ => problem(
                        format!("{at}.match.methods[{j}]"),
                        format!("\"{name}\" is not an HTTP method (use upper case, e.g. GET)"),
                    ),
                }
            }
        }
        let (connect_timeout, read_timeout, write_timeout) = match &r.timeouts {
            Some(t) => {
                for (key, v) in [("connect", t.connect), ("read", t.read), ("write", t.write)] {
                    if v == Some(Duration::ZERO) {
                        problem(format!("{at}.timeouts.{key}"), "must be above zero".into());
                    }
                }
                (t.connect, t.read, t.write)
            }
            None => (None, None, None),
        };
        let known = |name: &str| file.identity_providers.contains_key(name);
        let auth = match &r.auth {
            None => {
                problem(
                    format!("{at}.auth"),
                    "every route states its auth: `public` or a policy such as `{ jwt: PROVIDER }`"
                        .into(),
                );
                None
            }
            Some(section) => policies::compile(
                section,
                &format!("{at}.auth"),
                &provider_index,
                &providers,
                &known,
                &mut problem,
            ),
        };
        if let (Some(path), Some(upstream), Some(auth)) = (path, upstream, auth) {
            let spec = RouteSpec {
                name: r.name.clone(),
                host,
                path,
                methods,
                upstream,
                connect_timeout,
                read_timeout,
                write_timeout,
                auth,
                rate_limit: None,
            };
            if let Some(j) = routes.iter().position(|o| same_match(o, &spec)) {
                problem(
                    format!("{at}.match"),
                    format!(
                        "matches exactly what route \"{}\" matches, so it could never be used",
                        routes[j].name
                    ),
                );
            }
            routes.push(spec);
        }
    }

    let mut rate_limits = limits::compile(file.rate_limits.as_ref(), &mut problem);
    for (i, r) in file.routes.iter().enumerate() {
        if let (Some(l), Some(spec)) = (&r.rate_limit, routes.iter_mut().find(|s| s.name == r.name))
        {
            if let Some(limit) = limits::compile_limit(
                &r.name,
                l,
                &format!("routes[{i}].rate_limit"),
                None,
                &mut problem,
            ) {
                spec.rate_limit = Some(rate_limits.limits.len());
                rate_limits.limits.push(limit);
            }
        }
    }
    limits::start_backend(&mut rate_limits, file.rate_limits.as_ref(), &mut problem);
    let tier_names = rate_limits.tier_names();
    let api_keys = file
        .api_keys
        .as_ref()
        .and_then(|a| api_keys(a, base, tier_names.clone(), &mut problem));
    let uses_api_keys = file.routes.iter().any(|r| match &r.auth {
        Some(file::RouteAuthSection::Policy(p)) => {
            p.api_key
                || p.any
                    .iter()
                    .chain(p.all.iter())
                    .flatten()
                    .any(|c| c.api_key)
        }
        _ => false,
    });
    if uses_api_keys && file.api_keys.is_none() {
        problem(
            "api_keys".into(),
            "a route accepts `api_key` but no `api_keys.consumers_file` is configured".into(),
        );
    }
    let consumers_reload_interval = file
        .api_keys
        .as_ref()
        .and_then(|a| a.reload_interval)
        .unwrap_or(Duration::from_secs(1));
    if consumers_reload_interval < Duration::from_millis(100) {
        problem("api_keys.reload_interval".into(), "at least 100ms".into());
    }

    let mut trusted_proxies = Vec::new();
    for (i, t) in file.trusted_proxies.iter().enumerate() {
        match t.parse::<crate::policy::networks::Cidr>() {
            Ok(c) => trusted_proxies.push(c),
            Err(e) => problem(format!("trusted_proxies[{i}]"), e),
        }
    }

    let client_certs = std::sync::Arc::new(client_cert_policy(
        &file.client_certificates,
        &tier_names,
        &mut problem,
    ));
    let uses_mtls = file.routes.iter().any(|r| match &r.auth {
        Some(file::RouteAuthSection::Policy(p)) => {
            p.mtls || p.any.iter().chain(p.all.iter()).flatten().any(|c| c.mtls)
        }
        _ => false,
    });
    if uses_mtls
        && !listeners
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.client.is_some()))
    {
        problem(
            "listeners".into(),
            "a route accepts `mtls` but no listener asks for client certificates (`tls.client_certificate`)".into(),
        );
    }

    let signing = file
        .request_signing
        .as_ref()
        .and_then(|r| signing(r, base, &tier_names, &mut problem))
        .map(std::sync::Arc::new);
    let uses_hmac = file.routes.iter().any(|r| match &r.auth {
        Some(file::RouteAuthSection::Policy(p)) => {
            p.hmac || p.any.iter().chain(p.all.iter()).flatten().any(|c| c.hmac)
        }
        _ => false,
    });
    if uses_hmac && file.request_signing.is_none() {
        problem(
            "request_signing".into(),
            "a route accepts `hmac` but no `request_signing.keys_file` is configured".into(),
        );
    }

    let revocation = file
        .revocation
        .as_ref()
        .and_then(|r| revocation(r, base, &mut problem));
    if let Some(r) = &revocation {
        evict_on_revoke(&r.list, &providers);
    }

    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    match admin_address {
        Some(admin_address) => Ok(Config {
            server,
            listeners,
            admin_address,
            access_log,
            providers,
            upstreams,
            routes,
            trusted_proxies,
            identity_namespace,
            api_keys,
            consumers_reload_interval,
            rate_limits,
            revocation,
            client_certs,
            signing,
        }),
        None => Err(Problems(vec![Problem {
            path: "admin.address".into(),
            message: "missing".into(),
        }])),
    }
}

/// A revoked entry leaves every cache at once (verified tokens and introspection answers),
/// whichever gateway of the fleet revoked it.
fn evict_on_revoke(
    list: &crate::auth::revocation::Revocations,
    providers: &[crate::auth::provider::Provider],
) {
    use crate::auth::revocation::Entry;
    use crate::auth::Identity;
    fn matches(e: &Entry, key: &[u8; 32], id: &Identity) -> bool {
        match e {
            Entry::Jti { jti, .. } => id.jti.as_deref() == Some(jti.as_str()),
            Entry::Subject { subject, before } => {
                id.subject == *subject && id.issued_at.is_none_or(|iat| iat <= *before)
            }
            Entry::Token { sha256, .. } => key == sha256,
        }
    }
    for p in providers {
        let cache = p.cache.clone();
        let introspection = p.introspection.clone();
        list.on_revoke(Box::new(move |e| {
            let entry = e.clone();
            cache.evict_if(move |k, id| matches(&entry, k, id));
            if let Some(i) = &introspection {
                let entry = e.clone();
                i.evict_if(move |k, id| matches(&entry, k, id));
            }
        }));
    }
}

fn revocation(
    r: &file::RevocationSection,
    base: &Path,
    problem: &mut impl FnMut(String, String),
) -> Option<RevocationSpec> {
    use crate::auth::revocation::{Backend, Revocations};
    let mut ok = true;
    let admin_token = match &r.admin_token_file {
        None => None,
        Some(f) => {
            let path = resolve_path(base, f);
            match crate::auth::read_secret_file(Path::new(&path)) {
                Ok(t) if t.len() >= 16 => Some(std::sync::Arc::from(t)),
                Ok(_) => {
                    problem(
                        "revocation.admin_token_file".into(),
                        "the admin token must be at least 16 bytes".into(),
                    );
                    ok = false;
                    None
                }
                Err(e) => {
                    problem("revocation.admin_token_file".into(), e);
                    ok = false;
                    None
                }
            }
        }
    };
    let default_ttl = r.default_ttl.unwrap_or(Duration::from_secs(24 * 3600));
    if default_ttl < Duration::from_secs(1) {
        problem("revocation.default_ttl".into(), "at least 1s".into());
        ok = false;
    }
    let max_entries = r.max_entries.unwrap_or(100_000);
    if max_entries == 0 || max_entries > 10_000_000 {
        problem(
            "revocation.max_entries".into(),
            "between 1 and 10000000".into(),
        );
        ok = false;
    }
    let backend = match (&r.state_file, &r.redis) {
        (Some(_), Some(_)) => {
            problem(
                "revocation".into(),
                "give `state_file` (one gateway) or `redis` (a fleet), not both".into(),
            );
            return None;
        }
        (Some(f), None) => Backend::File(resolve_path(base, f).into()),
        (None, Some(redis)) => {
            let timeout = redis.timeout.unwrap_or(Duration::from_millis(250));
            if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(10) {
                problem(
                    "revocation.redis.timeout".into(),
                    "between 1ms and 10s".into(),
                );
                ok = false;
            }
            Backend::Redis {
                url: redis.url.clone(),
                key_prefix: redis
                    .key_prefix
                    .clone()
                    .unwrap_or_else(|| "portcullis:".into()),
                timeout,
            }
        }
        (None, None) => {
            problem(
                "revocation".into(),
                "give `state_file` (so a restart keeps the list) or `redis` (shared by a fleet)"
                    .into(),
            );
            return None;
        }
    };
    let shared = matches!(backend, Backend::Redis { .. });
    let state_file = match &backend {
        Backend::File(p) => Some(p.clone()),
        _ => None,
    };
    let list = match Revocations::new(backend, max_entries) {
        Ok(l) => std::sync::Arc::new(l),
        Err(e) => {
            problem(
                if shared {
                    "revocation.redis.url".into()
                } else {
                    "revocation.state_file".into()
                },
                e,
            );
            return None;
        }
    };
    ok.then_some(RevocationSpec {
        list,
        admin_token,
        default_ttl,
        shared,
        state_file,
    })
}

/// A listener's client-certificate settings: the CA bundle must hold at least one
/// certificate; the depth is bounded (deep chains cost handshake CPU, catalogue X11).
fn client_certificates(
    t: &file::ListenerTls,
    base: &Path,
    at: &str,
    problem: &mut impl FnMut(String, String),
) -> Option<ClientCertSpec> {
    let Some(mode) = t.client_certificate else {
        if t.client_ca_file.is_some() || t.max_chain_depth.is_some() || t.client_crl_file.is_some()
        {
            problem(
                format!("{at}.client_certificate"),
                "set `required` or `optional` to ask clients for certificates".into(),
            );
        }
        return None;
    };
    let Some(ca_file) = t.client_ca_file.as_deref().map(|f| resolve_path(base, f)) else {
        problem(
            format!("{at}.client_ca_file"),
            "client certificates need the CA bundle they must chain to".into(),
        );
        return None;
    };
    match std::fs::read(&ca_file) {
        Err(e) => {
            problem(
                format!("{at}.client_ca_file"),
                format!("cannot read \"{ca_file}\": {e}"),
            );
            return None;
        }
        Ok(pem) => {
            if pingora::tls::x509::X509::stack_from_pem(&pem).map_or(true, |s| s.is_empty()) {
                problem(
                    format!("{at}.client_ca_file"),
                    format!("\"{ca_file}\" holds no PEM certificate"),
                );
                return None;
            }
        }
    }
    let max_chain_depth = t.max_chain_depth.unwrap_or(2);
    if !(1..=8).contains(&max_chain_depth) {
        problem(format!("{at}.max_chain_depth"), "between 1 and 8".into());
        return None;
    }
    let crl_file = t.client_crl_file.as_deref().map(|f| resolve_path(base, f));
    if let Some(path) = &crl_file {
        if let Err(e) = crate::auth::crl::Crls::load(std::path::Path::new(path), &ca_file) {
            problem(format!("{at}.client_crl_file"), e);
            return None;
        }
    }
    Some(ClientCertSpec {
        required: mode == file::ClientCertificateMode::Required,
        ca_file,
        max_chain_depth,
        crl_file,
    })
}

/// The `request_signing` section.
fn signing(
    r: &file::RequestSigningSection,
    base: &Path,
    tiers: &[String],
    problem: &mut impl FnMut(String, String),
) -> Option<SigningSpec> {
    use crate::auth::http_sig::{SignatureRules, SigningKeys, DEFAULT_WINDOW};
    let mut ok = true;
    let path = std::path::PathBuf::from(resolve_path(base, &r.keys_file));
    let keys = match SigningKeys::load(path.clone(), tiers.to_vec()) {
        Ok(k) => Some(std::sync::Arc::new(k)),
        Err(problems) => {
            for p in problems {
                problem(format!("request_signing.keys_file ({})", path.display()), p);
            }
            None
        }
    };
    let window = r.window.map_or(DEFAULT_WINDOW, |w| w.as_secs());
    if !(1..=3600).contains(&window) {
        problem("request_signing.window".into(), "between 1s and 1h".into());
        ok = false;
    }
    let mut rules = SignatureRules {
        window,
        ..SignatureRules::default()
    };
    if let Some(list) = &r.components {
        for (i, c) in list.iter().enumerate() {
            if let Err(e) = SignatureRules::validate_component(c) {
                problem(format!("request_signing.components[{i}]"), e);
                ok = false;
            }
        }
        for must in ["@method", "@path"] {
            if !list.iter().any(|c| c == must) {
                problem(
                    "request_signing.components".into(),
                    format!("must include `{must}`: a signature that does not bind it could be replayed against another request"),
                );
                ok = false;
            }
        }
        rules.components = list.clone();
    }
    let nonces = match &r.nonces.redis {
        None => {
            let max = r.nonces.max_entries.unwrap_or(1_000_000);
            if max == 0 {
                problem(
                    "request_signing.nonces.max_entries".into(),
                    "at least 1".into(),
                );
                ok = false;
            }
            crate::auth::nonces::NonceStore::Memory(crate::auth::nonces::NonceCache::new(max))
        }
        Some(redis) => {
            let timeout = redis.timeout.unwrap_or(Duration::from_millis(100));
            match crate::redis_conn::LazyConnection::new(&redis.url, timeout) {
                Ok(conn) => crate::auth::nonces::NonceStore::Redis {
                    conn: Box::new(conn),
                    prefix: redis
                        .key_prefix
                        .clone()
                        .unwrap_or_else(|| "portcullis:".into()),
                },
                Err(e) => {
                    problem("request_signing.nonces.redis.url".into(), e);
                    return None;
                }
            }
        }
    };
    let keys = keys?;
    ok.then_some(SigningSpec {
        keys,
        rules,
        nonces,
    })
}

/// The certificate and key a pool presents to its backends; `Err(())` after reporting.
fn upstream_client_cert(
    t: &file::UpstreamTls,
    base: &Path,
    at: &str,
    problem: &mut impl FnMut(String, String),
) -> Result<Option<std::sync::Arc<pingora::utils::tls::CertKey>>, ()> {
    use pingora::tls::pkey::PKey;
    use pingora::tls::x509::X509;
    let (cert, key) = match (&t.client_certificate, &t.client_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (resolve_path(base, c), resolve_path(base, k)),
        _ => {
            problem(
                format!("{at}.client_certificate"),
                "give both `client_certificate` and `client_key`".into(),
            );
            return Err(());
        }
    };
    let certs = std::fs::read(&cert)
        .map_err(|e| format!("cannot read \"{cert}\": {e}"))
        .and_then(|pem| {
            X509::stack_from_pem(&pem)
                .map_err(|e| format!("\"{cert}\" holds no PEM certificate: {e}"))
        })
        .and_then(|c| {
            if c.is_empty() {
                Err(format!("\"{cert}\" holds no PEM certificate"))
            } else {
                Ok(c)
            }
        });
    let certs = certs.map_err(|m| problem(format!("{at}.client_certificate"), m))?;
    let pkey = std::fs::read(&key)
        .map_err(|e| format!("cannot read \"{key}\": {e}"))
        .and_then(|pem| {
            PKey::private_key_from_pem(&pem)
                .map_err(|_| format!("\"{key}\" holds no PEM private key"))
        })
        .map_err(|m| problem(format!("{at}.client_key"), m))?;
    let matches = certs[0]
        .public_key()
        .is_ok_and(|public| public.public_eq(&pkey));
    if !matches {
        problem(
            format!("{at}.client_key"),
            format!("does not belong to the certificate in \"{cert}\""),
        );
        return Err(());
    }
    Ok(Some(std::sync::Arc::new(
        pingora::utils::tls::CertKey::new(certs, pkey),
    )))
}

/// The `client_certificates` section: which certificate value names the caller, how the
/// facts are forwarded, and the consumers certificate identities map to.
fn client_cert_policy(
    c: &file::ClientCertificatesSection,
    tiers: &[String],
    problem: &mut impl FnMut(String, String),
) -> crate::auth::mtls::ClientCertPolicy {
    use crate::auth::mtls::{ClientCertPolicy, IdentitySource};
    let mut policy = ClientCertPolicy {
        source: c.identity.unwrap_or(IdentitySource::SanUri),
        forward: c.forward.unwrap_or_default(),
        ..ClientCertPolicy::default()
    };
    for (i, e) in c.consumers.iter().enumerate() {
        let at = format!("client_certificates.consumers[{i}]");
        if e.identity.is_empty() || e.identity.len() > 1024 || e.identity.contains(char::is_control)
        {
            problem(
                format!("{at}.identity"),
                "a certificate identity, e.g. spiffe://acme/billing".into(),
            );
            continue;
        }
        if !crate::auth::valid_name(&e.consumer) {
            problem(
                format!("{at}.consumer"),
                "letters, digits and - _ . : @ only, at most 128".into(),
            );
            continue;
        }
        if let Some(t) = &e.tier {
            if !tiers.iter().any(|n| n == t) {
                problem(
                    format!("{at}.tier"),
                    format!("\"{t}\" is not a tier of rate_limits.tiers"),
                );
                continue;
            }
        }
        let mut bad = false;
        if e.tenant
            .as_deref()
            .is_some_and(|t| !policies::valid_value(t))
        {
            problem(
                format!("{at}.tenant"),
                "a non-empty name without spaces, commas or control characters".into(),
            );
            bad = true;
        }
        for (key, values) in [
            ("roles", &e.roles),
            ("scopes", &e.scopes),
            ("permissions", &e.permissions),
        ] {
            for (j, v) in values.iter().enumerate() {
                if !policies::valid_value(v) {
                    problem(
                        format!("{at}.{key}[{j}]"),
                        "a non-empty name without spaces, commas or control characters".into(),
                    );
                    bad = true;
                }
            }
        }
        if bad {
            continue;
        }
        let identity = crate::auth::Identity {
            method: "mtls",
            provider: "mtls".into(),
            subject: e.identity.clone(),
            client_id: Some(e.consumer.clone()),
            tenant: e.tenant.clone(),
            roles: e.roles.clone(),
            scopes: e.scopes.clone(),
            permissions: e.permissions.clone(),
            tier: e.tier.clone(),
            ..crate::auth::Identity::default()
        };
        if policy
            .consumers
            .insert(e.identity.clone(), std::sync::Arc::new(identity))
            .is_some()
        {
            problem(
                format!("{at}.identity"),
                format!("\"{}\" is listed twice", e.identity),
            );
        }
    }
    policy
}

fn same_match(a: &RouteSpec, b: &RouteSpec) -> bool {
    let mut am: Vec<_> = a.methods.iter().map(|m| m.as_str()).collect();
    let mut bm: Vec<_> = b.methods.iter().map(|m| m.as_str()).collect();
    am.sort_unstable();
    bm.sort_unstable();
    a.host == b.host && a.path == b.path && am == bm
}

fn compile_server(
    s: &file::ServerSection,
    problem: &mut impl FnMut(String, String),
) -> ServerSettings {
    let threads = s.threads.unwrap_or(2);
    if threads == 0 || threads > 1024 {
        problem("server.threads".into(), "must be between 1 and 1024".into());
    }
    let dir = default_runtime_dir();
    let pid_file = s
        .pid_file
        .clone()
        .unwrap_or_else(|| dir.join("portcullis.pid").display().to_string());
    let upgrade_sock = s
        .upgrade_sock
        .clone()
        .unwrap_or_else(|| dir.join("upgrade.sock").display().to_string());
    for (key, v) in [("pid_file", &pid_file), ("upgrade_sock", &upgrade_sock)] {
        if !Path::new(v).is_absolute() {
            problem(format!("server.{key}"), "must be an absolute path".into());
        }
    }
    ServerSettings {
        threads,
        work_stealing: s.work_stealing.unwrap_or(true),
        pid_file,
        upgrade_sock,
        error_log: s.error_log.clone(),
        grace_period: s.grace_period.unwrap_or(Duration::from_secs(5)),
        graceful_shutdown_timeout: s
            .graceful_shutdown_timeout
            .unwrap_or(Duration::from_secs(10)),
    }
}

/// Where the pid file and upgrade socket go when the file does not say: systemd's
/// `RuntimeDirectory` when run as a service, else the user's own runtime directory, else a
/// per-user directory under the home directory. Never a shared `/tmp` path.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several directories separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        if !d.is_empty() {
            return PathBuf::from(d).join("portcullis");
        }
    }
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".local/state/portcullis"),
        _ => std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join("run"),
    }
}

fn compile_upstream(
    name: &str,
    u: &file::UpstreamSection,
    at: &str,
    base: &Path,
    problem: &mut impl FnMut(String, String),
) -> Option<UpstreamSpec> {
    let mut ok = true;
    if u.backends.is_empty() {
        problem(
            format!("{at}.backends"),
            "at least one backend is required".into(),
        );
        ok = false;
    }
    let mut backends = Vec::new();
    for (i, b) in u.backends.iter().enumerate() {
        let (addr, weight) = match b {
            BackendEntry::Address(a) => (a, 1),
            BackendEntry::Weighted(w) => (&w.address, w.weight),
        };
        let key = format!("{at}.backends[{i}]");
        if weight == 0 || weight > 1000 {
            problem(format!("{key}.weight"), "must be between 1 and 1000".into());
            ok = false;
        }
        match resolve(addr) {
            Ok(sa) => {
                if backends.iter().any(|(o, _)| *o == sa) {
                    problem(key, format!("{sa} is listed twice"));
                    ok = false;
                } else {
                    backends.push((sa, weight));
                }
            }
            Err(msg) => {
                problem(key, msg);
                ok = false;
            }
        }
    }
    let hash_key = match (&u.selection, &u.hash_key) {
        (Selection::ConsistentHash, None) => {
            problem(
                format!("{at}.hash_key"),
                "consistent_hash needs a hash_key (`header: NAME` or `client_address`)".into(),
            );
            ok = false;
            HashKey::None
        }
        (
            Selection::ConsistentHash,
            Some(HashKeySection::Named(file::NamedHashKey::ClientAddress)),
        ) => HashKey::ClientAddress,
        (Selection::ConsistentHash, Some(HashKeySection::Header(h))) => {
            let h = &h.header;
            match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => HashKey::Header(name),
                Err(_) => {
                    problem(
                        format!("{at}.hash_key.header"),
                        format!("\"{h}\" is not a header name"),
                    );
                    ok = false;
                    HashKey::None
                }
            }
        }
        (_, Some(_)) => {
            problem(
                format!("{at}.hash_key"),
                "only used with `selection: consistent_hash`".into(),
            );
            ok = false;
            HashKey::None
        }
        (_, None) => HashKey::None,
    };
    let health_check = u.health_check.as_ref().map(|h| {
        let hat = format!("{at}.health_check");
        if h.kind == HealthCheckKind::Tcp
            && (h.path.is_some() || h.host.is_some() || h.expected_status.is_some())
        {
            problem(
                hat.clone(),
                "`path`, `host` and `expected_status` need `type: http`".into(),
            );
            ok = false;
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            problem(
                format!("{hat}.path"),
                "must start with `/` and hold no spaces or control characters".into(),
            );
            ok = false;
        }
        let expected_status = h.expected_status.unwrap_or(200);
        if !(100..=599).contains(&expected_status) {
            problem(
                format!("{hat}.expected_status"),
                "must be an HTTP status (100-599)".into(),
            );
            ok = false;
        }
        let interval = h.interval.unwrap_or(Duration::from_secs(5));
        let timeout = h.timeout.unwrap_or(Duration::from_secs(1));
        for (key, v) in [("interval", interval), ("timeout", timeout)] {
            if v < Duration::from_millis(10) {
                problem(format!("{hat}.{key}"), "must be at least 10ms".into());
                ok = false;
            }
        }
        let healthy_threshold = h.healthy_threshold.unwrap_or(1);
        let unhealthy_threshold = h.unhealthy_threshold.unwrap_or(1);
        for (key, v) in [
            ("healthy_threshold", healthy_threshold),
            ("unhealthy_threshold", unhealthy_threshold),
        ] {
            if v == 0 || v > 100 {
                problem(format!("{hat}.{key}"), "must be between 1 and 100".into());
                ok = false;
            }
        }
        HealthCheckSpec {
            kind: h.kind,
            path,
            host: h.host.clone(),
            expected_status,
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
        }
    });
    let mut timeouts = DEFAULT_TIMEOUTS;
    for (key, v, slot) in [
        ("connect_timeout", u.connect_timeout, &mut timeouts.connect),
        ("read_timeout", u.read_timeout, &mut timeouts.read),
        ("write_timeout", u.write_timeout, &mut timeouts.write),
        ("idle_timeout", u.idle_timeout, &mut timeouts.idle),
    ] {
        if let Some(v) = v {
            if v.is_zero() {
                problem(format!("{at}.{key}"), "must be above zero".into());
                ok = false;
            }
            *slot = v;
        }
    }
    let retries = u.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        problem(format!("{at}.retries"), format!("at most {MAX_RETRIES}"));
        ok = false;
    }
    let tls = u.tls.as_ref().map(|t| {
        if t.sni.is_empty() {
            problem(format!("{at}.tls.sni"), "must not be empty".into());
            ok = false;
        }
        let ca = t.ca_file.as_ref().and_then(|path| {
            let path = &resolve_path(base, path);
            let loaded = std::fs::read(path)
                .map_err(|e| format!("cannot read \"{path}\": {e}"))
                .and_then(|pem| {
                    pingora::tls::x509::X509::stack_from_pem(&pem)
                        .map_err(|e| format!("\"{path}\" holds no PEM certificates: {e}"))
                });
            match loaded {
                Ok(certs) if !certs.is_empty() => {
                    Some(std::sync::Arc::new(certs.into_boxed_slice()))
                }
                Ok(_) => {
                    problem(
                        format!("{at}.tls.ca_file"),
                        format!("\"{path}\" holds no certificates"),
                    );
                    ok = false;
                    None
                }
                Err(msg) => {
                    problem(format!("{at}.tls.ca_file"), msg);
                    ok = false;
                    None
                }
            }
        });
        let client_cert_key = upstream_client_cert(t, base, &format!("{at}.tls"), problem);
        ok &= client_cert_key.is_ok();
        TlsSpec {
            sni: t.sni.clone(),
            verify: t.verify,
            ca,
            client_cert_key: client_cert_key.ok().flatten(),
        }
    });
    let assertion = u.identity_assertion.as_ref().and_then(|a| {
        let loaded = assertion(name, a, &format!("{at}.identity_assertion"), base, problem);
        ok &= loaded.is_some();
        loaded
    });
    ok.then(|| UpstreamSpec {
        name: name.to_string(),
        backends,
        selection: u.selection,
        hash_key,
        health_check,
        timeouts,
        retries,
        tls,
        assertion,
    })
}

/// Default header of the identity assertion (inside the `X-Identity-*` namespace).
pub const ASSERTION_HEADER: &str = "x-identity-assertion";

fn assertion(
    upstream: &str,
    a: &file::AssertionSection,
    at: &str,
    base: &Path,
    problem: &mut impl FnMut(String, String),
) -> Option<std::sync::Arc<Assertion>> {
    let header = match http::HeaderName::from_bytes(
        a.header.as_deref().unwrap_or(ASSERTION_HEADER).as_bytes(),
    ) {
        Ok(h) => h,
        Err(_) => {
            problem(format!("{at}.header"), "not a header name".into());
            return None;
        }
    };
    let ttl = a.ttl.unwrap_or(crate::assertion::DEFAULT_TTL);
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(3600) {
        problem(format!("{at}.ttl"), "between 1s and 1h".into());
        return None;
    }
    let settings = crate::assertion::AssertionSettings {
        key_file: resolve_path(base, &a.key_file).into(),
        kid: a.kid.clone(),
        issuer: a.issuer.clone().unwrap_or_else(|| "portcullis".into()),
        audience: Some(a.audience.clone().unwrap_or_else(|| upstream.to_string())),
        ttl,
        previous_public_keys: a
            .previous_keys
            .iter()
            .map(|k| (k.kid.clone(), resolve_path(base, &k.key_file).into()))
            .collect(),
    };
    match crate::assertion::AssertionSigner::load(&settings) {
        Ok(signer) => Some(std::sync::Arc::new(Assertion { signer, header })),
        Err(e) => {
            problem(at.to_string(), e);
            None
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if !addr.contains(':') {
        return Err(format!("\"{addr}\" needs a port (host:port)"));
    }
    match addr.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("\"{addr}\" resolves to no address")),
        Err(e) => Err(format!("\"{addr}\" cannot be resolved: {e}")),
    }
}

fn parse_socket_addr(
    s: &str,
    at: &str,
    problem: &mut impl FnMut(String, String),
) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problem(
                at.to_string(),
                format!("\"{s}\" is not an IP:port address (e.g. 127.0.0.1:8080 or [::1]:8080)"),
            );
            None
        }
    }
}

fn check_readable(path: &str, at: &str, problem: &mut impl FnMut(String, String)) {
    if let Err(e) = std::fs::File::open(path) {
        problem(at.to_string(), format!("cannot read \"{path}\": {e}"));
    }
}

fn check_route_path(p: &str, at: &str, problem: &mut impl FnMut(String, String)) -> bool {
    let ok = p.starts_with('/')
        && !p.contains('?')
        && !p.contains('#')
        && p.bytes().all(|b| b > b' ' && b != 0x7f);
    if !ok {
        problem(
            at.to_string(),
            format!("\"{p}\" must start with `/` and hold no query, fragment, spaces or control characters"),
        );
    }
    ok
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn api_keys(
    a: &file::ApiKeysSection,
    base: &Path,
    tiers: Vec<String>,
    problem: &mut impl FnMut(String, String),
) -> Option<std::sync::Arc<crate::auth::api_key::ApiKeys>> {
    use crate::auth::api_key::{ApiKeys, Environment, Hasher};
    let mut ok = true;
    let mut headers = Vec::new();
    let names = a
        .headers
        .clone()
        .unwrap_or_else(|| vec!["X-API-Key".into()]);
    if names.is_empty() && a.query_param.is_none() {
        problem(
            "api_keys.headers".into(),
            "list at least one header (or set query_param)".into(),
        );
        ok = false;
    }
    for (i, n) in names.iter().enumerate() {
        match http::HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) if h == http::header::AUTHORIZATION || h == http::header::COOKIE => {
                problem(
                    format!("api_keys.headers[{i}]"),
                    format!("{n} is not a key header (it carries other credentials)"),
                );
                ok = false;
            }
            Ok(h) => headers.push(h),
            Err(_) => {
                problem(format!("api_keys.headers[{i}]"), "not a header name".into());
                ok = false;
            }
        }
    }
    if let Some(q) = &a.query_param {
        if q.is_empty()
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problem(
                "api_keys.query_param".into(),
                "letters, digits, `_` and `-`".into(),
            );
            ok = false;
        }
    }
    let hasher = Hasher::from_pepper_file(
        a.pepper_file
            .as_ref()
            .map(|f| std::path::PathBuf::from(resolve_path(base, f)))
            .as_deref(),
    )
    .map_err(|e| problem("api_keys.pepper_file".into(), e))
    .ok();
    ok &= hasher.is_some();
    if !ok {
        return None;
    }
    let path = std::path::PathBuf::from(resolve_path(base, &a.consumers_file));
    match ApiKeys::load(
        path.clone(),
        a.environment.unwrap_or(Environment::Live),
        headers,
        a.query_param.clone(),
        hasher?,
        tiers,
    ) {
        Ok(k) => Some(std::sync::Arc::new(k)),
        Err(problems) => {
            for p in problems {
                problem(format!("api_keys.consumers_file ({})", path.display()), p);
            }
            None
        }
    }
}
