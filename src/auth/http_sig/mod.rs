//! HTTP Message Signatures (RFC 9421) with `hmac-sha256` and `Content-Digest` (RFC 9530): the
//! verification of a signed request. Beside it: the signature base (`base`), client-side
//! signing for `portcullis sign` (`sign`), the signing-keys file (`keys`) and the RFC 8941
//! structured-field parser (`sfv`); the nonce store is `crate::auth::nonces`.
//!
//! # Order of checks in [`verify`]
//!
//! 1. `Signature-Input` and `Signature` are both present (else [`SigError::Missing`]); several
//!    field lines are combined with `", "` (RFC 9110 §5.3) and parsed as RFC 8941 dictionaries
//!    by a small strict parser (the private `sfv` module).
//! 2. Exactly one label, the same in both fields.
//! 3. The signature is a byte sequence of exactly 32 bytes.
//! 4. Signature parameters are well typed (`keyid` string, `created`/`expires` non-negative
//!    integers, `nonce` string of 8..=256 characters, no duplicates).
//! 5. Covered components are supported and present; the signature base is built. Every failure in
//!    1–5 is [`SigError::Malformed`]. Only then policy: `alg` ([`SigError::AlgorithmNotAllowed`]),
//!    then coverage of the required components, `created` and `nonce`
//!    ([`SigError::InsufficientCoverage`]). Parsing strictly first means a garbled request is
//!    always reported as garbled, whatever else is wrong with it.
//! 6. Time window (`created` within `now ± window`, inclusive; `expires` not passed).
//! 7. Key lookup. An unknown, disabled or expired key still gets an HMAC over the signature base
//!    with a fixed dummy key and a constant-time compare, so its timing looks like a wrong
//!    signature's.
//! 8. HMAC-SHA256 over the base, constant-time compare ([`SigError::Mismatch`]).
//! 9. `Content-Digest` against the body (after the MAC, so an unsigned request never makes us hash
//!    a body): checked whenever the body is non-empty or the header is present.
//!
//! The caller records [`Verified::nonce`] in its nonce store *after* `verify` succeeds (see
//! [`NonceCache`](crate::auth::nonces::NonceCache)); replay protection is therefore not inside
//! `verify`.
//!
//! # Decisions
//!
//! * Exactly one signature per request. A proxy in front must not add its own signature: with
//!   several, which one the gateway verified would be ambiguous to the backend and to the logs.
//! * The algorithm is bound to the key server-side. `alg` may be omitted; if present it must be
//!   exactly `"hmac-sha256"`.
//! * `@query` is the exact query bytes as received: no decoding, no reordering. `b=2&a=1`,
//!   `a=1&b=2`, `+` and `%20`, `a=` and `a` are all different signed values.
//! * A required component is covered only by its exact name (`@path` is not satisfied by
//!   `@target-uri`), which keeps the policy easy to audit.
//! * Component parameters (`;sf`, `;key`, `;bs`, `;req`, `;tr`, `;name`) and RFC 8941 decimals
//!   are not supported; they are refused as malformed rather than guessed at.
//! * Error messages are fixed strings: never a secret, never attacker-supplied text. The precise
//!   reason for a malformed signature is logged at `debug` level as a static string.
//! * [`MAX_SIGNED_BODY`] is enforced by the gateway, which buffers at most that much: `verify`
//!   hashes exactly the `body` it is given.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256, Sha512};

use super::{crypto, Identity};

mod base;
mod keys;
mod sfv;
mod sign;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use base::build_base;
pub use keys::{decode_secret, SigningKeyring, SigningKeys};
pub use sign::{content_digest, new_nonce, sign};

/// Pingora buffers at most 64 KiB of body; a signed body must fit.
pub const MAX_SIGNED_BODY: usize = 64 * 1024;
/// Default tolerance, in seconds, between `created` and the gateway's clock.
pub const DEFAULT_WINDOW: u64 = 300;

