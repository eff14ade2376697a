//! A route's `auth` section, checked and compiled into a `Policy`.

use super::check::Check;
use super::file::ConfigFile;
use super::file::{
    CredentialSection, ModeSection, NetworksSection, PolicySection, RegoSection, RouteAuthSection,
    TimeWindowSection,
};
use super::providers::Providers;
use crate::auth::provider::KeySource;
use crate::forward::IdentityNamespace;
use crate::policy::networks::Cidr;
use crate::policy::opa::{OpaRule, OpaServer};
use crate::policy::rego::RegoPolicy;
use crate::policy::time_window::{self, TimeWindow};
use crate::policy::{Credential, Mode, NetworkRule, Policy, Requirements};
use http::Method;
use std::sync::Arc;

/// What routes' policies name, compiled before the routes.
pub(super) struct Named<'a> {
    pub(super) file: &'a ConfigFile,
    pub(super) providers: &'a Providers,
    /// The OPA servers that compiled, in the map's order.
    pub(super) opa: &'a [Arc<OpaServer>],
    pub(super) namespace: &'a IdentityNamespace,
}

/// `None` when something is wrong (each problem reported with its key path); `c` stands at
/// the route's `auth`.
pub(super) fn compile(
    section: &RouteAuthSection,
    route: &str,
    base: &std::path::Path,
    named: &Named<'_>,
    c: &mut Check<'_>,
) -> Option<Policy> {
    let p = match section {
        RouteAuthSection::Public => return Some(Policy::public()),
        RouteAuthSection::Policy(p) => p,
    };
    let lookup = Lookup(named);
    let credential = credential(p, &lookup, c);

    let require = requirements(p, c);
    if p.public && !require.is_empty() {
        c.here("a public route has no caller to hold roles, scopes or permissions");
    }
    if p.public && p.keep_authorization {
        c.problem(
            "keep_authorization",
            "public routes forward Authorization as sent; this key is for protected routes",
        );
    }
    let networks = p.networks.as_ref().map(|n| networks(n, c));
    let during = p
        .during
        .as_ref()
        .and_then(|w| during(w, &mut c.at("during")));
    let rego = p
        .rego
        .as_ref()
        .and_then(|r| rego(r, route, base, named.namespace, &mut c.at("rego")));
    let opa = p.opa.as_ref().and_then(|name| {
        let server = lookup.opa(name, &mut c.at("opa"))?;
        Some(OpaRule {
            server,
            route: route.to_string(),
        })
    });
    let adds_headers = rego.as_ref().is_some_and(|r| !r.result_headers.is_empty())
        || opa
            .as_ref()
            .is_some_and(|o| !o.server.settings.result_headers.is_empty());
    if p.public && adds_headers {
        c.here("a public route has no caller whose identity headers a policy's result could add to; `result_headers` need a credential");
    }
    let mode = match p.mode {
        None | Some(ModeSection::Enforce) => Mode::Enforce,
        Some(ModeSection::Report) => Mode::Report,
    };
    let credential = credential?;
    let takes = |want: &dyn Fn(&Credential) -> bool| match &credential {
        Credential::Any(list) | Credential::All(list) => list.iter().any(want),
        one => want(one),
    };
    if !p.client_subjects.is_empty() {
        if !takes(&|cred| matches!(cred, Credential::Mtls(_))) {
            c.problem(
                "client_subjects",
                "only the `mtls` credential has certificate subjects; add `mtls: true`",
            );
        }
        for (i, s) in p.client_subjects.iter().enumerate() {
            let stem = s.strip_suffix('*').unwrap_or(s);
            if stem.is_empty() || stem.contains('*') || !valid_value(s) {
                c.index("client_subjects", i)
                    .here("an identity, or a prefix ending in a single `*`");
            }
        }
    }
    if p.bound_tokens
        && !takes(&|cred| matches!(cred, Credential::Jwt(_) | Credential::Introspection(_)))
    {
        c.problem(
            "bound_tokens",
            "only bearer tokens (`jwt`, `introspection`) can be bound to a certificate",
        );
    }
    c.ok().then_some(Policy {
        bound_tokens: p.bound_tokens,
        credential,
        require,
        networks,
        during,
        rego,
        opa,
        mode,
        keep_authorization: p.keep_authorization,
    })
}

