//! Route policies: what a route demands of a request, and the decision for one request.
//!
//! A policy names the credentials a route accepts (`public`, `jwt`, `any`, `all`), what the
//! authenticated identity must hold (roles: any of; scopes and permissions: all of; one
//! permission per method), which client networks may call it, and whether a refusal is
//! enforced or only reported (shadow mode). Evaluation order: network rules, credentials,
//! then requirements; the first refusal is the answer.
//!
//! Nothing here knows about Pingora: `evaluate` takes plain request facts and returns a
//! decision, so the proxy, `portcullis explain` and `portcullis stdio` share it.

pub mod cors;
pub mod networks;
pub mod opa;
pub mod rego;
pub mod time_window;

mod credentials;
mod requirements;
#[cfg(test)]
mod tests;

pub use credentials::bearer_present;

use crate::auth::api_key::ApiKeys;
use crate::auth::mtls::{CertIdentities, ClientCert};
use crate::auth::provider::Provider;
use crate::auth::revocation::Revocations;
use crate::auth::Identity;
use credentials::verify_credential;
use networks::Cidr;
use requirements::check_requirements;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// The `RateLimit-Policy` and `RateLimit` values for one response, allowed or refused
/// (built by `ratelimit`; carried here because a refusal carries them too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHeaders {
    pub policy: http::HeaderValue,
    pub state: http::HeaderValue,
}

/// What a route requires, compiled from its `auth` section.
#[derive(Debug, Clone)]
pub struct Policy {
    pub credential: Credential,
    pub require: Requirements,
    pub networks: Option<NetworkRule>,
    /// When the route is open (`auth.during`); outside it, `403 outside_time_window`.
    pub during: Option<time_window::TimeWindow>,
    /// A Rego policy that decides after the requirements (`auth.rego`).
    pub rego: Option<Arc<rego::RegoPolicy>>,
    /// An OPA server that decides last (`auth.opa`).
    pub opa: Option<opa::OpaRule>,
    pub mode: Mode,
    /// Forward the client's `Authorization` header (default: removed on protected routes).
    pub keep_authorization: bool,
    /// Bearer tokens must be bound to the connection's client certificate (RFC 8705).
    pub bound_tokens: bool,
}

impl Credential {
    /// `any` of these, tried in this order except that a provider's `jwt` comes before its
    /// `introspection`: a token that verifies under the provider's keys is judged there
    /// (`credentials::any` then never sends it to introspection), whatever the file's order.
    pub fn any(options: Vec<Credential>) -> Self {
        let has_jwt = |p: usize| options.contains(&Credential::Jwt(p));
        let judged_by_jwt =
            |c: &Credential| matches!(c, Credential::Introspection(p) if has_jwt(*p));
        let (later, first): (Vec<Credential>, Vec<Credential>) =
            options.iter().cloned().partition(judged_by_jwt);
        Self::Any(first.into_iter().chain(later).collect())
    }
}

impl Policy {
    pub fn public() -> Self {
        Self {
            credential: Credential::Public,
            require: Requirements::default(),
            networks: None,
            during: None,
            rego: None,
            opa: None,
            mode: Mode::Enforce,
            keep_authorization: false,
            bound_tokens: false,
        }
    }

    pub fn is_public(&self) -> bool {
        matches!(self.credential, Credential::Public)
    }

    /// True when the route accepts HMAC-signed requests (their body must be read first).
    pub fn verifies_signatures(&self) -> bool {
        match &self.credential {
            Credential::Hmac => true,
            Credential::Any(list) | Credential::All(list) => {
                list.iter().any(|c| matches!(c, Credential::Hmac))
            }
            _ => false,
        }
    }
}