/// Longest accepted `Signature-Input`, `Signature` or `Content-Digest` (all lines combined).
const MAX_FIELD_LEN: usize = 8 * 1024;
/// Most covered components in one signature.
const MAX_COMPONENTS: usize = 32;
const NONCE_MIN: usize = 8;
const NONCE_MAX: usize = 256;
/// The only algorithm; bound to every key.
const ALGORITHM: &str = "hmac-sha256";
/// Derived components we can compute (RFC 9421 §2.2), excluding those needing parameters.
const DERIVED: [&str; 7] = [
    "@method",
    "@authority",
    "@scheme",
    "@target-uri",
    "@request-target",
    "@path",
    "@query",
];
/// HMAC key used when the key id is unknown, so the work done matches a wrong signature.
const DUMMY_KEY: [u8; 32] = [0x5a; 32];

// ---------------------------------------------------------------------------------------------
// Errors, rules, request, result
// ---------------------------------------------------------------------------------------------

/// Why a signed request is refused. Stable codes, human messages (no secret, no attacker text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed,
    UnknownKey,
    AlgorithmNotAllowed,
    InsufficientCoverage,
    Expired,
    CreatedInFuture,
    Replayed,
    DigestMismatch,
    Mismatch,
}

impl SigError {
    /// Stable machine-readable code, for responses and metrics.
    pub fn code(self) -> &'static str {
        match self {
            SigError::Missing => "signature_missing",
            SigError::Malformed => "signature_malformed",
            SigError::UnknownKey => "signature_unknown_key",
            SigError::AlgorithmNotAllowed => "signature_algorithm_not_allowed",
            SigError::InsufficientCoverage => "signature_insufficient_coverage",
            SigError::Expired => "signature_expired",
            SigError::CreatedInFuture => "signature_created_in_future",
            SigError::Replayed => "signature_replayed",
            SigError::DigestMismatch => "signature_digest_mismatch",
            SigError::Mismatch => "signature_mismatch",
        }
    }

    /// Human message; fixed text only.
    pub fn message(self) -> &'static str {
        match self {
            SigError::Missing => "The request must carry Signature-Input and Signature headers.",
            SigError::Malformed => {
                "Signature-Input or Signature is malformed, uses an unsupported component, \
                 or a covered field is absent from the request."
            }
            SigError::UnknownKey => "The signing key is unknown, disabled or expired.",
            SigError::AlgorithmNotAllowed => "Only hmac-sha256 signatures are accepted.",
            SigError::InsufficientCoverage => {
                "The signature does not cover every required component, created and nonce."
            }
            SigError::Expired => "The signature is too old or has expired.",
            SigError::CreatedInFuture => "The signature was created in the future.",
            SigError::Replayed => "This signature's nonce has already been used.",
            SigError::DigestMismatch => "Content-Digest does not match the request body.",
            SigError::Mismatch => "The signature does not match the request.",
        }
    }
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for SigError {}

/// Refuse as malformed, logging the precise (static, attacker-free) reason for operators.
fn malformed(reason: &'static str) -> SigError {
    tracing::debug!(reason, "http signature refused as malformed");
    SigError::Malformed
}

/// Which components a signature must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRules {
    /// `content-digest` here is required only when the request has a non-empty body.
    pub components: Vec<String>,
    /// Seconds `created` may differ from the gateway's clock, either way.
    pub window: u64,
}

impl Default for SignatureRules {
    fn default() -> Self {
        SignatureRules {
            components: ["@method", "@authority", "@path", "@query", "content-digest"]
                .map(String::from)
                .to_vec(),
            window: DEFAULT_WINDOW,
        }
    }
}

impl SignatureRules {
    /// Whether `name` may appear in `components`: a supported derived component or a
    /// lower-case header field name.
    pub fn validate_component(name: &str) -> Result<(), String> {
        if name.starts_with('@') {
            if DERIVED.contains(&name) {
                Ok(())
            } else {
                Err(format!(
                    "unsupported derived component (supported: {})",
                    DERIVED.join(", ")
                ))
            }
        } else if is_field_name(name) {
            Ok(())
        } else {
            Err("must be a lower-case header field name or a derived component".to_string())
        }
    }
}

