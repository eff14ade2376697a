//! Signed identity assertions: a short-lived JWT, signed with the gateway's own key, that
//! tells a backend who the caller is and which request it was issued for. A backend that can
//! also be reached without the gateway verifies it against the gateway's JWKS (served on the
//! admin listener at `/.well-known/jwks.json`) instead of trusting plain identity headers.
//!
//! Nothing here knows about Pingora: `load` reads and checks the keys once at start-up and
//! `sign` is a pure function of the identity, the request and the time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::{BigNum, BigNumContext};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use serde_json::{json, Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::Identity;

/// Lifetime of an assertion when the configuration names none: long enough for a slow
/// upstream to read the request, short enough that a leaked one is soon worthless.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Default header of the identity assertion (inside the `X-Identity-*` namespace).
pub const DEFAULT_HEADER: &str = "x-identity-assertion";

/// A pool's identity assertion: the signer and the header it goes in.
#[derive(Debug)]
pub struct Assertion {
    pub signer: AssertionSigner,
    pub header: http::HeaderName,
}

const KEYS_ONLY: &str = "EdDSA (Ed25519) or ES256 (P-256) keys only";

/// Where the signing key and the keys published beside it come from.
#[derive(Debug, Clone)]
pub struct AssertionSettings {
    /// PEM private key (PKCS#8; SEC1 `EC PRIVATE KEY` is accepted too): Ed25519 or P-256.
    pub key_file: PathBuf,
    pub kid: String,
    pub issuer: String,
    /// The `aud` claim, e.g. the upstream's name; none when `None`.
    pub audience: Option<String>,
    pub ttl: Duration,
    /// `(kid, PEM public or private key)`: published in the JWKS so that assertions signed
    /// before a key rotation still verify; never used to sign.
    pub previous_public_keys: Vec<(String, PathBuf)>,
}

/// Signs identity assertions with one key, parsed once; publishes that key's public part and
/// any previous ones as a JWKS.
pub struct AssertionSigner {
    key: EncodingKey,
    /// Built once: `alg`, `kid`, `typ: JWT`.
    header: Header,
    issuer: String,
    audience: Option<String>,
    ttl_secs: u64,
    jwks: Value,
}

