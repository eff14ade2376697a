//! JWT verification, hardened beyond the library: compact JWS only, strict base64url, an
//! exact-match algorithm allow-list, `kid` as an opaque lookup key (never `jku`, `x5u`, `jwk`
//! or `x5c`), `crit` refused, typed registered claims, duplicate claims refused, and bounded,
//! control-character-free subjects. Keys are read by `jsonwebtoken` (PEM, JWK) and made ready
//! for aws-lc-rs once, when a key set is loaded; signatures are checked by aws-lc-rs against those
//! parsed keys, so no request parses a key.
//!
//! This is the JWS kernel only: key sets, the rules, and [`verify`]. Providers, where their keys
//! come from and their token cache are in `crate::auth::provider`.

use super::claims::{is_header_safe, numeric_date, printable, MAX_SUBJECT_LEN};
use super::{strict_json, AuthError};
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{
    self as aws_sig, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// What a provider accepts, compiled from its configuration.
#[derive(Debug, Clone)]
pub struct ProviderRules {
    pub issuer: String,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Exact-match allow-list; never `none`, never HMAC mixed with public-key algorithms.
    pub algorithms: Vec<Algorithm>,
    pub leeway_secs: u64,
    /// Reject tokens whose `exp - iat`, or age, exceeds this.
    pub max_token_age_secs: Option<u64>,
    pub require_exp: bool,
    /// Required `typ` header (compared case-insensitively, `application/` prefix allowed).
    pub typ: Option<String>,
    pub max_token_bytes: usize,
    /// Trust the key alone: `iss` and `aud` are type-checked but not compared, and `sub` is
    /// not required here (the claim map finds the subject, e.g. in `user_id`). Only the decision protocol's `init`
    /// (which gives nothing but a key) sets this; a configuration file never can.
    pub key_only: bool,
}

impl ProviderRules {
    /// Checks a configuration would make: the allow-list is not empty and does not mix
    /// HMAC with public-key algorithms (security catalogue J5).
    pub fn check(&self) -> Result<(), String> {
        if self.algorithms.is_empty() {
            return Err("at least one algorithm is required".into());
        }
        let hmac = self
            .algorithms
            .iter()
            .filter(|a| a.family() == AlgorithmFamily::Hmac)
            .count();
        if hmac != 0 && hmac != self.algorithms.len() {
            return Err("a provider cannot mix HMAC and public-key algorithms".into());
        }
        if self.issuer.is_empty() {
            return Err("issuer must not be empty".into());
        }
        if self.audiences.is_empty() {
            return Err("at least one audience is required".into());
        }
        Ok(())
    }
}

/// One verification key.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one; the token's must then be equal.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
    ready: Ready,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    fn new(
        kid: Option<String>,
        alg: Option<Algorithm>,
        family: AlgorithmFamily,
        key: &DecodingKey,
    ) -> Result<Self, String> {
        let ready = Ready::of(key, family, alg).ok_or("no algorithm can use this key")?;
        Ok(Self {
            kid,
            alg,
            family,
            ready,
        })
    }
}

/// Every algorithm a key may be made ready for.
const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A key parsed for each algorithm it may verify, when its key set is loaded: jsonwebtoken's
/// `crypto::verify` parses the key on every call (an RSA key's parse costs more than the
/// verification itself). The same aws-lc-rs algorithms and the same key bytes as jsonwebtoken
/// uses, so what verifies is unchanged.
enum Ready {
    Hmac(Vec<(Algorithm, hmac::Key)>),
    Public(Vec<(Algorithm, ParsedPublicKey)>),
}