/// A lower-case field name (RFC 9110 token), at most 256 characters.
fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| sfv::is_tchar(b) && !b.is_ascii_uppercase())
}

/// The request as the gateway will forward it.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// As received, e.g. `POST`.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host / `:authority` as received; normalized for `@authority`.
    pub authority: &'a str,
    /// The path as received (RFC 9421 `@path`: before any percent-decoding); `""` means `/`.
    pub path: &'a str,
    /// Raw query without `?`; `None` when there is none.
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The exact bytes forwarded (empty when none).
    pub body: &'a [u8],
}

/// A verified signature: who signed, and the nonce the caller must record.
#[derive(Debug, Clone)]
pub struct Verified {
    pub identity: Arc<Identity>,
    pub key_id: String,
    pub nonce: String,
    pub created: u64,
    /// Unix seconds until which this nonce must be remembered: `created + window + 1`, the first
    /// second at which the signature would be refused as expired anyway.
    pub remember_until: u64,
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Verify the request's single signature. See the module documentation for the order of checks.
pub fn verify(
    req: &SignedRequest<'_>,
    keys: &SigningKeyring,
    rules: &SignatureRules,
    now: u64,
) -> Result<Verified, SigError> {
    let input_field = combined_field(req.headers, "signature-input")?;
    let signature_field = combined_field(req.headers, "signature")?;
    let (Some(input_field), Some(signature_field)) = (input_field, signature_field) else {
        return Err(SigError::Missing);
    };
    let input = parse_signature_input(&input_field)?;
    let signature = parse_signature(&signature_field, &input.label)?;
    let base =
        build_base(req, &input.components, &input.serialized, None).map_err(|e| e.to_sig())?;

    check_alg(&input.params)?;
    let (created, nonce) = check_coverage(&input, rules, req.body.is_empty())?;
    check_time(created, input.params.expires, rules.window, now)?;

    let key = keys.active(&input.params.keyid, now);
    let secret: &[u8] = key.map_or(&DUMMY_KEY[..], |k| &k.secret);
    let matches =
        crypto::constant_time_eq(&crypto::hmac_sha256(secret, base.as_bytes()), &signature);
    let Some(key) = key else {
        return Err(SigError::UnknownKey);
    };
    if !matches {
        return Err(SigError::Mismatch);
    }

    check_digest(req)?;
    Ok(Verified {
        identity: Arc::clone(&key.identity),
        key_id: key.id.clone(),
        nonce,
        created,
        remember_until: created.saturating_add(rules.window).saturating_add(1),
    })
}

/// All field lines of `name` combined with `", "`; `None` when absent. Opaque bytes or more than
/// [`MAX_FIELD_LEN`] are malformed.
fn combined_field(headers: &http::HeaderMap, name: &str) -> Result<Option<String>, SigError> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        let text = value
            .to_str()
            .map_err(|_| malformed("non-ASCII bytes in a signature field"))?;
        let combined = match out.as_mut() {
            Some(c) => {
                c.push_str(", ");
                c
            }
            None => out.insert(String::new()),
        };
        if combined.len() + text.len() > MAX_FIELD_LEN {
            return Err(malformed("signature field too long"));
        }
        combined.push_str(text);
    }
    Ok(out)
}

/// Signature parameters we act on (others are signed but otherwise ignored).
#[derive(Debug)]
struct SigParams {
    keyid: String,
    alg: Option<sfv::Bare>,
    created: Option<u64>,
    expires: Option<u64>,
    nonce: Option<String>,
}

/// One parsed `Signature-Input` member.
#[derive(Debug)]
struct SigInput {
    label: String,
    components: Vec<String>,
    params: SigParams,
    /// RFC 8941 serialization of the inner list: the `@signature-params` value.
    serialized: String,
}