/// The credentials a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Public,
    /// A bearer JWT from this provider (index into the providers).
    Jwt(usize),
    /// A bearer token this provider's introspection endpoint says is active.
    Introspection(usize),
    /// A key from the consumers file.
    ApiKey,
    /// A verified client certificate (mTLS) whose identity matches one of these patterns
    /// (any identity when empty).
    Mtls(Vec<String>),
    /// An HMAC-signed request (RFC 9421) with a key of the signing keys file.
    Hmac,
    /// This ForwardAuth service (index into the services) allows the request.
    ForwardAuth(usize),
    /// The first of these that the request carries and that verifies.
    Any(Vec<Credential>),
    /// Every one of these must verify.
    All(Vec<Credential>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Any one of these roles.
    pub roles: Vec<String>,
    /// All of these scopes.
    pub scopes: Vec<String>,
    /// All of these permissions.
    pub permissions: Vec<String>,
    /// The permission each method needs, e.g. `DELETE` -> `delete`.
    pub method_permissions: Vec<(http::Method, String)>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
            && self.scopes.is_empty()
            && self.permissions.is_empty()
            && self.method_permissions.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRule {
    /// When not empty, the client must be in one of these.
    pub allow: Vec<Cidr>,
    /// The client must be in none of these.
    pub deny: Vec<Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    /// Decide, log and count, but forward anyway.
    Report,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Report => "report",
        }
    }
}

/// A refusal: the status, a stable code, a message for the caller, and the headers that go
/// with it. Nothing in it comes from the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// `WWW-Authenticate` value, when one applies.
    pub challenge: Option<String>,
    /// `Retry-After` seconds, for 503.
    pub retry_after: Option<u64>,
    /// `Allow` methods, for 405.
    pub allow: Option<String>,
    /// `RateLimit-Policy` and `RateLimit`, for 429.
    pub rate_headers: Option<RateHeaders>,
    /// CORS headers, on a route with CORS (so a page can read the refusal).
    pub cors: cors::CorsHeaders,
    /// An auth service's own answer (ForwardAuth), sent instead of the JSON body.
    pub answer: Option<Box<ServiceAnswer>>,
}

/// The answer of a ForwardAuth service that refused a request: the client gets its status,
/// these headers and this body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAnswer {
    pub headers: Vec<(&'static str, String)>,
    pub body: bytes::Bytes,
}

/// A stable error code with its status and default message: the answers the gateway gives
/// with no more to say than these (`gateway::response` has the ones of proxying itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

/// A request body that did not arrive in time, whether it was read for its signature
/// (`Denial::body_timeout`) or on its way to the backend (the proxy's own answer).
pub const BODY_TIMEOUT: ErrorKind = ErrorKind {
    status: 408,
    code: "body_timeout",
    message: "The request body did not arrive in time.",
};

impl From<ErrorKind> for Denial {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind.status, kind.code, kind.message)
    }
}

