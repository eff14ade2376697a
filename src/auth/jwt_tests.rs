//! Hostile and valid tokens against `verify`, named after the security catalogue's cases.

use super::*;
use crate::auth::provider::{KeySource, Provider, TokenCache};
use futures::executor::block_on;
use jsonwebtoken::EncodingKey;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use std::sync::OnceLock;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com";
const AUD: &str = "api://portcullis";
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hmac";

struct Keys {
    rsa_private: Vec<u8>,
    rsa_public: Vec<u8>,
    ec_private: Vec<u8>,
    ec_public: Vec<u8>,
    ed_private: Vec<u8>,
    ed_public: Vec<u8>,
    attacker_rsa_private: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let attacker = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let ed = PKey::generate_ed25519().unwrap();
        Keys {
            rsa_private: rsa.private_key_to_pem_pkcs8().unwrap(),
            rsa_public: rsa.public_key_to_pem().unwrap(),
            ec_private: ec.private_key_to_pem_pkcs8().unwrap(),
            ec_public: ec.public_key_to_pem().unwrap(),
            ed_private: ed.private_key_to_pem_pkcs8().unwrap(),
            ed_public: ed.public_key_to_pem().unwrap(),
            attacker_rsa_private: attacker.private_key_to_pem_pkcs8().unwrap(),
        }
    })
}

fn rules(algorithms: &[Algorithm]) -> ProviderRules {
    ProviderRules {
        issuer: ISS.into(),
        audiences: vec![AUD.into()],
        algorithms: algorithms.to_vec(),
        leeway_secs: DEFAULT_LEEWAY_SECS,
        max_token_age_secs: Some(24 * 3600),
        require_exp: true,
        typ: None,
        max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        key_only: false,
    }
}

fn public_keys() -> KeySet {
    let k = keys();
    let mut set = KeySet::default();
    set.add_pem(Some("rsa-1"), AlgorithmFamily::Rsa, &k.rsa_public)
        .unwrap();
    set.add_pem(Some("ec-1"), AlgorithmFamily::Ec, &k.ec_public)
        .unwrap();
    set.add_pem(Some("ed-1"), AlgorithmFamily::Ed, &k.ed_public)
        .unwrap();
    set
}

fn hmac_keys() -> KeySet {
    let mut set = KeySet::default();
    set.add_hmac_secret(Some("h-1"), HMAC_SECRET).unwrap();
    set
}

fn b64(s: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    let k = keys();
    match alg.family() {
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&k.rsa_private).unwrap(),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&k.ec_private).unwrap(),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&k.ed_private).unwrap(),
        AlgorithmFamily::Hmac => EncodingKey::from_secret(HMAC_SECRET),
    }
}

/// Sign exactly these header and payload texts.
fn sign_raw(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let msg = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
    format!("{msg}.{sig}")
}

fn good_claims() -> String {
    format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","iat":{},"exp":{}}}"#,
        NOW - 10,
        NOW + 600
    )
}

fn kid_for(alg: Algorithm) -> &'static str {
    match alg.family() {
        AlgorithmFamily::Rsa => "rsa-1",
        AlgorithmFamily::Ec => "ec-1",
        AlgorithmFamily::Ed => "ed-1",
        AlgorithmFamily::Hmac => "h-1",
    }
}

fn token(alg: Algorithm, payload: &str) -> String {
    let header = format!(
        r#"{{"alg":"{alg:?}","typ":"JWT","kid":"{}"}}"#,
        kid_for(alg)
    );
    sign_raw(&header, payload, alg, &encoding_key(alg))
}

fn check_pk(token: &str) -> Result<Verified, AuthError> {
    verify(
        token,
        &rules(&[
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
            Algorithm::PS256,
        ]),
        &public_keys(),
        NOW,
    )
}

fn check_with(token: &str, r: &ProviderRules) -> Result<Verified, AuthError> {
    verify(token, r, &public_keys(), NOW)
}

#[test]
fn valid_tokens_verify_for_each_algorithm() {
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let t = token(alg, &good_claims());
        let v = verify(&t, &rules(&[alg]), &public_keys(), NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        assert_eq!(v.claims["sub"], "alice");
        assert_eq!(v.expires_at, Some(NOW + 600));
    }
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let t = token(alg, &good_claims());
        let v = verify(&t, &rules(&[alg]), &hmac_keys(), NOW).unwrap();
        assert_eq!(v.kid.as_deref(), Some("h-1"));
    }
}

