//! The top-level `opa`: the OPA servers routes take decisions from (`auth: { opa: NAME }`),
//! checked and built into `policy::opa::OpaServer`s.

use super::check::Check;
use super::file::OpaSection;
use super::policies::{input_headers, result_headers};
use super::providers::CallLimits;
use crate::forward::IdentityNamespace;
use crate::policy::opa::{OpaServer, Settings};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn compile(
    sections: &BTreeMap<String, OpaSection>,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Vec<Arc<OpaServer>> {
    super::named_services(sections, "opa", c, |name, s, c| {
        server(name, s, namespace, c)
    })
}

fn server(
    name: &str,
    s: &OpaSection,
    namespace: &IdentityNamespace,
    c: &mut Check<'_>,
) -> Option<OpaServer> {
    if super::service_url(&s.url, c) && !s.url.contains("/v1/data/") {
        c.problem(
            "url",
            "the Data API address of the deciding document, e.g. http://127.0.0.1:8181/v1/data/gateway/authz/allow",
        );
    }
    let headers = input_headers(&s.headers, c);
    let result_headers = result_headers(&s.result_headers, namespace, c);
    let cache = s.cache.as_ref().map(|cache| {
        c.range(
            "cache.ttl",
            cache.ttl,
            Duration::from_secs(1)..=Duration::from_secs(3600),
            "between 1s and 1h",
        );
        let capacity = cache.capacity.unwrap_or(10_000);
        if capacity == 0 {
            c.problem(
                "cache.capacity",
                "at least 1 (leave `cache` out to ask every time)",
            );
        }
        (cache.ttl, capacity)
    });
    let limits = CallLimits::compile(s.timeout, s.max_concurrent, &s.breaker, c);
    let max_per_client = super::per_client(s.max_concurrent_per_client, limits.max_concurrent, c);
    if !c.ok() {
        return None;
    }
    let settings = Settings {
        url: s.url.clone(),
        timeout: limits.timeout,
        headers,
        result_headers,
        cache,
        max_concurrent: limits.max_concurrent,
        max_per_client,
        breaker_failures: limits.breaker_failures,
        breaker_open_for: limits.breaker_open_for,
    };
    match OpaServer::new(name, settings) {
        Ok(server) => Some(server),
        Err(e) => {
            c.here(e);
            None
        }
    }
}
