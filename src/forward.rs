//! What goes upstream: the engine's plan for an allowed request (`Forward`), and `prepare`,
//! which turns the client's request into the upstream request by that plan. The proxy and
//! `portcullis explain` both call `prepare`, so explain shows exactly what would be sent.
//!
//! Header hygiene between the client and the backend: what the gateway removes from a
//! request before it is forwarded, the proxy headers it sets, and the identity it asserts.
//!
//! The gateway owns the identity namespace (`IdentityNamespace`): by default `X-User-*`,
//! `X-Tenant-*`, `X-Auth-*`, `X-Client-*`, `X-Consumer-*`, `X-Identity-*`, `X-SSL-*`, the
//! client-certificate headers (`X-Forwarded-Client-Cert`, `Client-Cert`, `Client-Cert-Chain`)
//! and the user headers other stacks trust (`X-Forwarded-User`, `X-Remote-User`,
//! `Remote-User`, `X-Credential-Identifier`, `X-Authenticated-Userid`), plus what the
//! configuration adds. Names compare in any case and with any punctuation in place of `-`
//! (`x_user_id`, `X.User.ID`, `X~User~ID`), however many times sent. Every such header from
//! the client is removed on every route, public or not, before the verified identity (if any)
//! is added.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and are never forwarded:
//! `Connection`, `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`, `TE`, `Trailer`,
//! `Upgrade`, and every header the client's `Connection` header names. A client cannot use
//! `Connection` to remove the headers that frame or route the request (`Host`,
//! `Content-Length`, `Transfer-Encoding`) nor the ones the gateway itself sets: such a request
//! is ambiguous and is rejected with 400 `invalid_connection_header` before routing.
//! (WebSocket upgrades are therefore not proxied yet.)

use crate::assertion::Assertion;
use crate::auth::mtls::{self, ClientCert};
use crate::auth::Identity;
use crate::policy::networks;
use crate::policy::Denial;
use crate::request_id::{self, RequestId};
use crate::routing::Route;
use http::header::{HeaderName, HeaderValue, CONNECTION};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType::InternalError, Result};
use std::net::IpAddr;
use std::sync::Arc;

/// The engine's plan for an allowed request: everything `prepare` needs besides the request
/// itself and the gateway-wide `ForwardPolicy`. Only allowed requests have one.
#[derive(Debug)]
pub struct Forward {
    pub route: Arc<Route>,
    /// The verified caller, on protected routes.
    pub identity: Option<Arc<Identity>>,
    /// The canonical path and query, when they differ from what the client sent.
    pub target: Option<String>,
    /// The client, as decided from the peer and trusted proxies.
    pub client_ip: Option<IpAddr>,
    /// The `X-Forwarded-For` chain to send (the trusted part of the client's, plus the peer).
    pub forwarded_for: Option<String>,
    /// The connection's verified client certificate, told to the backend.
    pub client_cert: Option<Arc<ClientCert>>,
    /// The request came over TLS.
    pub https: bool,
    /// A refusal that a report-mode policy computed but did not enforce.
    pub reported: Option<Denial>,
    /// `RateLimit-Policy` and `RateLimit` values for the response, when a limit applied.
    pub rate_headers: Option<crate::policy::RateHeaders>,
    /// CORS headers for the response, on a route with CORS.
    pub cors: crate::policy::cors::CorsHeaders,
    /// The protocol of an upgrade handshake (`Upgrade: websocket`) on a route that lets
    /// upgrades through; the only case where `Upgrade` is forwarded.
    pub upgrade: Option<HeaderValue>,
}

/// The `Upgrade` a request asks for: `Connection` names `upgrade` and there is exactly one
/// `Upgrade` header.
pub fn upgrade_requested(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let nominated = headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let mut upgrade = headers.get_all(http::header::UPGRADE).iter();
    match (nominated, upgrade.next(), upgrade.next()) {
        (true, Some(protocol), None) if !protocol.is_empty() => Some(protocol.clone()),
        _ => None,
    }
}

