//! HTTP Message Signatures (RFC 9421) with `hmac-sha256`, `Content-Digest` (RFC 9530), the
//! signing-keys file and an in-process nonce store.
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
//! [`NonceCache`]); replay protection is therefore not inside `verify`.
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

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256, Sha512};

use super::{constant_time_eq, hmac_sha256, parse_time, valid_name, Identity};

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
/// Shortest accepted shared secret (RFC 9421 §3.3.3 asks for a strong key; 256 bits).
const MIN_SECRET: usize = 32;
/// Largest signing-keys file read; a larger one is certainly a mistake.
const MAX_KEYS_FILE: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors, requirements, request, result
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
pub struct Requirements {
    /// `content-digest` here is required only when the request has a non-empty body.
    pub components: Vec<String>,
    /// Seconds `created` may differ from the gateway's clock, either way.
    pub window: u64,
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            components: ["@method", "@authority", "@path", "@query", "content-digest"]
                .map(String::from)
                .to_vec(),
            window: DEFAULT_WINDOW,
        }
    }
}

impl Requirements {
    /// Whether `name` may appear in a requirements list: a supported derived component or a
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
    /// The gateway's canonical path; `""` means `/`.
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
    keys: &Keyring,
    rules: &Requirements,
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
    let matches = constant_time_eq(&hmac_sha256(secret, base.as_bytes()), &signature);
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
        if Requirements::validate_component(name).is_err() {
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
    rules: &Requirements,
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

// ---------------------------------------------------------------------------------------------
// Signature base
// ---------------------------------------------------------------------------------------------

/// Why a component value could not be produced; carries the component name for `sign`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ComponentError {
    Unsupported(String),
    Absent(String),
    Opaque(String),
}

impl ComponentError {
    fn to_sig(&self) -> SigError {
        match self {
            ComponentError::Unsupported(_) => malformed("unsupported component"),
            ComponentError::Absent(_) => malformed("a covered field is absent from the request"),
            ComponentError::Opaque(_) => malformed("a covered value has non-ASCII bytes"),
        }
    }

