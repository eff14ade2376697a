//! `identity_providers`: checked and compiled into `auth::provider::Provider`s, keys loaded.

use super::file::{
    ClaimsSection, ClientAuthSection, IntrospectionSection, KeySourceSection, ProviderSection,
};
use crate::auth::introspection::{ClientAuth, Endpoint, Introspector, Settings};
use crate::auth::jwks::{JwksSettings, RemoteKeys};
use crate::auth::jwt::{KeySet, ProviderRules, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_BYTES};
use crate::auth::provider::{KeySource, Provider, TokenCache};
use crate::auth::ClaimMap;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use std::sync::Arc;
use std::time::Duration;

/// Largest accepted `max_token_bytes`: a token rides in one header.
const MAX_TOKEN_BYTES_LIMIT: usize = 64 * 1024;

pub(super) fn compile(
    name: &str,
    p: &ProviderSection,
    at: &str,
    base: &std::path::Path,
    namespace: &crate::forward::IdentityNamespace,
    problem: &mut impl FnMut(String, String),
) -> Option<Provider> {
    let mut ok = true;
    let mut fail = |path: String, msg: String| {
        problem(path, msg);
        false
    };
    let mut algorithms = Vec::new();
    for (i, a) in p.algorithms.iter().enumerate() {
        match a.parse::<Algorithm>() {
            Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Ok(_) => ok &= fail(format!("{at}.algorithms[{i}]"), format!("{a} is listed twice")),
            Err(_) => {
                ok &= fail(
                    format!("{at}.algorithms[{i}]"),
                    format!("\"{a}\" is not a supported algorithm (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, HS256/384/512; never none)"),
                )
            }
        }
    }
    let rules = ProviderRules {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        algorithms: algorithms.clone(),
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
    let has_keys = p.keys.is_some();
    if has_keys {
        if let Err(msg) = rules.check() {
            ok &= fail(at.to_string(), msg);
        }
    } else {
        if p.introspection.is_none() {
            ok &= fail(
                at.to_string(),
                "give `keys` (to verify its JWTs) or `introspection` (for its opaque tokens), or both".into(),
            );
        }
        if !p.algorithms.is_empty() {
            ok &= fail(
                format!("{at}.algorithms"),
                "algorithms verify JWTs with `keys`; this provider has none".into(),
            );
        }
        if rules.issuer.is_empty() {
            ok &= fail(at.to_string(), "issuer must not be empty".into());
        }
        if rules.audiences.is_empty() {
            ok &= fail(at.to_string(), "at least one audience is required".into());
        }
    }
    if rules.leeway_secs > 300 {
        ok &= fail(format!("{at}.leeway"), "at most 5m".into());
    }
    if rules.max_token_bytes < 256 || rules.max_token_bytes > MAX_TOKEN_BYTES_LIMIT {
        ok &= fail(
            format!("{at}.max_token_bytes"),
            format!("between 256 and {MAX_TOKEN_BYTES_LIMIT}"),
        );
    }
    let cache_ttl = p.cache.ttl.unwrap_or(Duration::from_secs(300));
    if cache_ttl > Duration::from_secs(3600) {
        ok &= fail(format!("{at}.cache.ttl"), "at most 1h".into());
    }
    let cache = TokenCache::new(p.cache.capacity.unwrap_or(100_000), cache_ttl.as_secs());
    let discovery_uri = |issuer: &str| {
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
    };
    let keys = match &p.keys {
        None => Some(KeySource::None),
        Some(k) => {
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
                fail(
                    format!("{at}.keys"),
                    "give exactly one of pem_file, jwks_file, jwks_uri, oidc_discovery, hmac_secret_file, hmac_secret_env".into(),
                );
                None
            } else if let Some(uri) = k.jwks_uri.as_ref().or(discovery.as_ref()) {
                remote_keys(name, p, k, uri, &algorithms, at, &cache, &mut fail)
            } else {
                load_keys(k, &algorithms, at, base, &mut fail)
                    .map(|k| KeySource::Static(Arc::new(k)))
            }
        }
    };
    let claims = claim_map(&p.claims, &format!("{at}.claims"), namespace, &mut fail);
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
            let at = format!("{at}.introspection");
            introspector(
                name,
                p,
                section,
                claims,
                &discovery_uri(&p.issuer),
                &at,
                base,
                &mut fail,
            )
            .map(Some)
        }
        (Some(_), None) => None,
        (None, _) => Some(None),
    };
    if p.introspection.as_ref().is_some_and(|i| i.introspect_jwts) && !has_keys {
        ok &= fail(
            format!("{at}.introspection.introspect_jwts"),
            "this provider has no `keys` to verify JWTs with".into(),
        );
    }
    match (ok, keys, claims, introspection) {
        (true, Some(keys), Some(claims), Some(introspection)) => Some(Provider {
            name: name.to_string(),
            rules,
            keys,
            claims,
            cache,
            series: crate::metrics::ProviderSeries::new(name),
            introspection,
        }),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn introspector(
    name: &str,
    p: &ProviderSection,
    s: &IntrospectionSection,
    claims: ClaimMap,
    discovery_uri: &str,
    at: &str,
    base: &std::path::Path,
    fail: &mut impl FnMut(String, String) -> bool,
) -> Option<Arc<Introspector>> {
    let mut ok = true;
    let endpoint = match (&s.endpoint, s.discovery) {
        (Some(uri), false) => {
            if !crate::auth::fetch::allowed_uri(uri) {
                ok &= fail(
                    format!("{at}.endpoint"),
                    "must be https (plain http only to a loopback address)".into(),
                );
            }
            Endpoint::Fixed(uri.clone())
        }
        (None, true) => {
            if !crate::auth::fetch::allowed_uri(discovery_uri) {
                ok &= fail(
                    format!("{at}.discovery"),
                    "the issuer must be https (plain http only to a loopback address)".into(),
                );
            }
            Endpoint::Discovery(discovery_uri.to_string())
        }
        _ => {
            fail(
                at.to_string(),
                "give exactly one of `endpoint` or `discovery: true`".into(),
            );
            return None;
        }
    };
    if s.client_id.is_empty() || s.client_id.chars().any(char::is_control) {
        ok &= fail(format!("{at}.client_id"), "a non-empty client id".into());
    }
    let secret = match (&s.client_secret_file, &s.client_secret_env) {
        (Some(file), None) => {
            let path = super::resolve_path(base, file);
            crate::auth::read_secret_file(std::path::Path::new(&path))
                .and_then(|b| String::from_utf8(b).map_err(|_| format!("\"{path}\" is not UTF-8")))
                .map_err(|e| fail(format!("{at}.client_secret_file"), e))
                .ok()
        }
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| {
                fail(
                    format!("{at}.client_secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })
            .ok(),
        _ => {
            fail(
                at.to_string(),
                "give exactly one of client_secret_file or client_secret_env".into(),
            );
            None
        }
    };
    if secret.as_deref().is_some_and(str::is_empty) {
        ok &= fail(
            format!("{at}.client_secret_file"),
            "the secret is empty".into(),
        );
    }
    let timeout = s.timeout.unwrap_or(Duration::from_secs(1));
    if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(30) {
        ok &= fail(format!("{at}.timeout"), "between 10ms and 30s".into());
    }
    let max_concurrent = s.max_concurrent.unwrap_or(64);
    if !(1..=10_000).contains(&max_concurrent) {
        ok &= fail(format!("{at}.max_concurrent"), "between 1 and 10000".into());
    }
    let ttl = s.cache.ttl.unwrap_or(Duration::from_secs(120));
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(3600) {
        ok &= fail(format!("{at}.cache.ttl"), "between 1s and 1h".into());
    }
    let inactive_ttl = s.cache.inactive_ttl.unwrap_or(Duration::from_secs(10));
    if inactive_ttl < Duration::from_secs(1) || inactive_ttl > Duration::from_secs(3600) {
        ok &= fail(
            format!("{at}.cache.inactive_ttl"),
            "between 1s and 1h".into(),
        );
    }
    let capacity = s.cache.capacity.unwrap_or(100_000);
    if capacity == 0 {
        ok &= fail(
            format!("{at}.cache.capacity"),
            "at least 1: without a cache every request would call the endpoint".into(),
        );
    }
    let failures = s.breaker.failures.unwrap_or(5);
    if failures == 0 {
        ok &= fail(format!("{at}.breaker.failures"), "at least 1".into());
    }
    let open_for = s.breaker.open_for.unwrap_or(Duration::from_secs(10));
    if open_for < Duration::from_millis(100) || open_for > Duration::from_secs(600) {
        ok &= fail(
            format!("{at}.breaker.open_for"),
            "between 100ms and 10m".into(),
        );
    }
    let secret = secret?;
    if !ok {
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
        timeout,
        max_concurrent,
        cache_capacity: capacity,
        cache_ttl: ttl,
        inactive_ttl,
        breaker_failures: failures,
        breaker_open_for: open_for,
        introspect_jwts: s.introspect_jwts,
    };
    match Introspector::new(name, &p.issuer, p.audiences.clone(), claims, settings) {
        Ok(i) => Some(Arc::new(i)),
        Err(e) => {
            fail(at.to_string(), e);
            None
        }
    }
}

fn load_keys(
    k: &KeySourceSection,
    algorithms: &[Algorithm],
    at: &str,
    base: &std::path::Path,
    fail: &mut impl FnMut(String, String) -> bool,
) -> Option<KeySet> {
    let at = format!("{at}.keys");
    let hmac = algorithms
        .first()
        .is_some_and(|a| a.family() == AlgorithmFamily::Hmac);
    let wants_secret = k.hmac_secret_file.is_some() || k.hmac_secret_env.is_some();
    if hmac != wants_secret {
        fail(
            at,
            if hmac {
                "HMAC algorithms need hmac_secret_file or hmac_secret_env".into()
            } else {
                "public-key algorithms need pem_file or jwks_file, not an HMAC secret".into()
            },
        );
        return None;
    }
    let mut keys = KeySet::default();
    let kid = k.kid.as_deref();
    let file = |p: &String| super::resolve_path(base, p);
    let result = if let Some(path) = k.pem_file.as_ref().map(file).as_ref() {
        let families: Vec<AlgorithmFamily> = algorithms.iter().map(|a| a.family()).collect();
        match (std::fs::read(path), families.first()) {
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
        match std::fs::read(path) {
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
            crate::auth::read_secret_file(std::path::Path::new(path))
        } else {
            let var = k.hmac_secret_env.clone().unwrap_or_default();
            std::env::var(&var)
                .map(String::into_bytes)
                .map_err(|_| format!("environment variable {var} is not set"))
        };
        secret.and_then(|s| keys.add_hmac_secret(kid, &s))
    };
    match result {
        Ok(()) => Some(keys),
        Err(msg) => {
            fail(at, msg);
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn remote_keys(
    name: &str,
    p: &ProviderSection,
    k: &KeySourceSection,
    uri: &str,
    algorithms: &[Algorithm],
    at: &str,
    cache: &TokenCache,
    fail: &mut impl FnMut(String, String) -> bool,
) -> Option<KeySource> {
    let jwks_at = format!("{at}.jwks");
    let at = format!("{at}.keys");
    if algorithms
        .iter()
        .any(|a| a.family() == AlgorithmFamily::Hmac)
    {
        fail(
            at,
            "a JWKS never carries HMAC secrets; use hmac_secret_file".into(),
        );
        return None;
    }
    if !crate::auth::fetch::allowed_uri(uri) {
        let key = if k.oidc_discovery {
            "issuer (for oidc_discovery)"
        } else {
            "jwks_uri"
        };
        fail(
            format!(
                "{at}.{}",
                if k.oidc_discovery {
                    "oidc_discovery"
                } else {
                    "jwks_uri"
                }
            ),
            format!("the {key} must be https (plain http only to a loopback address)"),
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
    let mut ok = true;
    for (key, v) in [
        ("refresh", settings.refresh),
        ("min_refresh", settings.min_refresh),
        ("cooldown", settings.cooldown),
        ("timeout", settings.timeout),
    ] {
        if v < Duration::from_millis(100) {
            ok &= fail(format!("{jwks_at}.{key}"), "must be at least 100ms".into());
        }
    }
    if settings.min_refresh > settings.max_refresh {
        ok &= fail(
            format!("{jwks_at}.min_refresh"),
            "must not exceed max_refresh".into(),
        );
    }
    if settings.max_bytes < 1024 || settings.max_bytes > 16 * 1024 * 1024 {
        ok &= fail(
            format!("{jwks_at}.max_bytes"),
            "between 1024 and 16777216".into(),
        );
    }
    if !ok {
        return None;
    }
    let cache = cache.clone();
    match RemoteKeys::new(name, settings, Box::new(move || cache.invalidate_all())) {
        Ok(r) => Some(KeySource::Remote(Arc::new(r))),
        Err(e) => {
            fail(at, e);
            None
        }
    }
}

fn claim_map(
    c: &ClaimsSection,
    at: &str,
    namespace: &crate::forward::IdentityNamespace,
    fail: &mut impl FnMut(String, String) -> bool,
) -> Option<ClaimMap> {
    let mut ok = true;
    let mut headers = Vec::new();
    for (name, path) in &c.headers {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if namespace.contains(h.as_str()) => headers.push((h, path.clone())),
            Ok(_) => {
                ok &= fail(
                    format!("{at}.headers.{name}"),
                    "claim headers must be in the identity namespace (X-User-..., X-Auth-...) so clients cannot forge them".into(),
                )
            }
            Err(_) => ok &= fail(format!("{at}.headers.{name}"), "not a header name".into()),
        }
    }
    ok.then(|| ClaimMap {
        subject_fallback: Vec::new(),
        subject: c.subject.clone().unwrap_or_else(|| "sub".into()),
        roles: c.roles.clone(),
        scopes: c.scopes.clone(),
        permissions: c.permissions.clone(),
        tenant: c.tenant.clone(),
        email: c.email.clone(),
        client_id: c.client_id.clone(),
        headers,
    })
}
