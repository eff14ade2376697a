//! `cors` (top level, and per route), checked and compiled into `policy::cors::Cors`.

use super::check::Check;
use super::file::CorsSection;
use crate::policy::cors::{Cors, OriginPattern};
use http::Method;
use std::sync::Arc;
use std::time::Duration;

/// The compiled settings; `None` (with problems reported) when they are wrong. `route_methods`
/// is the default for `allowed_methods` (empty: GET, HEAD, POST).
pub(super) fn compile(
    s: &CorsSection,
    route_methods: &[Method],
    c: &mut Check<'_>,
) -> Option<Arc<Cors>> {
    if s.allowed_origins.is_empty() {
        c.problem("allowed_origins", "list at least one origin (or `*`)");
    }
    let origins: Vec<OriginPattern> = s
        .allowed_origins
        .iter()
        .enumerate()
        .filter_map(|(i, o)| origin(o, &mut c.index("allowed_origins", i)))
        .collect();
    if s.allow_credentials && origins.contains(&OriginPattern::Any) {
        c.problem(
            "allow_credentials",
            "browsers refuse `*` with credentials: list the origins instead",
        );
    }
    let methods = match &s.allowed_methods {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let parsed = Method::from_bytes(m.as_bytes()).ok();
                if parsed.is_none() {
                    c.index("allowed_methods", i)
                        .here(format!("\"{m}\" is not a method"));
                }
                parsed
            })
            .collect(),
        None if route_methods.is_empty() => vec![Method::GET, Method::HEAD, Method::POST],
        None => route_methods.to_vec(),
    };
    let names = |key: &str, list: &[String], c: &mut Check<'_>| -> Vec<String> {
        list.iter()
            .enumerate()
            .filter_map(
                |(i, h)| match http::HeaderName::from_bytes(h.trim().as_bytes()) {
                    Ok(name) => Some(name.as_str().to_string()),
                    Err(_) => {
                        c.index(key, i)
                            .here(format!("\"{h}\" is not a header name"));
                        None
                    }
                },
            )
            .collect()
    };
    let allow_headers = names("allowed_headers", &s.allowed_headers, c);
    let expose_headers = names("exposed_headers", &s.exposed_headers, c);
    let max_age = s.max_age.unwrap_or(Duration::from_secs(600));
    c.range(
        "max_age",
        max_age,
        Duration::ZERO..=Duration::from_secs(86_400),
        "at most 24h",
    );
    c.ok().then(|| {
        Arc::new(Cors {
            origins,
            methods,
            allow_headers,
            expose_headers,
            credentials: s.allow_credentials,
            max_age: max_age.as_secs(),
        })
    })
}

/// One allowed origin: `*`, `scheme://host[:port]`, or `scheme://*.domain[:port]`.
fn origin(text: &str, c: &mut Check<'_>) -> Option<OriginPattern> {
    if text == "*" {
        return Some(OriginPattern::Any);
    }
    let bad = |c: &mut Check<'_>, why: &str| {
        c.here(format!("\"{text}\": {why}"));
        None
    };
    let lower = text.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return bad(
            c,
            "an origin is `scheme://host[:port]`, e.g. https://app.example.com",
        );
    };
    if scheme != "https" && scheme != "http" {
        return bad(c, "the scheme is http or https");
    }
    let (host, port) = match rest.rsplit_once(':').filter(|_| !rest.ends_with(']')) {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        Some(_) => return bad(c, "not a port after `:`"),
        None => (rest, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    if let Some(domain) = host.strip_prefix("*.") {
        // At least two labels after the wildcard: `https://*.com` would take every .com site.
        if domain.split('.').count() < 2 || !domain.split('.').all(label_ok) {
            return bad(c, "a wildcard is `*.` before a domain of two labels or more, e.g. https://*.example.com");
        }
        return Some(OriginPattern::Subdomains {
            scheme: scheme.to_string(),
            suffix: format!(".{domain}{port}"),
        });
    }
    let ip = host.parse::<std::net::Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    if !ip && !host.split('.').all(label_ok) {
        return bad(
            c,
            "not a host name (no path, query or wildcard other than a leading `*.`)",
        );
    }
    Some(OriginPattern::Exact(format!("{scheme}://{host}{port}")))
}