/// Key material is never printed: only what identifies the key.
impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("alg", &self.header.alg)
            .field("kid", &self.header.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Reads and checks every key. Errors name the file and what is wrong with it.
    pub fn load(settings: &AssertionSettings) -> Result<Self, String> {
        if settings.kid.is_empty() {
            return Err("assertion signing key: kid must not be empty".into());
        }
        if settings.issuer.is_empty() {
            return Err("assertion signing key: issuer must not be empty".into());
        }
        if settings.audience.as_deref() == Some("") {
            return Err("assertion signing key: audience, when set, must not be empty".into());
        }
        // JWT times are whole seconds: a sub-second ttl would make assertions that are
        // already expired.
        let ttl_secs = settings.ttl.as_secs();
        if ttl_secs == 0 {
            return Err("assertion signing key: ttl must be at least 1s".into());
        }

        let path = &settings.key_file;
        let what = format!("assertion signing key {}", path.display());
        let private = read_private_key(path, &what)?;
        let (alg, current_jwk) = public_jwk(&private, &settings.kid, &what)?;
        // jsonwebtoken wants PKCS#8 DER; re-encoding through OpenSSL also lets SEC1 files in.
        let der = private
            .private_key_to_pkcs8()
            .map_err(|e| format!("{what}: cannot re-encode the private key: {e}"))?;
        // `public_jwk` has let through only EdDSA and ES256.
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
            _ => EncodingKey::from_ec_der(&der),
        };

        let mut keys = vec![current_jwk];
        let mut kids = vec![settings.kid.as_str()];
        for (kid, path) in &settings.previous_public_keys {
            let what = format!("assertion previous key \"{kid}\" {}", path.display());
            if kid.is_empty() {
                return Err(format!("{what}: kid must not be empty"));
            }
            if kids.contains(&kid.as_str()) {
                return Err(format!(
                    "{what}: duplicate kid \"{kid}\"; each published key needs its own kid"
                ));
            }
            kids.push(kid);
            keys.push(read_previous_key(kid, path, &what)?);
        }

        let mut header = Header::new(alg);
        header.kid = Some(settings.kid.clone());
        let signer = Self {
            key,
            header,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl_secs,
            jwks: json!({ "keys": keys }),
        };
        signer.self_check(&what)?;
        Ok(signer)
    }

    pub fn alg(&self) -> Algorithm {
        self.header.alg
    }

    /// The assertion for one request. `path` is the canonical path; a query or fragment, if
    /// one slips through, is cut off so that it never reaches the token (queries carry secrets).
    ///
    /// `jti` is the request id, which a client may choose (`X-Request-ID`): it ties the
    /// assertion to the logs, it is no nonce. An identity that has already expired (accepted
    /// within the verifier's leeway) gets `exp` at its own expiry, earlier than `iat`: the
    /// backend's own leeway then decides, as it would have for the original token.
    pub fn sign(
        &self,
        identity: &Identity,
        method: &str,
        path: &str,
        request_id: &str,
        now_unix: u64,
    ) -> Result<String, String> {
        // The assertion must not outlive the credential it stands for.
        let mut exp = now_unix.saturating_add(self.ttl_secs);
        if let Some(limit) = identity.expires_at {
            exp = exp.min(limit);
        }
        let path = path.find(['?', '#']).map_or(path, |end| &path[..end]);

        let mut claims = Map::new();
        claims.insert("iss".into(), self.issuer.as_str().into());
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), aud.as_str().into());
        }
        claims.insert("sub".into(), identity.subject.as_str().into());
        claims.insert("iat".into(), now_unix.into());
        claims.insert("nbf".into(), now_unix.into());
        claims.insert("exp".into(), exp.into());
        claims.insert("jti".into(), request_id.into());
        claims.insert("auth_method".into(), identity.method.into());
        claims.insert("idp".into(), identity.provider.as_str().into());
        for (name, values) in [
            ("roles", &identity.roles),
            ("scopes", &identity.scopes),
            ("permissions", &identity.permissions),
        ] {
            if !values.is_empty() {
                claims.insert(name.into(), values.as_slice().into());
            }
        }
        for (name, value) in [
            ("tenant", &identity.tenant),
            ("email", &identity.email),
            ("client_id", &identity.client_id),
        ] {
            if let Some(value) = value {
                claims.insert(name.into(), value.as_str().into());
            }
        }
        claims.insert("htm".into(), method.into());
        claims.insert("path".into(), path.into());

        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| format!("signing the identity assertion failed: {e}"))
    }

    /// `{"keys": [...]}`: the current key first, then the previous ones; public parts only.
    pub fn jwks(&self) -> Value {
        self.jwks.clone()
    }

    /// Signs a probe and verifies it with the published current JWK, so that a key the
    /// signing library refuses, or a JWK that does not match the key, fails at start-up and
    /// not on the first request.
    fn self_check(&self, what: &str) -> Result<(), String> {
        let fail = |e: String| format!("{what}: self-check failed: {e}");
        let probe = Identity {
            method: "self_check",
            ..Identity::default()
        };
        let token = self.sign(&probe, "GET", "/", "self-check", 0)?;
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwks["keys"][0].clone())
            .map_err(|e| fail(e.to_string()))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| fail(e.to_string()))?;
        let mut validation = jsonwebtoken::Validation::new(self.alg());
        // The probe was issued at time 0: only the signature is in question here.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&token, &key, &validation)
            .map(|_| ())
            .map_err(|e| fail(e.to_string()))
    }
}

/// The labels of the PEM blocks in a file (`PRIVATE KEY`, `PUBLIC KEY`, ...), to tell the
/// operator what the file holds when it is not what was expected.
fn pem_labels(pem: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(pem)
        .split("-----BEGIN ")
        .skip(1)
        .filter_map(|rest| rest.split_once("-----").map(|(label, _)| label.to_string()))
        .collect()
}

fn read_pem(path: &Path, what: &str) -> Result<(Vec<u8>, Vec<String>), String> {
    let pem = std::fs::read(path).map_err(|e| format!("{what}: cannot read: {e}"))?;
    let labels = pem_labels(&pem);
    if labels.is_empty() {
        return Err(format!(
            "{what}: not a PEM key (no -----BEGIN ...----- line)"
        ));
    }
    Ok((pem, labels))
}

