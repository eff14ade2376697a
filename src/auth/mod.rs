//! Authentication methods. Nothing in here knows about Pingora: each method takes plain
//! data (a token, a key set, the time) and returns who the caller is or a precise refusal.
//! Route policies (`crate::policy`) decide which of them a route accepts.

pub mod api_key;
pub mod crl;
pub mod fetch;
pub mod http_sig;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod nonces;
pub mod revocation;
pub mod strict_json;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod wycheproof_tests;

/// The HTTP client of a provider's endpoints (JWKS, discovery, introspection): every request
/// bounded by `timeout`, no redirects followed, no proxy from the environment.
pub fn http_client(
    timeout: std::time::Duration,
    idle_per_host: usize,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(idle_per_host)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// A secret kept in a file (an HMAC secret, an API-key pepper), without the trailing newline
/// that `echo` and editors leave.
pub fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

/// Why a credential was refused: a stable code for the JSON body and metrics, and a human
/// message. Neither ever contains the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    MissingToken,
    MalformedToken,
    TokenTooLarge,
    UnsupportedAlgorithm,
    CriticalHeader,
    WrongTokenType,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    TooOld,
    WrongIssuer,
    WrongAudience,
    InvalidClaim,
    /// The provider's keys cannot be fetched and the last good ones are too old: 503.
    KeysUnavailable,
    ApiKeyMissing,
    /// Not a key of this gateway (also: not shaped like a key at all).
    ApiKeyUnknown,
    ApiKeyExpired,
    ApiKeyDisabled,
    /// A key of the other environment; holds the environment this gateway accepts.
    ApiKeyWrongEnvironment(api_key::Environment),
    /// The authorization server says the token is not active (or its `exp` has passed).
    TokenInactive,
    /// The token, its `jti` or its subject is on the revocation list.
    Revoked,
    /// The token is bound to a client certificate (RFC 8705 `cnf.x5t#S256`) that this
    /// connection did not present.
    CertificateMismatch,
    /// The route takes only certificate-bound tokens, and this one is not bound.
    NotBound,
    /// The token has a `cnf` claim with a confirmation method the gateway cannot check
    /// (e.g. DPoP `jkt`): accepting it as a plain bearer token would drop the binding.
    UnsupportedBinding,
    /// No client certificate on this connection.
    ClientCertMissing,
    /// The verified certificate does not carry exactly one identity of the configured kind.
    ClientCertNoIdentity,
    /// The certificate's identity is not a configured consumer.
    ClientCertUnknown,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingToken => "token_missing",
            Self::MalformedToken => "token_malformed",
            Self::TokenTooLarge => "token_too_large",
            Self::UnsupportedAlgorithm => "token_algorithm_not_allowed",
            Self::CriticalHeader => "token_critical_header",
            Self::WrongTokenType => "token_wrong_type",
            Self::UnknownKey => "token_unknown_key",
            Self::BadSignature => "token_bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::TooOld => "token_too_old",
            Self::WrongIssuer => "token_wrong_issuer",
            Self::WrongAudience => "token_wrong_audience",
            Self::InvalidClaim => "token_invalid_claim",
            Self::KeysUnavailable => "auth_unavailable",
            Self::ApiKeyMissing => "api_key_missing",
            Self::ApiKeyUnknown => "api_key_unknown",
            Self::ApiKeyExpired => "api_key_expired",
            Self::ApiKeyDisabled => "api_key_disabled",
            Self::ApiKeyWrongEnvironment(_) => "api_key_wrong_environment",
            Self::TokenInactive => "token_inactive",
            Self::Revoked => "token_revoked",
            Self::CertificateMismatch => "token_certificate_mismatch",
            Self::NotBound => "token_not_bound",
            Self::UnsupportedBinding => "token_binding_unsupported",
            Self::ClientCertMissing => "client_cert_missing",
            Self::ClientCertNoIdentity => "client_cert_no_identity",
            Self::ClientCertUnknown => "client_cert_unknown",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::MissingToken => "A bearer token is required.",
            Self::MalformedToken => "The token is not a well-formed compact JWS.",
            Self::TokenTooLarge => "The token is larger than allowed.",
            Self::UnsupportedAlgorithm => "The token's algorithm is not accepted.",
            Self::CriticalHeader => "The token has critical header parameters.",
            Self::WrongTokenType => "The token is not of the expected type.",
            Self::UnknownKey => "The token was signed with an unknown key.",
            Self::BadSignature => "The token's signature is invalid.",
            Self::Expired => "Token expired",
            Self::NotYetValid => "The token is not valid yet.",
            Self::IssuedInFuture => "The token was issued in the future.",
            Self::TooOld => "The token's lifetime exceeds what is allowed.",
            Self::WrongIssuer => "The token's issuer is not accepted.",
            Self::WrongAudience => "The token is not meant for this API.",
            Self::InvalidClaim => "A claim of the token has an invalid type or value.",
            Self::KeysUnavailable => {
                "The identity provider's keys are unavailable; try again later."
            }
            Self::ApiKeyMissing => "An API key is required.",
            Self::ApiKeyUnknown => "The API key is not valid.",
            Self::ApiKeyExpired => "The API key has expired.",
            Self::ApiKeyDisabled => "The API key has been disabled.",
            Self::ApiKeyWrongEnvironment(api_key::Environment::Live) => {
                "This gateway accepts live keys; this is a test key."
            }
            Self::ApiKeyWrongEnvironment(api_key::Environment::Test) => {
                "This gateway accepts test keys; this is a live key."
            }
            Self::TokenInactive => "The token is not active.",
            Self::Revoked => "The token has been revoked.",
            Self::CertificateMismatch => {
                "The token is bound to a client certificate that this connection did not present."
            }
            Self::NotBound => "This route takes only tokens bound to a client certificate.",
            Self::UnsupportedBinding => {
                "The token is bound by a confirmation method this gateway cannot check."
            }
            Self::ClientCertMissing => "A client certificate is required.",
            Self::ClientCertNoIdentity => {
                "The client certificate does not name exactly one identity of the configured kind."
            }
            Self::ClientCertUnknown => "The client certificate's identity is not a known consumer.",
        }
    }
}