#[test]
fn j1_alg_none_with_empty_signature_is_refused() {
    let t = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good_claims().as_bytes())
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::MalformedToken);
    // Even with some signature bytes attached.
    let t = format!("{t}AAAA");
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::UnsupportedAlgorithm);
}

#[test]
fn j2_alg_none_in_every_spelling_is_refused() {
    for none in ["none", "None", "NONE", "nOnE"] {
        let t = format!(
            "{}.{}.AAAA",
            b64(format!(r#"{{"alg":"{none}"}}"#).as_bytes()),
            b64(good_claims().as_bytes())
        );
        assert_eq!(
            check_pk(&t).unwrap_err(),
            AuthError::UnsupportedAlgorithm,
            "{none}"
        );
    }
}

#[test]
fn j3_algorithm_names_match_exactly() {
    let key = encoding_key(Algorithm::RS256);
    for alg in ["rs256", "RS256 ", "", "RS256\\u0000", "Rs256"] {
        let header = format!(r#"{{"alg":"{alg}","kid":"rsa-1"}}"#);
        let t = sign_raw(&header, &good_claims(), Algorithm::RS256, &key);
        assert_eq!(
            check_pk(&t).unwrap_err(),
            AuthError::UnsupportedAlgorithm,
            "{alg:?}"
        );
    }
    let t = sign_raw(
        r#"{"alg":256,"kid":"rsa-1"}"#,
        &good_claims(),
        Algorithm::RS256,
        &key,
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::UnsupportedAlgorithm);
}

#[test]
fn j4_rs256_to_hs256_confusion_with_the_public_key_as_secret_is_refused() {
    let public_pem = &keys().rsa_public;
    let forged_key = EncodingKey::from_secret(public_pem);
    for kid in ["rsa-1", "h-1"] {
        let header = format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#);
        let t = sign_raw(&header, &good_claims(), Algorithm::HS256, &forged_key);
        // HS256 is not on an RSA provider's list at all.
        assert_eq!(check_pk(&t).unwrap_err(), AuthError::UnsupportedAlgorithm);
    }
}

#[test]
fn j5_a_provider_cannot_mix_hmac_and_public_key_algorithms() {
    let r = rules(&[Algorithm::RS256, Algorithm::HS256]);
    assert!(r.check().unwrap_err().contains("cannot mix"));
    assert!(rules(&[Algorithm::RS256, Algorithm::ES256]).check().is_ok());
    assert!(rules(&[]).check().is_err());
}

#[test]
fn j6_removed_or_truncated_signatures_are_refused() {
    let t = token(Algorithm::RS256, &good_claims());
    let (msg, sig) = t.rsplit_once('.').unwrap();
    assert_eq!(
        check_pk(&format!("{msg}.")).unwrap_err(),
        AuthError::MalformedToken
    );
    // Four characters cut: refused whether the rest still decodes or not.
    let truncated = format!("{msg}.{}", &sig[..sig.len() - 4]);
    assert!(matches!(
        check_pk(&truncated).unwrap_err(),
        AuthError::BadSignature | AuthError::MalformedToken
    ));
    // Three bytes cut and re-encoded canonically: the signature check itself refuses it.
    let bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let short = format!("{msg}.{}", b64(&bytes[..bytes.len() - 3]));
    assert_eq!(check_pk(&short).unwrap_err(), AuthError::BadSignature);
}

#[test]
fn j7_short_or_empty_hmac_secrets_are_refused_at_load() {
    let mut set = KeySet::default();
    assert!(set.add_hmac_secret(None, b"").is_err());
    assert!(set.add_hmac_secret(None, b"secret").is_err());
    assert!(set.add_hmac_secret(None, &[7u8; 31]).is_err());
    assert!(set.add_hmac_secret(None, &[7u8; 32]).is_ok());
}

#[test]
fn j9_psychic_ecdsa_signatures_are_refused() {
    let t = token(Algorithm::ES256, &good_claims());
    let msg = t.rsplit_once('.').unwrap().0;
    for sig in [vec![0u8; 64], vec![0u8; 8], vec![0xffu8; 64]] {
        let forged = format!("{msg}.{}", b64(&sig));
        assert_eq!(check_pk(&forged).unwrap_err(), AuthError::BadSignature);
    }
    // The DER form of r = s = 0.
    let forged = format!("{msg}.MAYCAQACAQA");
    assert_eq!(check_pk(&forged).unwrap_err(), AuthError::BadSignature);
}

#[test]
fn j12_rs256_signature_relabelled_as_ps256_is_refused() {
    let t = token(Algorithm::RS256, &good_claims());
    let sig = t.rsplit_once('.').unwrap().1;
    let header = b64(br#"{"alg":"PS256","kid":"rsa-1"}"#);
    let relabelled = format!("{header}.{}.{sig}", b64(good_claims().as_bytes()));
    assert_eq!(check_pk(&relabelled).unwrap_err(), AuthError::BadSignature);
}

#[test]
fn j14_tampered_or_misshapen_tokens_are_refused() {
    let t = token(Algorithm::RS256, &good_claims());
    let parts: Vec<&str> = t.split('.').collect();
    let other_payload = b64(good_claims().replace("alice", "admin").as_bytes());
    let tampered = format!("{}.{other_payload}.{}", parts[0], parts[2]);
    assert_eq!(check_pk(&tampered).unwrap_err(), AuthError::BadSignature);
    let other_header = b64(br#"{"alg":"RS256","kid":"rsa-1","x":1}"#);
    let tampered = format!("{other_header}.{}.{}", parts[1], parts[2]);
    assert_eq!(check_pk(&tampered).unwrap_err(), AuthError::BadSignature);
    assert_eq!(
        check_pk(&format!("{t}.x")).unwrap_err(),
        AuthError::MalformedToken
    );
    assert_eq!(
        check_pk(&format!("{}.{}", parts[0], parts[1])).unwrap_err(),
        AuthError::MalformedToken
    );
    assert!(check_pk(&t).is_ok());
}

#[test]
fn j15_json_serialization_is_refused() {
    let t = token(Algorithm::RS256, &good_claims());
    let parts: Vec<&str> = t.split('.').collect();
    let json = format!(
        r#"{{"payload":"{}","protected":"{}","signature":"{}"}}"#,
        parts[1], parts[0], parts[2]
    );
    assert_eq!(check_pk(&json).unwrap_err(), AuthError::MalformedToken);
}

#[test]
fn j16_jwe_is_refused() {
    let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d";
    assert_eq!(check_pk(jwe).unwrap_err(), AuthError::MalformedToken);
}

#[test]
fn k1_embedded_jwk_is_never_trusted() {
    let attacker = EncodingKey::from_rsa_pem(&keys().attacker_rsa_private).unwrap();
    // Whatever the embedded `jwk` says, verification uses the configured key for the kid.
    let header = r#"{"alg":"RS256","kid":"rsa-1","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"}}"#;
    let t = sign_raw(header, &good_claims(), Algorithm::RS256, &attacker);
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::BadSignature);
    // And with no kid, the embedded key does not make up for it.
    let header = r#"{"alg":"RS256","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"}}"#;
    let t = sign_raw(header, &good_claims(), Algorithm::RS256, &attacker);
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::BadSignature);
}

#[test]
fn k2_k3_jku_x5u_and_x5c_are_ignored() {
    let attacker = EncodingKey::from_rsa_pem(&keys().attacker_rsa_private).unwrap();
    for extra in [
        r#""jku":"https://attacker.example/jwks.json""#,
        r#""x5u":"https://attacker.example/cert.pem""#,
        r#""x5c":["MIIB"]"#,
    ] {
        let header = format!(r#"{{"alg":"RS256","kid":"rsa-1",{extra}}}"#);
        let t = sign_raw(&header, &good_claims(), Algorithm::RS256, &attacker);
        assert_eq!(
            check_pk(&t).unwrap_err(),
            AuthError::BadSignature,
            "{extra}"
        );
    }
}

#[test]
fn k4_k5_k8_kid_is_only_an_opaque_lookup_key() {
    let key = EncodingKey::from_secret(b"");
    for kid in [
        "../../../../../../dev/null",
        "/dev/null",
        "x' UNION SELECT '1';--",
        "|sleep 10",
        "rsa-1\\r\\nX-Injected: 1",
    ] {
        let header = format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#);
        let t = sign_raw(&header, &good_claims(), Algorithm::HS256, &key);
        assert_eq!(check_pk(&t).unwrap_err(), AuthError::UnknownKey, "{kid}");
    }
    let long_kid = "k".repeat(64 * 1024);
    let shown = printable(&long_kid);
    assert!(shown.chars().count() <= 65);
    assert_eq!(printable("a\r\nb"), "a\\r\\nb");
}

#[test]
fn k6_k7_unknown_or_missing_kid_is_refused() {
    let key = encoding_key(Algorithm::RS256);
    let t = sign_raw(
        r#"{"alg":"RS256","kid":"rsa-9"}"#,
        &good_claims(),
        Algorithm::RS256,
        &key,
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::UnknownKey);
    // No kid: fine with exactly one key of the family...
    let t = sign_raw(r#"{"alg":"RS256"}"#, &good_claims(), Algorithm::RS256, &key);
    assert!(check_pk(&t).is_ok());
    // ...ambiguous with two.
    let mut two = public_keys();
    two.add_pem(Some("rsa-2"), AlgorithmFamily::Rsa, &keys().rsa_public)
        .unwrap();
    let r = rules(&[Algorithm::RS256]);
    assert_eq!(
        verify(&t, &r, &two, NOW).unwrap_err(),
        AuthError::UnknownKey
    );
}

#[test]
fn k9_kid_of_an_rsa_key_under_es256_is_refused() {
    let key = encoding_key(Algorithm::ES256);
    let t = sign_raw(
        r#"{"alg":"ES256","kid":"rsa-1"}"#,
        &good_claims(),
        Algorithm::ES256,
        &key,
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::UnsupportedAlgorithm);
}

#[test]
fn k10_k11_unusable_jwks_keys_are_skipped_with_a_warning() {
    let jwks = br#"{"keys":[
        {"kty":"oct","kid":"sym","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
        {"kty":"EC","kid":"enc","use":"enc","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty":"EC","kid":"ok","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty":"EC","kid":"ok","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty":"EC","kid":"wrong-alg","alg":"RS256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    ]}"#;
    let (set, warnings) = KeySet::from_jwks(jwks).unwrap();
    assert_eq!(set.len(), 1, "{warnings:?}");
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("symmetric")));
    assert!(warnings.iter().any(|w| w.contains("use: enc")));
    assert!(warnings.iter().any(|w| w.contains("duplicate kid")));
    assert!(warnings.iter().any(|w| w.contains("does not fit")));
}

#[test]
fn k12_a_document_that_is_not_a_jwks_is_an_error() {
    assert!(KeySet::from_jwks(b"<html>").is_err());
    assert!(KeySet::from_jwks(br#"{"keys":"nope"}"#).is_err());
    assert!(KeySet::from_jwks(br#"{"keys":[],"keys":[]}"#).is_err());
}

fn claims_token(claims: &str) -> String {
    token(Algorithm::RS256, claims)
}

#[test]
fn c1_c2_time_claims_must_be_numbers() {
    for bad in [
        format!(r#""exp":"{}""#, NOW + 600),
        r#""exp":true"#.into(),
        r#""exp":null"#.into(),
        r#""exp":[]"#.into(),
        r#""exp":-1"#.into(),
    ] {
        let t = claims_token(&format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a",{bad}}}"#
        ));
        assert_eq!(check_pk(&t).unwrap_err(), AuthError::InvalidClaim, "{bad}");
    }
    let nbf_string = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a","exp":{},"nbf":"99999999999"}}"#,
        NOW + 600
    );
    assert_eq!(
        check_pk(&claims_token(&nbf_string)).unwrap_err(),
        AuthError::InvalidClaim
    );
    let missing = format!(r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a"}}"#);
    assert_eq!(
        check_pk(&claims_token(&missing)).unwrap_err(),
        AuthError::InvalidClaim
    );
}

#[test]
fn c3_far_future_exp_is_refused_by_max_token_age() {
    for (exp, refusal) in [
        // Within u64 but beyond the allowed lifetime.
        ("99999999999", AuthError::TooOld),
        // A float far outside any real time.
        ("1.8e19", AuthError::InvalidClaim),
        // Not representable at all: the JSON parser refuses it.
        ("1e400", AuthError::MalformedToken),
    ] {
        let t = claims_token(&format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a","iat":{},"exp":{exp}}}"#,
            NOW
        ));
        assert_eq!(check_pk(&t).unwrap_err(), refusal, "{exp}");
    }
}

#[test]
fn c4_c5_nbf_iat_and_leeway_edges() {
    let at = |extra: String| {
        claims_token(&format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a",{extra}}}"#
        ))
    };
    // exp 30 s ago is inside the 30 s leeway; 31 s ago is not.
    assert!(check_pk(&at(format!(r#""exp":{}"#, NOW - 30))).is_ok());
    assert_eq!(
        check_pk(&at(format!(r#""exp":{}"#, NOW - 31))).unwrap_err(),
        AuthError::Expired
    );
    assert_eq!(AuthError::Expired.message(), "Token expired");
    let exp = NOW + 600;
    assert_eq!(
        check_pk(&at(format!(r#""exp":{exp},"nbf":{}"#, NOW + 86400))).unwrap_err(),
        AuthError::NotYetValid
    );
    assert!(check_pk(&at(format!(r#""exp":{exp},"nbf":{}"#, NOW + 30))).is_ok());
    assert_eq!(
        check_pk(&at(format!(r#""exp":{exp},"iat":{}"#, NOW + 31))).unwrap_err(),
        AuthError::IssuedInFuture
    );
}

#[test]
fn c6_audience_must_be_a_string_or_strings_containing_ours() {
    for aud in [
        "123",
        r#"{"x":1}"#,
        r#"[]"#,
        r#"["api://other"]"#,
        r#"[123,"api://portcullis"]"#,
        r#""api://other""#,
    ] {
        let t = claims_token(&format!(
            r#"{{"iss":"{ISS}","aud":{aud},"sub":"a","exp":{}}}"#,
            NOW + 600
        ));
        assert_eq!(check_pk(&t).unwrap_err(), AuthError::WrongAudience, "{aud}");
    }
    let missing = claims_token(&format!(
        r#"{{"iss":"{ISS}","sub":"a","exp":{}}}"#,
        NOW + 600
    ));
    assert_eq!(check_pk(&missing).unwrap_err(), AuthError::WrongAudience);
}

/// RFC 7519 lets `aud` be an array; it is enough that one entry is ours (a policy choice,
/// documented in conf/README.md).
#[test]
fn c8_an_audience_array_containing_ours_is_accepted() {
    let several = claims_token(&format!(
        r#"{{"iss":"{ISS}","aud":["api://other","{AUD}"],"sub":"a","exp":{}}}"#,
        NOW + 600
    ));
    assert!(
        check_pk(&several).is_ok(),
        "any-match on an array of strings"
    );
}

/// A provider must name its audiences: one without them cannot be configured, and even if
/// its rules were built by hand, a token with an `aud` would be refused, never waved through.
#[test]
fn c9_a_provider_without_audiences_refuses_rather_than_skips_the_check() {
    let mut no_aud = rules(&[Algorithm::RS256]);
    no_aud.audiences.clear();
    assert_eq!(
        no_aud.check().unwrap_err(),
        "at least one audience is required"
    );
    let t = claims_token(&format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a","exp":{}}}"#,
        NOW + 600
    ));
    assert_eq!(
        verify(&t, &no_aud, &public_keys(), NOW).unwrap_err(),
        AuthError::WrongAudience
    );
}

#[test]
fn c7_c17_issuer_must_be_exactly_ours() {
    for iss in [
        "1",
        "null",
        r#"["https://evil","https://idp.example.com"]"#,
        r#""https://idp.example.com/""#,
        r#""https://other.example.com""#,
    ] {
        let t = claims_token(&format!(
            r#"{{"iss":{iss},"aud":"{AUD}","sub":"a","exp":{}}}"#,
            NOW + 600
        ));
        assert_eq!(check_pk(&t).unwrap_err(), AuthError::WrongIssuer, "{iss}");
    }
    let missing = claims_token(&format!(
        r#"{{"aud":"{AUD}","sub":"a","exp":{}}}"#,
        NOW + 600
    ));
    assert_eq!(check_pk(&missing).unwrap_err(), AuthError::WrongIssuer);
}

#[test]
fn c10_c11_duplicate_claims_are_refused() {
    for dup in [
        r#""sub":"user","sub":"admin""#,
        r#""role":"user","role":"admin""#,
    ] {
        let t = claims_token(&format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},{dup}}}"#,
            NOW + 600
        ));
        assert_eq!(
            check_pk(&t).unwrap_err(),
            AuthError::MalformedToken,
            "{dup}"
        );
    }
}

#[test]
fn c12_c13_subject_must_be_a_safe_bounded_string() {
    let long = "u".repeat(MAX_SUBJECT_LEN + 1);
    for sub in [
        r#""u1\r\nX-User-ID: admin""#.to_string(),
        "123".into(),
        r#""""#.into(),
        format!(r#""{long}""#),
        r#""tab\there""#.into(),
    ] {
        let t = claims_token(&format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{},"sub":{sub}}}"#,
            NOW + 600
        ));
        assert_eq!(check_pk(&t).unwrap_err(), AuthError::InvalidClaim, "{sub}");
    }
}

#[test]
fn c14_required_typ_is_enforced() {
    let mut r = rules(&[Algorithm::RS256]);
    r.typ = Some("at+jwt".into());
    let key = encoding_key(Algorithm::RS256);
    for (typ, ok) in [
        (r#""typ":"at+jwt","#, true),
        (r#""typ":"application/at+JWT","#, true),
        (r#""typ":"JWT","#, false),
        ("", false),
    ] {
        let header = format!(r#"{{"alg":"RS256",{typ}"kid":"rsa-1"}}"#);
        let t = sign_raw(&header, &good_claims(), Algorithm::RS256, &key);
        assert_eq!(check_with(&t, &r).is_ok(), ok, "{typ}");
        if !ok {
            assert_eq!(check_with(&t, &r).unwrap_err(), AuthError::WrongTokenType);
        }
    }
}

#[test]
fn c15_c16_crit_zip_and_cty_are_refused() {
    let key = encoding_key(Algorithm::RS256);
    let t = sign_raw(
        r#"{"alg":"RS256","kid":"rsa-1","crit":["foo"],"foo":"bar"}"#,
        &good_claims(),
        Algorithm::RS256,
        &key,
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::CriticalHeader);
    for extra in [r#""zip":"DEF""#, r#""cty":"JWT""#] {
        let header = format!(r#"{{"alg":"RS256","kid":"rsa-1",{extra}}}"#);
        let t = sign_raw(&header, &good_claims(), Algorithm::RS256, &key);
        assert_eq!(
            check_pk(&t).unwrap_err(),
            AuthError::MalformedToken,
            "{extra}"
        );
    }
}

#[test]
fn e1_e2_e3_non_canonical_base64_is_refused() {
    let t = token(Algorithm::RS256, &good_claims());
    let parts: Vec<&str> = t.split('.').collect();
    // Padding appended.
    let padded = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
    assert_eq!(check_pk(&padded).unwrap_err(), AuthError::MalformedToken);
    // Standard alphabet.
    let std_sig = parts[2].replace('-', "+").replace('_', "/");
    if std_sig != parts[2] {
        let t2 = format!("{}.{}.{std_sig}", parts[0], parts[1]);
        assert_eq!(check_pk(&t2).unwrap_err(), AuthError::MalformedToken);
    }
    // E3: an RSA-2048 signature is 256 bytes, so its last base64 symbol carries 2 bits and 4
    // unused ones; setting one of those gives a string a lenient decoder maps to the same bytes.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let sig = parts[2];
    let last = *sig.as_bytes().last().unwrap();
    let idx = ALPHABET.iter().position(|c| *c == last).unwrap();
    assert_eq!(
        idx & 0x0f,
        0,
        "canonical encoding leaves the unused bits clear"
    );
    let odd = ALPHABET[idx | 1] as char;
    let non_canonical = format!("{}.{}.{}{odd}", parts[0], parts[1], &sig[..sig.len() - 1]);
    assert_eq!(
        check_pk(&non_canonical).unwrap_err(),
        AuthError::MalformedToken
    );
}

#[test]
fn e5_oversized_tokens_are_refused_before_decoding() {
    let huge = "a".repeat(DEFAULT_MAX_TOKEN_BYTES + 1);
    assert_eq!(check_pk(&huge).unwrap_err(), AuthError::TokenTooLarge);
    assert_eq!(check_pk("").unwrap_err(), AuthError::MissingToken);
}

#[test]
fn e6_e7_deep_nesting_and_non_object_json_are_refused() {
    let key = encoding_key(Algorithm::RS256);
    let deep = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"a","exp":{},"x":{}1{}}}"#,
        NOW + 600,
        "[".repeat(300),
        "]".repeat(300)
    );
    let t = sign_raw(
        r#"{"alg":"RS256","kid":"rsa-1"}"#,
        &deep,
        Algorithm::RS256,
        &key,
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::MalformedToken);
    let t = sign_raw(r#"["RS256"]"#, &good_claims(), Algorithm::RS256, &key);
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::MalformedToken);
    let t = sign_raw(
        r#"{"alg":"RS256","kid":"rsa-1"}"#,
        r#""just a string""#,
        Algorithm::RS256,
        &key,
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::MalformedToken);
    let t = sign_raw(
        "\u{feff}{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}",
        &good_claims(),
        Algorithm::RS256,
        &key,
    );
    assert_eq!(check_pk(&t).unwrap_err(), AuthError::MalformedToken);
}

/// Wycheproof tc372/373 call a `?` inside a segment valid (a lenient decoder skips it); we
/// decode strictly and refuse, a documented deviation (conf/README.md, tests/data/wycheproof).
#[test]
fn e9_junk_inside_a_base64_segment_is_refused() {
    let t = token(Algorithm::RS256, &good_claims());
    let parts: Vec<&str> = t.split('.').collect();
    for (i, junk) in [(0, "?"), (1, "?"), (2, "?"), (2, " "), (1, "\n"), (0, "*")] {
        let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        let mid = p[i].len() / 2;
        p[i].insert_str(mid, junk);
        assert_eq!(
            check_pk(&p.join(".")).unwrap_err(),
            AuthError::MalformedToken,
            "{junk:?} in part {i}"
        );
    }
}

#[test]
fn e8_whitespace_inside_header_json_is_fine() {
    let key = encoding_key(Algorithm::RS256);
    let t = sign_raw(
        "{\n  \"alg\" : \"RS256\",\n  \"kid\": \"rsa-1\"\n}",
        &good_claims(),
        Algorithm::RS256,
        &key,
    );
    assert!(check_pk(&t).is_ok());
}

fn provider(capacity: u64) -> Provider {
    Provider {
        name: "test".into(),
        rules: rules(&[Algorithm::RS256]),
        keys: KeySource::Static(Arc::new(public_keys())),
        claims: crate::auth::ClaimMap::default(),
        cache: TokenCache::new(capacity, 300),
        series: crate::metrics::ProviderSeries::new("test"),
        introspection: None,
    }
}

#[test]
fn verified_tokens_are_cached_until_their_own_expiry_and_failures_never() {
    let p = provider(1000);
    let exp = NOW + 100;
    let t = token(
        Algorithm::RS256,
        &format!(r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","exp":{exp}}}"#),
    );
    let first = block_on(p.authenticate(&t, NOW)).unwrap();
    assert_eq!(p.cache.len(), 1);
    let again = block_on(p.authenticate(&t, NOW + 1)).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second call is served from the cache"
    );
    // Past the token's exp (beyond leeway) the cached entry is not used: verification runs
    // again and refuses the token.
    assert_eq!(
        block_on(p.authenticate(&t, exp + DEFAULT_LEEWAY_SECS + 1)).unwrap_err(),
        AuthError::Expired
    );
    // Failures are not cached.
    let bad = format!("{}x", &t[..t.len() - 1]);
    assert!(block_on(p.authenticate(&bad, NOW)).is_err());
    assert!(block_on(p.authenticate(&bad, NOW)).is_err());
    assert_eq!(p.cache.len(), 1);
}

#[test]
fn a_disabled_cache_verifies_every_time() {
    let p = provider(0);
    let t = token(Algorithm::RS256, &good_claims());
    let a = block_on(p.authenticate(&t, NOW)).unwrap();
    let b = block_on(p.authenticate(&t, NOW)).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(p.cache.len(), 0);
}

#[test]
fn k11_small_rsa_keys_and_e_of_one_are_refused() {
    let small = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
    let mut set = KeySet::default();
    let err = set
        .add_pem(
            None,
            AlgorithmFamily::Rsa,
            &small.public_key_to_pem().unwrap(),
        )
        .unwrap_err();
    assert!(err.contains("1024 bits is too small"), "{err}");

    let rsa = small.rsa().unwrap();
    let good = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let good_rsa = good.rsa().unwrap();
    let jwks = serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "small", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())},
        {"kty": "RSA", "kid": "e1", "n": b64(&good_rsa.n().to_vec()), "e": b64(&[1])},
        {"kty": "RSA", "kid": "ok", "n": b64(&good_rsa.n().to_vec()), "e": b64(&good_rsa.e().to_vec())},
    ]});
    let (set, warnings) = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 1, "{warnings:?}");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(rsa_modulus_bits(&b64(&good_rsa.n().to_vec())) == Some(2048));
}

#[test]
fn es384_tokens_verify_with_a_p384_key() {
    let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut set = KeySet::default();
    set.add_pem(None, AlgorithmFamily::Ec, &key.public_key_to_pem().unwrap())
        .unwrap();
    let signing = EncodingKey::from_ec_pem(&key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let t = sign_raw(
        r#"{"alg":"ES384"}"#,
        &good_claims(),
        Algorithm::ES384,
        &signing,
    );
    assert!(verify(&t, &rules(&[Algorithm::ES384]), &set, NOW).is_ok());
    // The same key under ES256 is refused (the algorithm must fit the key).
    assert!(verify(&t, &rules(&[Algorithm::ES256]), &set, NOW).is_err());
}

#[test]
fn j8_tokens_signed_with_common_secrets_are_refused() {
    // The configured secret is long and random; tokens forged with well-known secrets fail.
    for weak in [
        "secret",
        "your-256-bit-secret",
        "changeme",
        "password",
        "0123456789abcdef0123456789abcdef",
        "",
    ] {
        let forged = sign_raw(
            r#"{"alg":"HS256","kid":"h-1"}"#,
            &good_claims(),
            Algorithm::HS256,
            &EncodingKey::from_secret(weak.as_bytes()),
        );
        assert_eq!(
            verify(&forged, &rules(&[Algorithm::HS256]), &hmac_keys(), NOW).unwrap_err(),
            AuthError::BadSignature,
            "{weak:?}"
        );
    }
    // And such secrets cannot be configured: shorter than 32 bytes is refused at load.
    let mut set = KeySet::default();
    for weak in ["secret", "your-256-bit-secret", "changeme"] {
        assert!(
            set.add_hmac_secret(None, weak.as_bytes()).is_err(),
            "{weak}"
        );
    }
}

/// The decision protocol's `init` trusts a key alone; configured providers never do.
#[test]
fn key_only_rules_skip_issuer_and_audience_but_nothing_else() {
    let t = claims_token(&format!(r#"{{"user_id":"u1","exp":{}}}"#, NOW + 600));
    let mut key_only = rules(&[Algorithm::RS256]);
    assert_eq!(
        verify(&t, &key_only, &public_keys(), NOW).unwrap_err(),
        AuthError::WrongIssuer
    );
    key_only.key_only = true;
    let claims = verify(&t, &key_only, &public_keys(), NOW).unwrap().claims;
    // The subject is the claim map's business: `user_id` when it says so, else refused.
    let with_fallback = crate::auth::ClaimMap {
        subject_fallback: vec!["user_id".into()],
        ..crate::auth::ClaimMap::default()
    };
    assert_eq!(with_fallback.identity(&claims).unwrap().subject, "u1");
    assert_eq!(
        crate::auth::ClaimMap::default()
            .identity(&claims)
            .unwrap_err(),
        AuthError::InvalidClaim
    );
    // Signature, expiry and claim types still count.
    let expired = claims_token(&format!(r#"{{"sub":"u1","exp":{}}}"#, NOW - 600));
    assert_eq!(
        verify(&expired, &key_only, &public_keys(), NOW).unwrap_err(),
        AuthError::Expired
    );
    let bad_aud = claims_token(&format!(r#"{{"sub":"u1","aud":7,"exp":{}}}"#, NOW + 600));
    assert_eq!(
        verify(&bad_aud, &key_only, &public_keys(), NOW).unwrap_err(),
        AuthError::WrongAudience
    );
}