    fn describe(&self) -> String {
        match self {
            ComponentError::Unsupported(n) => format!("component {n:?} is not supported"),
            ComponentError::Absent(n) => {
                format!("covered header field {n:?} is absent from the request")
            }
            ComponentError::Opaque(n) => format!("component {n:?} has non-ASCII or control bytes"),
        }
    }
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

/// RFC 9421 §2.5: `"<name>": <value>\n` per component, then `"@signature-params": <params>`.
/// `digest` replaces the request's `content-digest` (used by `sign`, which computes it).
fn build_base(
    req: &SignedRequest<'_>,
    components: &[String],
    params: &str,
    digest: Option<&str>,
) -> Result<String, ComponentError> {
    let mut base = String::new();
    for name in components {
        let value = component_value(req, name, digest)?;
        base.push('"');
        base.push_str(name);
        base.push_str("\": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(params);
    Ok(base)
}

/// The value of one covered component.
fn component_value(
    req: &SignedRequest<'_>,
    name: &str,
    digest: Option<&str>,
) -> Result<String, ComponentError> {
    if name.starts_with('@') {
        let value =
            derived_value(req, name).ok_or_else(|| ComponentError::Unsupported(name.into()))?;
        // Derived values come from the request line: no controls at all, ASCII only.
        if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            Ok(value)
        } else {
            Err(ComponentError::Opaque(name.into()))
        }
    } else if let (Some(d), "content-digest") = (digest, name) {
        Ok(d.to_string())
    } else {
        header_value(req.headers, name)
    }
}

/// Derived components (RFC 9421 §2.2); `None` for an unsupported name.
fn derived_value(req: &SignedRequest<'_>, name: &str) -> Option<String> {
    let scheme = req.scheme.to_ascii_lowercase();
    let path = if req.path.is_empty() { "/" } else { req.path };
    let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
    Some(match name {
        "@method" => req.method.to_string(),
        "@authority" => normalized_authority(&scheme, req.authority),
        "@scheme" => scheme,
        "@path" => path.to_string(),
        // RFC 9421 §2.2.7: an absent query is the lone "?".
        "@query" => format!("?{}", req.query.unwrap_or("")),
        "@request-target" => format!("{path}{query}"),
        "@target-uri" => format!(
            "{scheme}://{}{path}{query}",
            normalized_authority(&scheme, req.authority)
        ),
        _ => return None,
    })
}

/// Lower-case, without the scheme's default port (RFC 9421 §2.2.3).
fn normalized_authority(scheme: &str, authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return lower,
    };
    match lower.strip_suffix(default_port) {
        Some(host) => host.to_string(),
        None => lower,
    }
}

/// A header component (RFC 9421 §2.1): every field line canonicalized, joined with `", "`.
fn header_value(headers: &http::HeaderMap, name: &str) -> Result<String, ComponentError> {
    let mut lines = Vec::new();
    for value in headers.get_all(name) {
        lines.push(
            canonical_field_line(value.as_bytes())
                .ok_or_else(|| ComponentError::Opaque(name.into()))?,
        );
    }
    if lines.is_empty() {
        return Err(ComponentError::Absent(name.into()));
    }
    Ok(lines.join(", "))
}

/// Trim SP/HTAB at both ends, replace obs-fold (OWS CRLF RWS) with one SP; `None` for any other
/// control or non-ASCII byte.
fn canonical_field_line(bytes: &[u8]) -> Option<String> {
    let is_ws = |b: u8| b == b' ' || b == b'\t';
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\r'
            && bytes.get(i + 1) == Some(&b'\n')
            && bytes.get(i + 2).is_some_and(|&c| is_ws(c))
        {
            out.truncate(out.trim_end_matches([' ', '\t']).len());
            out.push(' ');
            i += 2;
            while bytes.get(i).is_some_and(|&c| is_ws(c)) {
                i += 1;
            }
            continue;
        }
        if !(is_ws(b) || (0x21..0x7f).contains(&b)) {
            return None;
        }
        out.push(char::from(b));
        i += 1;
    }
    Some(out.trim_matches([' ', '\t']).to_string())
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/// Sign `req`: returns the headers to add, in order: `content-digest` (when the body is
/// non-empty), `signature-input`, `signature`. The caller must *set* them (replacing any).
///
/// The computed digest is the one signed when `content-digest` is covered; `content-digest` is
/// dropped from the covered list when the body is empty. `alg="hmac-sha256"` is included.
pub fn sign(
    req: &SignedRequest<'_>,
    key_id: &str,
    secret: &[u8],
    components: &[String],
    created: u64,
    nonce: &str,
    label: &str,
) -> Result<Vec<(&'static str, String)>, String> {
    check_sign_inputs(key_id, secret, created, nonce, label)?;
    let digest = (!req.body.is_empty()).then(|| content_digest(req.body));
    let covered = signing_components(components, req.body.is_empty())?;
    let list = sfv::InnerList {
        items: covered
            .iter()
            .map(|c| sfv::Item {
                bare: sfv::Bare::String(c.clone()),
                params: Vec::new(),
            })
            .collect(),
        params: vec![
            // `created` was checked to fit RFC 8941's 15-digit integers.
            (
                "created".into(),
                sfv::Bare::Integer(i64::try_from(created).unwrap_or(0)),
            ),
            ("keyid".into(), sfv::Bare::String(key_id.into())),
            ("nonce".into(), sfv::Bare::String(nonce.into())),
            ("alg".into(), sfv::Bare::String(ALGORITHM.into())),
        ],
    };
    let serialized = sfv::serialize_inner_list(&list);
    let base =
        build_base(req, &covered, &serialized, digest.as_deref()).map_err(|e| e.describe())?;
    let mac = hmac_sha256(secret, base.as_bytes());
    let mut out = Vec::with_capacity(3);
    if let Some(d) = digest {
        out.push(("content-digest", d));
    }
    out.push(("signature-input", format!("{label}={serialized}")));
    out.push(("signature", format!("{label}=:{}:", STANDARD.encode(mac))));
    Ok(out)
}

/// Refuse signing inputs that `verify` (or RFC 8941) would refuse.
fn check_sign_inputs(
    key_id: &str,
    secret: &[u8],
    created: u64,
    nonce: &str,
    label: &str,
) -> Result<(), String> {
    if !sfv::is_key(label) {
        return Err("label must be a lower-case structured-field key, e.g. sig1".into());
    }
    if !valid_key_id(key_id) {
        return Err("key id must be 1 to 128 of A-Z a-z 0-9 . _ : -".into());
    }
    if secret.is_empty() {
        return Err("secret is empty".into());
    }
    if created > sfv::MAX_INTEGER {
        return Err("created is out of range".into());
    }
    let printable = nonce.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !printable || !(NONCE_MIN..=NONCE_MAX).contains(&nonce.len()) {
        return Err("nonce must be 8 to 256 printable ASCII characters".into());
    }
    Ok(())
}

/// The covered list for signing: validated, no repeats, `content-digest` dropped without body.
fn signing_components(components: &[String], body_empty: bool) -> Result<Vec<String>, String> {
    let mut covered: Vec<String> = Vec::new();
    for c in components {
        if body_empty && c == "content-digest" {
            continue;
        }
        Requirements::validate_component(c).map_err(|e| format!("component {c:?}: {e}"))?;
        if covered.contains(c) {
            return Err(format!("component {c:?} listed twice"));
        }
        covered.push(c.clone());
    }
    if covered.len() > MAX_COMPONENTS {
        return Err(format!(
            "at most {MAX_COMPONENTS} components may be covered"
        ));
    }
    Ok(covered)
}

/// RFC 9530 `Content-Digest` with SHA-256: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Random nonce for signing: 16 bytes from `/dev/urandom`, base64url without padding.
pub fn new_nonce() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// A secret as the keys file writes it: `base64:<standard base64>` of at least
/// [`MIN_SECRET`] bytes. The problem never includes the value.
pub fn decode_secret(text: &str) -> Result<Vec<u8>, &'static str> {
    let Some(encoded) = text.trim().strip_prefix("base64:") else {
        return Err("must be \"base64:\" followed by standard base64");
    };
    match STANDARD.decode(encoded) {
        Ok(bytes) if bytes.len() >= MIN_SECRET => Ok(bytes),
        Ok(_) => Err("must decode to at least 32 bytes"),
        Err(_) => Err("is not valid standard base64 (with padding)"),
    }
}

/// A key id: 1..=128 of `[A-Za-z0-9._:-]`.
fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// One signing key. `Debug` is by hand: the secret is never printed.
struct KeyEntry {
    id: String,
    secret: Vec<u8>,
    identity: Arc<Identity>,
    /// Informational only (not a not-before): keys are often rolled out ahead of use.
    created: u64,
    expires: Option<u64>,
    disabled: bool,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("consumer", &self.identity.subject)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("disabled", &self.disabled)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Signing keys by id.
#[derive(Default)]
pub struct Keyring {
    by_id: HashMap<String, KeyEntry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.by_id.keys().collect();
        ids.sort();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

const KEY_FIELDS: [&str; 9] = [
    "id", "consumer", "tenant", "scopes", "tier", "secret", "created", "expires", "disabled",
];

impl Keyring {
    /// Parse a signing-keys file. Every problem is reported with its path (`keys[2].secret: ...`);
    /// no problem text ever contains a secret. `tiers` says whether a tier name is known.
    pub fn parse(text: &str, tiers: &dyn Fn(&str) -> bool) -> Result<Keyring, Vec<String>> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
        let entries = top_level_keys(&doc)?;
        let mut problems = Vec::new();
        let mut by_id: HashMap<String, KeyEntry> = HashMap::new();
        let mut first_index: HashMap<String, usize> = HashMap::new();
        for (i, value) in entries.iter().enumerate() {
            let (id, entry) = parse_entry(i, value, tiers, &mut problems);
            let Some(id) = id else { continue };
            if let Some(j) = first_index.get(&id) {
                problems.push(format!("keys[{i}].id: duplicate of keys[{j}].id"));
                continue;
            }
            first_index.insert(id.clone(), i);
            if let Some(entry) = entry {
                by_id.insert(id, entry);
            }
        }
        if problems.is_empty() {
            Ok(Keyring { by_id })
        } else {
            Err(problems)
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The secret of key `id` (for `portcullis sign` with the gateway's own file).
    pub fn secret(&self, id: &str) -> Option<&[u8]> {
        self.by_id.get(id).map(|k| k.secret.as_slice())
    }

    /// The key if it exists, is not disabled and has not expired (`expires` is the first second
    /// it is refused).
    fn active(&self, id: &str, now: u64) -> Option<&KeyEntry> {
        self.by_id
            .get(id)
            .filter(|k| !k.disabled && k.expires.is_none_or(|e| now < e))
    }
}

/// A YAML syntax problem, by location only: the parser's message could quote file content.
fn yaml_problem(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => format!("not valid YAML (line {}, column {})", l.line(), l.column()),
        None => "not valid YAML".to_string(),
    }
}

/// The `keys` list of the top-level mapping (which has no other field).
fn top_level_keys(doc: &Value) -> Result<&[Value], Vec<String>> {
    let Value::Mapping(top) = doc else {
        return Err(vec!["expected a mapping with a `keys` list".to_string()]);
    };
    let mut problems = Vec::new();
    for name in top.keys() {
        if name.as_str() != Some("keys") {
            problems.push(format!(
                "unknown top-level field {}",
                field_label(name.as_str())
            ));
        }
    }
    let list = match top.get("keys") {
        Some(Value::Sequence(list)) => Some(list.as_slice()),
        Some(_) => {
            problems.push("keys: must be a list".to_string());
            None
        }
        None => {
            problems.push("keys: missing".to_string());
            None
        }
    };
    match list {
        Some(list) if problems.is_empty() => Ok(list),
        _ => Err(problems),
    }
}

/// Name an unknown field only when it looks like a field name (never a pasted secret).
fn field_label(name: Option<&str>) -> String {
    match name {
        Some(n)
            if !n.is_empty()
                && n.len() <= 32
                && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            format!("`{n}`")
        }
        _ => "(name not shown)".to_string(),
    }
}

/// Parse `keys[i]`, pushing its problems. Returns its id (if readable, for duplicate detection)
/// and the entry (only when it has no problem at all).
fn parse_entry(
    i: usize,
    value: &Value,
    tiers: &dyn Fn(&str) -> bool,
    problems: &mut Vec<String>,
) -> (Option<String>, Option<KeyEntry>) {
    let path = format!("keys[{i}]");
    let Value::Mapping(map) = value else {
        problems.push(format!("{path}: must be a mapping"));
        return (None, None);
    };
    let before = problems.len();
    for name in map.keys() {
        if !name.as_str().is_some_and(|n| KEY_FIELDS.contains(&n)) {
            problems.push(format!(
                "{path}: unknown field {}",
                field_label(name.as_str())
            ));
        }
    }
    let mut f = Fields {
        map,
        path: &path,
        problems,
    };
    let id = f.checked(
        "id",
        true,
        valid_key_id,
        "must be 1 to 128 of A-Z a-z 0-9 . _ : -",
    );
    let consumer = f.checked(
        "consumer",
        true,
        valid_name,
        "must be 1 to 128 of A-Z a-z 0-9 - _ . : @",
    );
    let tenant = f.checked(
        "tenant",
        false,
        valid_name,
        "must be 1 to 128 of A-Z a-z 0-9 - _ . : @",
    );
    let scopes = f.scopes();
    let tier = f.checked(
        "tier",
        false,
        |t| valid_name(t) && tiers(t),
        "is not a known tier",
    );
    let secret = f.secret();
    let created = f.time("created", true);
    let expires = f.time("expires", false);
    let disabled = f.flag("disabled");
    if let (Some(c), Some(e)) = (created, expires) {
        if e <= c {
            f.problem("expires", "must be after created");
        }
    }
    let (Some(id_val), Some(consumer), Some(secret), Some(created), true) = (
        id.clone(),
        consumer,
        secret,
        created,
        problems.len() == before,
    ) else {
        return (id, None);
    };
    let identity = Identity {
        method: "hmac",
        provider: "hmac".to_string(),
        subject: consumer.clone(),
        client_id: Some(consumer),
        tenant,
        scopes,
        tier,
        key_id: Some(id_val.clone()),
        ..Identity::default()
    };
    let entry = KeyEntry {
        id: id_val,
        secret,
        identity: Arc::new(identity),
        created,
        expires,
        disabled,
    };
    (id, Some(entry))
}

/// Field readers for one `keys[i]` mapping; each records its own problems.
struct Fields<'a> {
    map: &'a Mapping,
    path: &'a str,
    problems: &'a mut Vec<String>,
}

impl Fields<'_> {
    fn problem(&mut self, field: &str, what: &str) {
        self.problems.push(format!("{}.{field}: {what}", self.path));
    }

