//! Project Wycheproof's JWS vectors (tests/data/wycheproof) through `verify_jws`, for every
//! group whose algorithm Portcullis accepts. Deliberate deviations are listed and asserted.

use super::jwt::{verify_jws, KeySet, ProviderRules};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::Value;

/// Vectors Wycheproof calls valid that Portcullis refuses on purpose:
/// - 372, 373: a `?` inserted in a segment is skipped by lenient decoders; strict base64url
///   refuses it (catalogue E9);
/// - 346, 350 (RFC 7520 figure 20): the token says PS384 but the key's JWK says `alg: PS256`;
///   the token's algorithm must match the key's.
const STRICTER_THAN_WYCHEPROOF: &[u64] = &[372, 373, 346, 350];

/// 367 and 370 are labelled invalid ("invalid base64 padding") but are byte for byte the valid
/// vector 357; the same input cannot be both, so they are held to 357's verdict.
const SAME_AS_VALID_357: &[u64] = &[367, 370];

fn key_set(group: &Value) -> Option<(KeySet, Algorithm)> {
    let jwk = group.get("public").or_else(|| group.get("private"))?;
    let alg: Algorithm = jwk.get("alg")?.as_str()?.parse().ok()?;
    let mut keys = KeySet::default();
    if jwk["kty"] == "oct" {
        let secret = URL_SAFE_NO_PAD.decode(jwk["k"].as_str()?).ok()?;
        keys.add_hmac_secret(jwk["kid"].as_str(), &secret).ok()?;
    } else {
        let doc = serde_json::json!({ "keys": [jwk] }).to_string();
        let (set, _) = KeySet::from_jwks(doc.as_bytes()).ok()?;
        if set.is_empty() {
            return None;
        }
        keys = set;
    }
    Some((keys, alg))
}

#[test]
fn wycheproof_json_web_signature_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof/json_web_signature_test.json"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let (mut run, mut groups) = (0, 0);
    let mut mismatches = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        // Groups of algorithms we do not accept (ES512 in the RFC 7520 samples) or of
        // encryption keys are out of scope: such tokens are refused before any key is used.
        let Some((keys, alg)) = key_set(group) else {
            continue;
        };
        groups += 1;
        let rules = ProviderRules {
            issuer: "unused".into(),
            audiences: vec!["unused".into()],
            algorithms: vec![alg],
            leeway_secs: 0,
            max_token_age_secs: None,
            require_exp: false,
            typ: None,
            max_token_bytes: 64 * 1024,
            key_only: false,
        };
        for t in group["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            let jws = t["jws"].as_str().unwrap_or("");
            let expect_valid = (t["result"] == "valid" || SAME_AS_VALID_357.contains(&id))
                && !STRICTER_THAN_WYCHEPROOF.contains(&id);
            let got = verify_jws(jws, &rules, &keys);
            run += 1;
            if got.is_ok() != expect_valid {
                mismatches.push(format!("tcId {id} ({}): got {got:?}", t["comment"]));
            }
        }
    }
    assert!(
        groups >= 15 && run >= 350,
        "only {run} vectors in {groups} groups ran"
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Run one of Wycheproof's per-primitive files (a PEM public key per group, hex message and
/// signature per test). `acceptable` vectors may go either way and are not counted.
fn primitive_vectors(file: &str, family: jsonwebtoken::AlgorithmFamily, alg: Algorithm) {
    let path = format!(
        "{}/tests/data/wycheproof/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let (mut run, mut mismatches) = (0, Vec::new());
    for group in doc["testGroups"].as_array().unwrap() {
        let pem = group["publicKeyPem"].as_str().unwrap();
        let mut keys = KeySet::default();
        keys.add_pem(None, family, pem.as_bytes()).unwrap();
        for t in group["tests"].as_array().unwrap() {
            let expected = match t["result"].as_str().unwrap() {
                "valid" => true,
                "invalid" => false,
                _ => continue,
            };
            let msg = hex(t["msg"].as_str().unwrap());
            let sig = URL_SAFE_NO_PAD.encode(hex(t["sig"].as_str().unwrap()));
            run += 1;
            if keys.verify_raw(alg, &msg, &sig) != expected {
                mismatches.push(format!("tcId {} ({})", t["tcId"], t["comment"]));
            }
        }
    }
    assert!(run > 100, "only {run} vectors of {file} ran");
    assert!(mismatches.is_empty(), "{file}: {}", mismatches.join(", "));
}

/// Catalogue J9/J10: ECDSA P-256 in JOSE's r||s form — r or s of 0, 1, n, n+1, wrong sizes.
#[test]
fn j10_wycheproof_ecdsa_p256_p1363_vectors() {
    primitive_vectors(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        jsonwebtoken::AlgorithmFamily::Ec,
        Algorithm::ES256,
    );
}

/// Catalogue J11: RSA PKCS#1 v1.5 with modified padding, BER encodings, wrong hash OIDs.
#[test]
fn j11_wycheproof_rsa_pkcs1_2048_sha256_vectors() {
    primitive_vectors(
        "rsa_signature_2048_sha256_test.json",
        jsonwebtoken::AlgorithmFamily::Rsa,
        Algorithm::RS256,
    );
}

/// Catalogue J13: Ed25519 with truncated, appended or non-canonical signatures.
#[test]
fn j13_wycheproof_ed25519_vectors() {
    primitive_vectors(
        "ed25519_test.json",
        jsonwebtoken::AlgorithmFamily::Ed,
        Algorithm::EdDSA,
    );
}
