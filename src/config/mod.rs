//! Configuration: the YAML file (`file`), checked and compiled into the plain runtime
//! settings below. Every problem found is reported with the path of the offending key, e.g.
//! `routes[2].upstream: unknown upstream "userz"`, and all of them are reported at once.

pub mod file;
pub mod limits;
mod policies;
mod providers;

use crate::assertion::{self, Assertion, AssertionSettings, AssertionSigner};
use crate::auth::api_key::{ApiKeys, Environment, Hasher};
use crate::auth::http_sig::{SignatureRules, SigningKeys, DEFAULT_WINDOW};
use crate::auth::mtls::{CertIdentities, IdentitySource};
use crate::auth::provider::Provider;
use crate::auth::{revocation, Identity};
use crate::forward::IdentityNamespace;
use crate::policy::networks::Cidr;
use crate::ratelimit::LimitSettings;
use crate::routing::{PathMatch, Route};
use crate::upstream::{
    HashKey, HealthCheckKind, HealthCheckSpec, PoolSpec, Selection, TlsSpec, DEFAULT_RETRIES,
    DEFAULT_TIMEOUTS, MAX_RETRIES,
};
use file::{BackendEntry, ConfigFile, HashKeySection};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
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

impl std::error::Error for Problems {}

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
        if IdentityNamespace::is_injected(name) {
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
    let identity_namespace = IdentityNamespace::new(&ih.prefixes, &owned_names, &ih.allow);

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
    let mut routes: Vec<Route> = Vec::new();
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
            let spec = Route {
                allowed: Route::allowed_counter(&r.name, auth.mode),
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
    limits::backend(&mut rate_limits, file.rate_limits.as_ref(), &mut problem);
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
        match t.parse::<Cidr>() {
            Ok(c) => trusted_proxies.push(c),
            Err(e) => problem(format!("trusted_proxies[{i}]"), e),
        }
    }

    let client_certs = Arc::new(cert_identities(
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
        .and_then(|r| signing(r, base, &tier_names, &mut problem));
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

fn revocation(
    r: &file::RevocationSection,
    base: &Path,
    problem: &mut impl FnMut(String, String),
) -> Option<RevocationSettings> {
    use crate::auth::revocation::Backend;
    let mut ok = true;
    let admin_token = match &r.admin_token_file {
        None => None,
        Some(f) => {
            let path = resolve_path(base, f);
            match crate::auth::read_secret_file(Path::new(&path)) {
                Ok(t) if t.len() >= 16 => Some(Arc::from(t)),
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
    ok.then_some(RevocationSettings {
        backend,
        max_entries,
        admin: RevocationAdmin {
            token: admin_token,
            default_ttl,
        },
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
) -> Option<SigningSettings> {
    let mut ok = true;
    let path = std::path::PathBuf::from(resolve_path(base, &r.keys_file));
    let keys = match SigningKeys::load(path.clone(), tiers.to_vec()) {
        Ok(k) => Some(Arc::new(k)),
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
            let max_entries = r.nonces.max_entries.unwrap_or(1_000_000);
            if max_entries == 0 {
                problem(
                    "request_signing.nonces.max_entries".into(),
                    "at least 1".into(),
                );
                ok = false;
            }
            NonceSettings::Memory { max_entries }
        }
        Some(redis) => NonceSettings::Redis {
            url: redis.url.clone(),
            timeout: redis.timeout.unwrap_or(Duration::from_millis(100)),
            key_prefix: redis
                .key_prefix
                .clone()
                .unwrap_or_else(|| "portcullis:".into()),
        },
    };
    let keys = keys?;
    ok.then_some(SigningSettings {
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
) -> Result<Option<Arc<pingora::utils::tls::CertKey>>, ()> {
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
    Ok(Some(Arc::new(pingora::utils::tls::CertKey::new(
        certs, pkey,
    ))))
}

/// The `client_certificates` section: which certificate value names the caller, how the
/// facts are forwarded, and the consumers certificate identities map to.
fn cert_identities(
    c: &file::ClientCertificatesSection,
    tiers: &[String],
    problem: &mut impl FnMut(String, String),
) -> CertIdentities {
    let mut policy = CertIdentities {
        source: c.identity.unwrap_or(IdentitySource::SanUri),
        forward: c.forward.unwrap_or_default(),
        ..CertIdentities::default()
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
        let identity = Identity {
            method: "mtls",
            provider: "mtls".into(),
            subject: e.identity.clone(),
            client_id: Some(e.consumer.clone()),
            tenant: e.tenant.clone(),
            roles: e.roles.clone(),
            scopes: e.scopes.clone(),
            permissions: e.permissions.clone(),
            tier: e.tier.clone(),
            ..Identity::default()
        };
        if policy
            .consumers
            .insert(e.identity.clone(), Arc::new(identity))
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

fn same_match(a: &Route, b: &Route) -> bool {
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
) -> Option<PoolSpec> {
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
    let selection = match u.selection {
        file::Selection::RoundRobin => Selection::RoundRobin,
        file::Selection::Random => Selection::Random,
        file::Selection::ConsistentHash => Selection::ConsistentHash,
    };
    let hash_key = match (&selection, &u.hash_key) {
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
        let kind = match h.kind {
            file::HealthCheckKind::Tcp => HealthCheckKind::Tcp,
            file::HealthCheckKind::Http => HealthCheckKind::Http,
        };
        if kind == HealthCheckKind::Tcp
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
            kind,
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
                Ok(certs) if !certs.is_empty() => Some(Arc::new(certs.into_boxed_slice())),
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
    ok.then(|| PoolSpec {
        name: name.to_string(),
        backends,
        selection,
        hash_key,
        health_check,
        timeouts,
        retries,
        tls,
        assertion,
    })
}

fn assertion(
    upstream: &str,
    a: &file::AssertionSection,
    at: &str,
    base: &Path,
    problem: &mut impl FnMut(String, String),
) -> Option<Arc<Assertion>> {
    let header = match http::HeaderName::from_bytes(
        a.header
            .as_deref()
            .unwrap_or(assertion::DEFAULT_HEADER)
            .as_bytes(),
    ) {
        Ok(h) => h,
        Err(_) => {
            problem(format!("{at}.header"), "not a header name".into());
            return None;
        }
    };
    let ttl = a.ttl.unwrap_or(assertion::DEFAULT_TTL);
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(3600) {
        problem(format!("{at}.ttl"), "between 1s and 1h".into());
        return None;
    }
    let settings = AssertionSettings {
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
    match AssertionSigner::load(&settings) {
        Ok(signer) => Some(Arc::new(Assertion { signer, header })),
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
) -> Option<Arc<ApiKeys>> {
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
        Ok(k) => Some(Arc::new(k)),
        Err(problems) => {
            for p in problems {
                problem(format!("api_keys.consumers_file ({})", path.display()), p);
            }
            None
        }
    }
}