    /// A string field; `None` (with a problem when required or mistyped) otherwise.
    fn text(&mut self, field: &str, required: bool) -> Option<String> {
        match self.map.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(field, "must be a string");
                None
            }
            None if required => {
                self.problem(field, "missing");
                None
            }
            None => None,
        }
    }

    /// A string field that must satisfy `ok` (else `what` is reported; the value is not echoed).
    fn checked(
        &mut self,
        field: &str,
        required: bool,
        ok: impl Fn(&str) -> bool,
        what: &str,
    ) -> Option<String> {
        let value = self.text(field, required)?;
        if ok(&value) {
            Some(value)
        } else {
            self.problem(field, what);
            None
        }
    }

    /// Optional list of OAuth-style scope tokens.
    fn scopes(&mut self) -> Vec<String> {
        let Some(value) = self.map.get("scopes") else {
            return Vec::new();
        };
        let Value::Sequence(items) = value else {
            self.problem("scopes", "must be a list of strings");
            return Vec::new();
        };
        let mut scopes = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if valid_scope(s) => scopes.push(s.to_string()),
                _ => self.problem(
                    &format!("scopes[{j}]"),
                    "must be 1 to 128 printable characters without spaces, quotes or backslashes",
                ),
            }
        }
        scopes
    }

    /// `secret: "base64:<standard base64>"` of at least [`MIN_SECRET`] bytes. Problems never
    /// include the value.
    fn secret(&mut self) -> Option<Vec<u8>> {
        let text = self.text("secret", true)?;
        match decode_secret(&text) {
            Ok(bytes) => Some(bytes),
            Err(problem) => {
                self.problem("secret", problem);
                None
            }
        }
    }

    /// A date or RFC 3339 time as unix seconds.
    fn time(&mut self, field: &str, required: bool) -> Option<u64> {
        let text = self.text(field, required)?;
        match parse_time(&text) {
            Ok(t) => Some(t),
            Err(_) => {
                self.problem(field, "must be YYYY-MM-DD or RFC 3339 in UTC");
                None
            }
        }
    }

    /// An optional boolean, `false` when absent.
    fn flag(&mut self, field: &str) -> bool {
        match self.map.get(field) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problem(field, "must be true or false");
                false
            }
        }
    }
}

