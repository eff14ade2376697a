//! The top-level `forward_auth`: the auth services routes name (`auth: { forward_auth: NAME }`),
//! checked and built into `auth::forward_auth::ForwardAuth`s, in the map's order (a route's
//! credential holds its service's position).

use super::check::Check;
use super::file::ForwardAuthSection;
use super::providers::CallLimits;
use crate::auth::forward_auth::{ForwardAuth, Settings};
use crate::forward::IdentityNamespace;
use http::HeaderName;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn compile(
    sections: &BTreeMap<String, ForwardAuthSection>,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Vec<Arc<ForwardAuth>> {
    super::named_services(sections, "forward_auth", c, |name, s, c| {
        service(name, s, namespace, c)
    })
}

fn service(
    name: &str,
    s: &ForwardAuthSection,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Option<ForwardAuth> {
    super::service_url(&s.url, c);
    let names = |key: &str, list: &[String], c: &mut Check<'_>| -> Vec<HeaderName> {
        let mut out = Vec::new();
        for (i, h) in list.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => out.push(n),
                Err(_) => c
                    .index(key, i)
                    .here(format!("\"{h}\" is not a header name")),
            }
        }
        out
    };
    let request_headers = names("request_headers", &s.request_headers, c);
    let response_headers = names("response_headers", &s.response_headers, c);
    for (i, h) in response_headers.iter().enumerate() {
        // The gateway removes the client's copies of these only inside its namespace.
        if !namespace.contains(h.as_str()) {
            c.index("response_headers", i).here(format!(
                "\"{h}\" is outside the identity namespace (X-User-..., X-Auth-..., X-Tenant-...), so a client could send it too"
            ));
        }
    }
    let listed = |key: &str, name: &Option<String>, c: &mut Check<'_>| {
        let name = name.as_ref()?;
        let found = response_headers
            .iter()
            .find(|n| n.as_str().eq_ignore_ascii_case(name));
        if found.is_none() {
            c.problem(key, "must be one of `response_headers`");
        }
        found.cloned()
    };
    let subject_header = listed("subject_header", &s.subject_header, c);
    let roles_header = listed("roles_header", &s.roles_header, c);
    let limits = CallLimits::compile(s.timeout, s.max_concurrent, &s.breaker, c);
    let max_per_client = super::per_client(s.max_concurrent_per_client, limits.max_concurrent, c);
    if !c.ok() {
        return None;
    }
    let settings = Settings {
        url: s.url.clone(),
        timeout: limits.timeout,
        request_headers,
        response_headers,
        subject_header,
        roles_header,
        max_concurrent: limits.max_concurrent,
        max_per_client,
        breaker_failures: limits.breaker_failures,
        breaker_open_for: limits.breaker_open_for,
    };
    match ForwardAuth::new(name, settings) {
        Ok(service) => Some(service),
        Err(e) => {
            c.here(e);
            None
        }
    }
}
