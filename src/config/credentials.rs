//! The credentials that need a section of their own: `api_keys`, `client_certificates`
//! (certificate identities; listeners ask for the certificates), `request_signing`, and
//! the `revocation` list. A route accepting a credential whose section is missing is
//! reported here.

use super::check::Check;
use super::file::{
    ApiKeysSection, ClientCertificatesSection, ConfigFile, RequestSigningSection, RevocationSection,
};
use super::policies::{valid_value, INVALID_VALUE};
use super::routes::{some_route_accepts, Sectioned};
use super::{
    resolve_path, Listener, NonceSettings, RevocationAdmin, RevocationSettings, SigningSettings,
};
use crate::auth::api_key::{ApiKeys, Environment, Hasher};
use crate::auth::http_sig::{SignatureRules, SigningKeys, DEFAULT_WINDOW};
use crate::auth::mtls::{CertIdentities, IdentitySource};
use crate::auth::revocation::Backend;
use crate::auth::{self, read_secret_file, Identity};
use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The API keys (when configured) and how often the consumers file is checked for changes.
pub(super) fn api_keys(
    file: &ConfigFile,
    base: &Path,
    tiers: &[String],
    c: &mut Check<'_>,
) -> (Option<Arc<ApiKeys>>, Duration) {
    let keys = file
        .api_keys
        .as_ref()
        .and_then(|a| api_keys_section(a, base, tiers.to_vec(), &mut c.at("api_keys")));
    if some_route_accepts(&file.routes, Sectioned::ApiKey) && file.api_keys.is_none() {
        c.problem(
            "api_keys",
            "a route accepts `api_key` but no `api_keys.consumers_file` is configured",
        );
    }
    let reload_interval = file
        .api_keys
        .as_ref()
        .and_then(|a| a.reload_interval)
        .unwrap_or(Duration::from_secs(1));
    c.range(
        "api_keys.reload_interval",
        reload_interval,
        Duration::from_millis(100)..,
        "at least 100ms",
    );
    (keys, reload_interval)
}

/// Where keys are read, the pepper, and the consumers file (`c` stands at `api_keys`).
fn api_keys_section(
    a: &ApiKeysSection,
    base: &Path,
    tiers: Vec<String>,
    c: &mut Check<'_>,
) -> Option<Arc<ApiKeys>> {
    let mut headers = Vec::new();
    let names = a
        .headers
        .clone()
        .unwrap_or_else(|| vec!["X-API-Key".into()]);
    if names.is_empty() && a.query_param.is_none() {
        c.problem("headers", "list at least one header (or set query_param)");
    }
    for (i, n) in names.iter().enumerate() {
        match HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) if h == AUTHORIZATION || h == COOKIE => c.index("headers", i).here(format!(
                "{n} is not a key header (it carries other credentials)"
            )),
            Ok(h) => headers.push(h),
            Err(_) => c.index("headers", i).here("not a header name"),
        }
    }
    if let Some(q) = &a.query_param {
        if q.is_empty()
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            c.problem("query_param", "letters, digits, `_` and `-`");
        }
    }
    let pepper = a
        .pepper_file
        .as_ref()
        .map(|f| PathBuf::from(resolve_path(base, f)));
    let hasher = Hasher::from_pepper_file(pepper.as_deref())
        .map_err(|e| c.problem("pepper_file", e))
        .ok();
    if !c.ok() {
        return None;
    }
    let path = PathBuf::from(resolve_path(base, &a.consumers_file));
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
            let key = format!("consumers_file ({})", path.display());
            for p in problems {
                c.problem(&key, p);
            }
            None
        }
    }
}

/// How a verified client certificate names the caller; a route accepting `mtls` needs a
/// listener that asks for client certificates.
pub(super) fn cert_identities(
    file: &ConfigFile,
    tiers: &[String],
    listeners: &[Listener],
    c: &mut Check<'_>,
) -> Arc<CertIdentities> {
    let identities = Arc::new(client_certificates(
        &file.client_certificates,
        tiers,
        &mut c.at("client_certificates"),
    ));
    let asks = listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client.is_some()));
    if some_route_accepts(&file.routes, Sectioned::Mtls) && !asks {
        c.problem(
            "listeners",
            "a route accepts `mtls` but no listener asks for client certificates (`tls.client_certificate`)",
        );
    }
    identities
}