/// What the gateway does to every forwarded request, whatever the route: the headers it
/// owns, the credential headers it removes, how a client certificate is told, and each
/// upstream's identity assertion.
#[derive(Debug, Clone, Default)]
pub struct ForwardPolicy {
    pub namespace: IdentityNamespace,
    /// API-key headers, removed like `Authorization`.
    pub key_headers: Vec<HeaderName>,
    pub cert_forward: mtls::Forward,
    /// What each upstream takes beyond the common headers, by upstream index.
    pub upstreams: Vec<UpstreamForward>,
}

/// One upstream's part of the `ForwardPolicy`.
#[derive(Debug, Clone, Default)]
pub struct UpstreamForward {
    /// The identity assertion its requests carry.
    pub assertion: Option<Arc<Assertion>>,
    /// It speaks HTTP/2, so trailers pass through to the client and a client's
    /// `TE: trailers` (which gRPC servers require) is forwarded to it.
    pub trailers: bool,
}

/// Turn the client's request into the upstream request: hop-by-hop and identity-namespace
/// headers out, the verified identity (and its signed assertion) in, `Authorization` removed
/// on protected routes unless kept, the canonical path, and the forwarding headers.
pub fn prepare(
    req: &mut RequestHeader,
    plan: &Forward,
    policy: &ForwardPolicy,
    request_id: &RequestId,
    now: u64,
) -> Result<()> {
    // HTTP/2 carries the host in :authority rather than a Host header; read it before the
    // target is rewritten to origin form. A clone of the header's value shares its bytes.
    let host = match req.headers.get(http::header::HOST) {
        Some(h) => h.to_str().is_ok().then(|| h.clone()),
        None => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let accepts_trailers = req.headers.get_all(http::header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    });
    strip_hop_by_hop(req);
    let route = &plan.route;
    let upstream = policy.upstreams.get(route.upstream);
    // Hop-by-hop, so removed above; put back, alone, for a handshake the route allows.
    if let Some(protocol) = &plan.upgrade {
        req.insert_header("connection", "upgrade")?;
        req.insert_header("upgrade", protocol.clone())?;
    }
    // The one `TE` HTTP/2 allows (RFC 9113 §8.2.2), where the gateway relays trailers.
    if accepts_trailers && upstream.is_some_and(|u| u.trailers) {
        req.insert_header("te", "trailers")?;
    }
    policy.namespace.strip(req);
    // Only a certificate the listener verified; client-sent copies went with the namespace.
    match (plan.client_cert.as_deref(), policy.cert_forward) {
        (None, _) => {}
        (Some(cert), mtls::Forward::Headers) => {
            for (name, value) in cert.headers() {
                req.insert_header(name, value)?;
            }
        }
        (Some(cert), mtls::Forward::Xfcc) => {
            req.insert_header("x-forwarded-client-cert", cert.xfcc())?;
        }
    }
    if let Some(id) = plan.identity.as_deref() {
        inject_identity(req, id)?;
        if let Some(a) = upstream.and_then(|u| u.assertion.as_deref()) {
            // `sign` cuts off a query itself.
            let path = plan.target.as_deref().unwrap_or_else(|| req.uri.path());
            let token = a
                .signer
                .sign(id, req.method.as_str(), path, request_id.as_str(), now)
                .map_err(|e| Error::explain(InternalError, e))?;
            req.insert_header(a.header.clone(), token)?;
        }
    }
    // The backend gets the verified identity, not the token (unless the route asks).
    if !route.auth.is_public() && !route.auth.keep_authorization {
        req.remove_header(&http::header::AUTHORIZATION);
        for h in &policy.key_headers {
            req.remove_header(h);
        }
    }
    if let Some(target) = plan.target.as_deref() {
        // Forward exactly the path that was routed and decided on. An HTTP/2 request's
        // scheme and authority stay: an HTTP/2 backend gets its :authority from them.
        let mut uri = http::Uri::builder();
        if let (Some(scheme), Some(authority)) = (req.uri.scheme(), req.uri.authority()) {
            uri = uri.scheme(scheme.clone()).authority(authority.clone());
        }
        let uri = uri
            .path_and_query(target)
            .build()
            .map_err(|e| Error::because(InternalError, "canonical path", e))?;
        req.set_uri(uri);
    }
    set_forwarded(
        req,
        plan.forwarded_for.clone(),
        plan.client_ip,
        plan.https,
        host,
    )?;
    req.insert_header(request_id::HEADER, request_id.header_value())?;
    Ok(())
}