/// Parse `Signature-Input`: one label whose value is an inner list of component names.
fn parse_signature_input(field: &str) -> Result<SigInput, SigError> {
    let mut dict = sfv::parse_dictionary(field).map_err(|e| malformed(e.0))?;
    if dict.len() != 1 {
        return Err(malformed("Signature-Input must have exactly one label"));
    }
    let Some((label, sfv::Member::InnerList(list))) = dict.pop() else {
        return Err(malformed("Signature-Input value must be an inner list"));
    };
    if list.items.len() > MAX_COMPONENTS {
        return Err(malformed("too many covered components"));
    }
    Ok(SigInput {
        label,
        components: covered_components(&list.items)?,
        params: parse_params(&list.params)?,
        serialized: sfv::serialize_inner_list(&list),
    })
}

/// Covered component names: unparameterized strings, supported, lower-case, no repeats.
fn covered_components(items: &[sfv::Item]) -> Result<Vec<String>, SigError> {
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let sfv::Bare::String(name) = &item.bare else {
            return Err(malformed("covered component is not a string"));
        };
        if !item.params.is_empty() {
            return Err(malformed("component parameters are not supported"));
        }
        if SignatureRules::validate_component(name).is_err() {
            return Err(malformed("unsupported component name"));
        }
        if names.contains(name) {
            return Err(malformed("component covered twice"));
        }
        names.push(name.clone());
    }
    Ok(names)
}

/// Type-check the signature parameters. Missing `created`/`nonce` is a coverage matter, decided
/// later; a present one of the wrong type is malformed now.
fn parse_params(params: &[(String, sfv::Bare)]) -> Result<SigParams, SigError> {
    let mut keyid = None;
    let mut out = SigParams {
        keyid: String::new(),
        alg: None,
        created: None,
        expires: None,
        nonce: None,
    };
    for (name, value) in params {
        match (name.as_str(), value) {
            ("keyid", sfv::Bare::String(s)) => keyid = Some(s.clone()),
            ("keyid", _) => return Err(malformed("keyid is not a string")),
            ("alg", v) => out.alg = Some(v.clone()),
            ("created", v) => out.created = Some(timestamp(v, "created is not an integer")?),
            ("expires", v) => out.expires = Some(timestamp(v, "expires is not an integer")?),
            ("nonce", sfv::Bare::String(s)) if (NONCE_MIN..=NONCE_MAX).contains(&s.len()) => {
                out.nonce = Some(s.clone());
            }
            ("nonce", _) => return Err(malformed("nonce is not a string of 8 to 256 characters")),
            _ => {} // `tag` and unknown parameters: signed, otherwise ignored.
        }
    }
    out.keyid = keyid.ok_or_else(|| malformed("keyid is missing"))?;
    Ok(out)
}

/// A non-negative integer parameter as unix seconds.
fn timestamp(value: &sfv::Bare, reason: &'static str) -> Result<u64, SigError> {
    match value {
        sfv::Bare::Integer(i) => u64::try_from(*i).map_err(|_| malformed(reason)),
        _ => Err(malformed(reason)),
    }
}

/// Parse `Signature`: only `label`, whose value is a 32-byte byte sequence without parameters.
fn parse_signature(field: &str, label: &str) -> Result<[u8; 32], SigError> {
    let mut dict = sfv::parse_dictionary(field).map_err(|e| malformed(e.0))?;
    if dict.len() != 1 {
        return Err(malformed("Signature must have exactly one label"));
    }
    let Some((name, member)) = dict.pop() else {
        return Err(malformed("Signature must have exactly one label"));
    };
    if name != label {
        return Err(malformed("Signature label differs from Signature-Input's"));
    }
    match member {
        sfv::Member::Item(sfv::Item {
            bare: sfv::Bare::Bytes(bytes),
            params,
        }) if params.is_empty() => <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| malformed("signature is not 32 bytes")),
        _ => Err(malformed("signature is not a byte sequence")),
    }
}

