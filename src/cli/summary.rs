//! `portcullis check`'s summary: one line per section of a valid configuration, so that a
//! reader sees at a glance what each route demands and where each provider's keys come from
//! without reading the YAML again. Pure: it reads the composed `App` and returns text.

use crate::app::App;
use crate::auth::forward_auth::ForwardAuth;
use crate::auth::introspection::Endpoint;
use crate::auth::provider::{KeySource, Provider};
use crate::policy::{Credential, Policy};
use crate::routing::{PathMatch, Route};
use crate::upstream::spec::{HealthCheckKind, Protocol, Selection};
use std::sync::Arc;

/// The summary lines, each `section: item; item; ...`.
pub fn render(app: &App) -> String {
    let providers = app.engine.providers();
    let listeners = app.listeners.iter().map(|l| match &l.tls {
        None if l.h2c => format!("{} (http, h2c)", l.address),
        None => format!("{} (http)", l.address),
        Some(t) => match &t.client {
            None => format!("{} (tls)", l.address),
            Some(c) if c.required => format!("{} (tls, client certificate required)", l.address),
            Some(_) => format!("{} (tls, client certificate optional)", l.address),
        },
    });
    let upstreams = app.upstreams.iter().map(|u| {
        let selection = match u.selection {
            Selection::RoundRobin => "round_robin",
            Selection::Random => "random",
            Selection::ConsistentHash => "consistent_hash",
        };
        let health = match u.health_check.as_ref().map(|h| &h.kind) {
            None => "no health check",
            Some(HealthCheckKind::Tcp) => "tcp health check",
            Some(HealthCheckKind::Http) => "http health check",
        };
        let tls = if u.tls.is_some() { ", tls" } else { "" };
        let protocol = match (u.protocol, u.tls.is_some()) {
            (Protocol::Http1, _) => "",
            (Protocol::Http2, true) => ", h2",
            (Protocol::Http2, false) => ", h2c",
        };
        format!(
            "{} ({} backend(s), {selection}, {health}{tls}{protocol})",
            u.name,
            u.backends.len()
        )
    });
    let provider_items = providers.iter().map(provider_line);
    let routes = app.engine.routes().routes().iter().map(|r| {
        let mut line = format!(
            "{} {} -> {}: {}",
            r.name,
            target(r),
            upstream_name(app, r),
            policy_text(&r.auth, providers, app.engine.forward_auth())
        );
        if let Some(limit) = app.engine.limits().route_limit(r) {
            line.push_str(&format!(", limit {}", limit.describe()));
        }
        if r.upgrades.is_some() {
            line.push_str(", websocket");
        }
        if let Some(cors) = &r.cors {
            line.push_str(&format!(", cors for {} origin(s)", cors.origins.len()));
        }
        line
    });
    let mut out = String::new();
    push_section(&mut out, "listeners", listeners);
    out.push_str(&format!("  admin: {}\n", app.admin_address));
    push_section(&mut out, "upstreams", upstreams);
    push_section(&mut out, "identity providers", provider_items);
    if !app.engine.forward_auth().is_empty() {
        let services = app
            .engine
            .forward_auth()
            .iter()
            .map(|s| format!("{} ({})", s.name, s.settings.url));
        push_section(&mut out, "forward auth", services);
    }
    if let Some(keys) = app.engine.api_keys() {
        out.push_str(&format!(
            "  api keys: {} key(s) loaded\n",
            keys.current().len()
        ));
    }
    if let Some(global) = app.engine.limits().global_limit() {
        out.push_str(&format!("  global limit: {}\n", global.describe()));
    }
    push_section(&mut out, "routes", routes);
    out
}

fn push_section(out: &mut String, name: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    let list = if items.is_empty() {
        "none".to_string()
    } else {
        items.join("; ")
    };
    out.push_str(&format!("  {name} ({}): {list}\n", items.len()));
}

