//! `identity_providers`: checked and compiled into `auth::jwt::Provider`s, keys loaded.

use super::file::{ClaimsSection, ProviderSection};
use crate::auth::jwks::{JwksSettings, RemoteKeys};
use crate::auth::jwt::{
    KeySet, KeySource, Provider, ProviderRules, TokenCache, DEFAULT_LEEWAY_SECS,
    DEFAULT_MAX_TOKEN_BYTES,
};
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
    namespace: &crate::identity::IdentityNamespace,
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
    if let Err(msg) = rules.check() {
        ok &= fail(at.to_string(), msg);
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
    let k = &p.keys;
    let sources = [
        k.pem_file.is_some(),
        k.jwks_file.is_some(),
        k.jwks_uri.is_some(),
        k.oidc_discovery,
        k.hmac_secret_file.is_some(),
        k.hmac_secret_env.is_some(),
    ];
    let discovery_uri = k.oidc_discovery.then(|| {
        format!(
            "{}/.well-known/openid-configuration",
            p.issuer.trim_end_matches('/')
        )
    });
    let keys = if sources.iter().filter(|s| **s).count() != 1 {
        fail(
            format!("{at}.keys"),
            "give exactly one of pem_file, jwks_file, jwks_uri, oidc_discovery, hmac_secret_file, hmac_secret_env".into(),
        );
        None
    } else if let Some(uri) = k.jwks_uri.as_ref().or(discovery_uri.as_ref()) {
        remote_keys(name, p, uri, &algorithms, at, &cache, &mut fail)
    } else {
        load_keys(p, &algorithms, at, base, &mut fail).map(|k| KeySource::Static(Arc::new(k)))
    };
    let claims = claim_map(&p.claims, &format!("{at}.claims"), namespace, &mut fail);
    match (ok, keys, claims) {
        (true, Some(keys), Some(claims)) => Some(Provider {
            name: name.to_string(),
            rules,
            keys,
            claims,
            cache,
            series: crate::metrics::ProviderSeries::new(name),
        }),
        _ => None,
    }
}

fn load_keys(
    p: &ProviderSection,
    algorithms: &[Algorithm],
    at: &str,
    base: &std::path::Path,
    fail: &mut impl FnMut(String, String) -> bool,
) -> Option<KeySet> {
    let k = &p.keys;
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

fn remote_keys(
    name: &str,
    p: &ProviderSection,
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
    if !crate::auth::jwks::allowed_uri(uri) {
        let key = if p.keys.oidc_discovery {
            "issuer (for oidc_discovery)"
        } else {
            "jwks_uri"
        };
        fail(
            format!(
                "{at}.{}",
                if p.keys.oidc_discovery {
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
        discovery: p.keys.oidc_discovery,
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
    namespace: &crate::identity::IdentityNamespace,
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
        subject_fallback: None,
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