impl Denial {
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after: None,
            allow: None,
            rate_headers: None,
            cors: Vec::new(),
            answer: None,
        }
    }

    pub fn route_not_found() -> Self {
        Self::new(404, "route_not_found", "No route matches this request.")
    }

    /// The route exists for other methods: 405 with them in `Allow`.
    pub fn method_not_allowed(allow: String) -> Self {
        let mut d = Self::new(
            405,
            "method_not_allowed",
            "This route does not accept this method; see the Allow header.",
        );
        d.allow = Some(allow);
        d
    }

    /// Two `Host` headers, or an absolute-form target naming another host than `Host`
    /// (H19, P11): which one the backend would use is anyone's guess.
    pub fn ambiguous_host() -> Self {
        Self::new(
            400,
            "ambiguous_host",
            "The request names more than one host (two Host headers, or a target for another host).",
        )
    }

    /// A request the gateway cannot read as one (a target or `Host` that is not text).
    pub fn bad_request() -> Self {
        Self::new(400, "bad_request", "The request is malformed.")
    }

    /// The `Host` names another server than the TLS connection was made for (X9).
    pub fn misdirected() -> Self {
        Self::new(
            421,
            "misdirected_request",
            "This connection was made for another host name; connect to the one you address.",
        )
    }

    /// `Connection` nominates a header that frames or identifies the request.
    pub fn invalid_connection_header() -> Self {
        Self::new(
            400,
            "invalid_connection_header",
            "The Connection header names a header that frames or identifies the request.",
        )
    }

    /// More than one `Content-Length`, or one that is not a plain number: the backend could
    /// frame the body differently from the gateway (S3).
    pub fn invalid_content_length() -> Self {
        Self::new(
            400,
            "invalid_content_length",
            "The request must carry at most one Content-Length, a plain number.",
        )
    }

    /// A resumed TLS session whose client certificate was revoked (or expired) since.
    pub fn client_cert_revoked() -> Self {
        Self::new(
            401,
            "client_cert_revoked",
            "The client certificate of this TLS session has been revoked or has expired; reconnect.",
        )
    }

    /// A signed request's body is larger than the gateway buffers to verify it.
    pub fn signed_body_too_large() -> Self {
        Self::new(
            413,
            "signed_body_too_large",
            "The body of a signed request may be at most 65536 bytes.",
        )
    }

    /// A signed request's body did not arrive in time.
    pub fn body_timeout() -> Self {
        BODY_TIMEOUT.into()
    }

    /// The gateway failed itself (never the caller's fault).
    pub fn internal() -> Self {
        Self::new(
            500,
            "internal_error",
            "The gateway failed to handle the request.",
        )
    }

    /// The response headers that go with the refusal, in the order they are written: the
    /// proxy, `explain` and `stdio` all render these.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        let challenge = self
            .challenge
            .iter()
            .map(|c| ("www-authenticate", c.clone()));
        let retry = self
            .retry_after
            .iter()
            .map(|r| ("retry-after", r.to_string()));
        let allow = self.allow.iter().map(|a| ("allow", a.clone()));
        let text = |v: &http::HeaderValue| v.to_str().unwrap_or_default().to_owned();
        let rate = self.rate_headers.iter().flat_map(move |r| {
            [
                ("ratelimit-policy", text(&r.policy)),
                ("ratelimit", text(&r.state)),
            ]
        });
        let cors = self.cors.iter().cloned();
        challenge.chain(retry).chain(allow).chain(rate).chain(cors)
    }

    pub fn decision_label(&self) -> &'static str {
        if self.status == 503 {
            "unavailable"
        } else {
            "deny"
        }
    }
}

/// The result of evaluating a route's policy for one request.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Who the caller is, when a credential verified (also when a requirement then failed).
    pub identity: Option<Arc<Identity>>,
    /// Why the request is refused; `None` when it is allowed.
    pub denial: Option<Denial>,
}

impl Verdict {
    /// Refused before anyone was identified.
    fn refused(denial: Denial) -> Self {
        Self {
            identity: None,
            denial: Some(denial),
        }
    }
}

/// The credential checkers a policy can call on.
#[derive(Debug, Clone, Copy)]
pub struct Authenticators<'a> {
    pub providers: &'a [Provider],
    pub api_keys: Option<&'a ApiKeys>,
    /// Revoked tokens and subjects, checked after a bearer token verifies.
    pub revocations: Option<&'a Revocations>,
    /// How a client certificate names the caller (`mtls` credential).
    pub client_certs: Option<&'a CertIdentities>,
    /// The route takes only certificate-bound bearer tokens (set from the policy).
    pub bound_tokens: bool,
    /// Signing keys, rules and nonce store (`hmac` credential).
    pub signing: Option<&'a crate::auth::http_sig::Signing>,
    /// The ForwardAuth services (`forward_auth` credential).
    pub forward_auth: &'a [Arc<crate::auth::forward_auth::ForwardAuth>],
}

/// What `evaluate` looks at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
    /// The raw query string (API keys may be read from it when configured).
    pub query: Option<&'a str>,
    /// The client, as decided from the peer address and trusted proxies; `None` when it
    /// cannot be told (then any network rule refuses).
    pub client_ip: Option<IpAddr>,
    pub now: u64,
    /// One more permission the caller must hold (the decision protocol's
    /// `required_permission`).
    pub extra_permission: Option<&'a str>,
    /// The connection's verified client certificate.
    pub client_cert: Option<&'a ClientCert>,
    /// `Host` (or `:authority`) as received.
    pub host: Option<&'a str>,
    /// The canonical path: what is routed and forwarded.
    pub path: &'a str,
    /// The path exactly as the client sent it, before any decoding: what an RFC 9421
    /// signature covers as `@path`.
    pub raw_path: &'a str,
    /// Whether the request came over TLS.
    pub https: bool,
    /// The request body, when the gateway read it (signed requests on `hmac` routes).
    pub body: Option<&'a [u8]>,
}

