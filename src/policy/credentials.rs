//! Credential verification: one function per credential kind a policy can name (API key,
//! client certificate, bearer token for JWT or introspection, HMAC signature) and the `any`
//! and `all` combinators, behind the `verify_credential` dispatch. A failure carries a rank
//! so `any` can answer with the most specific one.

use super::{Authenticators, Credential, Denial, Facts, Trace, REALM};
use crate::auth::api_key::{ApiKeys, Presented};
use crate::auth::http_sig::{self, SigError, SignedRequest};
use crate::auth::introspection::Refusal;
use crate::auth::mtls::{CertIdentities, ClientCert};
use crate::auth::nonces::NonceVerdict;
use crate::auth::provider::Provider;
use crate::auth::revocation::{token_sha256, Check};
use crate::auth::{mtls, AuthError, Identity};
use crate::metrics::metrics;
use std::sync::Arc;

/// A credential's failure, with whether the request carried that credential at all.
pub(super) struct Failure {
    pub(super) denial: Denial,
    /// Higher is more specific: a dependency outage, then a verdict on a carried
    /// credential (expired, wrong audience, ...), then "this credential is not this
    /// provider's" (issuer, key, signature), then "not carried".
    rank: u8,
    /// The token verified under the provider's keys and was then refused on its claims (or
    /// its binding, or the revocation list): a verdict on that provider's token, which no
    /// other check of the same provider (introspection) may overturn.
    verified: bool,
}

impl Failure {
    fn new(denial: Denial, rank: u8) -> Self {
        Self {
            denial,
            rank,
            verified: false,
        }
    }
}

/// Verify one credential of a (non-public) policy: the identity it vouches for, or the
/// most specific failure.
pub(super) async fn verify_credential(
    credential: &Credential,
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    // Every kind has the same shape, async even where nothing is awaited (API key, mTLS),
    // so a new kind is one more function and one more arm.
    match credential {
        Credential::ApiKey => api_key(auth, facts, trace).await,
        Credential::Public => Err(Failure::new(
            Denial::new(500, "internal_error", "A public credential inside any/all."),
            0,
        )),
        Credential::Hmac => hmac(auth, facts, trace).await,
        Credential::ForwardAuth(i) => forward_auth(*i, auth, facts, trace).await,
        Credential::Mtls(subjects) => mtls(subjects, auth, facts, trace).await,
        Credential::Jwt(i) => bearer_token(*i, false, auth, facts, trace).await,
        Credential::Introspection(i) => bearer_token(*i, true, auth, facts, trace).await,
        Credential::Any(options) => any(options, auth, facts, trace).await,
        Credential::All(parts) => all(parts, auth, facts, trace).await,
    }
}

/// An API key from the consumers file, in a configured header (or the query parameter).
async fn api_key(
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    let Some(keys) = auth.api_keys else {
        return Err(Failure::new(
            Denial::new(500, "internal_error", "No consumers file."),
            0,
        ));
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
            Err(Failure::new(d, rank))
        }
    }
}

/// The connection's verified client certificate, whose identity must match one of
/// `subjects` (any identity when empty).
async fn mtls(
    subjects: &[String],
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    let default = CertIdentities::default();
    let policy = auth.client_certs.unwrap_or(&default);
    let what = || "mtls".to_string();
    match policy.authenticate(facts.client_cert) {
        Ok(identity)
            if subjects.is_empty() || mtls::subject_allowed(subjects, &identity.subject) =>
        {
            trace.note(what, || format!("verified: {}", identity.subject));
            Ok(identity)
        }
        Ok(identity) => {
            count_denial("mtls", "client_cert_not_allowed");
            trace.note(what, || {
                format!("refused: {} is not allowed on this route", identity.subject)
            });
            Err(Failure::new(
                Denial::new(
                    403,
                    "client_cert_not_allowed",
                    "This client certificate is not allowed on this route.",
                ),
                3,
            ))
        }
        Err(e) => {
            count_denial("mtls", e.code());
            trace.note(what, || format!("refused: {} ({})", e.code(), e.message()));
            let rank = if e == AuthError::ClientCertMissing {
                1
            } else {
                3
            };
            Err(Failure::new(Denial::new(401, e.code(), e.message()), rank))
        }
    }
}