/// Who the caller is, as verified; what the gateway tells the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `jwt`, later `api_key`, `introspection`, ...
    pub method: &'static str,
    /// The provider (or consumer source) that vouched for it.
    pub provider: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub permissions: Vec<String>,
    pub tenant: Option<String>,
    pub email: Option<String>,
    pub client_id: Option<String>,
    /// Further headers from configured claims.
    pub extra: Vec<(http::HeaderName, String)>,
    /// Unix time after which this identity must not be used (the token's `exp`).
    pub expires_at: Option<u64>,
    /// The API key's id, when the credential was an API key (safe to log; never the key).
    pub key_id: Option<String>,
    /// The consumer's rate-limit tier, if it has one.
    pub tier: Option<String>,
    /// The token's `jti` and `iat`, for the revocation list.
    pub jti: Option<String>,
    pub issued_at: Option<u64>,
    /// SHA-256 of the client certificate the token is bound to (RFC 8705 `cnf.x5t#S256`).
    pub cert_thumbprint: Option<[u8; 32]>,
}

/// The certificate a token is bound to (RFC 8705 section 3.1): `cnf` absent is an unbound
/// token; `cnf` with `x5t#S256` (base64url of a SHA-256) is bound; anything else (another
/// confirmation method only, a wrong shape) is refused rather than read as unbound.
fn cert_binding(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<[u8; 32]>, AuthError> {
    use base64::Engine;
    let Some(cnf) = claims.get("cnf") else {
        return Ok(None);
    };
    let serde_json::Value::Object(cnf) = cnf else {
        return Err(AuthError::InvalidClaim);
    };
    match cnf.get("x5t#S256") {
        None => Err(AuthError::UnsupportedBinding),
        Some(serde_json::Value::String(t)) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Some)
            .ok_or(AuthError::InvalidClaim),
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equal without an early exit, so timing tells nothing about where two digests differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Unix seconds of `2027-02-20` or `2027-02-20T12:00:00Z`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    humantime::parse_rfc3339(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| format!("\"{s}\" is not a date (YYYY-MM-DD or RFC 3339 in UTC)"))
}

/// Consumer names: letters, digits and `- _ . : @`, at most 128.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

/// A NumericDate member (`exp`, `nbf`, `iat`) of a token's claims or an introspection answer:
/// absent, or a non-negative number (a fraction is cut to the second). A negative, absurd or
/// non-numeric value is an error, never a skipped check (catalogue C1-C3).
pub fn numeric_date(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if (0.0..1e13).contains(&f) => Ok(Some(f as u64)),
            _ => Err(AuthError::InvalidClaim),
        },
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

/// Longest value of one identity header.
pub const MAX_CLAIM_VALUE_LEN: usize = 1024;

/// Where each part of an identity is found in a token's claims (dotted paths into nested
/// objects, e.g. `realm_access.roles` for Keycloak).
#[derive(Debug, Clone)]
pub struct ClaimMap {
    pub subject: String,
    /// Where the subject is when `subject` is absent, in order (the decision protocol's
    /// `user_id`; an introspection answer's `username`, then `client_id`).
    pub subject_fallback: Vec<String>,
    pub roles: Option<String>,
    /// `None`: the standard places, `scope` (space-delimited string) then `scp` (array).
    pub scopes: Option<String>,
    pub permissions: Option<String>,
    pub tenant: Option<String>,
    pub email: Option<String>,
    pub client_id: Option<String>,
    pub headers: Vec<(http::HeaderName, String)>,
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            subject_fallback: Vec::new(),
            roles: None,
            scopes: None,
            permissions: None,
            tenant: None,
            email: None,
            client_id: None,
            headers: Vec::new(),
        }
    }
}