/// The `client_certificates` section: which certificate value names the caller, how the
/// facts are forwarded, and the consumers certificate identities map to. A wrong consumer
/// entry is reported and left out.
fn client_certificates(
    section: &ClientCertificatesSection,
    tiers: &[String],
    c: &mut Check<'_>,
) -> CertIdentities {
    let mut policy = CertIdentities {
        source: section.identity.unwrap_or(IdentitySource::SanUri),
        forward: section.forward.unwrap_or_default(),
        ..CertIdentities::default()
    };
    for (i, e) in section.consumers.iter().enumerate() {
        let mut c = c.index("consumers", i);
        if e.identity.is_empty() || e.identity.len() > 1024 || e.identity.contains(char::is_control)
        {
            c.problem(
                "identity",
                "a certificate identity, e.g. spiffe://acme/billing",
            );
            continue;
        }
        if !auth::valid_name(&e.consumer) {
            c.problem(
                "consumer",
                "letters, digits and - _ . : @ only, at most 128",
            );
            continue;
        }
        if let Some(t) = &e.tier {
            if !tiers.iter().any(|n| n == t) {
                c.problem(
                    "tier",
                    format!("\"{t}\" is not a tier of rate_limits.tiers"),
                );
                continue;
            }
        }
        if e.tenant.as_deref().is_some_and(|t| !valid_value(t)) {
            c.problem("tenant", INVALID_VALUE);
        }
        for (key, values) in [
            ("roles", &e.roles),
            ("scopes", &e.scopes),
            ("permissions", &e.permissions),
        ] {
            for (j, v) in values.iter().enumerate() {
                if !valid_value(v) {
                    c.index(key, j).here(INVALID_VALUE);
                }
            }
        }
        if !c.ok() {
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
            c.problem("identity", format!("\"{}\" is listed twice", e.identity));
        }
    }
    policy
}

/// HMAC-signed requests (when configured); a route accepting `hmac` needs them.
pub(super) fn signing(
    file: &ConfigFile,
    base: &Path,
    tiers: &[String],
    c: &mut Check<'_>,
) -> Option<SigningSettings> {
    let signing = file
        .request_signing
        .as_ref()
        .and_then(|r| request_signing(r, base, tiers, &mut c.at("request_signing")));
    if some_route_accepts(&file.routes, Sectioned::Hmac) && file.request_signing.is_none() {
        c.problem(
            "request_signing",
            "a route accepts `hmac` but no `request_signing.keys_file` is configured",
        );
    }
    signing
}

/// The `request_signing` section (`c` stands at it).
fn request_signing(
    r: &RequestSigningSection,
    base: &Path,
    tiers: &[String],
    c: &mut Check<'_>,
) -> Option<SigningSettings> {
    let path = PathBuf::from(resolve_path(base, &r.keys_file));
    let keys = match SigningKeys::load(path.clone(), tiers.to_vec()) {
        Ok(k) => Some(Arc::new(k)),
        Err(problems) => {
            let key = format!("keys_file ({})", path.display());
            for p in problems {
                c.problem(&key, p);
            }
            None
        }
    };
    let window = r.window.map_or(DEFAULT_WINDOW, |w| w.as_secs());
    c.range("window", window, 1..=3600, "between 1s and 1h");
    let mut rules = SignatureRules {
        window,
        ..SignatureRules::default()
    };
    if let Some(list) = &r.components {
        for (i, component) in list.iter().enumerate() {
            if let Err(e) = SignatureRules::validate_component(component) {
                c.index("components", i).here(e);
            }
        }
        for must in ["@method", "@path"] {
            if !list.iter().any(|component| component == must) {
                c.problem(
                    "components",
                    format!("must include `{must}`: a signature that does not bind it could be replayed against another request"),
                );
            }
        }
        rules.components = list.clone();
    }
    let nonces = match &r.nonces.redis {
        None => {
            let max_entries = r.nonces.max_entries.unwrap_or(1_000_000);
            if max_entries == 0 {
                c.problem("nonces.max_entries", "at least 1");
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
    c.ok().then_some(SigningSettings {
        keys,
        rules,
        nonces,
    })
}

/// The revocation list and its admin API (when configured).
pub(super) fn revocation(
    section: Option<&RevocationSection>,
    base: &Path,
    c: &mut Check<'_>,
) -> Option<RevocationSettings> {
    let r = section?;
    let mut c = c.at("revocation");
    let admin_token = r.admin_token_file.as_ref().and_then(|f| {
        let path = resolve_path(base, f);
        match read_secret_file(Path::new(&path)) {
            Ok(t) if t.len() >= 16 => Some(Arc::from(t)),
            Ok(_) => {
                c.problem(
                    "admin_token_file",
                    "the admin token must be at least 16 bytes",
                );
                None
            }
            Err(e) => {
                c.problem("admin_token_file", e);
                None
            }
        }
    });
    let default_ttl = r.default_ttl.unwrap_or(Duration::from_secs(24 * 3600));
    c.range(
        "default_ttl",
        default_ttl,
        Duration::from_secs(1)..,
        "at least 1s",
    );
    let max_entries = r.max_entries.unwrap_or(100_000);
    c.range(
        "max_entries",
        max_entries,
        1..=10_000_000,
        "between 1 and 10000000",
    );
    let backend = match (&r.state_file, &r.redis) {
        (Some(_), Some(_)) => {
            c.here("give `state_file` (one gateway) or `redis` (a fleet), not both");
            return None;
        }
        (Some(f), None) => Backend::File(resolve_path(base, f).into()),
        (None, Some(redis)) => {
            let timeout = redis.timeout.unwrap_or(Duration::from_millis(250));
            let range = Duration::from_millis(1)..=Duration::from_secs(10);
            c.range("redis.timeout", timeout, range, "between 1ms and 10s");
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
            c.here(
                "give `state_file` (so a restart keeps the list) or `redis` (shared by a fleet)",
            );
            return None;
        }
    };
    c.ok().then_some(RevocationSettings {
        backend,
        max_entries,
        admin: RevocationAdmin {
            token: admin_token,
            default_ttl,
        },
    })
}
