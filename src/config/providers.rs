//! `identity_providers`: checked and compiled into `auth::provider::Provider`s, keys loaded.

use super::check::Check;
use super::file::{
    BreakerSection, ClaimsSection, ClientAuthSection, IntrospectionSection, KeySourceSection,
    ProviderSection,
};
use super::{resolve_path, valid_name};
use crate::auth::fetch::allowed_uri;
use crate::auth::introspection::{ClientAuth, Endpoint, Introspector, Settings};
use crate::auth::jwks::{JwksSettings, RemoteKeys};
use crate::auth::jwt::{KeySet, ProviderRules, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_BYTES};
use crate::auth::provider::{KeySource, Provider, TokenCache};
use crate::auth::{read_secret_file, ClaimMap};
use crate::forward::IdentityNamespace;
use crate::metrics::ProviderSeries;
use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::{env, fs};

/// Largest accepted `max_token_bytes`: a token rides in one header.
const MAX_TOKEN_BYTES_LIMIT: usize = 64 * 1024;

/// The providers that compiled, and where each name's provider is in `list`.
pub(super) struct Providers {
    pub(super) list: Vec<Provider>,
    index: BTreeMap<String, usize>,
}

impl Providers {
    /// The index and provider called `name`, when it compiled.
    pub(super) fn get(&self, name: &str) -> Option<(usize, &Provider)> {
        let i = *self.index.get(name)?;
        Some((i, &self.list[i]))
    }
}