/// The one credential the policy names (`None` when it names none, several, or one that
/// cannot be used).
fn credential(p: &PolicySection, lookup: &Lookup<'_>, c: &mut Check<'_>) -> Option<Credential> {
    let given = [
        p.public,
        p.jwt.is_some(),
        p.introspection.is_some(),
        p.api_key,
        p.mtls,
        p.hmac,
        p.forward_auth.is_some(),
        p.any.is_some(),
        p.all.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        c.here("state exactly one of `public: true`, `jwt`, `introspection`, `api_key: true`, `mtls: true`, `hmac: true`, `forward_auth`, `any` or `all`");
        None
    } else if p.public {
        Some(Credential::Public)
    } else if let Some(name) = &p.jwt {
        lookup.jwt(name, &mut c.at("jwt"))
    } else if let Some(name) = &p.introspection {
        lookup.introspection(name, &mut c.at("introspection"))
    } else if p.api_key {
        Some(Credential::ApiKey)
    } else if p.mtls {
        Some(Credential::Mtls(p.client_subjects.clone()))
    } else if p.hmac {
        Some(Credential::Hmac)
    } else if let Some(name) = &p.forward_auth {
        lookup.forward_auth(name, &mut c.at("forward_auth"))
    } else if let Some(items) = &p.any {
        list(items, "any", p, lookup, c).map(Credential::any)
    } else if let Some(items) = &p.all {
        list(items, "all", p, lookup, c).map(Credential::All)
    } else {
        None
    }
}

/// Finds what credentials and policies name.
struct Lookup<'p>(&'p Named<'p>);

impl Lookup<'_> {
    fn forward_auth(&self, name: &str, c: &mut Check<'_>) -> Option<Credential> {
        // Services are compiled in the map's order, so a name's position is its index.
        let found = self
            .0
            .file
            .forward_auth
            .keys()
            .position(|k| k == name)
            .map(Credential::ForwardAuth);
        if found.is_none() {
            c.here(format!(
                "unknown ForwardAuth service \"{name}\" (define it under the top-level `forward_auth`)"
            ));
        }
        found
    }

    fn opa(&self, name: &str, c: &mut Check<'_>) -> Option<Arc<OpaServer>> {
        let found = self.0.opa.iter().find(|s| s.name == name).cloned();
        // A server that exists but failed to compile has its own problem already.
        if found.is_none() && !self.0.file.opa.contains_key(name) {
            c.here(format!(
                "unknown OPA server \"{name}\" (define it under the top-level `opa`)"
            ));
        }
        found
    }

    /// `c` stands at the key naming the provider.
    fn jwt(&self, name: &str, c: &mut Check<'_>) -> Option<Credential> {
        match self.0.providers.get(name) {
            Some((_, provider)) if matches!(provider.keys, KeySource::None) => {
                c.here(format!(
                    "identity provider \"{name}\" has no `keys` to verify JWTs; use `introspection: {name}`"
                ));
                None
            }
            Some((i, _)) => Some(Credential::Jwt(i)),
            None => {
                self.unknown(name, c);
                None
            }
        }
    }

    fn introspection(&self, name: &str, c: &mut Check<'_>) -> Option<Credential> {
        match self.0.providers.get(name) {
            Some((i, provider)) if provider.introspection.is_some() => {
                Some(Credential::Introspection(i))
            }
            Some(_) => {
                c.here(format!(
                    "identity provider \"{name}\" has no `introspection` endpoint"
                ));
                None
            }
            None => {
                self.unknown(name, c);
                None
            }
        }
    }

    fn unknown(&self, name: &str, c: &mut Check<'_>) {
        // A provider that exists but failed to compile has its own problem already.
        if !self.0.file.identity_providers.contains_key(name) {
            c.here(format!("unknown identity provider \"{name}\""));
        }
    }
}