fn read_private_key(path: &Path, what: &str) -> Result<PKey<Private>, String> {
    let (pem, labels) = read_pem(path, what)?;
    if labels.iter().any(|l| l.starts_with("ENCRYPTED")) {
        return Err(format!(
            "{what}: the private key is encrypted; give an unencrypted PKCS#8 PEM key"
        ));
    }
    // OpenSSL's default passphrase callback would prompt on the terminal; answer with none.
    PKey::private_key_from_pem_callback(&pem, |_| Ok(0)).map_err(|e| {
        if labels.iter().any(|l| l.ends_with("PRIVATE KEY")) {
            format!("{what}: the private key cannot be parsed: {e}")
        } else if labels.iter().any(|l| l.ends_with("PUBLIC KEY")) {
            format!("{what}: is a public key; the signing key must be the private key (PKCS#8 PEM)")
        } else {
            format!("{what}: holds {labels:?} but no PRIVATE KEY")
        }
    })
}

/// A previous key's JWK, from a PEM public key or a private key (only its public part is kept).
fn read_previous_key(kid: &str, path: &Path, what: &str) -> Result<Value, String> {
    let (pem, labels) = read_pem(path, what)?;
    if labels.iter().any(|l| l.ends_with("PUBLIC KEY")) {
        let public = PKey::public_key_from_pem(&pem)
            .map_err(|e| format!("{what}: the public key cannot be parsed: {e}"))?;
        return public_jwk(&public, kid, what).map(|(_, jwk)| jwk);
    }
    let private = read_private_key(path, what)?;
    public_jwk(&private, kid, what).map(|(_, jwk)| jwk)
}

