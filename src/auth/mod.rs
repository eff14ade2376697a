//! Authentication methods. Nothing in here knows about Pingora: each method takes plain
//! data (a token, a key set, the time) and returns who the caller is or a precise refusal.
//!
//! Status: the JWT verification core (`jwt`) is in place and unit-tested against hostile
//! tokens; providers in the configuration, JWKS fetching and wiring into the proxy come next.

pub mod jwt;
pub mod strict_json;

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
        }
    }
}