impl Ready {
    /// `None` when no algorithm of `family` (or `only`, when the key names one) can use `key`.
    fn of(key: &DecodingKey, family: AlgorithmFamily, only: Option<Algorithm>) -> Option<Self> {
        let algorithms = ALGORITHMS
            .into_iter()
            .filter(|a| a.family() == family && only.is_none_or(|o| o == *a));
        let ready = if family == AlgorithmFamily::Hmac {
            let secret = key.try_get_hmac_secret().ok()?;
            Self::Hmac(
                algorithms
                    .filter_map(|a| Some((a, hmac::Key::new(hmac_algorithm(a)?, secret))))
                    .collect(),
            )
        } else {
            Self::Public(
                algorithms
                    .filter_map(|a| Some((a, parse_public(key, a)?)))
                    .collect(),
            )
        };
        match &ready {
            Self::Hmac(keys) if keys.is_empty() => None,
            Self::Public(keys) if keys.is_empty() => None,
            _ => Some(ready),
        }
    }

    /// Whether `signature` (decoded) is `alg`'s signature over `message` under this key.
    fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        match self {
            // aws-lc-rs compares the tags in constant time.
            Self::Hmac(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .is_some_and(|(_, k)| hmac::verify(k, message, signature).is_ok()),
            Self::Public(keys) => keys
                .iter()
                .find(|(a, _)| *a == alg)
                .is_some_and(|(_, k)| k.verify_sig(message, signature).is_ok()),
        }
    }
}

fn hmac_algorithm(alg: Algorithm) -> Option<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

fn rsa_parameters(alg: Algorithm) -> Option<&'static RsaParameters> {
    match alg {
        Algorithm::RS256 => Some(&aws_sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&aws_sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&aws_sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&aws_sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&aws_sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&aws_sig::RSA_PSS_2048_8192_SHA512),
        _ => None,
    }
}

fn verification_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    match alg {
        Algorithm::ES256 => Some(&aws_sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&aws_sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Some(&aws_sig::ED25519),
        a => rsa_parameters(a).map(|p| p as &'static dyn VerificationAlgorithm),
    }
}

/// `key` parsed for `alg`: `None` when it is not such a key (an EC key of another curve).
fn parse_public(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(rsa_parameters(alg)?)
            .ok(),
        DecodingKeyKind::SecretOrDer(bytes) => {
            ParsedPublicKey::new(verification_algorithm(alg)?, bytes).ok()
        }
    }
}

/// A provider's keys, looked up by `kid`.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    by_kid: HashMap<String, Arc<VerifyKey>>,
}

/// The minimum HMAC secret: as long as the hash (RFC 7518 §3.2), at least 32 bytes.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// The smallest RSA modulus accepted (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;

/// Size of an RSA modulus given as base64url (a JWK's `n`), without leading zero bytes.
fn rsa_modulus_bits(n_b64: &str) -> Option<usize> {
    let n = URL_SAFE_NO_PAD.decode(n_b64).ok()?;
    let first = n.iter().position(|b| *b != 0)?;
    let lead = n[first].leading_zeros() as usize;
    Some((n.len() - first) * 8 - lead)
}