/// The key's algorithm and its public JWK; refuses anything but Ed25519 and P-256.
fn public_jwk<T: HasPublic>(
    key: &PKeyRef<T>,
    kid: &str,
    what: &str,
) -> Result<(Algorithm, Value), String> {
    let openssl_err = |e: openssl::error::ErrorStack| format!("{what}: {e}");
    match key.id() {
        Id::ED25519 => {
            let x = key.raw_public_key().map_err(openssl_err)?;
            let jwk = json!({
                "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(x),
                "kid": kid, "alg": "EdDSA", "use": "sig",
            });
            Ok((Algorithm::EdDSA, jwk))
        }
        Id::EC => {
            let ec = key.ec_key().map_err(openssl_err)?;
            let curve = ec.group().curve_name();
            if curve != Some(Nid::X9_62_PRIME256V1) {
                let name = curve
                    .and_then(|nid| nid.short_name().ok())
                    .unwrap_or("an unnamed curve");
                return Err(format!("{what}: an EC key on {name}; {KEYS_ONLY}"));
            }
            let mut ctx = BigNumContext::new().map_err(openssl_err)?;
            let (mut x, mut y) = (
                BigNum::new().map_err(openssl_err)?,
                BigNum::new().map_err(openssl_err)?,
            );
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .map_err(openssl_err)?;
            // A JWK coordinate is always the full field size, leading zeros included.
            let x = x.to_vec_padded(32).map_err(openssl_err)?;
            let y = y.to_vec_padded(32).map_err(openssl_err)?;
            let jwk = json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                "kid": kid, "alg": "ES256", "use": "sig",
            });
            Ok((Algorithm::ES256, jwk))
        }
        Id::RSA | Id::RSA_PSS => Err(format!("{what}: an RSA key; {KEYS_ONLY}")),
        Id::ED448 => Err(format!("{what}: an Ed448 key; {KEYS_ONLY}")),
        other => Err(format!(
            "{what}: an unsupported key type ({other:?}); {KEYS_ONLY}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;
    use std::time::{SystemTime, UNIX_EPOCH};
    use tempfile::TempDir;

    const ISS: &str = "portcullis";
    const AUD: &str = "orders";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn ed25519() -> PKey<Private> {
        PKey::generate_ed25519().unwrap()
    }

    fn ec(curve: Nid) -> PKey<Private> {
        let group = EcGroup::from_curve_name(curve).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    fn write(dir: &TempDir, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn settings(key_file: PathBuf) -> AssertionSettings {
        AssertionSettings {
            key_file,
            kid: "gw-1".into(),
            issuer: ISS.into(),
            audience: Some(AUD.into()),
            ttl: DEFAULT_TTL,
            previous_public_keys: Vec::new(),
        }
    }

    fn signer_for(dir: &TempDir, key: &PKey<Private>) -> AssertionSigner {
        let path = write(dir, "current.pem", &key.private_key_to_pem_pkcs8().unwrap());
        AssertionSigner::load(&settings(path)).unwrap()
    }

    fn full_identity(expires_at: Option<u64>) -> Identity {
        Identity {
            method: "jwt",
            provider: "keycloak".into(),
            subject: "user-42".into(),
            roles: vec!["admin".into(), "ops".into()],
            scopes: vec!["orders:read".into()],
            permissions: vec!["orders.refund".into()],
            tenant: Some("acme".into()),
            email: Some("ada@example.com".into()),
            client_id: Some("web-app".into()),
            extra: Vec::new(),
            expires_at,
            ..Identity::default()
        }
    }

    /// Verifies a token the way a backend would: the key is picked by `kid` from the JWKS the
    /// signer publishes and the algorithm is the key's, not the token's, so a wrong JWK fails.
    fn verify(jwks: &Value, token: &str, aud: Option<&str>) -> jsonwebtoken::errors::Result<Value> {
        let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let kid = decode_header(token)?.kid.unwrap();
        let jwk = set.find(&kid).unwrap();
        let alg: Algorithm = jwk.common.key_algorithm.unwrap().to_string().parse()?;
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.set_issuer(&[ISS]);
        match aud {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation).map(|data| data.claims)
    }

    fn check_full_assertion(key: &PKey<Private>, alg: Algorithm) {
        let dir = TempDir::new().unwrap();
        let signer = signer_for(&dir, key);
        assert_eq!(signer.alg(), alg);
        let now = now();
        let identity = full_identity(Some(now + 3600));
        let token = signer
            .sign(&identity, "POST", "/orders/7/refund", "req-abc", now)
            .unwrap();

        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, alg);
        assert_eq!(header.kid.as_deref(), Some("gw-1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));

        let claims = verify(&signer.jwks(), &token, Some(AUD)).unwrap();
        assert_eq!(
            claims,
            json!({
                "iss": ISS, "aud": AUD, "sub": "user-42",
                "iat": now, "nbf": now, "exp": now + 60, "jti": "req-abc",
                "auth_method": "jwt", "idp": "keycloak",
                "roles": ["admin", "ops"], "scopes": ["orders:read"],
                "permissions": ["orders.refund"],
                "tenant": "acme", "email": "ada@example.com", "client_id": "web-app",
                "htm": "POST", "path": "/orders/7/refund",
            })
        );
    }

    #[test]
    fn eddsa_assertion_verifies_with_published_jwk_and_carries_every_claim() {
        check_full_assertion(&ed25519(), Algorithm::EdDSA);
    }

    #[test]
    fn es256_assertion_verifies_with_published_jwk_and_carries_every_claim() {
        check_full_assertion(&ec(Nid::X9_62_PRIME256V1), Algorithm::ES256);
    }

    #[test]
    fn jwks_holds_public_parts_only() {
        let dir = TempDir::new().unwrap();
        let ed = signer_for(&dir, &ed25519()).jwks();
        let es = signer_for(&dir, &ec(Nid::X9_62_PRIME256V1)).jwks();
        for (jwks, kty, crv, alg) in [
            (&ed, "OKP", "Ed25519", "EdDSA"),
            (&es, "EC", "P-256", "ES256"),
        ] {
            let keys = jwks["keys"].as_array().unwrap();
            assert_eq!(keys.len(), 1);
            let jwk = keys[0].as_object().unwrap();
            assert_eq!(jwk["kty"], kty);
            assert_eq!(jwk["crv"], crv);
            assert_eq!(jwk["alg"], alg);
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], "gw-1");
            assert!(!jwk.contains_key("d"), "private scalar published: {jwk:?}");
        }
        let decoded_len = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap().len();
        assert_eq!(decoded_len(&ed["keys"][0]["x"]), 32);
        assert_eq!(decoded_len(&es["keys"][0]["x"]), 32);
        assert_eq!(decoded_len(&es["keys"][0]["y"]), 32);
    }

    #[test]
    fn ec_coordinate_with_leading_zero_is_padded_to_32_bytes() {
        // One P-256 key in 256 has an x coordinate starting with a zero byte, which OpenSSL's
        // plain big-endian form drops; find one so this case is always exercised.
        let key = (0..10_000)
            .map(|_| ec(Nid::X9_62_PRIME256V1))
            .find(|key| {
                let ec = key.ec_key().unwrap();
                let mut ctx = BigNumContext::new().unwrap();
                let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
                ec.public_key()
                    .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                    .unwrap();
                x.num_bytes() < 32
            })
            .unwrap();
        let dir = TempDir::new().unwrap();
        let signer = signer_for(&dir, &key);
        let x = signer.jwks()["keys"][0]["x"].as_str().unwrap().to_string();
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap()[0], 0);
        let token = signer
            .sign(&full_identity(None), "GET", "/", "r", now())
            .unwrap();
        verify(&signer.jwks(), &token, Some(AUD)).unwrap();
    }

    #[test]
    fn empty_optional_claims_are_omitted() {
        let dir = TempDir::new().unwrap();
        let path = write(
            &dir,
            "k.pem",
            &ed25519().private_key_to_pem_pkcs8().unwrap(),
        );
        let signer = AssertionSigner::load(&AssertionSettings {
            audience: None,
            ..settings(path)
        })
        .unwrap();
        let identity = Identity {
            method: "api_key",
            provider: "consumers".into(),
            subject: "svc-billing".into(),
            ..Identity::default()
        };
        let now = now();
        let token = signer
            .sign(&identity, "GET", "/health", "req-1", now)
            .unwrap();
        let claims = verify(&signer.jwks(), &token, None).unwrap();
        assert_eq!(
            claims,
            json!({
                "iss": ISS, "sub": "svc-billing", "iat": now, "nbf": now, "exp": now + 60,
                "jti": "req-1", "auth_method": "api_key", "idp": "consumers",
                "htm": "GET", "path": "/health",
            })
        );
    }

    #[test]
    fn exp_is_capped_by_identity_expiry_and_follows_ttl_otherwise() {
        let dir = TempDir::new().unwrap();
        let path = write(
            &dir,
            "k.pem",
            &ed25519().private_key_to_pem_pkcs8().unwrap(),
        );
        let signer = AssertionSigner::load(&AssertionSettings {
            ttl: Duration::from_secs(120),
            ..settings(path)
        })
        .unwrap();
        let now = now();
        let exp_of = |expires_at| {
            let token = signer
                .sign(&full_identity(expires_at), "GET", "/", "r", now)
                .unwrap();
            verify(&signer.jwks(), &token, Some(AUD)).unwrap()["exp"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(exp_of(Some(now + 10)), now + 10, "identity expires first");
        assert_eq!(exp_of(Some(now + 500)), now + 120, "ttl ends first");
        assert_eq!(exp_of(None), now + 120, "no identity expiry");
    }

    #[test]
    fn path_claim_never_carries_a_query_or_fragment() {
        let dir = TempDir::new().unwrap();
        let signer = signer_for(&dir, &ed25519());
        let now = now();
        for raw in ["/search?token=secret", "/search#frag", "/search"] {
            let token = signer
                .sign(&full_identity(None), "GET", raw, "r", now)
                .unwrap();
            let claims = verify(&signer.jwks(), &token, Some(AUD)).unwrap();
            assert_eq!(claims["path"], "/search", "from {raw}");
        }
    }

    #[test]
    fn previous_keys_are_published_after_the_current_one_and_verify_their_tokens() {
        let dir = TempDir::new().unwrap();
        let current = ec(Nid::X9_62_PRIME256V1);
        let old_ed = ed25519();
        let old_ec = ec(Nid::X9_62_PRIME256V1);
        let old_ed_private = write(
            &dir,
            "old-ed.pem",
            &old_ed.private_key_to_pem_pkcs8().unwrap(),
        );
        // One previous key given as its private key, the other as its public key only.
        let old_ec_public = write(&dir, "old-ec.pub.pem", &old_ec.public_key_to_pem().unwrap());
        let signer = AssertionSigner::load(&AssertionSettings {
            previous_public_keys: vec![
                ("gw-0".into(), old_ed_private.clone()),
                ("gw-00".into(), old_ec_public),
            ],
            ..settings(write(
                &dir,
                "current.pem",
                &current.private_key_to_pem_pkcs8().unwrap(),
            ))
        })
        .unwrap();
        let jwks = signer.jwks();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["gw-1", "gw-0", "gw-00"]);
        assert!(jwks["keys"][1].get("d").is_none());

        // Tokens the gateway signed before each rotation, with each previous private key.
        let now = now();
        let old_ed_signer = AssertionSigner::load(&AssertionSettings {
            kid: "gw-0".into(),
            ..settings(old_ed_private)
        })
        .unwrap();
        let old_ec_signer = AssertionSigner::load(&AssertionSettings {
            kid: "gw-00".into(),
            ..settings(write(
                &dir,
                "old-ec.pem",
                &old_ec.private_key_to_pem_pkcs8().unwrap(),
            ))
        })
        .unwrap();
        for old in [&old_ed_signer, &old_ec_signer] {
            let token = old
                .sign(&full_identity(None), "GET", "/a", "r", now)
                .unwrap();
            let claims = verify(&jwks, &token, Some(AUD)).unwrap();
            assert_eq!(claims["sub"], "user-42");
        }
        let token = signer
            .sign(&full_identity(None), "GET", "/a", "r", now)
            .unwrap();
        verify(&jwks, &token, Some(AUD)).unwrap();

        // The previous key is only published: a token signed now names the current kid, and
        // the previous EC key cannot verify it.
        let prev: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][2].clone()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUD]);
        assert!(
            decode::<Value>(&token, &DecodingKey::from_jwk(&prev).unwrap(), &validation).is_err()
        );
    }

    #[test]
    fn tampered_token_fails_verification() {
        let dir = TempDir::new().unwrap();
        for key in [ed25519(), ec(Nid::X9_62_PRIME256V1)] {
            let signer = signer_for(&dir, &key);
            let now = now();
            let token = signer
                .sign(&full_identity(None), "GET", "/a", "r", now)
                .unwrap();
            verify(&signer.jwks(), &token, Some(AUD)).unwrap();

            let parts: Vec<&str> = token.split('.').collect();
            let mut claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            claims["sub"] = "admin".into();
            let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
            let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
            assert!(
                verify(&signer.jwks(), &forged, Some(AUD)).is_err(),
                "payload swap"
            );

            let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            signature[5] ^= 1;
            let forged = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(signature)
            );
            assert!(
                verify(&signer.jwks(), &forged, Some(AUD)).is_err(),
                "signature bit flip"
            );
        }
    }

    fn load_err(settings: &AssertionSettings) -> String {
        AssertionSigner::load(settings).unwrap_err()
    }

    #[test]
    fn refuses_rsa_and_other_curves() {
        let dir = TempDir::new().unwrap();
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let p384 = ec(Nid::SECP384R1);
        for (name, key, what) in [("rsa.pem", &rsa, "RSA"), ("p384.pem", &p384, "secp384r1")] {
            let path = write(&dir, name, &key.private_key_to_pem_pkcs8().unwrap());
            let err = load_err(&settings(path.clone()));
            assert!(err.contains(what) && err.contains(KEYS_ONLY), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");

            // Nor can such a key be published as a previous one.
            let current = write(
                &dir,
                "ok.pem",
                &ed25519().private_key_to_pem_pkcs8().unwrap(),
            );
            let err = load_err(&AssertionSettings {
                previous_public_keys: vec![("old".into(), path)],
                ..settings(current)
            });
            assert!(err.contains(what) && err.contains(KEYS_ONLY), "{err}");
            assert!(err.starts_with("assertion previous key \"old\""), "{err}");
        }
    }

    #[test]
    fn refuses_a_public_key_as_signing_key() {
        let dir = TempDir::new().unwrap();
        let path = write(&dir, "pub.pem", &ed25519().public_key_to_pem().unwrap());
        let err = load_err(&settings(path));
        assert!(err.contains("is a public key"), "{err}");
    }

    #[test]
    fn refuses_unreadable_non_pem_and_encrypted_files() {
        let dir = TempDir::new().unwrap();
        let err = load_err(&settings(dir.path().join("missing.pem")));
        assert!(err.contains("missing.pem: cannot read"), "{err}");

        let der = ed25519().private_key_to_pkcs8().unwrap();
        let err = load_err(&settings(write(&dir, "key.der", &der)));
        assert!(err.contains("not a PEM key"), "{err}");

        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = load_err(&settings(write(&dir, "cert.pem", cert)));
        assert!(
            err.contains("holds [\"CERTIFICATE\"] but no PRIVATE KEY"),
            "{err}"
        );

        let garbled = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = load_err(&settings(write(&dir, "garbled.pem", garbled)));
        assert!(err.contains("the private key cannot be parsed"), "{err}");

        let encrypted = ed25519()
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        let err = load_err(&settings(write(&dir, "enc.pem", &encrypted)));
        assert!(err.contains("encrypted"), "{err}");
    }

    #[test]
    fn accepts_a_sec1_ec_private_key() {
        let dir = TempDir::new().unwrap();
        let key = ec(Nid::X9_62_PRIME256V1);
        let sec1 = key.ec_key().unwrap().private_key_to_pem().unwrap();
        assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
        let signer = AssertionSigner::load(&settings(write(&dir, "sec1.pem", &sec1))).unwrap();
        let token = signer
            .sign(&full_identity(None), "GET", "/", "r", now())
            .unwrap();
        verify(&signer.jwks(), &token, Some(AUD)).unwrap();
    }

    #[test]
    fn refuses_duplicate_and_empty_kids_and_bad_settings() {
        let dir = TempDir::new().unwrap();
        let current = write(
            &dir,
            "cur.pem",
            &ed25519().private_key_to_pem_pkcs8().unwrap(),
        );
        let old = write(&dir, "old.pem", &ed25519().public_key_to_pem().unwrap());
        let old2 = write(&dir, "old2.pem", &ed25519().public_key_to_pem().unwrap());

        let err = load_err(&AssertionSettings {
            previous_public_keys: vec![("gw-1".into(), old.clone())],
            ..settings(current.clone())
        });
        assert!(err.contains("old.pem: duplicate kid \"gw-1\""), "{err}");
        let err = load_err(&AssertionSettings {
            previous_public_keys: vec![("gw-0".into(), old.clone()), ("gw-0".into(), old2)],
            ..settings(current.clone())
        });
        assert!(err.contains("old2.pem: duplicate kid \"gw-0\""), "{err}");

        let base = settings(current);
        let cases = [
            (
                AssertionSettings {
                    kid: String::new(),
                    ..base.clone()
                },
                "kid must not be empty",
            ),
            (
                AssertionSettings {
                    issuer: String::new(),
                    ..base.clone()
                },
                "issuer",
            ),
            (
                AssertionSettings {
                    audience: Some(String::new()),
                    ..base.clone()
                },
                "audience",
            ),
            (
                AssertionSettings {
                    ttl: Duration::from_millis(500),
                    ..base.clone()
                },
                "ttl",
            ),
            (
                AssertionSettings {
                    previous_public_keys: vec![(String::new(), old)],
                    ..base
                },
                "kid must not be empty",
            ),
        ];
        for (bad, expected) in cases {
            let err = load_err(&bad);
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let dir = TempDir::new().unwrap();
        let ed = ed25519();
        let pem = ed.private_key_to_pem_pkcs8().unwrap();
        let signer = signer_for(&dir, &ed);
        let debug = format!("{signer:?}");
        assert!(debug.contains("gw-1") && debug.contains("EdDSA"), "{debug}");

        let raw = ed.raw_private_key().unwrap();
        let der = ed.private_key_to_pkcs8().unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let pem_body: String = String::from_utf8(pem)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let forms = [
            hex,
            URL_SAFE_NO_PAD.encode(&raw),
            base64::engine::general_purpose::STANDARD.encode(&der),
            pem_body,
            format!("{:?}", &raw[..8]),
            format!("{:?}", &der[..8]),
        ];
        for form in forms {
            assert!(!debug.contains(&form), "{form} in {debug}");
        }
        // Not even the public key: Debug names the key, it does not show it.
        let x = URL_SAFE_NO_PAD.encode(ed.raw_public_key().unwrap());
        assert!(!debug.contains(&x), "{debug}");
    }
}