/// `alg` may be absent; if present it must be exactly the string `"hmac-sha256"`.
fn check_alg(params: &SigParams) -> Result<(), SigError> {
    match &params.alg {
        None => Ok(()),
        Some(sfv::Bare::String(s)) if s == ALGORITHM => Ok(()),
        Some(_) => Err(SigError::AlgorithmNotAllowed),
    }
}

/// Every required component is covered (`content-digest` only with a body); `created` and
/// `nonce` are present. Returns them.
fn check_coverage(
    input: &SigInput,
    rules: &SignatureRules,
    body_empty: bool,
) -> Result<(u64, String), SigError> {
    let (Some(created), Some(nonce)) = (input.params.created, &input.params.nonce) else {
        return Err(SigError::InsufficientCoverage);
    };
    let uncovered = rules
        .components
        .iter()
        .filter(|c| !(body_empty && c.as_str() == "content-digest"))
        .any(|c| !input.components.contains(c));
    if uncovered {
        return Err(SigError::InsufficientCoverage);
    }
    Ok((created, nonce.clone()))
}

/// `created` within `now ± window` (inclusive); `expires`, when given, not before `now`.
fn check_time(created: u64, expires: Option<u64>, window: u64, now: u64) -> Result<(), SigError> {
    if created > now.saturating_add(window) {
        return Err(SigError::CreatedInFuture);
    }
    if created.saturating_add(window) < now {
        return Err(SigError::Expired);
    }
    if expires.is_some_and(|e| e < now) {
        return Err(SigError::Expired);
    }
    Ok(())
}

/// RFC 9530: with a body or a `Content-Digest` header, exactly one header line whose supported
/// digests (`sha-256`, `sha-512`) all match the body, at least one of them present.
fn check_digest(req: &SignedRequest<'_>) -> Result<(), SigError> {
    let mut lines = req.headers.get_all("content-digest").iter();
    let (first, second) = (lines.next(), lines.next());
    let field = match (first, second) {
        (None, _) if req.body.is_empty() => return Ok(()),
        (None, _) => return Err(SigError::DigestMismatch),
        (Some(_), Some(_)) => return Err(malformed("Content-Digest given more than once")),
        (Some(v), None) => v
            .to_str()
            .map_err(|_| malformed("non-ASCII bytes in Content-Digest"))?,
    };
    if field.len() > MAX_FIELD_LEN {
        return Err(malformed("Content-Digest too long"));
    }
    let dict = sfv::parse_dictionary(field).map_err(|e| malformed(e.0))?;
    let mut supported = 0usize;
    for (alg, member) in &dict {
        let sfv::Member::Item(sfv::Item {
            bare: sfv::Bare::Bytes(given),
            ..
        }) = member
        else {
            return Err(malformed("Content-Digest value is not a byte sequence"));
        };
        let expected = match alg.as_str() {
            "sha-256" => Sha256::digest(req.body).to_vec(),
            "sha-512" => Sha512::digest(req.body).to_vec(),
            _ => continue, // md5, sha, ...: not trusted, ignored.
        };
        supported += 1;
        if expected != *given {
            return Err(SigError::DigestMismatch);
        }
    }
    if supported == 0 {
        return Err(SigError::DigestMismatch);
    }
    Ok(())
}

/// The signature base for a `Signature-Input` field value with a single label, as `verify`
/// builds it (exposed for the RFC 9421 test vectors).
#[cfg(test)]
pub(crate) fn signature_base(
    req: &SignedRequest<'_>,
    signature_input: &str,
) -> Result<String, SigError> {
    let input = parse_signature_input(signature_input)?;
    build_base(req, &input.components, &input.serialized, None).map_err(|e| e.to_sig())
}

/// HMAC-signed requests, ready to verify: the keys in force, what a signature must cover,
/// and where nonces are remembered.
#[derive(Debug)]
pub struct Signing {
    pub keys: std::sync::Arc<SigningKeys>,
    pub rules: SignatureRules,
    pub nonces: crate::auth::nonces::NonceStore,
}
