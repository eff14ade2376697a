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

pub mod engine;
pub mod networks;

use crate::auth::api_key::{ApiKeys, Presented};
use crate::auth::introspection::Refusal;
use crate::auth::mtls::{ClientCert, ClientCertPolicy};
use crate::auth::provider::Provider;
use crate::auth::revocation::{Check, Revocations};
use crate::auth::{mtls, AuthError, Identity};
use networks::Cidr;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// What a route requires, compiled from its `auth` section.
#[derive(Debug, Clone)]
pub struct Policy {
    pub credential: Credential,
    pub require: Requirements,
    pub networks: Option<NetworkRule>,
    pub mode: Mode,
    /// Forward the client's `Authorization` header (default: removed on protected routes).
    pub keep_authorization: bool,
    /// Bearer tokens must be bound to the connection's client certificate (RFC 8705).
    pub bound_tokens: bool,
}

impl Policy {
    pub fn public() -> Self {
        Self {
            credential: Credential::Public,
            require: Requirements::default(),
            networks: None,
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
    pub rate_headers: Option<(String, String)>,
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

/// The credential checkers a policy can call on.
#[derive(Debug, Clone, Copy)]
pub struct Authenticators<'a> {
    pub providers: &'a [Provider],
    pub api_keys: Option<&'a ApiKeys>,
    /// Revoked tokens and subjects, checked after a bearer token verifies.
    pub revocations: Option<&'a Revocations>,
    /// How a client certificate names the caller (`mtls` credential).
    pub client_certs: Option<&'a ClientCertPolicy>,
    /// The route takes only certificate-bound bearer tokens (set from the policy).
    pub bound_tokens: bool,
    /// Signing keys, rules and nonce store (`hmac` credential).
    pub signing: Option<&'a crate::config::SigningSpec>,
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

    fn note(&mut self, what: impl FnOnce() -> String, outcome: impl FnOnce() -> String) {
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
            return Verdict {
                identity: None,
                denial: Some(Denial::new(
                    403,
                    "network_denied",
                    "Requests from this network are not allowed on this route.",
                )),
            };
        }
    }
    let auth = &Authenticators {
        bound_tokens: policy.bound_tokens,
        ..*auth
    };
    let identity = match authenticate(&policy.credential, auth, facts, trace).await {
        Ok(identity) => identity,
        Err(denial) => {
            return Verdict {
                identity: None,
                denial: Some(denial),
            }
        }
    };
    let denial = identity
        .as_deref()
        .and_then(|id| check_requirements(&policy.require, id, facts, trace));
    Verdict { identity, denial }
}

fn network_allows(rule: &NetworkRule, client: Option<IpAddr>) -> bool {
    // An address we cannot tell is refused by any rule: fail closed.
    let Some(ip) = client else { return false };
    if rule.deny.iter().any(|c| c.contains(ip)) {
        return false;
    }
    rule.allow.is_empty() || rule.allow.iter().any(|c| c.contains(ip))
}

/// A credential's failure, with whether the request carried that credential at all.
struct Failure {
    denial: Denial,
    /// Higher is more specific: a dependency outage, then a verdict on a carried
    /// credential (expired, wrong audience, ...), then "this credential is not this
    /// provider's" (issuer, key, signature), then "not carried".
    rank: u8,
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

async fn verify_credential(
    credential: &Credential,
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    let providers = auth.providers;
    match credential {
        Credential::ApiKey => {
            let Some(keys) = auth.api_keys else {
                return Err(Failure {
                    denial: Denial::new(500, "internal_error", "No consumers file."),
                    rank: 0,
                });
            };
            let outcome = match keys.presented(facts.headers, facts.query) {
                Presented::Missing => Err(AuthError::ApiKeyMissing),
                Presented::Key(k) => keys.authenticate(&k, facts.now),
                Presented::Ambiguous => {
                    return Err(ambiguous(
                        "api_key",
                        "api_key".into(),
                        "The request carries more than one API key.",
                        api_key_challenge(keys),
                        trace,
                    ))
                }
            };
            match outcome {
                Ok(identity) => {
                    keys.allowed.inc();
                    trace.note(
                        || "api_key".into(),
                        || {
                            format!(
                                "verified: consumer {} (key {})",
                                identity.client_id.as_deref().unwrap_or(""),
                                identity.key_id.as_deref().unwrap_or("")
                            )
                        },
                    );
                    Ok(identity)
                }
                Err(e) => {
                    count_denial("api_key", e.code());
                    trace.note(
                        || "api_key".into(),
                        || format!("refused: {} ({})", e.code(), e.message()),
                    );
                    let mut d = Denial::new(401, e.code(), e.message());
                    d.challenge = Some(api_key_challenge(keys));
                    let rank = if e == AuthError::ApiKeyMissing { 1 } else { 3 };
                    Err(Failure { denial: d, rank })
                }
            }
        }
        Credential::Public => Err(Failure {
            denial: Denial::new(500, "internal_error", "A public credential inside any/all."),
            rank: 0,
        }),
        Credential::Hmac => verify_signature(auth, facts, trace).await,
        Credential::Mtls(subjects) => {
            let default = ClientCertPolicy::default();
            let policy = auth.client_certs.unwrap_or(&default);
            let what = || "mtls".to_string();
            match policy.authenticate(facts.client_cert) {
                Ok(identity)
                    if subjects.is_empty()
                        || mtls::subject_allowed(subjects, &identity.subject) =>
                {
                    trace.note(what, || format!("verified: {}", identity.subject));
                    Ok(identity)
                }
                Ok(identity) => {
                    count_denial("mtls", "client_cert_not_allowed");
                    trace.note(what, || {
                        format!("refused: {} is not allowed on this route", identity.subject)
                    });
                    Err(Failure {
                        denial: Denial::new(
                            403,
                            "client_cert_not_allowed",
                            "This client certificate is not allowed on this route.",
                        ),
                        rank: 3,
                    })
                }
                Err(e) => {
                    count_denial("mtls", e.code());
                    trace.note(what, || format!("refused: {} ({})", e.code(), e.message()));
                    let rank = if e == AuthError::ClientCertMissing {
                        1
                    } else {
                        3
                    };
                    Err(Failure {
                        denial: Denial::new(401, e.code(), e.message()),
                        rank,
                    })
                }
            }
        }
        Credential::Jwt(i) | Credential::Introspection(i) => {
            let Some(provider) = providers.get(*i) else {
                return Err(Failure {
                    denial: Denial::new(500, "internal_error", "Unknown identity provider."),
                    rank: 0,
                });
            };
            let introspect = matches!(credential, Credential::Introspection(_));
            let what = || {
                format!(
                    "{} ({})",
                    if introspect { "introspection" } else { "jwt" },
                    provider.name
                )
            };
            let outcome = match bearer_token(facts.headers) {
                Ok(token) => bearer(provider, introspect, token, auth, facts).await,
                Err(BearerProblem::Ambiguous) => {
                    return Err(ambiguous(
                        &provider.name,
                        what(),
                        "The request carries more than one Authorization header.",
                        format!(r#"Bearer realm="{REALM}", error="invalid_request""#),
                        trace,
                    ))
                }
                Err(BearerProblem::Missing) => Err(Refusal::Token(AuthError::MissingToken)),
            };
            match outcome {
                Ok(identity) => {
                    provider.series.allowed.inc();
                    trace.note(what, || format!("verified: subject {}", identity.subject));
                    Ok(identity)
                }
                Err(Refusal::Token(e)) => {
                    count_denial(&provider.name, e.code());
                    trace.note(what, || format!("refused: {} ({})", e.code(), e.message()));
                    Err(jwt_failure(e, provider))
                }
                Err(Refusal::Unavailable {
                    retry_after,
                    circuit_open,
                }) => {
                    count_denial(&provider.name, "introspection_unavailable");
                    let message = if circuit_open {
                        "The token introspection service is failing; requests are refused until it recovers. Try again later."
                    } else {
                        "The token introspection service did not answer; try again later."
                    };
                    trace.note(what, || format!("unavailable: {message}"));
                    let mut d = Denial::new(503, "introspection_unavailable", message);
                    d.retry_after = Some(retry_after);
                    Err(Failure { denial: d, rank: 4 })
                }
            }
        }
        Credential::Any(options) => {
            let mut best: Option<Failure> = None;
            let mut challenges: Vec<String> = Vec::new();
            for option in options {
                match Box::pin(verify_credential(option, auth, facts, trace)).await {
                    Ok(id) => return Ok(id),
                    Err(f) => {
                        if let Some(c) = &f.denial.challenge {
                            challenges.push(c.clone());
                        }
                        if best.as_ref().is_none_or(|b| f.rank > b.rank) {
                            best = Some(f);
                        }
                    }
                }
            }
            let mut best = best.unwrap_or(Failure {
                denial: Denial::new(401, "credentials_missing", "No credential was given."),
                rank: 0,
            });
            // One challenge per accepted scheme: the most specific failure's first, then a
            // bare one for every other scheme the route takes.
            if best.denial.status == 401 {
                let mut all: Vec<String> = best.denial.challenge.iter().cloned().collect();
                for c in challenges {
                    let scheme = c.split(' ').next().unwrap_or("");
                    if !all.iter().any(|a| a.split(' ').next() == Some(scheme)) {
                        all.push(format!(r#"{scheme} realm="{REALM}""#));
                    }
                }
                best.denial.challenge = Some(all.join(", "));
            }
            Err(best)
        }
        Credential::All(parts) => {
            let mut first: Option<Arc<Identity>> = None;
            let mut extra: Vec<Arc<Identity>> = Vec::new();
            for part in parts {
                let id = Box::pin(verify_credential(part, auth, facts, trace)).await?;
                if first.is_none() {
                    first = Some(id);
                } else {
                    extra.push(id);
                }
            }
            let Some(first) = first else {
                return Err(Failure {
                    denial: Denial::new(500, "internal_error", "An empty `all`."),
                    rank: 0,
                });
            };
            if extra.is_empty() {
                return Ok(first);
            }
            // The first credential names the caller; what the others vouch for adds to what
            // the caller may do.
            let mut merged = (*first).clone();
            for id in &extra {
                for (into, from) in [
                    (&mut merged.roles, &id.roles),
                    (&mut merged.scopes, &id.scopes),
                    (&mut merged.permissions, &id.permissions),
                ] {
                    for v in from {
                        if !into.contains(v) {
                            into.push(v.clone());
                        }
                    }
                }
            }
            Ok(Arc::new(merged))
        }
    }
}

/// A bearer token for `provider`: verified as a JWT (and, with `introspect_jwts`, confirmed
/// by introspection), or introspected; then checked against the revocation list.
async fn bearer(
    provider: &Provider,
    introspect: bool,
    token: &str,
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
) -> Result<Arc<Identity>, Refusal> {
    let now = facts.now;
    let identity = if introspect {
        let Some(introspector) = &provider.introspection else {
            return Err(Refusal::Token(AuthError::UnknownKey));
        };
        if token.is_empty() {
            return Err(Refusal::Token(AuthError::MissingToken));
        }
        if token.len() > provider.rules.max_token_bytes {
            return Err(Refusal::Token(AuthError::TokenTooLarge));
        }
        // RFC 6750 b64token: nothing else is sent to the authorization server.
        if !is_b64token(token) {
            return Err(Refusal::Token(AuthError::MalformedToken));
        }
        introspector.introspect(token, now).await?
    } else {
        let identity = provider
            .authenticate(token, now)
            .await
            .map_err(Refusal::Token)?;
        if let Some(i) = provider
            .introspection
            .as_ref()
            .filter(|i| i.settings.introspect_jwts)
        {
            i.introspect(token, now).await?;
        }
        identity
    };
    check_binding(&identity, auth, facts.client_cert).map_err(Refusal::Token)?;
    if let Some(list) = auth.revocations {
        let digest = list
            .has_token_entries()
            .then(|| crate::auth::revocation::token_sha256(token.as_bytes()));
        let revoked = list.is_revoked(&Check {
            jti: identity.jti.as_deref(),
            subject: &identity.subject,
            issued_at: identity.issued_at,
            token_sha256: digest.as_ref(),
            now,
        });
        if revoked {
            crate::metrics::metrics()
                .revoked_rejections
                .with_label_values(&[provider.name.as_str()])
                .inc();
            return Err(Refusal::Token(AuthError::Revoked));
        }
    }
    Ok(identity)
}

/// An HMAC-signed request (RFC 9421): verified over what is forwarded (the canonical path,
/// the body read), then its nonce recorded, once.
async fn verify_signature(
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    use crate::auth::http_sig::{verify, SigError, SignedRequest};
    use crate::auth::nonces::NonceVerdict;
    let Some(signing) = auth.signing else {
        return Err(Failure {
            denial: Denial::new(500, "internal_error", "No signing keys."),
            rank: 0,
        });
    };
    let what = || "hmac".to_string();
    let refuse = |e: SigError, trace: &mut Trace| {
        count_denial("hmac", e.code());
        trace.note(what, || format!("refused: {} ({})", e.code(), e.message()));
        let rank = if e == SigError::Missing { 1 } else { 3 };
        Failure {
            denial: Denial::new(401, e.code(), e.message()),
            rank,
        }
    };
    let request = SignedRequest {
        method: facts.method.as_str(),
        scheme: if facts.https { "https" } else { "http" },
        authority: facts.host.unwrap_or(""),
        path: facts.path,
        query: facts.query,
        headers: facts.headers,
        body: facts.body.unwrap_or(&[]),
    };
    let verified = match verify(&request, &signing.keys.current(), &signing.rules, facts.now) {
        Ok(v) => v,
        Err(e) => return Err(refuse(e, trace)),
    };
    match signing
        .nonces
        .record(
            &verified.key_id,
            &verified.nonce,
            verified.remember_until,
            facts.now,
        )
        .await
    {
        NonceVerdict::Fresh => {
            trace.note(what, || format!("verified: key {}", verified.key_id));
            Ok(verified.identity)
        }
        NonceVerdict::Replayed => Err(refuse(SigError::Replayed, trace)),
        NonceVerdict::Unavailable => {
            count_denial("hmac", "nonce_store_unavailable");
            let mut d = Denial::new(
                503,
                "nonce_store_unavailable",
                "Signed requests cannot be checked for replay right now; try again shortly.",
            );
            d.retry_after = Some(1);
            Err(Failure { denial: d, rank: 4 })
        }
    }
}

/// RFC 8705: a token bound to a certificate is good only on a connection that presented
/// that certificate; a route may take bound tokens only.
fn check_binding(
    identity: &Identity,
    auth: &Authenticators<'_>,
    cert: Option<&ClientCert>,
) -> Result<(), AuthError> {
    match (&identity.cert_thumbprint, cert) {
        (Some(t), Some(c)) if c.matches_thumbprint(t) => Ok(()),
        (Some(_), _) => Err(AuthError::CertificateMismatch),
        (None, _) if auth.bound_tokens => Err(AuthError::NotBound),
        (None, _) => Ok(()),
    }
}

/// `b64token` (RFC 6750 §2.1): `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn jwt_failure(e: AuthError, provider: &Provider) -> Failure {
    if e == AuthError::KeysUnavailable {
        let mut d = Denial::new(503, e.code(), e.message());
        d.retry_after = Some(provider.retry_after_secs());
        return Failure { denial: d, rank: 4 };
    }
    let rank = match e {
        AuthError::MissingToken => 1,
        // What another provider's token (or an opaque token, to a JWT provider) looks like
        // to this one: not a verdict on the token.
        AuthError::WrongIssuer
        | AuthError::UnknownKey
        | AuthError::BadSignature
        | AuthError::MalformedToken => 2,
        _ => 3,
    };
    let mut d = Denial::new(401, e.code(), e.message());
    d.challenge = Some(challenge(e));
    Failure { denial: d, rank }
}

/// RFC 6750 §3: no error code when no credentials were given.
fn challenge(e: AuthError) -> String {
    if e == AuthError::MissingToken {
        format!(r#"Bearer realm="{REALM}""#)
    } else {
        format!(
            r#"Bearer realm="{REALM}", error="invalid_token", error_description="{}""#,
            e.message()
        )
    }
}

/// Two credentials of one kind: which one counts? Refused with 400, never "first one wins".
fn ambiguous(
    provider: &str,
    what: String,
    message: &'static str,
    challenge: String,
    trace: &mut Trace,
) -> Failure {
    count_denial(provider, "ambiguous_credentials");
    trace.note(|| what, || format!("ambiguous: {message}"));
    let mut denial = Denial::new(400, "ambiguous_credentials", message);
    denial.challenge = Some(challenge);
    Failure { denial, rank: 3 }
}

fn api_key_challenge(keys: &ApiKeys) -> String {
    let header = keys.headers.first().map_or("X-API-Key", |h| h.as_str());
    format!(r#"ApiKey realm="{REALM}", header="{header}""#)
}

fn count_denial(provider: &str, code: &'static str) {
    crate::metrics::metrics()
        .auth_decisions
        .with_label_values(&[provider, "deny", code])
        .inc();
}

/// Whether the request carries something in `Authorization`.
pub fn bearer_present(headers: &http::HeaderMap) -> bool {
    !matches!(bearer_token(headers), Err(BearerProblem::Missing))
}

enum BearerProblem {
    Missing,
    Ambiguous,
}

/// The bearer token of the request: one `Authorization` header, scheme `Bearer` in any
/// case, one space, then the token (catalogue T1, T2, E4). Other schemes count as no token.
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, BearerProblem> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(BearerProblem::Missing),
        (Some(_), Some(_)) => return Err(BearerProblem::Ambiguous),
        (Some(v), None) => v,
    };
    let value = value.to_str().map_err(|_| BearerProblem::Missing)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token),
        _ => Err(BearerProblem::Missing),
    }
}

fn list(values: &[impl AsRef<str>]) -> String {
    let mut s = String::from("[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(v.as_ref());
    }
    s.push(']');
    s
}

fn insufficient(code: &'static str, message: String, scope: Option<&[String]>) -> Denial {
    let mut d = Denial::new(403, code, message);
    let scope = scope.map_or(String::new(), |s| format!(r#", scope="{}""#, s.join(" ")));
    d.challenge = Some(format!(
        r#"Bearer realm="{REALM}", error="insufficient_scope"{scope}"#
    ));
    d
}

fn check_requirements(
    req: &Requirements,
    id: &Identity,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Option<Denial> {
    if !req.roles.is_empty() {
        let ok = req.roles.iter().any(|r| id.roles.contains(r));
        trace.note(
            || format!("roles: any of {}", list(&req.roles)),
            || format!("{} (have {})", pass(ok), list(&id.roles)),
        );
        if !ok {
            return Some(insufficient(
                "insufficient_role",
                format!(
                    "Insufficient roles: required one of {}, have {}",
                    list(&req.roles),
                    list(&id.roles)
                ),
                None,
            ));
        }
    }
    if !req.scopes.is_empty() {
        let ok = req.scopes.iter().all(|s| id.scopes.contains(s));
        trace.note(
            || format!("scopes: all of {}", list(&req.scopes)),
            || format!("{} (have {})", pass(ok), list(&id.scopes)),
        );
        if !ok {
            return Some(insufficient(
                "insufficient_scope",
                format!(
                    "Insufficient scopes: required {}, have {}",
                    list(&req.scopes),
                    list(&id.scopes)
                ),
                Some(&req.scopes),
            ));
        }
    }
    let mut needed: Vec<&str> = req.permissions.iter().map(String::as_str).collect();
    for (method, permission) in &req.method_permissions {
        if method == facts.method && !needed.contains(&permission.as_str()) {
            needed.push(permission);
        }
    }
    if let Some(p) = facts.extra_permission {
        if !needed.contains(&p) {
            needed.push(p);
        }
    }
    if !needed.is_empty() {
        let ok = needed.iter().all(|p| id.permissions.iter().any(|h| h == p));
        trace.note(
            || format!("permissions: all of {}", list(&needed)),
            || format!("{} (have {})", pass(ok), list(&id.permissions)),
        );
        if !ok {
            return Some(insufficient(
                "insufficient_permissions",
                format!(
                    "Insufficient permissions: required {}, have {}",
                    list(&needed),
                    list(&id.permissions)
                ),
                None,
            ));
        }
    }
    None
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "satisfied"
    } else {
        "not satisfied"
    }
}