fn provider_line(p: &Provider) -> String {
    let keys = match &p.keys {
        KeySource::Static(k) => format!("{} key(s) from the configuration", k.len()),
        KeySource::Remote(r) if r.settings.discovery => {
            format!("keys by OIDC discovery at {}", r.settings.uri)
        }
        KeySource::Remote(r) => format!("keys from {}", r.settings.uri),
        KeySource::None => "no keys".to_string(),
    };
    match p.introspection.as_ref().map(|i| &i.settings.endpoint) {
        None => format!("{} ({keys})", p.name),
        Some(Endpoint::Fixed(url)) => format!("{} ({keys}, introspection at {url})", p.name),
        Some(Endpoint::Discovery(url)) => {
            format!("{} ({keys}, introspection by discovery at {url})", p.name)
        }
    }
}

fn target(r: &Route) -> String {
    let path = match &r.path {
        PathMatch::Exact(p) => p.clone(),
        PathMatch::Prefix(p) => format!("{}/*", p.trim_end_matches('/')),
    };
    let host = r.host.clone().unwrap_or_default();
    let methods = if r.methods.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
        format!("{} ", names.join(","))
    };
    format!("{methods}{host}{path}")
}

fn upstream_name<'a>(app: &'a App, r: &Route) -> &'a str {
    app.upstreams
        .get(r.upstream)
        .map_or("?", |u| u.name.as_str())
}

/// The route's policy in words: its credentials, then its requirements.
fn policy_text(p: &Policy, providers: &[Provider], forward_auth: &[Arc<ForwardAuth>]) -> String {
    let mut parts = vec![credential_text(&p.credential, providers, forward_auth)];
    let req = &p.require;
    if !req.roles.is_empty() {
        parts.push(format!("role {}", req.roles.join(" or ")));
    }
    if !req.scopes.is_empty() {
        parts.push(format!("scopes {}", req.scopes.join(" and ")));
    }
    if !req.permissions.is_empty() {
        parts.push(format!("permissions {}", req.permissions.join(" and ")));
    }
    for (method, perm) in &req.method_permissions {
        parts.push(format!("{method} needs {perm}"));
    }
    if p.networks.is_some() {
        parts.push("client networks".to_string());
    }
    if let Some(window) = &p.during {
        parts.push(format!("open {window}"));
    }
    if let Some(rego) = &p.rego {
        parts.push(format!("rego {}", rego.rule));
    }
    if let Some(opa) = &p.opa {
        parts.push(format!("OPA server {}", opa.server.name));
    }
    if p.bound_tokens {
        parts.push("certificate-bound tokens".to_string());
    }
    if p.mode == crate::policy::Mode::Report {
        parts.push("report mode (never refuses)".to_string());
    }
    parts.join(", ")
}

fn credential_text(
    c: &Credential,
    providers: &[Provider],
    forward_auth: &[Arc<ForwardAuth>],
) -> String {
    let name = |i: &usize| providers.get(*i).map_or("?", |p| p.name.as_str());
    match c {
        Credential::Public => "public".to_string(),
        Credential::Jwt(i) => format!("jwt {}", name(i)),
        Credential::Introspection(i) => format!("introspection {}", name(i)),
        Credential::ApiKey => "api key".to_string(),
        Credential::Mtls(subjects) if subjects.is_empty() => "client certificate".to_string(),
        Credential::Mtls(subjects) => format!("client certificate {}", subjects.join(" or ")),
        Credential::Hmac => "hmac signature".to_string(),
        Credential::ForwardAuth(i) => format!(
            "forward_auth {}",
            forward_auth.get(*i).map_or("?", |s| s.name.as_str())
        ),
        Credential::Any(list) => list
            .iter()
            .map(|c| credential_text(c, providers, forward_auth))
            .collect::<Vec<_>>()
            .join(" or "),
        Credential::All(list) => format!(
            "all of ({})",
            list.iter()
                .map(|c| credential_text(c, providers, forward_auth))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