/// The credentials of `any` or `all` (`key`); `None` when one of them is unusable.
fn list(
    items: &[CredentialSection],
    key: &str,
    p: &PolicySection,
    lookup: &Lookup<'_>,
    c: &mut Check<'_>,
) -> Option<Vec<Credential>> {
    if items.is_empty() {
        c.problem(key, "list at least one credential");
        return None;
    }
    let mut out = Vec::new();
    let mut good = true;
    for (i, item) in items.iter().enumerate() {
        let mut c = c.index(key, i);
        let named = [
            item.jwt.is_some(),
            item.introspection.is_some(),
            item.api_key,
            item.mtls,
            item.hmac,
            item.forward_auth.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            c.here("name one credential, e.g. `{ jwt: PROVIDER }`, `{ introspection: PROVIDER }`, `{ api_key: true }`, `{ mtls: true }`, `{ hmac: true }` or `{ forward_auth: SERVICE }`");
            good = false;
            continue;
        }
        let credential = if let Some(name) = &item.jwt {
            lookup.jwt(name, &mut c.at("jwt"))
        } else if let Some(name) = &item.introspection {
            lookup.introspection(name, &mut c.at("introspection"))
        } else if item.api_key {
            Some(Credential::ApiKey)
        } else if item.hmac {
            Some(Credential::Hmac)
        } else if let Some(name) = &item.forward_auth {
            lookup.forward_auth(name, &mut c.at("forward_auth"))
        } else {
            Some(Credential::Mtls(p.client_subjects.clone()))
        };
        match credential {
            Some(credential) => out.push(credential),
            None => good = false,
        }
    }
    good.then_some(out)
}

/// A route's Rego policy, parsed with its data; `None` after reporting what is wrong.
fn rego(
    r: &RegoSection,
    route: &str,
    base: &std::path::Path,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Option<Arc<RegoPolicy>> {
    let path = super::resolve_path(base, &r.policy);
    let data = r.data.as_ref().map(|d| super::resolve_path(base, d));
    // The files' own problems first.
    let files = crate::policy::rego::read_files(&path, data.as_deref())
        .map_err(|(key, e)| c.problem(key, e))
        .ok();
    let rule_ok = r.query.starts_with("data.")
        && r.query.len() > 5
        && r.query[5..]
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if !rule_ok {
        c.problem(
            "query",
            "a rule's path, `data.PACKAGE.RULE` (e.g. `data.gateway.authz.allow`)",
        );
    }
    let headers = input_headers(&r.headers, c);
    let result_headers = result_headers(&r.result_headers, namespace, c);
    let files = files?;
    if !c.ok() {
        return None;
    }
    match RegoPolicy::load(files, &r.query, headers, result_headers, route) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            c.problem("policy", e);
            None
        }
    }
}

/// The request headers an input document carries (`headers`): never `Authorization`.
pub(super) fn input_headers(list: &[String], c: &mut Check<'_>) -> Vec<http::HeaderName> {
    let mut headers = Vec::new();
    for (i, h) in list.iter().enumerate() {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) if n == http::header::AUTHORIZATION => c
                .index("headers", i)
                .here("a policy never reads the credential; it sees the verified identity"),
            Ok(n) => headers.push(n),
            Err(_) => c
                .index("headers", i)
                .here(format!("\"{h}\" is not a header name")),
        }
    }
    headers
}

/// The headers a policy's result may add (`result_headers`): only identity-namespace ones,
/// which the gateway removes from the client's request.
pub(super) fn result_headers(
    list: &[String],
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Vec<http::HeaderName> {
    let mut headers = Vec::new();
    for (i, h) in list.iter().enumerate() {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) if namespace.contains(n.as_str()) => headers.push(n),
            Ok(_) => c.index("result_headers", i).here(format!(
                "\"{h}\" is outside the identity namespace (X-User-..., X-Auth-..., X-Tenant-...), so a client could send it too"
            )),
            Err(_) => c
                .index("result_headers", i)
                .here(format!("\"{h}\" is not a header name")),
        }
    }
    headers
}