/// A record of what was checked, for `portcullis explain`. Off on the hot path.
#[derive(Debug, Default)]
pub struct Trace {
    pub enabled: bool,
    pub steps: Vec<(String, String)>,
}

impl Trace {
    pub fn on() -> Self {
        Self {
            enabled: true,
            steps: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, what: impl FnOnce() -> String, outcome: impl FnOnce() -> String) {
        if self.enabled {
            self.steps.push((what(), outcome()));
        }
    }
}

const REALM: &str = "portcullis";

/// Evaluate `policy` for a request.
pub async fn evaluate(
    policy: &Policy,
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Verdict {
    if let Some(rule) = &policy.networks {
        let allowed = network_allows(rule, facts.client_ip);
        trace.note(
            || "network rule".into(),
            || {
                let client = facts
                    .client_ip
                    .map_or("unknown".to_string(), |ip| ip.to_string());
                format!(
                    "client {client}: {}",
                    if allowed { "allowed" } else { "refused" }
                )
            },
        );
        if !allowed {
            return Verdict::refused(Denial::new(
                403,
                "network_denied",
                "Requests from this network are not allowed on this route.",
            ));
        }
    }
    // Like the network, the hour is the request's, not the caller's: checked before any
    // credential, so an anonymous client outside the window costs no verification.
    if let Some(window) = &policy.during {
        let open = window.contains(facts.now);
        trace.note(
            || format!("time window: {window}"),
            || if open { "open".into() } else { "closed".into() },
        );
        if !open {
            return Verdict::refused(Denial::new(
                403,
                "outside_time_window",
                format!("This route is open {window} only."),
            ));
        }
    }
    let auth = &Authenticators {
        bound_tokens: policy.bound_tokens,
        ..*auth
    };
    let identity = match authenticate(&policy.credential, auth, facts, trace).await {
        Ok(identity) => identity,
        Err(denial) => return Verdict::refused(denial),
    };
    let mut identity = identity;
    let mut denial = identity
        .as_deref()
        .and_then(|id| check_requirements(&policy.require, id, facts, trace));
    // Then the route's Rego policy, then its OPA server: each only if all before allowed.
    if let (None, Some(rego)) = (&denial, &policy.rego) {
        denial = rego_decision(rego, &mut identity, facts, trace);
    }
    if let (None, Some(rule)) = (&denial, &policy.opa) {
        denial = opa_decision(rule, &mut identity, facts, trace).await;
    }
    Verdict { identity, denial }
}

/// The facts of a request that an input document is built from.
fn rego_facts<'a>(identity: Option<&'a Identity>, facts: &Facts<'a>) -> rego::RegoFacts<'a> {
    rego::RegoFacts {
        method: facts.method.as_str(),
        path: facts.path,
        query: facts.query,
        headers: facts.headers,
        client_ip: facts.client_ip,
        tls: facts.https,
        now: facts.now,
        identity,
    }
}

/// The route's Rego policy, on the request and the caller (see `rego`).
fn rego_decision(
    rego: &rego::RegoPolicy,
    identity: &mut Option<Arc<Identity>>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Option<Denial> {
    let request = rego_facts(identity.as_deref(), facts);
    trace.note(
        || "rego input".into(),
        || rego::input_json(&rego.input(&request)),
    );
    let verdict = rego.decide(&request);
    note_verdict(trace, || format!("rego {}", rego.rule), &verdict);
    if let rego::RegoVerdict::Error(e) = &verdict {
        tracing::error!(route = %rego.route, rule = %rego.rule, error = %e, "the route's Rego policy failed; refused");
        crate::metrics::metrics()
            .rego_errors
            .with_label_values(&[rego.route.as_str()])
            .inc();
    }
    decided(verdict, identity)
}

/// The route's OPA server, on the request and the caller (see `opa`).
async fn opa_decision(
    rule: &opa::OpaRule,
    identity: &mut Option<Arc<Identity>>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Option<Denial> {
    let server = &rule.server;
    let input = rego::input_document(
        &rego_facts(identity.as_deref(), facts),
        &server.settings.headers,
        &rule.route,
    );
    trace.note(|| "opa input".into(), || rego::input_json(&input));
    let verdict = match server.decide(&input, facts.client_ip).await {
        opa::Answer::Decided(value) => {
            let verdict = rego::verdict(
                Ok::<_, String>(value.map_or(regorus::Value::Undefined, regorus::Value::from)),
                &server.settings.url,
                &server.settings.result_headers,
            );
            if let rego::RegoVerdict::Error(e) = &verdict {
                tracing::error!(route = %rule.route, server = %server.name, error = %e, "the OPA server's result is not a decision; refused");
            }
            verdict
        }
        // Logged and counted where it was answered (`OpaServer::ask`).
        opa::Answer::PolicyError(e) => rego::RegoVerdict::Error(e),
        opa::Answer::Unavailable { retry_after } => {
            trace.note(|| format!("opa {}", server.name), || "unavailable".into());
            let mut d = Denial::new(
                503,
                "policy_unavailable",
                "The policy server is unavailable; try again later.",
            );
            d.retry_after = Some(retry_after);
            return Some(d);
        }
    };
    note_verdict(trace, || format!("opa {}", server.name), &verdict);
    decided(verdict, identity)
}

fn note_verdict(trace: &mut Trace, what: impl FnOnce() -> String, verdict: &rego::RegoVerdict) {
    trace.note(what, || match verdict {
        rego::RegoVerdict::Allow(headers) if headers.is_empty() => "allow".into(),
        rego::RegoVerdict::Allow(headers) => {
            let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
            format!("allow, adding {}", names.join(", "))
        }
        rego::RegoVerdict::Deny(reason) => format!(
            "deny{}",
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        rego::RegoVerdict::Error(e) => format!("error: {e}"),
    });
}

/// A policy's verdict as the request's answer: an allow adds its headers to the identity
/// (replacing the ones of the same name), a refusal is 403, an error is 500 (fail closed).
fn decided(verdict: rego::RegoVerdict, identity: &mut Option<Arc<Identity>>) -> Option<Denial> {
    match verdict {
        rego::RegoVerdict::Allow(headers) => {
            if let (false, Some(id)) = (headers.is_empty(), identity.as_mut()) {
                let mut owned = (**id).clone();
                owned
                    .extra
                    .retain(|(name, _)| !headers.iter().any(|(added, _)| added == name));
                owned.extra.extend(headers);
                *id = Arc::new(owned);
            }
            None
        }
        rego::RegoVerdict::Deny(reason) => Some(Denial::new(
            403,
            "policy_denied",
            reason.unwrap_or_else(|| "The route's policy does not allow this request.".into()),
        )),
        rego::RegoVerdict::Error(_) => Some(Denial::new(
            500,
            "policy_error",
            "The route's policy could not be evaluated.",
        )),
    }
}

fn network_allows(rule: &NetworkRule, client: Option<IpAddr>) -> bool {
    // An address we cannot tell is refused by any rule: fail closed.
    let Some(ip) = client else { return false };
    if rule.deny.iter().any(|c| c.contains(ip)) {
        return false;
    }
    rule.allow.is_empty() || rule.allow.iter().any(|c| c.contains(ip))
}

async fn authenticate(
    credential: &Credential,
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Option<Arc<Identity>>, Denial> {
    match credential {
        Credential::Public => {
            trace.note(
                || "credential".into(),
                || "public route: none needed".into(),
            );
            Ok(None)
        }
        _ => match Box::pin(verify_credential(credential, auth, facts, trace)).await {
            Ok(id) => Ok(Some(id)),
            Err(f) => Err(f.denial),
        },
    }
}
