//! `decide`: from the facts of one request to the `Decision`, with no Pingora in sight. The
//! proxy reads a request into `RequestFacts` once and applies the decision once; `portcullis
//! explain` and `portcullis stdio` call the same function on the same facts, so the three
//! cannot disagree.
//!
//! In order: the request must be readable as one request (one host, `Host` naming the server
//! the TLS connection was made for, a `Connection` header that removes nothing that frames or
//! identifies it, a target that is text); then its canonical path; the route; the
//! failed-authentication guard; the route's policy (`policy::evaluate`); the rate limits.

use crate::auth::api_key::ApiKeys;
use crate::auth::http_sig::Signing;
use crate::auth::mtls::{CertIdentities, ClientCert};
use crate::auth::provider::Provider;
use crate::auth::revocation::Revocations;
use crate::auth::Identity;
use crate::forward::{self, Forward};
use crate::metrics::metrics;
use crate::policy::cors::{Cors, CorsHeaders};
use crate::policy::networks::{self, Cidr};
use crate::policy::{evaluate, Authenticators, Denial, Facts, Mode, Trace};
use crate::ratelimit::{FailedAuthGuard, Limits};
use crate::routing::canon::canonical_path;
use crate::routing::{strip_port, Route, RouteMatch, RouteTable};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// Everything that decides a request: routes with their policies, the credential checkers,
/// which proxies' `X-Forwarded-For` to believe, and the rate limits.
pub struct Engine {
    pub(crate) routes: RouteTable,
    pub(crate) providers: Vec<Provider>,
    pub(crate) api_keys: Option<Arc<ApiKeys>>,
    pub(crate) revocations: Option<Arc<Revocations>>,
    pub(crate) cert_identities: Arc<CertIdentities>,
    pub(crate) signing: Option<Arc<Signing>>,
    pub(crate) forward_auth: Vec<Arc<crate::auth::forward_auth::ForwardAuth>>,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) limits: Limits,
}

/// One request, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    /// The path and query exactly as sent (the bytes of the request line's target, or of
    /// `:path`): the URI parser would silently drop a `#...` part or take `api/admin` for
    /// something else, so the raw bytes are what get canonicalised.
    pub target: &'a [u8],
    /// The authority of an absolute-form target (`GET http://host/...`), or HTTP/2's
    /// `:authority`.
    pub authority: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// Unix seconds.
    pub now: u64,
    /// One more permission the caller must hold (the decision protocol's field).
    pub extra_permission: Option<&'a str>,
    /// The connection's verified client certificate (mTLS listeners).
    pub client_cert: Option<&'a Arc<ClientCert>>,
    /// The server name the client asked for in the TLS handshake, on listeners that hold
    /// the `Host` to it (mTLS listeners).
    pub sni: Option<&'a str>,
    /// Whether the request came over TLS.
    pub https: bool,
    /// The body, once read for a signed request (see `Decision::NeedsBody`).
    pub body: Option<&'a [u8]>,
}

impl<'a> RequestFacts<'a> {
    /// A plain-HTTP request from `peer` with no client certificate and no body yet; the
    /// other facts are set field by field.
    pub fn new(
        method: &'a http::Method,
        target: &'a [u8],
        headers: &'a http::HeaderMap,
        peer: Option<IpAddr>,
        now: u64,
    ) -> Self {
        Self {
            method,
            target,
            authority: None,
            headers,
            peer,
            now,
            extra_permission: None,
            client_cert: None,
            sni: None,
            https: false,
            body: None,
        }
    }
}

/// What the engine decided.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Forward, by this plan.
    Forward(Forward),
    /// Answer with this refusal instead.
    Refuse(Refusal<'a>),
    /// Nothing was decided yet: the route verifies a signature over the body, so read it (at
    /// most `http_sig::MAX_SIGNED_BODY` bytes) and decide again with `RequestFacts::body`.
    NeedsBody,
    /// A CORS preflight from an allowed origin: answer `204` with these headers, before any
    /// authentication (a preflight carries no credentials) and without the backend.
    Preflight(Preflight),
}