/// The path and query to forward when they differ from what the client sent: the canonical
/// path, and the query without an API-key parameter (a key never reaches a backend).
pub fn forwarded_target(
    path: &str,
    canonical: &str,
    query: Option<&str>,
    key_param: Option<&str>,
) -> Option<String> {
    let stripped = match (query, key_param) {
        (Some(q), Some(p)) => crate::auth::api_key::query_without(q, p),
        _ => None,
    };
    if canonical == path && stripped.is_none() {
        return None;
    }
    Some(match stripped.as_deref().or(query) {
        Some(q) if !q.is_empty() => format!("{canonical}?{q}"),
        _ => canonical.to_string(),
    })
}

/// Always removed before forwarding. Built once as `HeaderName`s: a name given as a string
/// is parsed again on every removal.
static HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Never removable through a `Connection` nomination.
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// `X-User-ID`, `x_user_id`, `X.USER.ID`, `X~User~ID` all normalise to `x-user-id`.
fn normalised(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

fn normalise(name: &str) -> Vec<u8> {
    name.bytes().map(normalised).collect()
}

fn starts_normalised(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name.iter().zip(prefix).all(|(a, p)| normalised(*a) == *p)
}

fn equals_normalised(name: &[u8], target: &[u8]) -> bool {
    name.len() == target.len() && starts_normalised(name, target)
}

/// Prefixes the gateway owns by default.
const DEFAULT_PREFIXES: &[&str] = &[
    "x-user-",
    "x-tenant-",
    "x-auth-",
    "x-client-",
    "x-consumer-",
    "x-identity-",
    "x-ssl-",
];

/// Single names the gateway owns by default: certificate headers and the user headers that
/// other proxies set and backends often trust.
const DEFAULT_NAMES: &[&str] = &[
    "x-forwarded-client-cert",
    "client-cert",
    "client-cert-chain",
    "x-forwarded-user",
    "x-remote-user",
    "remote-user",
    "x-credential-identifier",
    "x-authenticated-userid",
];

/// Headers the gateway sets from a verified identity; never let through from a client.
pub const INJECTED: &[&str] = &[
    "x-user-id",
    "x-user-email",
    "x-user-roles",
    "x-user-permissions",
    "x-user-scopes",
    "x-tenant-id",
    "x-client-id",
    "x-auth-method",
    "x-auth-provider",
];

/// The header names the gateway owns, compiled once.
#[derive(Debug, Clone)]
pub struct IdentityNamespace {
    prefixes: Vec<Vec<u8>>,
    names: Vec<Vec<u8>>,
    /// Client headers inside the namespace that may pass anyway (configured).
    allow: Vec<Vec<u8>>,
}

impl Default for IdentityNamespace {
    fn default() -> Self {
        Self::new(&[], &[], &[])
    }
}

impl IdentityNamespace {
    /// The defaults plus configured `prefixes` and `names`, minus `allow`.
    pub fn new(prefixes: &[String], names: &[String], allow: &[String]) -> Self {
        let mut p: Vec<Vec<u8>> = DEFAULT_PREFIXES.iter().map(|s| normalise(s)).collect();
        p.extend(prefixes.iter().map(|s| normalise(s)));
        let mut n: Vec<Vec<u8>> = DEFAULT_NAMES.iter().map(|s| normalise(s)).collect();
        n.extend(names.iter().map(|s| normalise(s)));
        Self {
            prefixes: p,
            names: n,
            allow: allow.iter().map(|s| normalise(s)).collect(),
        }
    }

    /// Whether a header name belongs to the namespace. Runs for every header of every
    /// request, so it compares in place instead of building a normalised copy.
    pub fn contains(&self, name: &str) -> bool {
        let n = name.as_bytes();
        let owned = self.prefixes.iter().any(|p| starts_normalised(n, p))
            || self.names.iter().any(|t| equals_normalised(n, t));
        owned && !self.allow.iter().any(|a| equals_normalised(n, a))
    }

    /// Whether `name` is one the gateway sets itself (so it can never be allowed through).
    pub fn is_injected(name: &str) -> bool {
        INJECTED
            .iter()
            .any(|t| equals_normalised(name.as_bytes(), t.as_bytes()))
    }

    /// Remove every client-sent header of the namespace.
    pub fn strip(&self, req: &mut RequestHeader) {
        let forged: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|k| self.contains(k.as_str()))
            .cloned()
            .collect();
        for name in &forged {
            req.remove_header(name);
        }
    }
}