/// The claim at a dotted path. A key that itself contains dots (`cognito:groups` has none,
/// but `https://example.com/roles` does) is tried whole first.
pub fn claim_at<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn one_value(v: &str) -> Result<String, AuthError> {
    // A value becomes (part of) a header: no control characters, and no comma, which
    // separates list values.
    if jwt::is_header_safe(v, MAX_CLAIM_VALUE_LEN) && !v.contains(',') {
        Ok(v.to_string())
    } else {
        Err(AuthError::InvalidClaim)
    }
}

/// A list claim: an array of strings, or one string (split on spaces when `split`).
fn list_claim(v: Option<&serde_json::Value>, split: bool) -> Result<Vec<String>, AuthError> {
    use serde_json::Value;
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if split => s
            .split(' ')
            .filter(|x| !x.is_empty())
            .map(one_value)
            .collect(),
        Some(Value::String(s)) => Ok(vec![one_value(s)?]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or(AuthError::InvalidClaim)
                    .and_then(one_value)
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

fn string_claim(v: Option<&serde_json::Value>) -> Result<Option<String>, AuthError> {
    match v {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => one_value(s).map(Some),
        Some(_) => Err(AuthError::InvalidClaim),
    }
}

impl ClaimMap {
    /// Build the identity from verified claims; a claim of the wrong shape is a refusal,
    /// never a silently empty value (catalogue C18).
    pub fn identity(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, AuthError> {
        let subject_claim = claim_at(claims, &self.subject).or_else(|| {
            self.subject_fallback
                .iter()
                .find_map(|p| claim_at(claims, p))
        });
        let subject = match subject_claim {
            Some(serde_json::Value::String(s)) if jwt::is_header_safe(s, jwt::MAX_SUBJECT_LEN) => {
                s.clone()
            }
            _ => return Err(AuthError::InvalidClaim),
        };
        let scopes = match &self.scopes {
            Some(path) => list_claim(claim_at(claims, path), true)?,
            None => {
                let mut s = list_claim(claims.get("scope"), true)?;
                for extra in list_claim(claims.get("scp"), true)? {
                    if !s.contains(&extra) {
                        s.push(extra);
                    }
                }
                s
            }
        };
        let path = |p: &Option<String>| p.as_deref().and_then(|p| claim_at(claims, p));
        let mut extra = Vec::new();
        for (name, p) in &self.headers {
            if let Some(v) = string_claim(claim_at(claims, p))? {
                extra.push((name.clone(), v));
            }
        }
        Ok(Identity {
            method: "jwt",
            provider: String::new(),
            subject,
            roles: list_claim(path(&self.roles), false)?,
            scopes,
            permissions: list_claim(path(&self.permissions), false)?,
            tenant: string_claim(path(&self.tenant))?,
            email: string_claim(path(&self.email))?,
            client_id: string_claim(path(&self.client_id))?,
            extra,
            expires_at: None,
            key_id: None,
            tier: None,
            jti: match claims.get("jti") {
                None => None,
                // Opaque, compared only with the revocation list; bounded.
                Some(serde_json::Value::String(j)) if j.len() <= MAX_CLAIM_VALUE_LEN => {
                    Some(j.clone())
                }
                Some(_) => return Err(AuthError::InvalidClaim),
            },
            issued_at: numeric_date(claims, "iat")?,
            cert_thumbprint: cert_binding(claims)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keycloak_auth0_entra_and_cognito_shapes_map_to_one_identity() {
        let keycloak = ClaimMap {
            roles: Some("realm_access.roles".into()),
            ..ClaimMap::default()
        };
        let id = keycloak
            .identity(&claims(
                json!({"sub":"u1","realm_access":{"roles":["admin","user"]},"scope":"openid read"}),
            ))
            .unwrap();
        assert_eq!(id.roles, ["admin", "user"]);
        assert_eq!(id.scopes, ["openid", "read"]);

        let auth0 = ClaimMap {
            permissions: Some("permissions".into()),
            ..ClaimMap::default()
        };
        let id = auth0
            .identity(&claims(
                json!({"sub":"u2","permissions":["read:x"],"scp":["a","b"]}),
            ))
            .unwrap();
        assert_eq!(id.permissions, ["read:x"]);
        assert_eq!(id.scopes, ["a", "b"]);

        let cognito = ClaimMap {
            roles: Some("cognito:groups".into()),
            ..ClaimMap::default()
        };
        let id = cognito
            .identity(&claims(json!({"sub":"u3","cognito:groups":"ops"})))
            .unwrap();
        assert_eq!(id.roles, ["ops"]);
    }

    #[test]
    fn c18_wrongly_shaped_claims_are_refused_not_ignored() {
        let m = ClaimMap {
            roles: Some("roles".into()),
            tenant: Some("tid".into()),
            ..ClaimMap::default()
        };
        for bad in [
            json!({"sub":"u","roles":{"admin":true}}),
            json!({"sub":"u","roles":[1,2]}),
            json!({"sub":"u","roles":["a,b"]}),
            json!({"sub":"u","roles":["ok\r\nX-Evil: 1"]}),
            json!({"sub":"u","tid":7}),
            json!({"sub":"u","scope":42}),
            json!({"sub":42}),
        ] {
            assert_eq!(
                m.identity(&claims(bad.clone())),
                Err(AuthError::InvalidClaim),
                "{bad}"
            );
        }
        // Absent optional claims are simply absent.
        let id = m.identity(&claims(json!({"sub":"u"}))).unwrap();
        assert!(id.roles.is_empty() && id.tenant.is_none());
    }
}