/// The gateway's own answer to a CORS preflight.
#[derive(Debug)]
pub struct Preflight {
    pub route: Arc<Route>,
    pub headers: CorsHeaders,
    /// The canonical path it was routed by.
    pub path: String,
    pub client_ip: Option<IpAddr>,
}

/// A refusal, with what the engine found before it refused (for the log and `explain`).
#[derive(Debug)]
pub struct Refusal<'a> {
    pub denial: Denial,
    /// The canonical path, when the request got that far.
    pub path: Option<Cow<'a, str>>,
    pub route: Option<Arc<Route>>,
    /// The verified caller, when a credential verified but a requirement failed.
    pub identity: Option<Arc<Identity>>,
    pub client_ip: Option<IpAddr>,
}

impl Refusal<'_> {
    fn early(denial: Denial) -> Self {
        Self {
            denial,
            path: None,
            route: None,
            identity: None,
            client_ip: None,
        }
    }
}

impl Engine {
    pub async fn decide<'a>(&self, facts: &RequestFacts<'a>, trace: &mut Trace) -> Decision<'a> {
        let Readable {
            host,
            path,
            raw_query,
        } = match read_request(facts) {
            Ok(read) => read,
            Err(why) => {
                let denial = why.denial();
                trace.note(|| "request".into(), || format!("refused: {}", denial.code));
                return Decision::Refuse(Refusal::early(denial));
            }
        };
        let query = raw_query.and_then(|q| std::str::from_utf8(q).ok());
        let chain = facts
            .peer
            .map(|peer| networks::ForwardedChain::read(peer, facts.headers, &self.trusted_proxies));
        let client_ip = chain.as_ref().and_then(|c| c.client);
        let refuse = |mut denial: Denial, path, route: Option<Arc<Route>>, identity| {
            // A page may read the refusal (a 401's JSON) when its origin is allowed.
            if let Some(cors) = route.as_ref().and_then(|r| r.cors.as_deref()) {
                denial.cors = cors.response(facts.headers);
            }
            Decision::Refuse(Refusal {
                denial,
                path,
                route,
                identity,
                client_ip,
            })
        };
        let canonical = match canonical_path(path) {
            Ok(p) => p,
            Err(e) => {
                trace.note(|| "path".into(), || format!("refused: {}", e.code()));
                return refuse(Denial::new(400, e.code(), e.message()), None, None, None);
            }
        };
        trace.note(|| "canonical path".into(), || canonical.to_string());
        // A CORS preflight is routed by the method it asks about; from an allowed origin the
        // gateway answers it, and any other is handled as the `OPTIONS` request it is.
        if let Some(asked) = Cors::preflight_method(facts.method, facts.headers) {
            if let RouteMatch::Found(route) = self.routes.find(host, &canonical, &asked) {
                if let Some(headers) = route
                    .cors
                    .as_deref()
                    .and_then(|c| c.preflight(facts.headers))
                {
                    trace.note(
                        || "cors".into(),
                        || {
                            format!(
                                "preflight for {asked} on route {}: answered 204",
                                route.name
                            )
                        },
                    );
                    return Decision::Preflight(Preflight {
                        route: route.clone(),
                        headers,
                        path: canonical.into_owned(),
                        client_ip,
                    });
                }
            }
        }
        let route = match self.route_for(host, &canonical, facts.method, trace) {
            Ok(route) => route,
            Err(d) => return refuse(*d, Some(canonical), None, None),
        };
        let guard = self
            .limits
            .failed_auth
            .as_deref()
            .filter(|_| !route.auth.is_public());
        if let Some(d) = guard
            .zip(client_ip)
            .and_then(|(g, ip)| blocked(g, ip, trace))
        {
            return refuse(d, Some(canonical), Some(route), None);
        }
        // A signed request's body is read only once the address may still authenticate.
        if facts.body.is_none()
            && route.auth.verifies_signatures()
            && facts.headers.contains_key("signature-input")
        {
            trace.note(|| "body".into(), || "needed for the signature".into());
            return Decision::NeedsBody;
        }
        let policy_facts = Facts {
            method: facts.method,
            headers: facts.headers,
            query,
            client_ip,
            now: facts.now,
            extra_permission: facts.extra_permission,
            client_cert: facts.client_cert.map(|c| &**c),
            host,
            path: &canonical,
            raw_path: path,
            https: facts.https,
            body: facts.body,
        };
        let verdict = evaluate(&route.auth, &self.authenticators(), &policy_facts, trace).await;
        if let (Some(g), Some(ip), Some(401)) =
            (guard, client_ip, verdict.denial.as_ref().map(|d| d.status))
        {
            count_failure(g, ip);
        }
        let identity = verdict.identity;
        let mode = route.auth.mode;
        let mut reported = None;
        let mut rate_headers = None;
        match verdict.denial {
            None => {
                route.allowed.inc();
                match self
                    .limits
                    .check(&route, identity.as_deref(), client_ip, facts.headers, trace)
                    .await
                {
                    Ok(shown) => rate_headers = shown,
                    Err(d) => return refuse(d, Some(canonical), Some(route), identity),
                }
            }
            Some(d) => {
                metrics()
                    .policy_decisions
                    .with_label_values(&[&route.name, d.decision_label(), d.code, mode.label()])
                    .inc();
                match mode {
                    Mode::Enforce => return refuse(d, Some(canonical), Some(route), identity),
                    Mode::Report => {
                        trace.note(
                            || "mode".into(),
                            || format!("report: would answer {} {}, forwarded", d.status, d.code),
                        );
                        reported = Some(d);
                    }
                }
            }
        }
        let key_param = self
            .api_keys
            .as_deref()
            .and_then(|k| k.query_param.as_deref());
        let upgrade = route
            .upgrades
            .and_then(|_| forward::upgrade_requested(facts.headers));
        if let Some(protocol) = &upgrade {
            trace.note(
                || "upgrade".into(),
                || {
                    format!(
                        "{} handshake forwarded",
                        String::from_utf8_lossy(protocol.as_bytes())
                    )
                },
            );
        }
        let route_cors = route
            .cors
            .as_deref()
            .map(|c| c.response(facts.headers))
            .unwrap_or_default();
        // The query is forwarded as sent; only a key parameter is taken out of it.
        let raw_query = raw_query.map(String::from_utf8_lossy);
        Decision::Forward(Forward {
            target: forward::forwarded_target(path, &canonical, raw_query.as_deref(), key_param),
            forwarded_for: chain.as_ref().map(networks::ForwardedChain::header),
            client_cert: facts.client_cert.cloned(),
            https: facts.https,
            route,
            identity,
            client_ip,
            reported,
            rate_headers,
            cors: route_cors,
            upgrade,
        })
    }

    /// The route for a request, or the refusal: 405 with the methods that would have
    /// matched, or 404.
    fn route_for(
        &self,
        host: Option<&str>,
        path: &str,
        method: &http::Method,
        trace: &mut Trace,
    ) -> Result<Arc<Route>, Box<Denial>> {
        match self.routes.find(host, path, method) {
            RouteMatch::Found(route) => {
                trace.note(
                    || "route".into(),
                    || format!("{} (upstream #{})", route.name, route.upstream),
                );
                Ok(route.clone())
            }
            RouteMatch::MethodNotAllowed(methods) => {
                let allow = methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                trace.note(
                    || "route".into(),
                    || format!("none takes the method; allow {allow}"),
                );
                Err(Box::new(Denial::method_not_allowed(allow)))
            }
            RouteMatch::NotFound => {
                trace.note(|| "route".into(), || "no route matches".into());
                Err(Box::new(Denial::route_not_found()))
            }
        }
    }

    fn authenticators(&self) -> Authenticators<'_> {
        Authenticators {
            providers: &self.providers,
            api_keys: self.api_keys.as_deref(),
            revocations: self.revocations.as_deref(),
            client_certs: Some(&self.cert_identities),
            bound_tokens: false,
            signing: self.signing.as_deref(),
            forward_auth: &self.forward_auth,
        }
    }

    /// The routes, in the order they are tried.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The identity providers (their remote keys are refreshed by the composition root).
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn forward_auth(&self) -> &[Arc<crate::auth::forward_auth::ForwardAuth>] {
        &self.forward_auth
    }

    pub fn api_keys(&self) -> Option<&Arc<ApiKeys>> {
        self.api_keys.as_ref()
    }

    pub fn signing(&self) -> Option<&Signing> {
        self.signing.as_deref()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// The refusal for an address the failed-authentication guard blocks, if it does.
fn blocked(guard: &FailedAuthGuard, ip: IpAddr, trace: &mut Trace) -> Option<Denial> {
    let left = guard.blocked_for(ip)?;
    trace.note(
        || "failed-auth guard".into(),
        || format!("address blocked for {left} s more"),
    );
    metrics()
        .auth_throttled
        .with_label_values(&["refused"])
        .inc();
    let mut d = Denial::new(
        429,
        "auth_throttled",
        "Too many failed authentication attempts from this address; try again later.",
    );
    d.retry_after = Some(left);
    Some(d)
}

/// Count a failed authentication from `ip`; block the address once it has too many.
fn count_failure(guard: &FailedAuthGuard, ip: IpAddr) {
    if guard.failed(ip) {
        metrics()
            .auth_throttled
            .with_label_values(&["blocked"])
            .inc();
        tracing::warn!(client = %ip, "too many failed authentications; address blocked");
    }
}

/// The request as one request: the host it names, its path and raw query.
struct Readable<'a> {
    host: Option<&'a str>,
    path: &'a str,
    raw_query: Option<&'a [u8]>,
}

