//! `routes`: what each route matches, where it goes, its timeouts and its `auth` (compiled
//! by `policies`), checked and compiled into `routing::Route`s. A route that matches exactly
//! what an earlier one matches could never be used, and is reported.

use super::check::Check;
use super::file::WebSocketSection;
use super::file::{ConfigFile, MatchSection, RouteAuthSection, RouteSection, RouteTimeouts};
use super::upstreams::Upstreams;
use super::{policies, valid_name};
use crate::routing::{PathMatch, Route, Upgrades};
use http::Method;
use std::collections::HashSet;
use std::time::Duration;

/// Every route that compiled, in the file's order (route rate limits are added later).
pub(super) fn compile(
    file: &ConfigFile,
    base: &std::path::Path,
    upstreams: &Upstreams,
    named: &policies::Named<'_>,
    c: &mut Check<'_>,
) -> Vec<Route> {
    if file.routes.is_empty() {
        c.problem("routes", "at least one route is required");
    }
    let mut routes: Vec<Route> = Vec::new();
    let mut route_names = HashSet::new();
    for (i, r) in file.routes.iter().enumerate() {
        let mut c = c.index("routes", i);
        if !valid_name(&r.name) {
            c.problem(
                "name",
                "names use only letters, digits, `-` and `_`, and are not empty",
            );
        } else if !route_names.insert(r.name.clone()) {
            c.problem("name", format!("route name \"{}\" is used twice", r.name));
        }
        let Some(spec) = route(r, file, base, upstreams, named, &mut c) else {
            continue;
        };
        if let Some(earlier) = routes.iter().find(|o| same_match(o, &spec)) {
            c.problem(
                "match",
                format!(
                    "matches exactly what route \"{}\" matches, so it could never be used",
                    earlier.name
                ),
            );
        }
        routes.push(spec);
    }
    routes
}

/// One route; `None` when its path, upstream or auth is unusable (a bad host, method or
/// timeout is reported but does not stop the duplicate check).
fn route(
    r: &RouteSection,
    file: &ConfigFile,
    base: &std::path::Path,
    upstreams: &Upstreams,
    named: &policies::Named<'_>,
    c: &mut Check<'_>,
) -> Option<Route> {
    let upstream = upstreams.position(&r.upstream);
    // An upstream that exists but failed to compile has its own problem already.
    if upstream.is_none() && !file.upstreams.contains_key(&r.upstream) {
        c.problem("upstream", format!("unknown upstream \"{}\"", r.upstream));
    }
    let path = path_match(&r.matcher, &mut c.at("match"));
    let host = host(&r.matcher, &mut c.at("match"));
    let methods = methods(&r.matcher, &mut c.at("match"));
    let (connect_timeout, read_timeout, write_timeout) = match &r.timeouts {
        Some(t) => timeouts(t, &mut c.at("timeouts")),
        None => (None, None, None),
    };
    let auth = match &r.auth {
        None => {
            c.problem(
                "auth",
                "every route states its auth: `public` or a policy such as `{ jwt: PROVIDER }`",
            );
            None
        }
        Some(section) => policies::compile(section, &r.name, base, named, &mut c.at("auth")),
    };
    let cors = match (&r.cors, &file.cors) {
        (Some(own), _) => super::cors::compile(own, &methods, &mut c.at("cors")),
        // The top-level section's problems are reported once, at `cors` (config/mod.rs).
        (None, Some(shared)) => {
            let mut reported_there = Vec::new();
            super::cors::compile(shared, &methods, &mut Check::root(&mut reported_there))
        }
        (None, None) => None,
    };
    let upgrades = r
        .websocket
        .as_ref()
        .and_then(|w| upgrades(w, &mut c.at("websocket")));
    let (path, upstream, auth) = (path?, upstream?, auth?);
    Some(Route {
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
        cors,
        upgrades,
    })
}

/// A route's `websocket`, with the defaults: 60 s idle (nginx's `proxy_read_timeout`), at
/// most an hour open.
fn upgrades(w: &WebSocketSection, c: &mut Check<'_>) -> Option<Upgrades> {
    let (idle, lifetime) = match w {
        WebSocketSection::On(false) => return None,
        WebSocketSection::On(true) => (None, None),
        WebSocketSection::Limits(l) => (l.idle_timeout, l.max_lifetime),
    };
    let idle_timeout = idle.unwrap_or(Duration::from_secs(60));
    let max_lifetime = lifetime.unwrap_or(Duration::from_secs(3600));
    let day = Duration::from_secs(86_400);
    c.range(
        "idle_timeout",
        idle_timeout,
        Duration::from_secs(1)..=day,
        "between 1s and 24h",
    );
    c.range(
        "max_lifetime",
        max_lifetime,
        Duration::from_secs(1)..=Duration::from_secs(7 * 86_400),
        "between 1s and 7d",
    );
    c.ok().then_some(Upgrades {
        idle_timeout,
        max_lifetime,
    })
}