/// A bearer token in `Authorization` for the provider at `index`: verified as a JWT, or
/// introspected when `introspect` (the `jwt` and `introspection` credentials).
async fn bearer_token(
    index: usize,
    introspect: bool,
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    let Some(provider) = auth.providers.get(index) else {
        return Err(Failure::new(
            Denial::new(500, "internal_error", "Unknown identity provider."),
            0,
        ));
    };
    let what = || {
        format!(
            "{} ({})",
            if introspect { "introspection" } else { "jwt" },
            provider.name
        )
    };
    let outcome = match authorization_token(facts.headers) {
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
            let failure = introspection_unavailable(&provider.name, retry_after, circuit_open);
            trace.note(what, || format!("unavailable: {}", failure.denial.message));
            Err(failure)
        }
    }
}

/// The introspection endpoint did not answer (or its circuit is open): 503, retry later.
fn introspection_unavailable(provider: &str, retry_after: u64, circuit_open: bool) -> Failure {
    count_denial(provider, "introspection_unavailable");
    let message = if circuit_open {
        "The token introspection service is failing; requests are refused until it recovers. Try again later."
    } else {
        "The token introspection service did not answer; try again later."
    };
    let mut d = Denial::new(503, "introspection_unavailable", message);
    d.retry_after = Some(retry_after);
    Failure::new(d, 4)
}

/// An HMAC-signed request (RFC 9421): verified over what is forwarded (the canonical path,
/// the body read), then its nonce recorded, once.
async fn hmac(
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    let Some(signing) = auth.signing else {
        return Err(Failure::new(
            Denial::new(500, "internal_error", "No signing keys."),
            0,
        ));
    };
    let what = || "hmac".to_string();
    let refuse = |e: SigError, trace: &mut Trace| {
        count_denial("hmac", e.code());
        trace.note(what, || format!("refused: {} ({})", e.code(), e.message()));
        let rank = if e == SigError::Missing { 1 } else { 3 };
        Failure::new(Denial::new(401, e.code(), e.message()), rank)
    };
    let request = SignedRequest {
        method: facts.method.as_str(),
        scheme: if facts.https { "https" } else { "http" },
        authority: facts.host.unwrap_or(""),
        // RFC 9421 §2.2.6: the target's path as sent, before any decoding; the canonical
        // path is a function of it, so the signature binds what is forwarded too.
        path: facts.raw_path,
        query: facts.query,
        headers: facts.headers,
        body: facts.body.unwrap_or(&[]),
    };
    let verified =
        match http_sig::verify(&request, &signing.keys.current(), &signing.rules, facts.now) {
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
            Err(Failure::new(d, 4))
        }
    }
}

/// A ForwardAuth service's decision: a 2xx allows, any other answer is the client's, no
/// answer is 503.
async fn forward_auth(
    i: usize,
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    use crate::auth::forward_auth::{Ask, Outcome};
    let Some(service) = auth.forward_auth.get(i) else {
        return Err(Failure::new(
            Denial::new(500, "internal_error", "No such ForwardAuth service."),
            0,
        ));
    };
    let uri = match facts.query {
        Some(q) => format!("{}?{q}", facts.path),
        None => facts.path.to_string(),
    };
    let ask = Ask {
        method: facts.method.as_str(),
        https: facts.https,
        host: facts.host,
        uri: &uri,
        client: facts.client_ip,
        headers: facts.headers,
    };
    let what = || format!("forward_auth {}", service.name);
    match service.check(&ask).await {
        Outcome::Allowed(identity) => {
            trace.note(what, || "allowed (2xx)".into());
            Ok(identity)
        }
        Outcome::Refused {
            status,
            headers,
            body,
        } => {
            count_denial(&service.name, "forward_auth_denied");
            trace.note(what, || format!("refused: the service answered {status}"));
            let mut d = Denial::new(
                status,
                "forward_auth_denied",
                "The auth service refused the request.",
            );
            d.answer = Some(Box::new(super::ServiceAnswer { headers, body }));
            // A verdict on what the request carried, like an expired token's.
            Err(Failure::new(d, 3))
        }
        Outcome::Unavailable { retry_after } => {
            count_denial(&service.name, "auth_unavailable");
            trace.note(what, || "unavailable: no answer".into());
            let mut d = Denial::new(
                503,
                "auth_unavailable",
                "The auth service did not answer; try again later.",
            );
            d.retry_after = Some(retry_after);
            Err(Failure::new(d, 4))
        }
    }
}

