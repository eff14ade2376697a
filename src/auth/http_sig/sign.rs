//! Client-side signing, as `portcullis sign` does it: the `Content-Digest`, `Signature-Input`
//! and `Signature` headers a request needs to pass [`verify`](super::verify).

use std::io::Read;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::base::build_base;
use super::keys::valid_key_id;
use crate::auth::crypto;

use super::{sfv, SignatureRules, SignedRequest, ALGORITHM, MAX_COMPONENTS, NONCE_MAX, NONCE_MIN};

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
    let mac = crypto::hmac_sha256(secret, base.as_bytes());
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
        SignatureRules::validate_component(c).map_err(|e| format!("component {c:?}: {e}"))?;
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