fn path_match(m: &MatchSection, c: &mut Check<'_>) -> Option<PathMatch> {
    match (&m.path, &m.path_prefix) {
        (Some(p), None) => route_path(p, &mut c.at("path")).then(|| PathMatch::Exact(p.clone())),
        (None, Some(p)) => {
            route_path(p, &mut c.at("path_prefix")).then(|| PathMatch::Prefix(p.clone()))
        }
        (Some(_), Some(_)) => {
            c.here("give either `path` or `path_prefix`, not both");
            None
        }
        (None, None) => {
            c.here("one of `path` (exact) or `path_prefix` is required");
            None
        }
    }
}

fn route_path(p: &str, c: &mut Check<'_>) -> bool {
    let ok = p.starts_with('/')
        && !p.contains('?')
        && !p.contains('#')
        && p.bytes().all(|b| b > b' ' && b != 0x7f);
    if !ok {
        c.here(format!(
            "\"{p}\" must start with `/` and hold no query, fragment, spaces or control characters"
        ));
    }
    ok
}

/// The host matched, lower-cased; `None` (reported) when it is not a plain host name.
fn host(m: &MatchSection, c: &mut Check<'_>) -> Option<String> {
    let h = m.host.as_ref()?.to_ascii_lowercase();
    if h.is_empty()
        || h.contains(':')
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        c.problem(
            "host",
            format!("\"{h}\" is not a host name (no port, no wildcard)"),
        );
        return None;
    }
    Some(h)
}

fn methods(m: &MatchSection, c: &mut Check<'_>) -> Vec<Method> {
    let mut methods = Vec::new();
    let Some(names) = &m.methods else {
        return methods;
    };
    if names.is_empty() {
        c.problem(
            "methods",
            "leave `methods` out to match every method; an empty list matches nothing",
        );
    }
    for (j, name) in names.iter().enumerate() {
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase());
        match Method::from_bytes(name.as_bytes()) {
            Ok(method) if valid => {
                if methods.contains(&method) {
                    c.index("methods", j)
                        .here(format!("{name} is listed twice"));
                }
                methods.push(method);
            }
            _ => c.index("methods", j).here(format!(
                "\"{name}\" is not an HTTP method (use upper case, e.g. GET)"
            )),
        }
    }
    methods
}

type Timeouts = (Option<Duration>, Option<Duration>, Option<Duration>);

/// The route's connect, read and write timeouts, replacing the pool's.
fn timeouts(t: &RouteTimeouts, c: &mut Check<'_>) -> Timeouts {
    for (key, v) in [("connect", t.connect), ("read", t.read), ("write", t.write)] {
        if v == Some(Duration::ZERO) {
            c.problem(key, "must be above zero");
        }
    }
    (t.connect, t.read, t.write)
}

/// Two routes match the same requests: same host, path and set of methods.
fn same_match(a: &Route, b: &Route) -> bool {
    let mut am: Vec<_> = a.methods.iter().map(|m| m.as_str()).collect();
    let mut bm: Vec<_> = b.methods.iter().map(|m| m.as_str()).collect();
    am.sort_unstable();
    bm.sort_unstable();
    a.host == b.host && a.path == b.path && am == bm
}

/// The credentials that need a section of their own (`api_keys`, a listener asking for
/// client certificates, `request_signing`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Sectioned {
    ApiKey,
    Mtls,
    Hmac,
}

/// Does any route's auth accept `credential`, alone or inside `any` / `all`?
pub(super) fn some_route_accepts(routes: &[RouteSection], credential: Sectioned) -> bool {
    let names = |api_key: bool, mtls: bool, hmac: bool| match credential {
        Sectioned::ApiKey => api_key,
        Sectioned::Mtls => mtls,
        Sectioned::Hmac => hmac,
    };
    routes.iter().any(|r| match &r.auth {
        Some(RouteAuthSection::Policy(p)) => {
            names(p.api_key, p.mtls, p.hmac)
                || p.any
                    .iter()
                    .chain(p.all.iter())
                    .flatten()
                    .any(|c| names(c.api_key, c.mtls, c.hmac))
        }
        _ => false,
    })
}