/// The `identity_providers` section.
pub(super) fn compile_all(
    sections: &BTreeMap<String, ProviderSection>,
    base: &Path,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Providers {
    let mut out = Providers {
        list: Vec::new(),
        index: BTreeMap::new(),
    };
    let mut c = c.at("identity_providers");
    for (name, p) in sections {
        if !valid_name(name) {
            c.problem(name, "names use only letters, digits, `-` and `_`");
        }
        // A bad name is reported, yet the provider is still compiled and can be named.
        if let Some(provider) = compile(name, p, base, namespace, &mut c.at(name)) {
            out.index.insert(name.clone(), out.list.len());
            out.list.push(provider);
        }
    }
    out
}

/// One provider, its keys loaded; `None` when anything in it is wrong.
fn compile(
    name: &str,
    p: &ProviderSection,
    base: &Path,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Option<Provider> {
    let rules = rules(p, c);
    let has_keys = p.keys.is_some();
    let cache_ttl = p.cache.ttl.unwrap_or(Duration::from_secs(300));
    c.range(
        "cache.ttl",
        cache_ttl,
        ..=Duration::from_secs(3600),
        "at most 1h",
    );
    let cache = TokenCache::new(p.cache.capacity.unwrap_or(100_000), cache_ttl.as_secs());
    let keys = match &p.keys {
        None => Some(KeySource::None),
        Some(k) => keys(name, p, k, &rules.algorithms, &cache, base, c),
    };
    let claims = claim_map(&p.claims, namespace, &mut c.at("claims"));
    let introspection = match (&p.introspection, &claims) {
        (Some(section), Some(claims)) => {
            let mut claims = claims.clone();
            // Client-credentials tokens often have no `sub`: the standard members stand in.
            if p.claims.subject.is_none() {
                claims.subject_fallback = vec!["username".into(), "client_id".into()];
            }
            if p.claims.client_id.is_none() {
                claims.client_id = Some("client_id".into());
            }
            introspector(
                name,
                p,
                section,
                claims,
                &discovery_uri(&p.issuer),
                base,
                &mut c.at("introspection"),
            )
            .map(Some)
        }
        (Some(_), None) => None,
        (None, _) => Some(None),
    };
    if p.introspection.as_ref().is_some_and(|i| i.introspect_jwts) && !has_keys {
        c.problem(
            "introspection.introspect_jwts",
            "this provider has no `keys` to verify JWTs with",
        );
    }
    match (c.ok(), keys, claims, introspection) {
        (true, Some(keys), Some(claims), Some(introspection)) => Some(Provider {
            name: name.to_string(),
            rules,
            keys,
            claims,
            cache,
            series: ProviderSeries::new(name),
            introspection,
        }),
        _ => None,
    }
}

/// What this provider's tokens must be: issuer, audiences, algorithms, age and size.
fn rules(p: &ProviderSection, c: &mut Check<'_>) -> ProviderRules {
    let mut algorithms = Vec::new();
    for (i, a) in p.algorithms.iter().enumerate() {
        match a.parse::<Algorithm>() {
            Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Ok(_) => c.index("algorithms", i).here(format!("{a} is listed twice")),
            Err(_) => c.index("algorithms", i).here(format!(
                "\"{a}\" is not a supported algorithm (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, HS256/384/512; never none)"
            )),
        }
    }
    let rules = ProviderRules {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        algorithms,
        leeway_secs: p
            .leeway
            .unwrap_or(Duration::from_secs(DEFAULT_LEEWAY_SECS))
            .as_secs(),
        max_token_age_secs: p.max_token_age.map(|d| d.as_secs()),
        require_exp: p.require_exp.unwrap_or(true),
        typ: p.typ.clone(),
        max_token_bytes: p.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES),
        key_only: false,
    };
    if p.keys.is_some() {
        if let Err(msg) = rules.check() {
            c.here(msg);
        }
    } else {
        if p.introspection.is_none() {
            c.here("give `keys` (to verify its JWTs) or `introspection` (for its opaque tokens), or both");
        }
        if !p.algorithms.is_empty() {
            c.problem(
                "algorithms",
                "algorithms verify JWTs with `keys`; this provider has none",
            );
        }
        if rules.issuer.is_empty() {
            c.here("issuer must not be empty");
        }
        if rules.audiences.is_empty() {
            c.here("at least one audience is required");
        }
    }
    c.range("leeway", rules.leeway_secs, ..=300, "at most 5m");
    c.range(
        "max_token_bytes",
        rules.max_token_bytes,
        256..=MAX_TOKEN_BYTES_LIMIT,
        &format!("between 256 and {MAX_TOKEN_BYTES_LIMIT}"),
    );
    rules
}

/// Where the provider's keys come from (`c` stands at the provider): exactly one of a PEM
/// or JWKS file, an HMAC secret, or a JWKS URI (given, or found by OIDC discovery).
fn keys(
    name: &str,
    p: &ProviderSection,
    k: &KeySourceSection,
    algorithms: &[Algorithm],
    cache: &TokenCache,
    base: &Path,
    c: &mut Check<'_>,
) -> Option<KeySource> {
    let sources = [
        k.pem_file.is_some(),
        k.jwks_file.is_some(),
        k.jwks_uri.is_some(),
        k.oidc_discovery,
        k.hmac_secret_file.is_some(),
        k.hmac_secret_env.is_some(),
    ];
    let discovery = k.oidc_discovery.then(|| discovery_uri(&p.issuer));
    if sources.iter().filter(|s| **s).count() != 1 {
        c.problem(
            "keys",
            "give exactly one of pem_file, jwks_file, jwks_uri, oidc_discovery, hmac_secret_file, hmac_secret_env",
        );
        None
    } else if let Some(uri) = k.jwks_uri.as_ref().or(discovery.as_ref()) {
        remote_keys(name, p, k, uri, algorithms, cache, c)
    } else {
        load_keys(k, algorithms, base, &mut c.at("keys")).map(|k| KeySource::Static(Arc::new(k)))
    }
}

/// Where OIDC discovery finds the issuer's metadata.
fn discovery_uri(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The provider's introspection endpoint (RFC 7662) and its client; `None` when anything
/// in `introspection` is wrong.
fn introspector(
    name: &str,
    p: &ProviderSection,
    s: &IntrospectionSection,
    claims: ClaimMap,
    discovery_uri: &str,
    base: &Path,
    c: &mut Check<'_>,
) -> Option<Arc<Introspector>> {
    let endpoint = endpoint(s, discovery_uri, c)?;
    if s.client_id.is_empty() || s.client_id.chars().any(char::is_control) {
        c.problem("client_id", "a non-empty client id");
    }
    let secret = client_secret(s, base, c);
    if secret.as_deref().is_some_and(str::is_empty) {
        c.problem("client_secret_file", "the secret is empty");
    }
    let second = Duration::from_secs(1);
    let hour = Duration::from_secs(3600);
    let limits = CallLimits::compile(s.timeout, s.max_concurrent, &s.breaker, c);
    let ttl = s.cache.ttl.unwrap_or(Duration::from_secs(120));
    c.range("cache.ttl", ttl, second..=hour, "between 1s and 1h");
    let inactive_ttl = s.cache.inactive_ttl.unwrap_or(Duration::from_secs(10));
    c.range(
        "cache.inactive_ttl",
        inactive_ttl,
        second..=hour,
        "between 1s and 1h",
    );
    let capacity = s.cache.capacity.unwrap_or(100_000);
    if capacity == 0 {
        c.problem(
            "cache.capacity",
            "at least 1: without a cache every request would call the endpoint",
        );
    }
    let secret = secret?;
    if !c.ok() {
        return None;
    }
    let settings = Settings {
        endpoint,
        client_id: s.client_id.clone(),
        client_secret: secret,
        client_auth: match s.client_auth {
            None | Some(ClientAuthSection::ClientSecretBasic) => ClientAuth::Basic,
            Some(ClientAuthSection::ClientSecretPost) => ClientAuth::Post,
        },
        token_type_hint: match s.token_type_hint.as_deref() {
            None => Some("access_token".into()),
            Some("") => None,
            Some(h) => Some(h.to_string()),
        },
        timeout: limits.timeout,
        max_concurrent: limits.max_concurrent,
        cache_capacity: capacity,
        cache_ttl: ttl,
        inactive_ttl,
        breaker_failures: limits.breaker_failures,
        breaker_open_for: limits.breaker_open_for,
        introspect_jwts: s.introspect_jwts,
    };
    match Introspector::new(name, &p.issuer, p.audiences.clone(), claims, settings) {
        Ok(i) => Some(Arc::new(i)),
        Err(e) => {
            c.here(e);
            None
        }
    }
}

/// How the gateway calls a dependency (an introspection endpoint, a ForwardAuth service):
/// the timeout of a call, the calls in flight at most, and the breaker.
pub(super) struct CallLimits {
    pub(super) timeout: Duration,
    pub(super) max_concurrent: usize,
    pub(super) breaker_failures: u32,
    pub(super) breaker_open_for: Duration,
}

impl CallLimits {
    pub(super) fn compile(
        timeout: Option<Duration>,
        max_concurrent: Option<usize>,
        breaker: &BreakerSection,
        c: &mut Check<'_>,
    ) -> Self {
        let timeout = timeout.unwrap_or(Duration::from_secs(1));
        c.range(
            "timeout",
            timeout,
            Duration::from_millis(10)..=Duration::from_secs(30),
            "between 10ms and 30s",
        );
        let max_concurrent = max_concurrent.unwrap_or(64);
        c.range(
            "max_concurrent",
            max_concurrent,
            1..=10_000,
            "between 1 and 10000",
        );
        let breaker_failures = breaker.failures.unwrap_or(5);
        if breaker_failures == 0 {
            c.problem("breaker.failures", "at least 1");
        }
        let breaker_open_for = breaker.open_for.unwrap_or(Duration::from_secs(10));
        c.range(
            "breaker.open_for",
            breaker_open_for,
            Duration::from_millis(100)..=Duration::from_secs(600),
            "between 100ms and 10m",
        );
        Self {
            timeout,
            max_concurrent,
            breaker_failures,
            breaker_open_for,
        }
    }
}

/// Where tokens are introspected: a fixed endpoint, or the one discovery names.
fn endpoint(s: &IntrospectionSection, discovery_uri: &str, c: &mut Check<'_>) -> Option<Endpoint> {
    match (&s.endpoint, s.discovery) {
        (Some(uri), false) => {
            if !allowed_uri(uri) {
                c.problem(
                    "endpoint",
                    "must be https (plain http only to a loopback address)",
                );
            }
            Some(Endpoint::Fixed(uri.clone()))
        }
        (None, true) => {
            if !allowed_uri(discovery_uri) {
                c.problem(
                    "discovery",
                    "the issuer must be https (plain http only to a loopback address)",
                );
            }
            Some(Endpoint::Discovery(discovery_uri.to_string()))
        }
        _ => {
            c.here("give exactly one of `endpoint` or `discovery: true`");
            None
        }
    }
}

/// The introspection client's secret, from a file or the environment.
fn client_secret(s: &IntrospectionSection, base: &Path, c: &mut Check<'_>) -> Option<String> {
    match (&s.client_secret_file, &s.client_secret_env) {
        (Some(file), None) => {
            let path = resolve_path(base, file);
            read_secret_file(Path::new(&path))
                .and_then(|b| String::from_utf8(b).map_err(|_| format!("\"{path}\" is not UTF-8")))
                .map_err(|e| c.problem("client_secret_file", e))
                .ok()
        }
        (None, Some(var)) => env::var(var)
            .map_err(|_| {
                c.problem(
                    "client_secret_env",
                    format!("environment variable {var} is not set"),
                )
            })
            .ok(),
        _ => {
            c.here("give exactly one of client_secret_file or client_secret_env");
            None
        }
    }
}

/// Keys from a file or a secret (`c` stands at `keys`).
fn load_keys(
    k: &KeySourceSection,
    algorithms: &[Algorithm],
    base: &Path,
    c: &mut Check<'_>,
) -> Option<KeySet> {
    let hmac = algorithms
        .first()
        .is_some_and(|a| a.family() == AlgorithmFamily::Hmac);
    let wants_secret = k.hmac_secret_file.is_some() || k.hmac_secret_env.is_some();
    if hmac != wants_secret {
        c.here(if hmac {
            "HMAC algorithms need hmac_secret_file or hmac_secret_env"
        } else {
            "public-key algorithms need pem_file or jwks_file, not an HMAC secret"
        });
        return None;
    }
    let mut keys = KeySet::default();
    let kid = k.kid.as_deref();
    let file = |p: &String| resolve_path(base, p);
    let result = if let Some(path) = k.pem_file.as_ref().map(file).as_ref() {
        let families: Vec<AlgorithmFamily> = algorithms.iter().map(|a| a.family()).collect();
        match (fs::read(path), families.first()) {
            (Err(e), _) => Err(format!("cannot read \"{path}\": {e}")),
            (Ok(_), None) => Err("no algorithms".into()),
            (Ok(_), Some(f)) if families.iter().any(|x| x != f) => {
                Err("a single PEM key serves one key type; list algorithms of one family".into())
            }
            (Ok(pem), Some(f)) => keys
                .add_pem(kid, *f, &pem)
                .map_err(|e| format!("\"{path}\": {e}")),
        }
    } else if let Some(path) = k.jwks_file.as_ref().map(file).as_ref() {
        match fs::read(path) {
            Err(e) => Err(format!("cannot read \"{path}\": {e}")),
            Ok(bytes) => match KeySet::from_jwks(&bytes) {
                Ok((set, warnings)) => {
                    for w in warnings {
                        tracing::warn!(file = %path, "{w}");
                    }
                    if set.is_empty() {
                        Err(format!("\"{path}\" holds no usable key"))
                    } else {
                        keys = set;
                        Ok(())
                    }
                }
                Err(e) => Err(format!("\"{path}\": {e}")),
            },
        }
    } else {
        let secret = if let Some(path) = k.hmac_secret_file.as_ref().map(file).as_ref() {
            read_secret_file(Path::new(path))
        } else {
            let var = k.hmac_secret_env.clone().unwrap_or_default();
            env::var(&var)
                .map(String::into_bytes)
                .map_err(|_| format!("environment variable {var} is not set"))
        };
        secret.and_then(|s| keys.add_hmac_secret(kid, &s))
    };
    match result {
        Ok(()) => Some(keys),
        Err(msg) => {
            c.here(msg);
            None
        }
    }
}

/// Keys fetched from a JWKS URI (given, or found by OIDC discovery) and refreshed.
fn remote_keys(
    name: &str,
    p: &ProviderSection,
    k: &KeySourceSection,
    uri: &str,
    algorithms: &[Algorithm],
    cache: &TokenCache,
    c: &mut Check<'_>,
) -> Option<KeySource> {
    if algorithms
        .iter()
        .any(|a| a.family() == AlgorithmFamily::Hmac)
    {
        c.problem(
            "keys",
            "a JWKS never carries HMAC secrets; use hmac_secret_file",
        );
        return None;
    }
    if !allowed_uri(uri) {
        let (key, named) = if k.oidc_discovery {
            ("oidc_discovery", "issuer (for oidc_discovery)")
        } else {
            ("jwks_uri", "jwks_uri")
        };
        c.at("keys").problem(
            key,
            format!("the {named} must be https (plain http only to a loopback address)"),
        );
        return None;
    }
    let j = &p.jwks;
    let settings = JwksSettings {
        uri: uri.to_string(),
        discovery: k.oidc_discovery,
        refresh: j.refresh.unwrap_or(Duration::from_secs(300)),
        min_refresh: j.min_refresh.unwrap_or(Duration::from_secs(30)),
        max_refresh: j.max_refresh.unwrap_or(Duration::from_secs(3600)),
        cooldown: j.cooldown.unwrap_or(Duration::from_secs(10)),
        max_stale: j.max_stale.unwrap_or(Duration::from_secs(3600)),
        timeout: j.timeout.unwrap_or(Duration::from_secs(5)),
        max_bytes: j.max_bytes.unwrap_or(1024 * 1024),
    };
    let mut jwks = c.at("jwks");
    for (key, v) in [
        ("refresh", settings.refresh),
        ("min_refresh", settings.min_refresh),
        ("cooldown", settings.cooldown),
        ("timeout", settings.timeout),
    ] {
        jwks.range(
            key,
            v,
            Duration::from_millis(100)..,
            "must be at least 100ms",
        );
    }
    if settings.min_refresh > settings.max_refresh {
        jwks.problem("min_refresh", "must not exceed max_refresh");
    }
    jwks.range(
        "max_bytes",
        settings.max_bytes,
        1024..=16 * 1024 * 1024,
        "between 1024 and 16777216",
    );
    if !jwks.ok() {
        return None;
    }
    let cache = cache.clone();
    match RemoteKeys::new(name, settings, Box::new(move || cache.invalidate_all())) {
        Ok(r) => Some(KeySource::Remote(Arc::new(r))),
        Err(e) => {
            c.problem("keys", e);
            None
        }
    }
}

/// Which claims name the caller, and the claim headers (inside the identity namespace).
fn claim_map(
    claims: &ClaimsSection,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Option<ClaimMap> {
    let mut headers = Vec::new();
    for (name, path) in &claims.headers {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if namespace.contains(h.as_str()) => headers.push((h, path.clone())),
            Ok(_) => c.at("headers").problem(
                name,
                "claim headers must be in the identity namespace (X-User-..., X-Auth-...) so clients cannot forge them",
            ),
            Err(_) => c.at("headers").problem(name, "not a header name"),
        }
    }
    c.ok().then(|| ClaimMap {
        subject_fallback: Vec::new(),
        subject: claims.subject.clone().unwrap_or_else(|| "sub".into()),
        roles: claims.roles.clone(),
        scopes: claims.scopes.clone(),
        permissions: claims.permissions.clone(),
        tenant: claims.tenant.clone(),
        email: claims.email.clone(),
        client_id: claims.client_id.clone(),
        headers,
    })
}
