//! `portcullis token`: mint a JWT for development and tests. It signs with a key the caller
//! names explicitly (a PEM private key, a private JWK in a JWKS file, or an HMAC secret file),
//! never picks one up by default and never talks to the network. Signing is jsonwebtoken's;
//! openssl only reads the key (any PEM form, or a JWK's components) and hands jsonwebtoken
//! PKCS#8.

use base64::Engine;
use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::BigNum;
use openssl::pkey::{Id, PKey, Private};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Mint a signed JWT for DEVELOPMENT and tests, printed on stdout. Give the signing key
/// explicitly (`--key`, `--jwks` or `--secret-file`); nothing is read from the network.
/// Tokens in production come from your identity provider, not from this command.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// A PEM private key: RSA (RS256), EC P-256 (ES256) or P-384 (ES384), or Ed25519 (EdDSA).
    #[arg(long, group = "signing_key")]
    pub key: Option<PathBuf>,
    /// A JWKS file holding a private JWK (with `d`): the one whose `kid` is `--kid`, or the
    /// only one.
    #[arg(long, group = "signing_key")]
    pub jwks: Option<PathBuf>,
    /// A file holding an HMAC secret (HS256 unless `--alg`), as a provider's
    /// `hmac_secret_file` reads it (trailing newlines dropped).
    #[arg(long, group = "signing_key")]
    pub secret_file: Option<PathBuf>,
    /// The algorithm, when not the key's usual one (e.g. RS512, PS256, HS384).
    #[arg(long)]
    pub alg: Option<String>,
    /// `sub`.
    #[arg(long)]
    pub sub: Option<String>,
    /// `roles`, an array (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// `scope`, space-separated as in RFC 8693 (comma-separated or repeated here).
    #[arg(long, value_delimiter = ',')]
    pub scope: Vec<String>,
    /// `aud` (repeat for several: an array).
    #[arg(long)]
    pub aud: Vec<String>,
    /// `iss`.
    #[arg(long)]
    pub iss: Option<String>,
    /// Lifetime: `exp` is now plus this (`iat` and `nbf` are now).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The header's `kid` (and, with `--jwks`, which key to use).
    #[arg(long)]
    pub kid: Option<String>,
    /// Any claim, `name=value`; a value that parses as JSON (`42`, `true`, `["a"]`, `{..}`)
    /// is taken as that, anything else as a string. Repeatable; overrides the options above.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
}

/// The signed token, or why none could be made.
pub fn run(args: &TokenArgs) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_string())?
        .as_secs();
    let (key, usual) = signing_key(args)?;
    let alg = match &args.alg {
        None => usual,
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|_| format!("--alg {name}: not a JWS algorithm jsonwebtoken signs with"))?,
    };
    let mut header = Header::new(alg);
    header.kid = args.kid.clone();
    let claims = claims(args, now)?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
        | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
            format!("the key cannot sign {alg:?} (use --alg to match the key)")
        }
        _ => format!("signing failed: {e}"),
    })
}