/// RFC 6749 scope-token characters, at most 128.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// The signing keys in force, hot-reloaded from `path`.
pub struct SigningKeys {
    pub path: PathBuf,
    tiers: Vec<String>,
    current: RwLock<Arc<Keyring>>,
    stamp: Mutex<Option<(u64, SystemTime)>>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("path", &self.path)
            .field("keys", &self.current().len())
            .finish()
    }
}

impl SigningKeys {
    /// Read and parse the file; any problem refuses the whole file.
    pub fn load(path: PathBuf, tiers: Vec<String>) -> Result<Self, Vec<String>> {
        let stamp = crate::reload::file_stamp(&path);
        let keyring = read_keyring(&path, &tiers)?;
        Ok(SigningKeys {
            path,
            tiers,
            current: RwLock::new(Arc::new(keyring)),
            stamp: Mutex::new(stamp),
        })
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<Keyring> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl crate::reload::Reloadable for SigningKeys {
    fn what(&self) -> &'static str {
        "signing keys file"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(&self) -> &Mutex<Option<(u64, SystemTime)>> {
        &self.stamp
    }

    /// A file with any problem is refused whole and the keys in force stay.
    fn read_and_swap(&self) -> Result<usize, Vec<String>> {
        let keyring = read_keyring(&self.path, &self.tiers)?;
        let count = keyring.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
        Ok(count)
    }

    fn record(&self, outcome: Result<usize, ()>) {
        let m = crate::metrics::metrics();
        match outcome {
            Ok(n) => {
                m.signing_key_reloads.with_label_values(&["success"]).inc();
                m.signing_keys.set(n as i64);
            }
            Err(()) => m.signing_key_reloads.with_label_values(&["invalid"]).inc(),
        }
    }
}

/// Read (at most [`MAX_KEYS_FILE`] bytes) and parse the keys file.
fn read_keyring(path: &Path, tiers: &[String]) -> Result<Keyring, Vec<String>> {
    let io_problem = |e: std::io::Error| vec![format!("{}: cannot read: {e}", path.display())];
    let file = std::fs::File::open(path).map_err(io_problem)?;
    let mut text = String::new();
    file.take(MAX_KEYS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io_problem)?;
    if text.len() as u64 > MAX_KEYS_FILE {
        return Err(vec![format!(
            "{}: larger than {MAX_KEYS_FILE} bytes",
            path.display()
        )]);
    }
    Keyring::parse(&text, &|t: &str| tiers.iter().any(|x| x == t))
}

// ---------------------------------------------------------------------------------------------
// Nonce store
// ---------------------------------------------------------------------------------------------

const SHARDS: usize = 16;
/// Sweep the shard being written every this many inserts.
const SWEEP_EVERY: u64 = 1024;

/// 16-byte prefix of SHA-256(`key_id \0 nonce`): fixed size whatever the nonce length, and
/// collisions are out of reach (2^-64 at 2^32 entries).
type NonceKey = [u8; 16];

/// In-process replay store: remembers `(key id, nonce)` until a given time.
///
/// Sharded by the first byte of the hashed key so worker threads rarely contend. Capacity is
/// global (`max_entries`); when full, the writer's shard is swept, then (at most once per second)
/// every shard. A live entry is never dropped to make room: a full cache fails closed.
pub struct NonceCache {
    shards: Vec<Mutex<HashMap<NonceKey, u64>>>,
    max_entries: usize,
    len: AtomicUsize,
    inserts: AtomicU64,
    /// `now + 1` of the last full sweep (0 = never), to bound sweeping under a flood.
    last_full_sweep: AtomicU64,
}

impl fmt::Debug for NonceCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceCache")
            .field("len", &self.len())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl NonceCache {
    /// A cache holding at most `max_entries` (at least 1) live nonces.
    pub fn new(max_entries: usize) -> Self {
        NonceCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_entries: max_entries.max(1),
            len: AtomicUsize::new(0),
            inserts: AtomicU64::new(0),
            last_full_sweep: AtomicU64::new(0),
        }
    }

    /// `Ok(true)` = first sighting (now recorded until `until`, exclusive); `Ok(false)` = already
    /// seen and still remembered. `Err(())` when the cache is full of unexpired entries: the
    /// caller answers 503 (fail closed). The `()` error is the integration contract.
    #[allow(clippy::result_unit_err)]
    pub fn check_and_record(
        &self,
        key_id: &str,
        nonce: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, ()> {
        let key = nonce_key(key_id, nonce);
        let shard = self.shard(&key);
        {
            let mut map = lock(shard);
            match self.try_record(&mut map, key, until, now) {
                Some(first) => return Ok(first),
                None => self.sweep(&mut map, now),
            }
            if let Some(first) = self.try_record(&mut map, key, until, now) {
                return Ok(first);
            }
        }
        // Still full: sweep every shard, at most once per second (holding one lock at a time).
        if self
            .last_full_sweep
            .swap(now.saturating_add(1), Ordering::Relaxed)
            != now.saturating_add(1)
        {
            for other in &self.shards {
                self.sweep(&mut lock(other), now);
            }
        }
        let mut map = lock(shard);
        // Re-check: another thread may have recorded the same nonce meanwhile.
        self.try_record(&mut map, key, until, now).ok_or(())
    }

    /// Live entries (and expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &NonceKey) -> &Mutex<HashMap<NonceKey, u64>> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// `Some(false)` if live, `Some(true)` if recorded now, `None` if there is no room.
    fn try_record(
        &self,
        map: &mut HashMap<NonceKey, u64>,
        key: NonceKey,
        until: u64,
        now: u64,
    ) -> Option<bool> {
        if let Some(&live_until) = map.get(&key) {
            if live_until > now {
                return Some(false);
            }
            map.remove(&key);
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        if until <= now {
            return Some(true); // Nothing to remember.
        }
        if !self.reserve() {
            return None;
        }
        map.insert(key, until);
        if self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(map, now);
        }
        Some(true)
    }

    /// Take one slot of the global capacity, if any is left.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_entries).then_some(n + 1)
            })
            .is_ok()
    }

    /// Drop the expired entries of one shard.
    fn sweep(&self, map: &mut HashMap<NonceKey, u64>, now: u64) {
        let before = map.len();
        map.retain(|_, until| *until > now);
        self.len.fetch_sub(before - map.len(), Ordering::Relaxed);
    }
}