/// `any`: the first of `options` that verifies; else the most specific failure, with a
/// challenge for every scheme the route takes.
async fn any(
    options: &[Credential],
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
    let mut best: Option<Failure> = None;
    let mut challenges: Vec<String> = Vec::new();
    // Providers whose JWT check already judged this token: it verified under their keys and
    // was refused on its claims. Their introspection is not asked to overturn that (an
    // expired token gets its own 401, never a 503 from a server that cannot introspect it).
    let mut judged: Vec<usize> = Vec::new();
    // `Credential::any` put each provider's `jwt` before its `introspection`.
    for option in options {
        if let Credential::Introspection(p) = option {
            if judged.contains(p) {
                trace.note(
                    || "introspection".into(),
                    || {
                        "skipped: the token is this provider's JWT and was refused on its claims"
                            .into()
                    },
                );
                continue;
            }
        }
        match Box::pin(verify_credential(option, auth, facts, trace)).await {
            Ok(id) => return Ok(id),
            Err(f) => {
                if let (Credential::Jwt(p), true) = (option, f.verified) {
                    judged.push(*p);
                }
                if let Some(c) = &f.denial.challenge {
                    challenges.push(c.clone());
                }
                if best.as_ref().is_none_or(|b| f.rank > b.rank) {
                    best = Some(f);
                }
            }
        }
    }
    let mut best = best.unwrap_or(Failure::new(
        Denial::new(401, "credentials_missing", "No credential was given."),
        0,
    ));
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

/// `all`: every one of `parts` must verify; the first names the caller.
async fn all(
    parts: &[Credential],
    auth: &Authenticators<'_>,
    facts: &Facts<'_>,
    trace: &mut Trace,
) -> Result<Arc<Identity>, Failure> {
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
        return Err(Failure::new(
            Denial::new(500, "internal_error", "An empty `all`."),
            0,
        ));
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
            i.confirm_jwt(token, now).await?;
        }
        identity
    };
    check_binding(&identity, auth, facts.client_cert).map_err(Refusal::Token)?;
    if let Some(list) = auth.revocations {
        let digest = list
            .has_token_entries()
            .then(|| token_sha256(token.as_bytes()));
        let revoked = list.is_revoked(&Check {
            jti: identity.jti.as_deref(),
            subject: &identity.subject,
            issued_at: identity.issued_at,
            token_sha256: digest.as_ref(),
            now,
        });
        if revoked {
            metrics()
                .revoked_rejections
                .with_label_values(&[provider.name.as_str()])
                .inc();
            return Err(Refusal::Token(AuthError::Revoked));
        }
    }
    Ok(identity)
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
        return Failure::new(d, 4);
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
    Failure {
        denial: d,
        rank,
        verified: e.refused_after_verification(),
    }
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
    Failure::new(denial, 3)
}

fn api_key_challenge(keys: &ApiKeys) -> String {
    let header = keys.headers.first().map_or("X-API-Key", |h| h.as_str());
    format!(r#"ApiKey realm="{REALM}", header="{header}""#)
}

fn count_denial(provider: &str, code: &'static str) {
    metrics()
        .auth_decisions
        .with_label_values(&[provider, "deny", code])
        .inc();
}

/// Whether the request carries something in `Authorization`.
pub fn bearer_present(headers: &http::HeaderMap) -> bool {
    !matches!(authorization_token(headers), Err(BearerProblem::Missing))
}

enum BearerProblem {
    Missing,
    Ambiguous,
}

/// The bearer token of the request: one `Authorization` header, scheme `Bearer` in any
/// case, one space, then the token (catalogue T1, T2, E4). Other schemes count as no token.
fn authorization_token(headers: &http::HeaderMap) -> Result<&str, BearerProblem> {
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
