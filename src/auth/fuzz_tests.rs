//! Property tests: whatever arrives as a token, a JWKS document or a configuration file, the
//! parsers answer with an error or a value, never a panic (and never an accepted token).

use super::jwt::{verify, KeySet, ProviderRules, DEFAULT_MAX_TOKEN_BYTES};
use jsonwebtoken::Algorithm;
use proptest::prelude::*;

fn rules() -> ProviderRules {
    ProviderRules {
        issuer: "https://idp.example.com".into(),
        audiences: vec!["api".into()],
        algorithms: vec![Algorithm::HS256],
        leeway_secs: 30,
        max_token_age_secs: None,
        require_exp: true,
        typ: None,
        max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        key_only: false,
    }
}

fn keys() -> KeySet {
    let mut k = KeySet::default();
    k.add_hmac_secret(None, b"0123456789abcdef0123456789abcdef")
        .unwrap();
    k
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_string_is_refused_without_panicking(token in ".{0,2000}") {
        prop_assert!(verify(&token, &rules(), &keys(), 1_800_000_000).is_err());
    }

    #[test]
    fn token_shaped_garbage_is_refused_without_panicking(
        h in "[A-Za-z0-9_=+/-]{0,200}",
        p in "[A-Za-z0-9_=+/-]{0,400}",
        s in "[A-Za-z0-9_=+/-]{0,100}",
        extra in proptest::option::of("[A-Za-z0-9_-]{0,20}"),
    ) {
        let mut token = format!("{h}.{p}.{s}");
        if let Some(e) = extra {
            token.push('.');
            token.push_str(&e);
        }
        prop_assert!(verify(&token, &rules(), &keys(), 1_800_000_000).is_err());
    }

    #[test]
    fn json_headers_and_payloads_of_any_shape_are_handled(
        header in r#"\{("[a-z]{1,4}":("[A-Za-z0-9]{0,8}"|[0-9]{1,3}|null|true|\[\]),?){0,6}\}"#,
        payload in r#"\{("[a-z]{1,4}":("[A-Za-z0-9]{0,8}"|[0-9]{1,12}|null|\{\}),?){0,8}\}"#,
    ) {
        use base64::Engine;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!("{}.{}.c2ln", b.encode(header), b.encode(payload));
        prop_assert!(verify(&token, &rules(), &keys(), 1_800_000_000).is_err());
    }

    #[test]
    fn any_jwks_document_is_handled(doc in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = KeySet::from_jwks(&doc);
    }

    #[test]
    fn any_configuration_text_is_handled(text in ".{0,1500}") {
        let _ = crate::config::parse(&text);
    }
}