/// Add the verified identity. Values were checked when the token was (no control
/// characters, no commas inside list items), so they are valid header values.
fn inject_identity(req: &mut RequestHeader, id: &Identity) -> Result<()> {
    // API keys name a consumer (X-Client-ID), not a user.
    if !id.subject.is_empty() {
        req.insert_header("x-user-id", id.subject.as_str())?;
    }
    req.insert_header("x-auth-method", id.method)?;
    if !id.provider.is_empty() {
        req.insert_header("x-auth-provider", id.provider.as_str())?;
    }
    for (name, values) in [
        ("x-user-roles", &id.roles),
        ("x-user-scopes", &id.scopes),
        ("x-user-permissions", &id.permissions),
    ] {
        if !values.is_empty() {
            req.insert_header(name, values.join(","))?;
        }
    }
    for (name, value) in [
        ("x-tenant-id", &id.tenant),
        ("x-user-email", &id.email),
        ("x-client-id", &id.client_id),
    ] {
        if let Some(v) = value {
            req.insert_header(name, v.as_str())?;
        }
    }
    for (name, value) in &id.extra {
        req.insert_header(name.clone(), value.as_str())?;
    }
    Ok(())
}

/// True when `Connection` names a header that must not be removable (see the module docs).
pub fn connection_nominates_protected(headers: &http::HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|token| {
            let token = token.trim_ascii();
            PROTECTED
                .iter()
                .any(|p| p.as_bytes().eq_ignore_ascii_case(token))
        })
    })
}

/// Remove hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    // Collect nominations first: the Connection header itself is about to go.
    let mut nominated: Vec<HeaderName> = Vec::new();
    for value in req.headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                if !PROTECTED.contains(&name.as_str()) && !nominated.contains(&name) {
                    nominated.push(name);
                }
            }
        }
    }
    for name in &HOP_BY_HOP {
        // remove_header removes every instance of the header
        req.remove_header(name);
    }
    for name in &nominated {
        req.remove_header(name);
    }
}

