//! A route's `auth` section, checked and compiled into a `Policy`.

use super::file::{CredentialSection, ModeSection, PolicySection, RouteAuthSection};
use crate::policy::networks::Cidr;
use crate::policy::{Credential, Mode, NetworkRule, Policy, Requirements};
use std::collections::BTreeMap;

/// `None` when something is wrong (each problem reported with its key path).
pub fn compile(
    section: &RouteAuthSection,
    at: &str,
    provider_index: &BTreeMap<String, usize>,
    providers: &[crate::auth::provider::Provider],
    known_providers: &dyn Fn(&str) -> bool,
    problem: &mut impl FnMut(String, String),
) -> Option<Policy> {
    let p = match section {
        RouteAuthSection::Public => return Some(Policy::public()),
        RouteAuthSection::Policy(p) => p,
    };
    let mut ok = true;
    let mut fail = |path: String, msg: String| {
        problem(path, msg);
        false
    };
    let jwt = |name: &str, path: String, fail: &mut dyn FnMut(String, String) -> bool| {
        match provider_index.get(name) {
            Some(i) if matches!(providers[*i].keys, crate::auth::provider::KeySource::None) => {
                fail(
                    path,
                    format!("identity provider \"{name}\" has no `keys` to verify JWTs; use `introspection: {name}`"),
                );
                None
            }
            Some(i) => Some(Credential::Jwt(*i)),
            None => {
                // A provider that exists but failed to compile has its own problem already.
                if !known_providers(name) {
                    fail(path, format!("unknown identity provider \"{name}\""));
                }
                None
            }
        }
    };
    let introspection = |name: &str, path: String, fail: &mut dyn FnMut(String, String) -> bool| {
        match provider_index.get(name) {
            Some(i) if providers[*i].introspection.is_some() => Some(Credential::Introspection(*i)),
            Some(_) => {
                fail(
                    path,
                    format!("identity provider \"{name}\" has no `introspection` endpoint"),
                );
                None
            }
            None => {
                if !known_providers(name) {
                    fail(path, format!("unknown identity provider \"{name}\""));
                }
                None
            }
        }
    };
    let list = |items: &[CredentialSection],
                key: &str,
                fail: &mut dyn FnMut(String, String) -> bool|
     -> Option<Vec<Credential>> {
        if items.is_empty() {
            fail(format!("{at}.{key}"), "list at least one credential".into());
            return None;
        }
        let mut out = Vec::new();
        let mut good = true;
        for (i, c) in items.iter().enumerate() {
            let named = [
                c.jwt.is_some(),
                c.introspection.is_some(),
                c.api_key,
                c.mtls,
                c.hmac,
            ];
            if named.iter().filter(|n| **n).count() != 1 {
                good = fail(
                    format!("{at}.{key}[{i}]"),
                    "name one credential, e.g. `{ jwt: PROVIDER }`, `{ introspection: PROVIDER }`, `{ api_key: true }`, `{ mtls: true }` or `{ hmac: true }`"
                        .into(),
                );
                continue;
            }
            let cred = if let Some(name) = &c.jwt {
                jwt(name, format!("{at}.{key}[{i}].jwt"), fail)
            } else if let Some(name) = &c.introspection {
                introspection(name, format!("{at}.{key}[{i}].introspection"), fail)
            } else if c.api_key {
                Some(Credential::ApiKey)
            } else if c.hmac {
                Some(Credential::Hmac)
            } else {
                Some(Credential::Mtls(p.client_subjects.clone()))
            };
            match cred {
                Some(cred) => out.push(cred),
                None => good = false,
            }
        }
        good.then_some(out)
    };

    let given = [
        p.public,
        p.jwt.is_some(),
        p.introspection.is_some(),
        p.api_key,
        p.mtls,
        p.hmac,
        p.any.is_some(),
        p.all.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    let credential = if given != 1 {
        fail(
            at.to_string(),
            "state exactly one of `public: true`, `jwt`, `introspection`, `api_key: true`, `mtls: true`, `hmac: true`, `any` or `all`".into(),
        );
        None
    } else if p.public {
        Some(Credential::Public)
    } else if let Some(name) = &p.jwt {
        jwt(name, format!("{at}.jwt"), &mut fail)
    } else if let Some(name) = &p.introspection {
        introspection(name, format!("{at}.introspection"), &mut fail)
    } else if p.api_key {
        Some(Credential::ApiKey)
    } else if p.mtls {
        Some(Credential::Mtls(p.client_subjects.clone()))
    } else if p.hmac {
        Some(Credential::Hmac)
    } else if let Some(items) = &p.any {
        list(items, "any", &mut fail).map(Credential::Any)
    } else if let Some(items) = &p.all {
        list(items, "all", &mut fail).map(Credential::All)
    } else {
        None
    };
    ok &= credential.is_some();

    let require = requirements(p, at, &mut fail, &mut ok);
    if p.public && !require.is_empty() {
        ok &= fail(
            at.to_string(),
            "a public route has no caller to hold roles, scopes or permissions".into(),
        );
    }
    if p.public && p.keep_authorization {
        ok &= fail(
            format!("{at}.keep_authorization"),
            "public routes forward Authorization as sent; this key is for protected routes".into(),
        );
    }

    let networks = p.networks.as_ref().map(|n| {
        let mut rule = NetworkRule::default();
        for (key, from, into) in [
            ("allow", &n.allow, &mut rule.allow),
            ("deny", &n.deny, &mut rule.deny),
        ] {
            for (i, s) in from.iter().enumerate() {
                match s.parse::<Cidr>() {
                    Ok(c) => into.push(c),
                    Err(e) => ok &= fail(format!("{at}.networks.{key}[{i}]"), e),
                }
            }
        }
        if rule.allow.is_empty() && rule.deny.is_empty() {
            ok &= fail(
                format!("{at}.networks"),
                "list `allow` or `deny` blocks (or remove `networks`)".into(),
            );
        }
        rule
    });
    let mode = match p.mode {
        None | Some(ModeSection::Enforce) => Mode::Enforce,
        Some(ModeSection::Report) => Mode::Report,
    };
    let credential = credential?;
    let takes = |want: &dyn Fn(&Credential) -> bool| match &credential {
        Credential::Any(list) | Credential::All(list) => list.iter().any(want),
        c => want(c),
    };
    if !p.client_subjects.is_empty() {
        if !takes(&|c| matches!(c, Credential::Mtls(_))) {
            ok &= fail(
                format!("{at}.client_subjects"),
                "only the `mtls` credential has certificate subjects; add `mtls: true`".into(),
            );
        }
        for (i, s) in p.client_subjects.iter().enumerate() {
            let stem = s.strip_suffix('*').unwrap_or(s);
            if stem.is_empty() || stem.contains('*') || !valid_value(s) {
                ok &= fail(
                    format!("{at}.client_subjects[{i}]"),
                    "an identity, or a prefix ending in a single `*`".into(),
                );
            }
        }
    }
    if p.bound_tokens && !takes(&|c| matches!(c, Credential::Jwt(_) | Credential::Introspection(_)))
    {
        ok &= fail(
            format!("{at}.bound_tokens"),
            "only bearer tokens (`jwt`, `introspection`) can be bound to a certificate".into(),
        );
    }
    ok.then_some(Policy {
        bound_tokens: p.bound_tokens,
        credential,
        require,
        networks,
        mode,
        keep_authorization: p.keep_authorization,
    })
}

fn requirements(
    p: &PolicySection,
    at: &str,
    fail: &mut impl FnMut(String, String) -> bool,
    ok: &mut bool,
) -> Requirements {
    for (key, values) in [
        ("roles", &p.roles),
        ("scopes", &p.scopes),
        ("permissions", &p.permissions),
    ] {
        for (i, v) in values.iter().enumerate() {
            if !valid_value(v) {
                *ok &= fail(
                    format!("{at}.{key}[{i}]"),
                    "a non-empty name without spaces, commas or control characters".into(),
                );
            }
        }
    }
    let mut method_permissions = Vec::new();
    for (method, permission) in &p.method_permissions {
        let path = format!("{at}.method_permissions.{method}");
        let parsed = http::Method::from_bytes(method.as_bytes())
            .ok()
            .filter(|m| m.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        match parsed {
            Some(m) => method_permissions.push((m, permission.clone())),
            None => {
                *ok &= fail(
                    path.clone(),
                    format!("\"{method}\" is not an HTTP method (use upper case, e.g. DELETE)"),
                )
            }
        }
        if !valid_value(permission) {
            *ok &= fail(
                path,
                "a non-empty name without spaces, commas or control characters".into(),
            );
        }
    }
    Requirements {
        roles: p.roles.clone(),
        scopes: p.scopes.clone(),
        permissions: p.permissions.clone(),
        method_permissions,
    }
}

pub(super) fn valid_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}