/// Why a request cannot be read as one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    /// Two `Host`s, or an absolute-form target naming another host (H19, P11).
    AmbiguousHost,
    /// A `Host` or target that is not text.
    Malformed,
    /// `Host` is not the server name of the TLS connection (X9).
    Misdirected,
    /// `Connection` nominates a header that frames or identifies the request.
    ProtectedConnectionHeader,
    /// More than one `Content-Length`, or one that is not a plain number (S3).
    BadContentLength,
}

impl Unreadable {
    fn denial(self) -> Denial {
        match self {
            Self::AmbiguousHost => Denial::ambiguous_host(),
            Self::Malformed => Denial::bad_request(),
            Self::Misdirected => Denial::misdirected(),
            Self::ProtectedConnectionHeader => Denial::invalid_connection_header(),
            Self::BadContentLength => Denial::invalid_content_length(),
        }
    }
}

/// The request read as one request, or why it cannot be: these checks come before anything
/// else, in the proxy and the tools alike.
fn read_request<'a>(facts: &RequestFacts<'a>) -> Result<Readable<'a>, Unreadable> {
    let mut hosts = facts.headers.get_all(http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Unreadable::AmbiguousHost),
        (Some(h), None) => match h.to_str() {
            // An absolute-form target naming another host than Host (H19, P11).
            Ok(h) if facts.authority.is_some_and(|a| !a.eq_ignore_ascii_case(h)) => {
                return Err(Unreadable::AmbiguousHost)
            }
            Ok(h) => Some(h),
            Err(_) => return Err(Unreadable::Malformed),
        },
        (None, None) => facts.authority,
    };
    // X9: a connection made for one name (and maybe certified for it) is not used for
    // another: on mTLS listeners the Host must name the server the client asked for.
    if let (Some(sni), Some(h)) = (facts.sni, host) {
        if !strip_port(h).eq_ignore_ascii_case(sni) {
            return Err(Unreadable::Misdirected);
        }
    }
    if forward::connection_nominates_protected(facts.headers) {
        return Err(Unreadable::ProtectedConnectionHeader);
    }
    // S3, RFC 9112 §6.3: the parser takes `Content-Length: 3, 3` and two equal lines, but a
    // backend may frame them otherwise; one plain number is the only length forwarded.
    let mut lengths = facts.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let plain = !first.is_empty() && first.as_bytes().iter().all(u8::is_ascii_digit);
        if !plain || lengths.next().is_some() {
            return Err(Unreadable::BadContentLength);
        }
    }
    let (raw_path, raw_query) = match facts.target.iter().position(|b| *b == b'?') {
        Some(i) => (&facts.target[..i], Some(&facts.target[i + 1..])),
        None => (facts.target, None),
    };
    let path = std::str::from_utf8(raw_path).map_err(|_| Unreadable::Malformed)?;
    Ok(Readable {
        host,
        path,
        raw_query,
    })
}

#[cfg(test)]
mod tests;