/// Set `X-Forwarded-For` (computed by `policy::networks::ForwardedChain`), `X-Real-IP`
/// (the client as decided), `X-Forwarded-Proto` and `X-Forwarded-Host`, replacing whatever
/// the client sent for them; a client's `Forwarded` header (RFC 7239) is removed, since the
/// gateway does not vouch for it.
pub fn set_forwarded(
    req: &mut RequestHeader,
    forwarded_for: Option<String>,
    client: Option<IpAddr>,
    https: bool,
    host: Option<HeaderValue>,
) -> Result<()> {
    // Inserted by their `&'static str` names (Pingora keeps each header's case from the name
    // given); removed by pre-built `HeaderName`s.
    match forwarded_for {
        Some(chain) => req.insert_header("x-forwarded-for", chain)?,
        None => {
            req.remove_header(&X_FORWARDED_FOR);
        }
    }
    match client {
        Some(ip) => {
            let mut text = String::with_capacity(15);
            networks::push_ip(&mut text, ip);
            req.insert_header("x-real-ip", text)?;
        }
        None => {
            req.remove_header(&X_REAL_IP);
        }
    }
    req.remove_header(&http::header::FORWARDED);
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    req.insert_header("x-forwarded-proto", proto)?;
    match host {
        Some(h) => req.insert_header("x-forwarded-host", h)?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn connection_nominated_headers_are_removed_but_framing_is_protected() {
        let mut r = req(&[
            ("Connection", "close, X-Secret, Content-Length"),
            ("Connection", "Host, x-other"),
            ("X-Secret", "1"),
            ("X-Other", "1"),
            ("Content-Length", "0"),
            ("Host", "a"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Kept", "1"),
        ]);
        strip_hop_by_hop(&mut r);
        for gone in ["connection", "x-secret", "x-other", "keep-alive", "te"] {
            assert!(r.headers.get(gone).is_none(), "{gone} was forwarded");
        }
        for kept in ["content-length", "host", "x-kept"] {
            assert!(r.headers.get(kept).is_some(), "{kept} was removed");
        }
    }

    #[test]
    fn forged_identity_headers_are_removed_in_every_spelling() {
        let mut r = req(&[
            ("X-User-ID", "admin"),
            ("x_user_id", "admin"),
            ("X.User.ID", "admin"),
            ("X-USER-ROLES", "root"),
            ("x-auth-method", "jwt"),
            ("X-Tenant-Id", "other"),
            ("x_client_id", "c"),
            ("X-Userland", "kept"),
            ("X-Request-ID", "kept"),
        ]);
        IdentityNamespace::default().strip(&mut r);
        let mut left: Vec<_> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["x-request-id", "x-userland"]);
    }

    #[test]
    fn the_namespace_is_configurable_but_never_lets_injected_names_through() {
        let ns = IdentityNamespace::new(
            &["X-Gw-".into()],
            &["X-Employee".into()],
            &["X-Client-Version".into()],
        );
        for owned in [
            "x-gw-route",
            "X_Employee",
            "x~user~id",
            "X+User+ID",
            "X!Tenant!Region",
            "x-ssl-client-dn",
            "Client-Cert",
            "X-Forwarded-Client-Cert",
            "remote_user",
            "x-consumer-username",
            "X-Identity-Assertion",
        ] {
            assert!(ns.contains(owned), "{owned}");
        }
        for free in ["x-client-version", "X-Employees", "x-request-id", "accept"] {
            assert!(!ns.contains(free), "{free}");
        }
        assert!(IdentityNamespace::is_injected("X_User_ID"));
        assert!(!IdentityNamespace::is_injected("X-Client-Version"));
    }

    #[test]
    fn nominating_a_protected_header_is_detected_in_any_case() {
        for v in [
            "close, Content-Length",
            "HOST",
            "keep-alive,x-forwarded-for",
            "X-Request-ID",
        ] {
            let r = req(&[("Connection", v)]);
            assert!(connection_nominates_protected(&r.headers), "{v}");
        }
        let r = req(&[("Connection", "close, x-user-id")]);
        assert!(!connection_nominates_protected(&r.headers));
    }

    #[test]
    fn forwarding_headers_are_the_gateways_not_the_clients() {
        let mut r = req(&[
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Real-IP", "10.0.0.1"),
            ("Forwarded", "for=10.0.0.1"),
        ]);
        let client: std::net::IpAddr = "203.0.113.4".parse().unwrap();
        set_forwarded(
            &mut r,
            Some("203.0.113.4".into()),
            Some(client),
            false,
            Some(HeaderValue::from_static("api.example.com")),
        )
        .unwrap();
        let xff: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["203.0.113.4"]);
        assert_eq!(r.headers["x-real-ip"], "203.0.113.4");
        assert!(r.headers.get("forwarded").is_none());
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.headers["x-forwarded-host"], "api.example.com");
    }
}