/// Size of an RSA key in a PEM public key or certificate, when it can be read.
fn pem_rsa_bits(pem: &[u8]) -> Option<usize> {
    use pingora::tls::pkey::PKey;
    use pingora::tls::x509::X509;
    let key = PKey::public_key_from_pem(pem)
        .ok()
        .or_else(|| X509::from_pem(pem).ok().and_then(|c| c.public_key().ok()))?;
    key.rsa().ok().map(|_| key.bits() as usize)
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn add(&mut self, key: VerifyKey) -> Result<(), String> {
        let key = Arc::new(key);
        if let Some(kid) = &key.kid {
            if self.by_kid.insert(kid.clone(), key.clone()).is_some() {
                return Err(format!("duplicate kid \"{}\"", printable(kid)));
            }
        }
        self.keys.push(key);
        Ok(())
    }

    /// An HMAC secret (from a file or the environment, never inline config).
    pub fn add_hmac_secret(&mut self, kid: Option<&str>, secret: &[u8]) -> Result<(), String> {
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(format!(
                "an HMAC secret must be at least {MIN_HMAC_SECRET_BYTES} bytes"
            ));
        }
        self.add(VerifyKey::new(
            kid.map(str::to_string),
            None,
            AlgorithmFamily::Hmac,
            &DecodingKey::from_secret(secret),
        )?)
    }

    /// A PEM public key (`PUBLIC KEY`, `RSA PUBLIC KEY`) or certificate.
    pub fn add_pem(
        &mut self,
        kid: Option<&str>,
        family: AlgorithmFamily,
        pem: &[u8],
    ) -> Result<(), String> {
        let key = match family {
            AlgorithmFamily::Rsa => {
                if let Some(bits) = pem_rsa_bits(pem) {
                    if bits < MIN_RSA_BITS {
                        return Err(format!(
                            "an RSA key of {bits} bits is too small (at least {MIN_RSA_BITS})"
                        ));
                    }
                }
                DecodingKey::from_rsa_pem(pem)
            }
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => return Err("an HMAC secret is not a PEM key".into()),
        }
        .map_err(|e| format!("not a usable PEM key: {e}"))?;
        let key = VerifyKey::new(kid.map(str::to_string), None, family, &key)
            .map_err(|e| format!("not a usable PEM key: {e}"))?;
        self.add(key)
    }

    /// Keys of a JWKS document. Unusable keys are skipped, each with a warning: symmetric
    /// (`oct`) keys (anyone who can read a JWKS could mint tokens, K10), `use: enc`, and
    /// keys that cannot be decoded. A document that is not a JWKS is an error.
    pub fn from_jwks(json: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        let value = strict_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let set: JwkSet = serde_json::from_value(value).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = KeySet::default();
        let mut warnings = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let name = jwk.common.key_id.as_deref().map_or_else(
                || format!("keys[{i}]"),
                |k| format!("kid \"{}\"", printable(k)),
            );
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(rsa) => {
                    let bits = rsa_modulus_bits(&rsa.n).unwrap_or(0);
                    let e_is_one = URL_SAFE_NO_PAD
                        .decode(&rsa.e)
                        .map(|e| e.iter().skip_while(|b| **b == 0).eq([1u8].iter()))
                        .unwrap_or(true);
                    if bits < MIN_RSA_BITS || e_is_one {
                        warnings.push(format!(
                            "{name}: RSA key of {bits} bits or with e = 1 skipped (at least {MIN_RSA_BITS} bits)"
                        ));
                        continue;
                    }
                    AlgorithmFamily::Rsa
                }
                AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
                AlgorithmParameters::OctetKey(_) => {
                    warnings.push(format!("{name}: symmetric key in a JWKS skipped"));
                    continue;
                }
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                warnings.push(format!("{name}: `use: enc` key skipped"));
                continue;
            }
            let alg = match jwk.common.key_algorithm {
                Some(ka) => match ka.to_string().parse::<Algorithm>() {
                    Ok(a) if a.family() == family => Some(a),
                    _ => {
                        warnings.push(format!("{name}: `alg` does not fit the key type; skipped"));
                        continue;
                    }
                },
                None => None,
            };
            let key = match DecodingKey::from_jwk(jwk)
                .map_err(|e| e.to_string())
                .and_then(|k| VerifyKey::new(jwk.common.key_id.clone(), alg, family, &k))
            {
                Ok(k) => k,
                Err(e) => {
                    warnings.push(format!("{name}: unusable key skipped ({e})"));
                    continue;
                }
            };
            if let Err(e) = keys.add(key) {
                warnings.push(format!("{name}: {e}; skipped"));
            }
        }
        Ok((keys, warnings))
    }

    /// Check a raw signature (base64url) over `message` with the only key of `alg`'s family:
    /// the primitive layer alone, for test vectors.
    #[cfg(test)]
    pub(crate) fn verify_raw(&self, alg: Algorithm, message: &[u8], sig_b64: &str) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(sig_b64) else {
            return false;
        };
        self.find(None, alg.family())
            .is_some_and(|k| k.ready.verify(alg, message, &signature))
    }

    /// The key for a token: by `kid` when it has one; without one, the only key of the
    /// algorithm's family (more than one is ambiguous, K7).
    fn find(&self, kid: Option<&str>, family: AlgorithmFamily) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => {
                let mut it = self.keys.iter().filter(|k| k.family == family);
                match (it.next(), it.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

/// A verified token: its claims (with a safe `sub`, except under `key_only`).
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: String,
    pub expires_at: Option<u64>,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

/// The JWS layer alone: shape, encoding, header rules, key choice and signature. Returns the
/// payload bytes and the `kid`. `verify` adds the claim checks on top.
pub fn verify_jws(
    token: &str,
    rules: &ProviderRules,
    keys: &KeySet,
) -> Result<(Vec<u8>, Option<String>), AuthError> {
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if token.len() > rules.max_token_bytes {
        return Err(AuthError::TokenTooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // JWE (5 parts), JSON serialization, a 2-part token: all refused (J14-J16).
        return Err(AuthError::MalformedToken);
    };
    // An empty payload is a valid JWS (and then fails as claims); header and signature are not.
    if h64.is_empty() || s64.is_empty() {
        return Err(AuthError::MalformedToken);
    }
    // Strict base64url without padding: `=`, `+`, `/` and non-canonical last symbols are
    // refused by the engine (E1-E3, E9).
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|_| AuthError::MalformedToken)?;
    let payload_bytes = URL_SAFE_NO_PAD
        .decode(p64)
        .map_err(|_| AuthError::MalformedToken)?;
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| AuthError::MalformedToken)?;
    if sig_bytes.is_empty() {
        return Err(AuthError::MalformedToken);
    }

    let Value::Object(header) =
        strict_json::from_slice(&header_bytes).map_err(|_| AuthError::MalformedToken)?
    else {
        return Err(AuthError::MalformedToken);
    };
    if header.contains_key("crit") {
        return Err(AuthError::CriticalHeader);
    }
    // Compressed payloads and nested or non-JSON content are not accepted (C16).
    if header.contains_key("zip") || header.contains_key("cty") {
        return Err(AuthError::MalformedToken);
    }
    let alg = match header.get("alg") {
        // Exact names only: "none", "None", "hs256", "HS256 " are all unknown (J1-J3).
        Some(Value::String(name)) => name
            .parse::<Algorithm>()
            .ok()
            .filter(|a| rules.algorithms.contains(a))
            .ok_or(AuthError::UnsupportedAlgorithm)?,
        _ => return Err(AuthError::UnsupportedAlgorithm),
    };
    if let Some(want) = &rules.typ {
        let ok = match header.get("typ") {
            Some(Value::String(t)) => {
                let t = t.strip_prefix("application/").unwrap_or(t);
                t.eq_ignore_ascii_case(want)
            }
            _ => false,
        };
        if !ok {
            return Err(AuthError::WrongTokenType);
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(AuthError::MalformedToken),
    };
    // `jku`, `x5u`, `jwk` and `x5c` are deliberately never read (K1-K3).
    let key = keys
        .find(kid, alg.family())
        // With only a key to go by (`key_only`), a `kid` is a hint the key never had.
        .or_else(|| {
            rules
                .key_only
                .then(|| keys.find(None, alg.family()))
                .flatten()
        })
        .ok_or(AuthError::UnknownKey)?;
    if key.family != alg.family() || key.alg.is_some_and(|a| a != alg) {
        // e.g. an RSA key's kid under `alg: ES256`, or RS256 relabelled PS256 (K9, J12)
        return Err(AuthError::UnsupportedAlgorithm);
    }
    let message_len = h64.len() + 1 + p64.len();
    let message = &token.as_bytes()[..message_len];
    if key.ready.verify(alg, message, &sig_bytes) {
        Ok((payload_bytes, kid.map(str::to_string)))
    } else {
        Err(AuthError::BadSignature)
    }
}

/// The `kid` of a token's header, for the unknown-key path only (the token has already
/// passed `verify_jws` up to the key lookup, so its header decodes).
pub(super) fn header_kid(token: &str) -> Option<String> {
    let h64 = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(h64).ok()?;
    match strict_json::from_slice(&bytes).ok()? {
        Value::Object(mut header) => match header.remove("kid") {
            Some(Value::String(kid)) => Some(kid),
            _ => None,
        },
        _ => None,
    }
}

/// Verify a compact JWS at time `now` (Unix seconds): signature, then claims.
pub fn verify(
    token: &str,
    rules: &ProviderRules,
    keys: &KeySet,
    now: u64,
) -> Result<Verified, AuthError> {
    let (payload_bytes, kid) = verify_jws(token, rules, keys)?;

    let Value::Object(claims) =
        strict_json::from_slice(&payload_bytes).map_err(|_| AuthError::MalformedToken)?
    else {
        return Err(AuthError::MalformedToken);
    };
    let expires_at = check_time_claims(&claims, rules, now)?;
    let issuer = match claims.get("iss") {
        Some(Value::String(iss)) if rules.key_only || *iss == rules.issuer => iss.clone(),
        None if rules.key_only => String::new(),
        _ => return Err(AuthError::WrongIssuer),
    };
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => rules.key_only || rules.audiences.iter().any(|want| want == a),
        Some(Value::Array(list)) => {
            list.iter().all(Value::is_string)
                && (rules.key_only
                    || list
                        .iter()
                        .any(|a| rules.audiences.iter().any(|want| a == want)))
        }
        None => rules.key_only,
        _ => false,
    };
    if !aud_ok {
        return Err(AuthError::WrongAudience);
    }
    // Every configured provider's tokens name a subject in `sub`; with only a key to trust,
    // the claim map (and its `user_id` fallback) alone decides where the subject is.
    if !rules.key_only {
        match claims.get("sub") {
            Some(Value::String(s)) if is_header_safe(s, MAX_SUBJECT_LEN) => {}
            _ => return Err(AuthError::InvalidClaim),
        }
    }
    Ok(Verified {
        issuer,
        expires_at,
        kid,
        claims,
    })
}

/// `exp`, `nbf` and `iat` must be numbers when present (a string `exp` is a refusal, not a
/// skipped check: C1-C3). Returns `exp`.
fn check_time_claims(
    claims: &Map<String, Value>,
    rules: &ProviderRules,
    now: u64,
) -> Result<Option<u64>, AuthError> {
    let leeway = rules.leeway_secs;
    let number = |name: &str| numeric_date(claims, name);
    let exp = number("exp")?;
    let nbf = number("nbf")?;
    let iat = number("iat")?;
    match exp {
        None if rules.require_exp => return Err(AuthError::InvalidClaim),
        Some(exp) if now > exp.saturating_add(leeway) => return Err(AuthError::Expired),
        _ => {}
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(leeway) {
            return Err(AuthError::NotYetValid);
        }
    }
    if let Some(iat) = iat {
        if iat > now.saturating_add(leeway) {
            return Err(AuthError::IssuedInFuture);
        }
    }
    if let Some(max) = rules.max_token_age_secs {
        let start = iat.or(nbf);
        let too_long = match (start, exp) {
            (Some(s), Some(e)) => e.saturating_sub(s) > max,
            (None, Some(e)) => e.saturating_sub(now) > max,
            _ => false,
        };
        let too_old = start.is_some_and(|s| now.saturating_sub(s) > max.saturating_add(leeway));
        if too_long || too_old {
            return Err(AuthError::TooOld);
        }
    }
    Ok(exp)
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