fn nonce_key(key_id: &str, nonce: &str) -> NonceKey {
    let mut h = Sha256::new();
    h.update(key_id.as_bytes());
    h.update([0u8]);
    h.update(nonce.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Lock, recovering from poisoning: the map stays consistent (each operation is one call).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// RFC 8941 structured fields (the subset we need)
// ---------------------------------------------------------------------------------------------

/// A strict parser/serializer for RFC 8941 dictionaries: members are items or inner lists;
/// bare items are integers, strings, tokens, booleans and byte sequences (decimals are refused).
/// Stricter than RFC 8941 where leniency would only help an attacker: duplicate dictionary keys
/// or parameter names fail (RFC 8941 keeps the last), byte sequences must be canonical padded
/// standard base64, and sizes are bounded. Never recursive, never panics.
mod sfv {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    /// RFC 8941 integers have at most 15 digits.
    pub(super) const MAX_INTEGER: u64 = 999_999_999_999_999;
    const MAX_MEMBERS: usize = 64;
    const MAX_PARAMS: usize = 64;
    const MAX_ITEMS: usize = 256;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Bare {
        Integer(i64),
        String(String),
        Token(String),
        Boolean(bool),
        Bytes(Vec<u8>),
    }

    pub(super) type Params = Vec<(String, Bare)>;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Item {
        pub(super) bare: Bare,
        pub(super) params: Params,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct InnerList {
        pub(super) items: Vec<Item>,
        pub(super) params: Params,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Member {
        Item(Item),
        InnerList(InnerList),
    }

    /// Why parsing failed (static text, for debug logs).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct ParseError(pub(super) &'static str);

    type Result<T> = std::result::Result<T, ParseError>;

    /// RFC 9110 tchar.
    pub(super) fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    /// An RFC 8941 key: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
    pub(super) fn is_key(s: &str) -> bool {
        let mut bytes = s.bytes();
        bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
            && bytes.all(is_key_char)
    }

    fn is_key_char(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
    }

    /// Parse a dictionary (RFC 8941 §4.2.2).
    pub(super) fn parse_dictionary(input: &str) -> Result<Vec<(String, Member)>> {
        let mut p = Parser {
            input: input.as_bytes(),
            pos: 0,
        };
        p.skip_sp();
        let mut dict: Vec<(String, Member)> = Vec::new();
        while p.peek().is_some() {
            let key = p.key()?;
            let member = if p.eat(b'=') {
                p.member_value()?
            } else {
                Member::Item(Item {
                    bare: Bare::Boolean(true),
                    params: p.params()?,
                })
            };
            if dict.iter().any(|(k, _)| *k == key) {
                return Err(ParseError("duplicate dictionary key"));
            }
            if dict.len() == MAX_MEMBERS {
                return Err(ParseError("too many dictionary members"));
            }
            dict.push((key, member));
            p.skip_ows();
            if p.peek().is_none() {
                break;
            }
            if !p.eat(b',') {
                return Err(ParseError("dictionary member not followed by a comma"));
            }
            p.skip_ows();
            if p.peek().is_none() {
                return Err(ParseError("trailing comma in dictionary"));
            }
        }
        Ok(dict)
    }

    struct Parser<'a> {
        input: &'a [u8],
        pos: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.input.get(self.pos).copied()
        }

        fn bump(&mut self) -> Option<u8> {
            let b = self.peek()?;
            self.pos += 1;
            Some(b)
        }

        fn eat(&mut self, want: u8) -> bool {
            let hit = self.peek() == Some(want);
            if hit {
                self.pos += 1;
            }
            hit
        }

        fn skip_sp(&mut self) {
            while self.eat(b' ') {}
        }

        fn skip_ows(&mut self) {
            while self.eat(b' ') || self.eat(b'\t') {}
        }

        /// ASCII text of `input[start..self.pos]` (all accepted bytes are ASCII).
        fn text_from(&self, start: usize) -> String {
            self.input
                .get(start..self.pos)
                .unwrap_or_default()
                .iter()
                .map(|&b| char::from(b))
                .collect()
        }

        fn key(&mut self) -> Result<String> {
            let start = self.pos;
            match self.bump() {
                Some(b) if b.is_ascii_lowercase() || b == b'*' => {}
                _ => return Err(ParseError("invalid key")),
            }
            while self.peek().is_some_and(is_key_char) {
                self.pos += 1;
            }
            Ok(self.text_from(start))
        }

        fn member_value(&mut self) -> Result<Member> {
            if self.peek() == Some(b'(') {
                return Ok(Member::InnerList(self.inner_list()?));
            }
            let bare = self.bare()?;
            Ok(Member::Item(Item {
                bare,
                params: self.params()?,
            }))
        }

        /// RFC 8941 §4.2.1.2.
        fn inner_list(&mut self) -> Result<InnerList> {
            if !self.eat(b'(') {
                return Err(ParseError("expected an inner list"));
            }
            let mut items = Vec::new();
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    return Ok(InnerList {
                        items,
                        params: self.params()?,
                    });
                }
                if items.len() == MAX_ITEMS {
                    return Err(ParseError("too many inner list items"));
                }
                let bare = self.bare()?;
                items.push(Item {
                    bare,
                    params: self.params()?,
                });
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return Err(ParseError("inner list item not followed by SP or )"));
                }
            }
        }

        /// RFC 8941 §4.2.3.2; duplicate names fail.
        fn params(&mut self) -> Result<Params> {
            let mut params: Params = Vec::new();
            while self.eat(b';') {
                self.skip_sp();
                let key = self.key()?;
                let value = if self.eat(b'=') {
                    self.bare()?
                } else {
                    Bare::Boolean(true)
                };
                if params.iter().any(|(k, _)| *k == key) {
                    return Err(ParseError("duplicate parameter"));
                }
                if params.len() == MAX_PARAMS {
                    return Err(ParseError("too many parameters"));
                }
                params.push((key, value));
            }
            Ok(params)
        }

        fn bare(&mut self) -> Result<Bare> {
            match self.peek() {
                Some(b'-' | b'0'..=b'9') => self.integer(),
                Some(b'"') => self.string(),
                Some(b':') => self.bytes(),
                Some(b'?') => self.boolean(),
                Some(b) if b.is_ascii_alphabetic() || b == b'*' => Ok(self.token()),
                _ => Err(ParseError("invalid bare item")),
            }
        }

        /// Integers only: a decimal point fails (decimals are not supported).
        fn integer(&mut self) -> Result<Bare> {
            let negative = self.eat(b'-');
            let start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            let digits = self.input.get(start..self.pos).unwrap_or_default();
            if digits.is_empty() || digits.len() > 15 {
                return Err(ParseError("integer must have 1 to 15 digits"));
            }
            if self.peek() == Some(b'.') {
                return Err(ParseError("decimals are not supported"));
            }
            let value = digits
                .iter()
                .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
            Ok(Bare::Integer(if negative { -value } else { value }))
        }

        fn string(&mut self) -> Result<Bare> {
            self.bump(); // the opening quote
            let mut out = String::new();
            loop {
                match self.bump() {
                    Some(b'"') => return Ok(Bare::String(out)),
                    Some(b'\\') => match self.bump() {
                        Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                        _ => return Err(ParseError("invalid string escape")),
                    },
                    Some(c @ 0x20..=0x7e) => out.push(char::from(c)),
                    _ => return Err(ParseError("invalid or unterminated string")),
                }
            }
        }

        fn token(&mut self) -> Bare {
            let start = self.pos;
            self.pos += 1; // first character checked by `bare`
            while self
                .peek()
                .is_some_and(|b| is_tchar(b) || b == b':' || b == b'/')
            {
                self.pos += 1;
            }
            Bare::Token(self.text_from(start))
        }

        /// `:base64:` with the standard alphabet and canonical padding.
        fn bytes(&mut self) -> Result<Bare> {
            self.bump(); // the opening colon
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                self.pos += 1;
            }
            let encoded = self.input.get(start..self.pos).unwrap_or_default();
            if !self.eat(b':') {
                return Err(ParseError("invalid or unterminated byte sequence"));
            }
            STANDARD
                .decode(encoded)
                .map(Bare::Bytes)
                .map_err(|_| ParseError("byte sequence is not canonical padded base64"))
        }

        fn boolean(&mut self) -> Result<Bare> {
            self.bump(); // the question mark
            match self.bump() {
                Some(b'0') => Ok(Bare::Boolean(false)),
                Some(b'1') => Ok(Bare::Boolean(true)),
                _ => Err(ParseError("invalid boolean")),
            }
        }
    }

    /// RFC 8941 §4.1.1.1 serialization of an inner list with its parameters.
    pub(super) fn serialize_inner_list(list: &InnerList) -> String {
        let mut out = String::from("(");
        for (i, item) in list.items.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            write_bare(&mut out, &item.bare);
            write_params(&mut out, &item.params);
        }
        out.push(')');
        write_params(&mut out, &list.params);
        out
    }

    fn write_params(out: &mut String, params: &Params) {
        for (key, value) in params {
            out.push(';');
            out.push_str(key);
            if *value != Bare::Boolean(true) {
                out.push('=');
                write_bare(out, value);
            }
        }
    }

    fn write_bare(out: &mut String, bare: &Bare) {
        match bare {
            Bare::Integer(i) => out.push_str(&i.to_string()),
            Bare::String(s) => {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Bare::Token(t) => out.push_str(t),
            Bare::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
            Bare::Bytes(b) => {
                out.push(':');
                out.push_str(&STANDARD.encode(b));
                out.push(':');
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "http_sig_tests.rs"]
mod tests;

/// HMAC-signed requests, ready to verify: the keys in force, what a signature must cover,
/// and where nonces are remembered.
#[derive(Debug)]
pub struct Signing {
    pub keys: std::sync::Arc<SigningKeys>,
    pub rules: Requirements,
    pub nonces: crate::auth::nonces::NonceStore,
}

/// The name `portcullis` callers use for the signature coverage rules.
pub type SignatureRules = Requirements;
