//! Authentication methods. Nothing in here knows about Pingora: each method takes plain
//! data (a token, a key set, the time) and returns who the caller is or a precise refusal.
//! Route policies (`crate::policy`) decide which of them a route accepts.

pub mod api_key;
pub mod breaker;
pub mod claims;
pub mod crl;
pub mod crypto;
pub mod fetch;
pub mod forward_auth;
pub mod http_sig;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod nonces;
pub mod provider;
pub mod revocation;
pub mod strict_json;

pub use claims::ClaimMap;

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
    /// The token's signature verified under the provider's keys, and the token was refused
    /// after that: on its claims, its binding, or the revocation list. A verdict on a token
    /// of that provider, not "some other kind of token".
    pub fn refused_after_verification(self) -> bool {
        matches!(
            self,
            Self::Expired
                | Self::NotYetValid
                | Self::IssuedInFuture
                | Self::TooOld
                | Self::WrongIssuer
                | Self::WrongAudience
                | Self::InvalidClaim
                | Self::Revoked
                | Self::CertificateMismatch
                | Self::NotBound
                | Self::UnsupportedBinding
        )
    }

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
