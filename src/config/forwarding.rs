//! What the gateway believes of, and owns in, request headers: `identity_headers` (the
//! namespace a client's copies are stripped from) and `trusted_proxies` (whose
//! `X-Forwarded-For` entries are believed).

use super::check::Check;
use super::file::IdentityHeadersSection;
use crate::forward::IdentityNamespace;
use crate::policy::networks::Cidr;
use crate::upstream::PoolSpec;
use http::HeaderName;

/// The header names the gateway owns: the built-in namespace, the additions and exceptions
/// of `identity_headers`, and every upstream's assertion header.
pub(super) fn identity_namespace(
    ih: &IdentityHeadersSection,
    upstreams: &[PoolSpec],
    c: &mut Check<'_>,
) -> IdentityNamespace {
    for (key, list) in [
        ("prefixes", &ih.prefixes),
        ("names", &ih.names),
        ("allow", &ih.allow),
    ] {
        for (i, name) in list.iter().enumerate() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() || name.len() < 3 {
                c.index(key, i)
                    .here(format!("\"{name}\" is not a header name (or prefix)"));
            }
        }
    }
    for (i, name) in ih.allow.iter().enumerate() {
        if IdentityNamespace::is_injected(name) {
            c.index("allow", i).here(format!(
                "{name} is set by the gateway from the verified identity; a client's copy is never forwarded"
            ));
        }
    }
    // A custom assertion header is the gateway's too: a client's copy never passes.
    let mut owned_names = ih.names.clone();
    for u in upstreams {
        if let Some(a) = &u.assertion {
            owned_names.push(a.header.as_str().to_string());
            if ih
                .allow
                .iter()
                .any(|n| n.eq_ignore_ascii_case(a.header.as_str()))
            {
                c.problem(
                    "allow",
                    format!(
                        "{} carries upstream {}'s identity assertion",
                        a.header, u.name
                    ),
                );
            }
        }
    }
    IdentityNamespace::new(&ih.prefixes, &owned_names, &ih.allow)
}

/// Proxies whose `X-Forwarded-For` entries are believed when they are the peer.
pub(super) fn trusted_proxies(list: &[String], c: &mut Check<'_>) -> Vec<Cidr> {
    let mut trusted = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match t.parse::<Cidr>() {
            Ok(cidr) => trusted.push(cidr),
            Err(e) => c.index("trusted_proxies", i).here(e),
        }
    }
    trusted
}