/// The claims set: the registered claims from the options, then each `--claim`.
fn claims(args: &TokenArgs, now: u64) -> Result<Map<String, Value>, String> {
    let mut c = Map::new();
    if let Some(iss) = &args.iss {
        c.insert("iss".into(), iss.clone().into());
    }
    if let Some(sub) = &args.sub {
        c.insert("sub".into(), sub.clone().into());
    }
    match args.aud.as_slice() {
        [] => {}
        [one] => {
            c.insert("aud".into(), one.clone().into());
        }
        many => {
            c.insert("aud".into(), many.to_vec().into());
        }
    }
    c.insert("iat".into(), now.into());
    c.insert("nbf".into(), now.into());
    c.insert("exp".into(), (now + args.ttl.as_secs().max(1)).into());
    if !args.roles.is_empty() {
        c.insert("roles".into(), args.roles.clone().into());
    }
    if !args.scope.is_empty() {
        c.insert("scope".into(), args.scope.join(" ").into());
    }
    for claim in &args.claims {
        let (name, value) = claim
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| format!("--claim {claim}: expected NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        c.insert(name.to_string(), value);
    }
    Ok(c)
}

/// The key to sign with and its usual algorithm.
fn signing_key(args: &TokenArgs) -> Result<(EncodingKey, Algorithm), String> {
    if let Some(path) = &args.secret_file {
        let secret = crate::auth::read_secret_file(path)?;
        if secret.is_empty() {
            return Err(format!("{}: the secret is empty", path.display()));
        }
        return Ok((EncodingKey::from_secret(&secret), Algorithm::HS256));
    }
    let (pkey, from) = if let Some(path) = &args.key {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
        let pkey = PKey::private_key_from_pem(&pem)
            .map_err(|_| format!("{}: not a PEM private key", path.display()))?;
        (pkey, path)
    } else if let Some(path) = &args.jwks {
        (private_jwk(path, args.kid.as_deref())?, path)
    } else {
        return Err(
            "give the signing key: --key PEM, --jwks FILE or --secret-file FILE (this command \
             never uses a default key)"
                .to_string(),
        );
    };
    let pkcs8 = pkey
        .private_key_to_pem_pkcs8()
        .map_err(|_| format!("{}: the key cannot be exported", from.display()))?;
    let bad = |_| format!("{}: jsonwebtoken cannot use this key", from.display());
    match pkey.id() {
        Id::RSA => Ok((
            EncodingKey::from_rsa_pem(&pkcs8).map_err(bad)?,
            Algorithm::RS256,
        )),
        Id::EC => {
            // By the curve, not the size: secp256k1 is 256 bits too, and no ES256 key.
            let curve = pkey.ec_key().ok().and_then(|k| k.group().curve_name());
            let alg = match curve {
                Some(openssl::nid::Nid::X9_62_PRIME256V1) => Algorithm::ES256,
                Some(openssl::nid::Nid::SECP384R1) => Algorithm::ES384,
                other => {
                    let name = other
                        .and_then(|n| n.short_name().ok())
                        .unwrap_or("an unnamed curve");
                    return Err(format!(
                        "{}: an EC key on {name}; P-256 or P-384 only",
                        from.display()
                    ));
                }
            };
            Ok((EncodingKey::from_ec_pem(&pkcs8).map_err(bad)?, alg))
        }
        Id::ED25519 => Ok((
            EncodingKey::from_ed_pem(&pkcs8).map_err(bad)?,
            Algorithm::EdDSA,
        )),
        _ => Err(format!(
            "{}: an unsupported key type (RSA, EC P-256/P-384 or Ed25519)",
            from.display()
        )),
    }
}

/// The private key in a JWKS file: the JWK with `kid`, or the only one.
fn private_jwk(path: &std::path::Path, kid: Option<&str>) -> Result<PKey<Private>, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
    let set: Value = serde_json::from_slice(&text).map_err(|_| format!("{shown}: not JSON"))?;
    let keys = set["keys"]
        .as_array()
        .ok_or_else(|| format!("{shown}: no \"keys\" array (a JWKS)"))?;
    let jwk = match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k["kid"] == kid)
            .ok_or_else(|| format!("{shown}: no key with kid \"{kid}\""))?,
        None => match keys.as_slice() {
            [only] => only,
            _ => {
                return Err(format!(
                    "{shown}: {} keys; choose one with --kid",
                    keys.len()
                ))
            }
        },
    };
    let part = |name: &str| -> Result<Vec<u8>, String> {
        let text = jwk[name].as_str().ok_or_else(|| {
            format!("{shown}: the JWK has no \"{name}\" (a private key has \"d\")")
        })?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("{shown}: the JWK's \"{name}\" is not base64url"))
    };
    let num = |name: &str| -> Result<BigNum, String> {
        BigNum::from_slice(&part(name)?).map_err(|_| format!("{shown}: bad \"{name}\""))
    };
    let broken = |_| format!("{shown}: the JWK is not a consistent private key");
    match jwk["kty"].as_str() {
        Some("RSA") => {
            let (p, q) = (num("p")?, num("q")?);
            let rsa = openssl::rsa::RsaPrivateKeyBuilder::new(num("n")?, num("e")?, num("d")?)
                .and_then(|b| b.set_factors(p, q))
                .map_err(broken)?;
            let rsa = rsa
                .set_crt_params(num("dp")?, num("dq")?, num("qi")?)
                .map_err(broken)?
                .build();
            PKey::from_rsa(rsa).map_err(broken)
        }
        Some("EC") => {
            let nid = match jwk["crv"].as_str() {
                Some("P-256") => openssl::nid::Nid::X9_62_PRIME256V1,
                Some("P-384") => openssl::nid::Nid::SECP384R1,
                _ => return Err(format!("{shown}: \"crv\" must be P-256 or P-384")),
            };
            let group = openssl::ec::EcGroup::from_curve_name(nid).map_err(broken)?;
            let (x, y, d) = (num("x")?, num("y")?, num("d")?);
            let public = openssl::ec::EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                .map_err(broken)?;
            let key = openssl::ec::EcKey::from_private_components(&group, &d, public.public_key())
                .map_err(broken)?;
            key.check_key().map_err(broken)?;
            PKey::from_ec_key(key).map_err(broken)
        }
        Some("OKP") if jwk["crv"] == "Ed25519" => {
            PKey::private_key_from_raw_bytes(&part("d")?, Id::ED25519).map_err(broken)
        }
        _ => Err(format!(
            "{shown}: the JWK's \"kty\" must be RSA, EC or OKP (Ed25519)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{DecodingKey, Validation};

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: TokenArgs,
    }

    fn args(line: &[&str]) -> TokenArgs {
        Cmd::parse_from(std::iter::once("token").chain(line.iter().copied())).args
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    /// The token's claims, checked with `key` and `alg` as a gateway would.
    fn verified(token: &str, key: &DecodingKey, alg: Algorithm) -> Map<String, Value> {
        let mut v = Validation::new(alg);
        v.set_audience(&["api"]);
        v.set_issuer(&["https://idp.test"]);
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &v)
            .unwrap()
            .claims
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    const COMMON: [&str; 6] = [
        "--iss",
        "https://idp.test",
        "--aud",
        "api",
        "--sub",
        "alice",
    ];

    #[test]
    fn a_pem_key_of_each_type_signs_with_its_usual_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
        let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        let ed = PKey::generate_ed25519().unwrap();
        for (name, key, pem, alg) in [
            (
                "rsa",
                &rsa,
                rsa.rsa().unwrap().private_key_to_pem().unwrap(),
                Algorithm::RS256,
            ),
            (
                "ec",
                &ec,
                ec.ec_key().unwrap().private_key_to_pem().unwrap(),
                Algorithm::ES384,
            ),
            (
                "ed",
                &ed,
                ed.private_key_to_pem_pkcs8().unwrap(),
                Algorithm::EdDSA,
            ),
        ] {
            let path = write(&dir, name, &pem);
            let mut line = vec![
                "--key",
                path.as_str(),
                "--kid",
                "k1",
                "--roles",
                "admin,user",
            ];
            line.extend(COMMON);
            let token = run(&args(&line)).unwrap();
            let public = key.public_key_to_pem().unwrap();
            let decoding = match alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&public).unwrap(),
                Algorithm::ES384 => DecodingKey::from_ec_pem(&public).unwrap(),
                _ => DecodingKey::from_ed_pem(&public).unwrap(),
            };
            let claims = verified(&token, &decoding, alg);
            assert_eq!(claims["sub"], "alice", "{name}");
            assert_eq!(claims["roles"], serde_json::json!(["admin", "user"]));
            assert_eq!(
                jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
                Some("k1")
            );
        }
    }

    #[test]
    fn claims_lifetime_and_extra_claims_are_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(&dir, "secret", b"0123456789abcdef0123456789abcdef\n");
        let mut line = vec![
            "--secret-file",
            &secret,
            "--ttl",
            "10m",
            "--scope",
            "orders:read,orders:write",
            "--claim",
            "tid=acme",
            "--claim",
            "level=3",
            "--claim",
            "groups=[\"a\"]",
            "--aud",
            "other",
        ];
        line.extend(COMMON);
        let token = run(&args(&line)).unwrap();
        // The trailing newline is not part of the secret, as for a provider's secret file.
        let key = DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let c = verified(&token, &key, Algorithm::HS256);
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);
        assert_eq!(c["nbf"], c["iat"]);
        assert_eq!(c["scope"], "orders:read orders:write");
        assert_eq!(c["aud"], serde_json::json!(["other", "api"]));
        assert_eq!(c["tid"], "acme");
        assert_eq!(c["level"], 3);
        assert_eq!(c["groups"], serde_json::json!(["a"]));
        let bad = run(&args(&["--secret-file", &secret, "--claim", "novalue"]));
        assert_eq!(bad.unwrap_err(), "--claim novalue: expected NAME=VALUE");
    }

    #[test]
    fn a_private_jwk_signs_and_is_chosen_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let n = |b: &openssl::bn::BigNumRef| b64(&b.to_vec());
        let rsa_jwk = serde_json::json!({
            "kty": "RSA", "kid": "r1", "n": n(rsa.n()), "e": n(rsa.e()), "d": n(rsa.d()),
            "p": n(rsa.p().unwrap()), "q": n(rsa.q().unwrap()), "dp": n(rsa.dmp1().unwrap()),
            "dq": n(rsa.dmq1().unwrap()), "qi": n(rsa.iqmp().unwrap()),
        });
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let ec = openssl::ec::EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        ec.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let pad = |b: &BigNum| b64(&b.to_vec_padded(32).unwrap());
        let ec_jwk = serde_json::json!({
            "kty": "EC", "kid": "e1", "crv": "P-256", "x": pad(&x), "y": pad(&y),
            "d": b64(&ec.private_key().to_vec_padded(32).unwrap()),
        });
        let ed = PKey::generate_ed25519().unwrap();
        let ed_jwk = serde_json::json!({
            "kty": "OKP", "kid": "o1", "crv": "Ed25519",
            "x": b64(&ed.raw_public_key().unwrap()), "d": b64(&ed.raw_private_key().unwrap()),
        });
        let jwks = write(
            &dir,
            "jwks.json",
            serde_json::json!({"keys": [rsa_jwk, ec_jwk, ed_jwk]})
                .to_string()
                .as_bytes(),
        );
        let checks: [(&str, DecodingKey, Algorithm); 3] = [
            (
                "r1",
                DecodingKey::from_rsa_pem(&rsa.public_key_to_pem().unwrap()).unwrap(),
                Algorithm::RS256,
            ),
            (
                "e1",
                DecodingKey::from_ec_pem(
                    &PKey::from_ec_key(ec.clone())
                        .unwrap()
                        .public_key_to_pem()
                        .unwrap(),
                )
                .unwrap(),
                Algorithm::ES256,
            ),
            (
                "o1",
                DecodingKey::from_ed_pem(&ed.public_key_to_pem().unwrap()).unwrap(),
                Algorithm::EdDSA,
            ),
        ];
        for (kid, key, alg) in checks {
            let mut line = vec!["--jwks", jwks.as_str(), "--kid", kid];
            line.extend(COMMON);
            let token = run(&args(&line)).unwrap();
            assert_eq!(verified(&token, &key, alg)["sub"], "alice", "{kid}");
        }
        let err = run(&args(&["--jwks", &jwks])).unwrap_err();
        assert!(err.ends_with("3 keys; choose one with --kid"), "{err}");
        let public_only = write(
            &dir,
            "pub.json",
            br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#,
        );
        let err = run(&args(&["--jwks", &public_only])).unwrap_err();
        assert!(err.contains("a private key has \"d\""), "{err}");
    }

    #[test]
    fn the_key_and_algorithm_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        let ed = PKey::generate_ed25519().unwrap();
        let path = write(&dir, "ed.pem", &ed.private_key_to_pem_pkcs8().unwrap());
        let err = run(&args(&["--key", &path, "--alg", "RS256"])).unwrap_err();
        assert_eq!(
            err,
            "the key cannot sign RS256 (use --alg to match the key)"
        );
        let err = run(&args(&["--key", &path, "--alg", "none"])).unwrap_err();
        assert!(err.starts_with("--alg none: not a JWS algorithm"), "{err}");
        for (nid, name) in [
            (openssl::nid::Nid::SECP521R1, "secp521r1"),
            (openssl::nid::Nid::SECP256K1, "secp256k1"),
        ] {
            let group = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
            let key = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
            let path = write(&dir, "ec.pem", &key.private_key_to_pem_pkcs8().unwrap());
            let err = run(&args(&["--key", &path])).unwrap_err();
            assert!(
                err.ends_with(&format!("an EC key on {name}; P-256 or P-384 only")),
                "{err}"
            );
        }
        let not_a_key = write(&dir, "x.pem", b"hello");
        let err = run(&args(&["--key", &not_a_key])).unwrap_err();
        assert!(err.ends_with("not a PEM private key"), "{err}");
    }
}