/// A route's time window; `None` after reporting what is wrong with it.
fn during(w: &TimeWindowSection, c: &mut Check<'_>) -> Option<TimeWindow> {
    let zone_name = w.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    let zone = match jiff::tz::TimeZone::get(&zone_name) {
        Ok(zone) => Some(zone),
        Err(_) => {
            c.problem(
                "timezone",
                format!("\"{zone_name}\" is not an IANA time zone (e.g. Europe/Berlin, UTC)"),
            );
            None
        }
    };
    let mut days = [w.days.is_none(); 7];
    for (i, item) in w.days.iter().flatten().enumerate() {
        let range = match item.split_once('-') {
            Some((a, b)) => time_window::day_index(a).zip(time_window::day_index(b)),
            None => time_window::day_index(item).map(|d| (d, d)),
        };
        match range {
            // A range may wrap the week: `fri-mon` is Friday to Monday.
            Some((first, last)) => {
                let mut d = first;
                loop {
                    days[d] = true;
                    if d == last {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => c
                .index("days", i)
                .here("a day (`mon` .. `sun`) or a range (`mon-fri`)"),
        }
    }
    if w.days.as_ref().is_some_and(Vec::is_empty) {
        c.problem("days", "at least one day; leave `days` out for every day");
    }
    let mut time = |key: &str, value: &Option<String>, default: u16, end_of_day: bool| {
        let Some(text) = value else { return default };
        time_window::minutes(text, end_of_day).unwrap_or_else(|| {
            let range = if end_of_day {
                "00:00 to 24:00"
            } else {
                "00:00 to 23:59"
            };
            c.problem(key, format!("\"{text}\" is not a time `HH:MM` ({range})"));
            default
        })
    };
    let from = time("from", &w.from, 0, false);
    let to = time("to", &w.to, time_window::DAY, true);
    if from == to {
        c.problem(
            "to",
            "equal to `from`, the window would be empty; leave both out for the whole day",
        );
    }
    let zone = zone?;
    c.ok().then_some(TimeWindow {
        zone,
        zone_name,
        days,
        from,
        to,
    })
}

fn networks(n: &NetworksSection, c: &mut Check<'_>) -> NetworkRule {
    let mut c = c.at("networks");
    let mut rule = NetworkRule::default();
    for (key, from, into) in [
        ("allow", &n.allow, &mut rule.allow),
        ("deny", &n.deny, &mut rule.deny),
    ] {
        for (i, s) in from.iter().enumerate() {
            match s.parse::<Cidr>() {
                Ok(cidr) => into.push(cidr),
                Err(e) => c.index(key, i).here(e),
            }
        }
    }
    if rule.allow.is_empty() && rule.deny.is_empty() {
        c.here("list `allow` or `deny` blocks (or remove `networks`)");
    }
    rule
}

fn requirements(p: &PolicySection, c: &mut Check<'_>) -> Requirements {
    for (key, values) in [
        ("roles", &p.roles),
        ("scopes", &p.scopes),
        ("permissions", &p.permissions),
    ] {
        for (i, v) in values.iter().enumerate() {
            if !valid_value(v) {
                c.index(key, i).here(INVALID_VALUE);
            }
        }
    }
    let mut method_permissions = Vec::new();
    for (method, permission) in &p.method_permissions {
        let mut c = c.at("method_permissions");
        let parsed = Method::from_bytes(method.as_bytes())
            .ok()
            .filter(|m| m.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        match parsed {
            Some(m) => method_permissions.push((m, permission.clone())),
            None => c.problem(
                method,
                format!("\"{method}\" is not an HTTP method (use upper case, e.g. DELETE)"),
            ),
        }
        if !valid_value(permission) {
            c.problem(method, INVALID_VALUE);
        }
    }
    Requirements {
        roles: p.roles.clone(),
        scopes: p.scopes.clone(),
        permissions: p.permissions.clone(),
        method_permissions,
    }
}

/// What a role, scope, permission or tenant that fails `valid_value` is told.
pub(super) const INVALID_VALUE: &str =
    "a non-empty name without spaces, commas or control characters";

/// A role, scope, permission, tenant or subject: printable, no commas (they join lists in
/// forwarded headers), at most 256 bytes.
pub(super) fn valid_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}
