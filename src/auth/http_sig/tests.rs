//! Unit tests of `http_sig` (RFC 9421 and RFC 9530 vectors, tampering, coverage, windows,
//! encodings, keys file, garbled input).

use super::base::{canonical_field_line, derived_value, normalized_authority};
use super::*;
use crate::auth::crypto::hmac_sha256;
use crate::reload::Reloadable;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};

const NOW: u64 = 1_800_000_000;
const NONCE: &str = "n0nce-0123456789";
const DEFAULTS: [&str; 5] = ["@method", "@authority", "@path", "@query", "content-digest"];

fn secret() -> Vec<u8> {
    (0u8..32).collect()
}

fn keys_yaml() -> String {
    format!(
        r#"keys:
- id: k1
  consumer: acme-billing
  tenant: acme
  scopes: ["invoices:write"]
  tier: gold
  secret: "base64:{s}"
  created: 2026-01-01
- id: k-disabled
  consumer: acme-billing
  secret: "base64:{s}"
  created: 2026-01-01
  disabled: true
- id: k-expired
  consumer: acme-billing
  secret: "base64:{s}"
  created: 2019-01-01
  expires: 2020-01-01T00:00:00Z
"#,
        s = STANDARD.encode(secret())
    )
}

fn keyring() -> SigningKeyring {
    SigningKeyring::parse(&keys_yaml(), &|t| t == "gold").expect("test keys parse")
}

#[derive(Clone)]
struct Req {
    method: String,
    scheme: String,
    authority: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Req {
    fn post() -> Req {
        let mut r = Req {
            method: "POST".into(),
            scheme: "https".into(),
            authority: "api.example.com".into(),
            path: "/v1/invoices".into(),
            query: Some("a=1&b=2".into()),
            headers: HeaderMap::new(),
            body: br#"{"amount": 42}"#.to_vec(),
        };
        r.set("content-type", "application/json");
        r
    }

    fn get() -> Req {
        Req {
            method: "GET".into(),
            query: None,
            body: Vec::new(),
            ..Req::post()
        }
    }

    fn view(&self) -> SignedRequest<'_> {
        SignedRequest {
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            body: &self.body,
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }

    fn append(&mut self, name: &str, value: &str) {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }

    fn sign_with(mut self, key: &str, comps: &[&str], created: u64, nonce: &str) -> Req {
        let comps: Vec<String> = comps.iter().map(|c| c.to_string()).collect();
        let out = sign(&self.view(), key, &secret(), &comps, created, nonce, "sig1").expect("sign");
        for (name, value) in out {
            self.set(name, &value);
        }
        self
    }

    fn signed(self) -> Req {
        self.sign_with("k1", &DEFAULTS, NOW, NONCE)
    }

    /// Use `inner` (an inner list with parameters) as Signature-Input and sign it correctly
    /// when a base can be built; otherwise a dummy signature.
    fn with_input(mut self, inner: &str) -> Req {
        if !self.body.is_empty() && !self.headers.contains_key("content-digest") {
            let d = content_digest(&self.body);
            self.set("content-digest", &d);
        }
        let field = format!("sig1={inner}");
        self.set("signature-input", &field);
        let mac = match signature_base(&self.view(), &field) {
            Ok(base) => hmac_sha256(&secret(), base.as_bytes()),
            Err(_) => [0u8; 32],
        };
        self.set("signature", &format!("sig1=:{}:", STANDARD.encode(mac)));
        self
    }

    fn verify(&self) -> Result<Verified, SigError> {
        self.verify_at(NOW)
    }

    fn verify_at(&self, now: u64) -> Result<Verified, SigError> {
        verify(&self.view(), &keyring(), &SignatureRules::default(), now)
    }

    fn err(&self) -> Option<SigError> {
        self.verify().err()
    }
}

/// The default covered list followed by `params`.
fn inner(params: &str) -> String {
    format!(r#"("@method" "@authority" "@path" "@query" "content-digest"){params}"#)
}

fn good_params() -> String {
    format!(r#";created={NOW};keyid="k1";nonce="{NONCE}""#)
}

// ----- RFC vectors ------------------------------------------------------------------------

const B25_SECRET: &str =
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
const B25_INPUT: &str =
    r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;
const B25_SIG: &str = "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=";
const HELLO: &[u8] = br#"{"hello": "world"}"#;
const HELLO_SHA512: &str =
    "WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==";

fn b25_request() -> Req {
    let mut r = Req {
        method: "POST".into(),
        scheme: "https".into(),
        authority: "example.com".into(),
        path: "/foo".into(),
        query: Some("param=Value&Pet=dog".into()),
        headers: HeaderMap::new(),
        body: HELLO.to_vec(),
    };
    r.set("host", "example.com");
    r.set("date", "Tue, 20 Apr 2021 02:07:55 GMT");
    r.set("content-type", "application/json");
    r.set("content-digest", &format!("sha-512=:{HELLO_SHA512}:"));
    r.set("content-length", "18");
    r
}

#[test]
fn rfc9421_b25_signature_base_and_hmac() {
    let req = b25_request();
    let base = signature_base(&req.view(), B25_INPUT).expect("base");
    let expected = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\
                    \"@authority\": example.com\n\
                    \"content-type\": application/json\n\
                    \"@signature-params\": (\"date\" \"@authority\" \"content-type\")\
                    ;created=1618884473;keyid=\"test-shared-secret\"";
    assert_eq!(base, expected);
    let key = STANDARD.decode(B25_SECRET).expect("secret");
    assert_eq!(STANDARD.encode(hmac_sha256(&key, base.as_bytes())), B25_SIG);
    // Its Content-Digest (sha-512 only) matches the body.
    assert_eq!(check_digest(&req.view()), Ok(()));
}

#[test]
fn rfc9421_b25_refused_without_nonce() {
    let mut req = b25_request();
    req.set("signature-input", B25_INPUT);
    req.set("signature", &format!("sig-b25=:{B25_SIG}:"));
    let yaml = format!(
        "keys:\n- id: test-shared-secret\n  consumer: rfc\n  secret: \"base64:{B25_SECRET}\"\n  created: 2021-01-01\n"
    );
    let keys = SigningKeyring::parse(&yaml, &|_| false).expect("keys");
    let rules = SignatureRules {
        components: ["date", "@authority", "content-type"]
            .map(String::from)
            .to_vec(),
        window: DEFAULT_WINDOW,
    };
    let got = verify(&req.view(), &keys, &rules, 1_618_884_473).err();
    assert_eq!(got, Some(SigError::InsufficientCoverage));
}

#[test]
fn rfc9530_content_digest_examples() {
    assert_eq!(
        content_digest(HELLO),
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    );
    assert_eq!(STANDARD.encode(Sha512::digest(HELLO)), HELLO_SHA512);
}

// ----- round trips ------------------------------------------------------------------------

#[test]
fn round_trip_with_body_and_query() {
    let req = Req::post().signed();
    let v = req.verify().expect("verifies");
    assert_eq!(v.key_id, "k1");
    assert_eq!(v.nonce, NONCE);
    assert_eq!(v.created, NOW);
    assert_eq!(v.remember_until, NOW + DEFAULT_WINDOW + 1);
    let id = &v.identity;
    assert_eq!((id.method, id.provider.as_str()), ("hmac", "hmac"));
    assert_eq!(id.subject, "acme-billing");
    assert_eq!(id.client_id.as_deref(), Some("acme-billing"));
    assert_eq!(id.tenant.as_deref(), Some("acme"));
    assert_eq!(id.scopes, vec!["invoices:write".to_string()]);
    assert_eq!(id.tier.as_deref(), Some("gold"));
    assert_eq!(id.key_id.as_deref(), Some("k1"));
}

#[test]
fn round_trip_without_body_or_query() {
    let req = Req::get();
    let out = sign(
        &req.view(),
        "k1",
        &secret(),
        &DEFAULTS.map(String::from),
        NOW,
        NONCE,
        "sig1",
    )
    .expect("sign");
    let names: Vec<&str> = out.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["signature-input", "signature"]);
    assert!(!out[0].1.contains("content-digest"));
    assert!(req.signed().verify().is_ok());
}

#[test]
fn round_trip_variants() {
    let no_query = Req {
        query: None,
        ..Req::post()
    };
    assert!(no_query.signed().verify().is_ok());
    let empty_query = Req {
        query: Some(String::new()),
        ..Req::get()
    };
    assert!(empty_query.signed().verify().is_ok());
    let every = [
        "@method",
        "@authority",
        "@scheme",
        "@target-uri",
        "@request-target",
        "@path",
        "@query",
        "content-type",
        "content-digest",
    ];
    assert!(Req::post()
        .sign_with("k1", &every, NOW, NONCE)
        .verify()
        .is_ok());
    // @authority is normalized: case and the default port do not matter.
    let mut req = Req {
        authority: "API.Example.com:443".into(),
        ..Req::post()
    }
    .signed();
    req.authority = "api.example.com".into();
    assert!(req.verify().is_ok());
}

#[test]
fn derived_values() {
    let mut req = Req::post();
    req.authority = "Example.COM:8443".into();
    req.scheme = "HTTPS".into();
    let v = req.view();
    let d = |n: &str| derived_value(&v, n).unwrap_or_default();
    assert_eq!(d("@authority"), "example.com:8443");
    assert_eq!(d("@scheme"), "https");
    assert_eq!(d("@query"), "?a=1&b=2");
    assert_eq!(d("@request-target"), "/v1/invoices?a=1&b=2");
    assert_eq!(
        d("@target-uri"),
        "https://example.com:8443/v1/invoices?a=1&b=2"
    );
    assert_eq!(normalized_authority("http", "h:80"), "h");
    assert_eq!(normalized_authority("http", "h:443"), "h:443");
    let empty = Req {
        path: String::new(),
        query: None,
        ..Req::get()
    };
    let v = empty.view();
    assert_eq!(derived_value(&v, "@path").as_deref(), Some("/"));
    assert_eq!(derived_value(&v, "@query").as_deref(), Some("?"));
}

// ----- tampering --------------------------------------------------------------------------

#[test]
fn m2_tampered_components_mismatch() {
    let signed = Req::post().signed();
    let tampered: [fn(&mut Req); 4] = [
        |r| r.method = "PUT".into(),
        |r| r.authority = "evil.example.com".into(),
        |r| r.path = "/v1/invoices/2".into(),
        |r| r.query = Some("a=1&b=3".into()),
    ];
    for change in tampered {
        let mut r = signed.clone();
        change(&mut r);
        assert_eq!(r.err(), Some(SigError::Mismatch));
    }
}

/// `@query` is the exact query bytes: no reordering or decoding, so each pair differs.
#[test]
fn m3_query_is_exact_bytes() {
    for (signed_q, sent_q) in [("a=1&b=2", "b=2&a=1"), ("q=a+b", "q=a%20b"), ("a=", "a")] {
        let mut r = Req {
            query: Some(signed_q.into()),
            ..Req::post()
        }
        .signed();
        assert!(r.verify().is_ok());
        r.query = Some(sent_q.into());
        assert_eq!(r.err(), Some(SigError::Mismatch), "{signed_q} vs {sent_q}");
    }
}

#[test]
fn tampered_body() {
    let mut r = Req::post().signed();
    r.body = br#"{"amount": 4200}"#.to_vec();
    assert_eq!(r.err(), Some(SigError::DigestMismatch));
    let d = content_digest(&r.body);
    r.set("content-digest", &d);
    assert_eq!(r.err(), Some(SigError::Mismatch));
}

#[test]
fn m9_content_digest_rules() {
    let req = |cd: &str| {
        let mut r = Req::post();
        r.set("content-digest", cd);
        r.with_input(&inner(&good_params()))
    };
    let sha256 = STANDARD.encode(Sha256::digest(Req::post().body));
    let sha512 = STANDARD.encode(Sha512::digest(Req::post().body));
    let ok = format!("sha-512=:{sha512}:, sha-256=:{sha256}:, md5=:AAAA:");
    assert!(req(&ok).verify().is_ok());
    let one_bad = format!("sha-512=:{sha256}:, sha-256=:{sha256}:");
    assert_eq!(req(&one_bad).err(), Some(SigError::DigestMismatch));
    assert_eq!(
        req("md5=:AAAA:, sha=:AAAA:").err(),
        Some(SigError::DigestMismatch)
    );
    assert_eq!(req("sha-256=abc").err(), Some(SigError::Malformed));
    // A present Content-Digest is checked even without a body.
    let mut get = Req::get();
    get.set("content-digest", "sha-256=:AAAA:");
    let get =
        get.with_input(r#"("@method");created=1800000000;keyid="k1";nonce="n0nce-0123456789""#);
    let rules = SignatureRules {
        components: vec!["@method".into()],
        window: DEFAULT_WINDOW,
    };
    let got = verify(&get.view(), &keyring(), &rules, NOW).err();
    assert_eq!(got, Some(SigError::DigestMismatch));
}

// ----- coverage ---------------------------------------------------------------------------

#[test]
fn m8_coverage_of_each_default_component() {
    for missing in DEFAULTS {
        let comps: Vec<&str> = DEFAULTS.into_iter().filter(|c| *c != missing).collect();
        let r = Req::post().sign_with("k1", &comps, NOW, NONCE);
        assert_eq!(r.err(), Some(SigError::InsufficientCoverage), "{missing}");
    }
    // No body: content-digest is not needed.
    let r = Req::get().sign_with("k1", &DEFAULTS[..4], NOW, NONCE);
    assert!(r.verify().is_ok());
    // A required header.
    let rules = SignatureRules {
        components: vec!["@method".into(), "content-type".into()],
        window: DEFAULT_WINDOW,
    };
    let r = Req::get().sign_with("k1", &["@method"], NOW, NONCE);
    assert_eq!(
        verify(&r.view(), &keyring(), &rules, NOW).err(),
        Some(SigError::InsufficientCoverage)
    );
}

#[test]
fn created_and_nonce_are_required() {
    let no_nonce = Req::post().with_input(&inner(&format!(r#";created={NOW};keyid="k1""#)));
    assert_eq!(no_nonce.err(), Some(SigError::InsufficientCoverage));
    let no_created = Req::post().with_input(&inner(&format!(r#";keyid="k1";nonce="{NONCE}""#)));
    assert_eq!(no_created.err(), Some(SigError::InsufficientCoverage));
}

// ----- time -------------------------------------------------------------------------------

#[test]
fn m5_created_window_edges() {
    let at = |created: u64| Req::post().sign_with("k1", &DEFAULTS, created, NONCE).err();
    assert_eq!(at(NOW - 300), None);
    assert_eq!(at(NOW - 301), Some(SigError::Expired));
    assert_eq!(at(NOW + 300), None);
    assert_eq!(at(NOW + 301), Some(SigError::CreatedInFuture));
    assert_eq!(at(0), Some(SigError::Expired));
}

#[test]
fn m6_created_and_expires_parameters() {
    let with = |params: String| Req::post().with_input(&inner(&params)).err();
    let base = format!(r#";keyid="k1";nonce="{NONCE}""#);
    assert_eq!(
        with(format!(";created=1e20{base}")),
        Some(SigError::Malformed)
    );
    assert_eq!(
        with(format!(";created=1.5{base}")),
        Some(SigError::Malformed)
    );
    assert_eq!(
        with(format!(";created=\"{NOW}\"{base}")),
        Some(SigError::Malformed)
    );
    assert_eq!(
        with(format!(";created=-5{base}")),
        Some(SigError::Malformed)
    );
    assert_eq!(
        with(format!(";created=1234567890123456{base}")),
        Some(SigError::Malformed)
    );
    assert_eq!(
        with(format!(";created={NOW};expires={}{base}", NOW - 1)),
        Some(SigError::Expired)
    );
    assert_eq!(with(format!(";created={NOW};expires={NOW}{base}")), None);
    assert_eq!(
        with(format!(
            ";created={};expires=999999999999999{base}",
            NOW - 1000
        )),
        Some(SigError::Expired)
    );
    assert_eq!(
        with(format!(";created={NOW};expires=soon{base}")),
        Some(SigError::Malformed)
    );
}

// ----- alg --------------------------------------------------------------------------------

#[test]
fn m7_algorithm_is_bound_to_the_key() {
    let with_alg = |alg: &str| {
        Req::post()
            .with_input(&inner(&format!("{};alg={alg}", good_params())))
            .err()
    };
    for bad in [
        r#""hmac-sha1""#,
        r#""hmac-md5""#,
        r#""none""#,
        r#""HMAC-SHA256""#,
        r#""rsa-pss-sha512""#,
        r#""""#,
        "hmac-sha256", // a token, not a string
        "1",
    ] {
        assert_eq!(with_alg(bad), Some(SigError::AlgorithmNotAllowed), "{bad}");
    }
    assert_eq!(with_alg(r#""hmac-sha256""#), None);
    assert_eq!(Req::post().with_input(&inner(&good_params())).err(), None);
}

// ----- signature encodings ----------------------------------------------------------------

#[test]
fn m11_signature_encodings() {
    let signed = Req::post().signed();
    let field = signed.headers["signature"]
        .to_str()
        .expect("ascii")
        .to_string();
    let b64 = field
        .strip_prefix("sig1=:")
        .and_then(|s| s.strip_suffix(':'))
        .expect("shape")
        .to_string();
    let mac = STANDARD.decode(&b64).expect("b64");
    let variants = [
        format!("sig1=:{}:", hex::encode(&mac)),
        format!("sig1=:{}:", hex::encode_upper(&mac)),
        format!("sig1={}", hex::encode(&mac)),
        format!("sig1=:{}:", b64.trim_end_matches('=')),
        format!("sig1=:{b64}=:"),
        format!("sig1=:{}:", STANDARD.encode(&mac[..16])),
        format!(
            "sig1=:{}:",
            STANDARD.encode([mac.as_slice(), &[0]].concat())
        ),
        format!("sig1=\"{b64}\""),
        format!("sig1=:{b64}:;x=1"),
        format!("sig1=(:{b64}:)"),
    ];
    for v in variants {
        let mut r = signed.clone();
        r.set("signature", &v);
        assert_eq!(r.err(), Some(SigError::Malformed), "{v}");
    }
    // base64url is not RFC 8941: `+/` become `-_`.
    let bytes = [0xfbu8; 32];
    let url = base64::engine::general_purpose::URL_SAFE.encode(bytes);
    assert!(url.contains('-') || url.contains('_'));
    assert!(parse_signature(&format!("sig1=:{url}:"), "sig1").is_err());
    let std = STANDARD.encode(bytes);
    assert_eq!(parse_signature(&format!("sig1=:{std}:"), "sig1"), Ok(bytes));
}

// ----- keys -------------------------------------------------------------------------------

#[test]
fn m12_unknown_disabled_expired_keys() {
    for key in ["nobody", "k-disabled", "k-expired"] {
        let r = Req::post().sign_with(key, &DEFAULTS, NOW, NONCE);
        assert_eq!(r.err(), Some(SigError::UnknownKey), "{key}");
    }
    for key in [r#"../../etc/passwd"#, r#"' OR 1=1 --"#, "K1", "k1 ", ""] {
        let params = format!(r#";created={NOW};keyid="{key}";nonce="{NONCE}""#);
        let r = Req::post().with_input(&inner(&params));
        assert_eq!(r.err(), Some(SigError::UnknownKey), "{key}");
    }
    let no_keyid = Req::post().with_input(&inner(&format!(";created={NOW};nonce=\"{NONCE}\"")));
    assert_eq!(no_keyid.err(), Some(SigError::Malformed));
    let token_keyid = Req::post().with_input(&inner(&format!(
        ";created={NOW};keyid=k1;nonce=\"{NONCE}\""
    )));
    assert_eq!(token_keyid.err(), Some(SigError::Malformed));
}

#[test]
fn wrong_secret_is_mismatch() {
    let mut r = Req::post();
    let out = sign(
        &r.view(),
        "k1",
        &[9u8; 32],
        &DEFAULTS.map(String::from),
        NOW,
        NONCE,
        "sig1",
    )
    .expect("sign");
    for (n, v) in out {
        r.set(n, &v);
    }
    assert_eq!(r.err(), Some(SigError::Mismatch));
}

// ----- structure --------------------------------------------------------------------------

#[test]
fn m10_repeated_header_lines_are_combined() {
    let mut r = Req::get();
    r.append("x-tag", "  a ");
    r.append("x-tag", "b\t");
    let base = signature_base(&r.view(), r#"sig1=("x-tag");created=1;keyid="k""#).expect("base");
    assert_eq!(
        base,
        "\"x-tag\": a, b\n\"@signature-params\": (\"x-tag\");created=1;keyid=\"k\""
    );
    let r = r.sign_with(
        "k1",
        &["@method", "@authority", "@path", "@query", "x-tag"],
        NOW,
        NONCE,
    );
    assert!(r.verify().is_ok());
    let mut r2 = r.clone();
    r2.append("x-tag", "c");
    assert_eq!(r2.err(), Some(SigError::Mismatch));
}

#[test]
fn m10_obs_fold_and_opaque_bytes() {
    assert_eq!(
        canonical_field_line(b" a \r\n\t b ").as_deref(),
        Some("a b")
    );
    assert_eq!(canonical_field_line(b"a\r\nb"), None);
    assert_eq!(canonical_field_line(b"caf\xc3\xa9"), None);
    assert_eq!(canonical_field_line(b"a\x00b"), None);
    let mut r = Req::get();
    r.headers.insert(
        "x-opaque",
        HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text is allowed by http"),
    );
    let r = r.with_input(&format!(
        r#"("@method" "@authority" "@path" "@query" "x-opaque"){}"#,
        good_params()
    ));
    assert_eq!(r.err(), Some(SigError::Malformed));
}

#[test]
fn content_digest_twice_is_malformed() {
    let mut r = Req::post();
    let d = content_digest(&r.body);
    r.set("content-digest", &d);
    r.append("content-digest", &d);
    let r = r.with_input(&inner(&good_params()));
    assert_eq!(r.err(), Some(SigError::Malformed));
}

#[test]
fn labels() {
    let signed = Req::post().signed();
    let input = signed.headers["signature-input"]
        .to_str()
        .expect("a")
        .to_string();
    let sig = signed.headers["signature"].to_str().expect("a").to_string();

    let mut two = signed.clone();
    two.set(
        "signature-input",
        &format!("{input}, {}", input.replacen("sig1", "sig2", 1)),
    );
    assert_eq!(two.err(), Some(SigError::Malformed));

    let mut two_lines = signed.clone();
    two_lines.append("signature-input", &input.replacen("sig1", "sig2", 1));
    assert_eq!(two_lines.err(), Some(SigError::Malformed));

    let mut other = signed.clone();
    other.set("signature", &sig.replacen("sig1", "sig2", 1));
    assert_eq!(other.err(), Some(SigError::Malformed));

    let mut extra = signed.clone();
    extra.append("signature", &sig.replacen("sig1", "proxy", 1));
    assert_eq!(extra.err(), Some(SigError::Malformed));

    let mut same_twice = signed.clone();
    same_twice.append("signature-input", &input);
    assert_eq!(same_twice.err(), Some(SigError::Malformed));

    for header in ["signature", "signature-input"] {
        let mut missing = signed.clone();
        missing.headers.remove(header);
        assert_eq!(missing.err(), Some(SigError::Missing));
    }
    assert_eq!(Req::post().err(), Some(SigError::Missing));
}

#[test]
fn malformed_inputs() {
    let p = good_params();
    let cases = [
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest";sf){p}"#),
        format!(r#"("@method";req "@authority" "@path" "@query" "content-digest"){p}"#),
        format!(
            r#"("@method" "@authority" "@path" "@query" "content-digest" "@query-param";name="a"){p}"#
        ),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest" "@status"){p}"#),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest" "Content-Type"){p}"#),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest" "@method"){p}"#),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest" "x-missing"){p}"#),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest" content-type){p}"#),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest"){p};created=1"#),
        format!(
            r#"("@method" "@authority" "@path" "@query" "content-digest");created={NOW};keyid="k1";nonce="short""#
        ),
        format!(
            r#"("@method" "@authority" "@path" "@query" "content-digest");created={NOW};keyid="k1";nonce=12345678"#
        ),
        format!(
            r#"("@method" "@authority" "@path" "@query" "content-digest");created={NOW};keyid="k1";nonce="{}""#,
            "n".repeat(257)
        ),
        format!(r#""@method"{p}"#),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest"{p}"#),
        format!(r#"("@method" "@authority" "@path" "@query" "content-digest"){p},"#),
    ];
    for c in cases {
        let r = Req::post().with_input(&c);
        assert_eq!(r.err(), Some(SigError::Malformed), "{c}");
    }
    // 33 components.
    let mut r = Req::post();
    let mut list = String::from(r#""@method" "@authority" "@path" "@query" "content-digest""#);
    for i in 0..28 {
        r.set(&format!("x-h{i}"), "v");
        list.push_str(&format!(r#" "x-h{i}""#));
    }
    let r = r.with_input(&format!("({list}){p}"));
    assert_eq!(r.err(), Some(SigError::Malformed));
    // Over 8 KiB.
    let long = format!("{};x=\"{}\"", inner(&p), "a".repeat(MAX_FIELD_LEN));
    assert_eq!(
        Req::post().with_input(&long).err(),
        Some(SigError::Malformed)
    );
    // Non-ASCII in Signature-Input.
    let mut r = Req::post().signed();
    r.headers.insert(
        "signature-input",
        HeaderValue::from_bytes(b"sig1=(\"\xff\")").expect("obs-text"),
    );
    assert_eq!(r.err(), Some(SigError::Malformed));
}

#[test]
fn unknown_parameters_are_signed() {
    let r = Req::post().with_input(&inner(&format!(
        r#"{};foo="bar";tag="app";flag"#,
        good_params()
    )));
    assert!(r.verify().is_ok());
    let mut t = r.clone();
    let input = r.headers["signature-input"]
        .to_str()
        .expect("a")
        .replace("\"bar\"", "\"baz\"");
    t.set("signature-input", &input);
    assert_eq!(t.err(), Some(SigError::Mismatch));
    // Extra whitespace is not signed: the parameters are re-serialized canonically.
    let mut ws = r.clone();
    let input = r.headers["signature-input"]
        .to_str()
        .expect("a")
        .replace("(\"@method\" ", "(  \"@method\"   ");
    ws.set("signature-input", &input);
    assert!(ws.verify().is_ok());
}

#[test]
fn validate_component_and_sign_errors() {
    assert!(SignatureRules::validate_component("@method").is_ok());
    assert!(SignatureRules::validate_component("content-digest").is_ok());
    for bad in [
        "@status",
        "@query-param",
        "Content-Type",
        "",
        "a b",
        "x\"y",
        "@",
    ] {
        assert!(SignatureRules::validate_component(bad).is_err(), "{bad}");
    }
    let r = Req::post();
    let comps = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let err = sign(
        &r.view(),
        "k1",
        &secret(),
        &comps(&["@method", "x-absent"]),
        NOW,
        NONCE,
        "sig1",
    )
    .expect_err("absent");
    assert!(err.contains("x-absent") && err.contains("absent"), "{err}");
    assert!(sign(
        &r.view(),
        "k1",
        &secret(),
        &comps(&["@method", "@method"]),
        NOW,
        NONCE,
        "sig1"
    )
    .is_err());
    assert!(sign(
        &r.view(),
        "k1",
        &secret(),
        &comps(&["@method"]),
        NOW,
        "short",
        "sig1"
    )
    .is_err());
    assert!(sign(
        &r.view(),
        "k 1",
        &secret(),
        &comps(&["@method"]),
        NOW,
        NONCE,
        "sig1"
    )
    .is_err());
    assert!(sign(
        &r.view(),
        "k1",
        &secret(),
        &comps(&["@method"]),
        NOW,
        NONCE,
        "Sig1"
    )
    .is_err());
    assert!(sign(
        &r.view(),
        "k1",
        &[],
        &comps(&["@method"]),
        NOW,
        NONCE,
        "sig1"
    )
    .is_err());
    assert!(sign(
        &r.view(),
        "k1",
        &secret(),
        &comps(&["@method"]),
        u64::MAX,
        NONCE,
        "sig1"
    )
    .is_err());
}

#[test]
fn error_codes_are_distinct() {
    use SigError::*;
    let all = [
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
    ];
    let mut codes: Vec<&str> = all.iter().map(|e| e.code()).collect();
    assert!(codes.iter().all(|c| c.starts_with("signature_")));
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
    assert!(Malformed.message().contains("covered field is absent"));
}

#[test]
fn new_nonce_is_random_and_valid() {
    let (a, b) = (new_nonce().expect("urandom"), new_nonce().expect("urandom"));
    assert_ne!(a, b);
    assert_eq!(a.len(), 22);
    assert!(Req::post()
        .sign_with("k1", &DEFAULTS, NOW, &a)
        .verify()
        .is_ok());
}

// ----- keys file --------------------------------------------------------------------------

#[test]
fn keyring_parses_good_file() {
    let k = keyring();
    assert_eq!(k.len(), 3);
    assert!(!k.is_empty());
    assert!(k.active("k1", NOW).is_some());
    assert!(k.active("k-disabled", NOW).is_none());
    assert!(k.active("k-expired", NOW).is_none());
    assert!(k.active("k-expired", 1_500_000_000).is_some());
    let empty = SigningKeyring::parse("keys: []\n", &|_| false).expect("empty");
    assert!(empty.is_empty());
}

#[test]
fn keyring_reports_every_problem_without_secrets() {
    let good = STANDARD.encode([7u8; 32]);
    let short = STANDARD.encode([7u8; 16]);
    let raw = format!(
        r#"keys:
- {{id: short, consumer: c, secret: "base64:{short}", created: 2026-01-01}}
- {{id: notb64, consumer: c, secret: "base64:!!SECRETVALUE!!", created: 2026-01-01}}
- {{id: noprefix, consumer: c, secret: "{good}", created: 2026-01-01}}
- {{id: dup, consumer: c, secret: "base64:{good}", created: 2026-01-01}}
- {{id: dup, consumer: c, secret: "base64:{good}", created: 2026-01-01}}
- {{id: "bad/id'", consumer: c, secret: "base64:{good}", created: 2026-01-01}}
- {{id: tiered, consumer: c, tier: platinum, secret: "base64:{good}", created: 2026-01-01}}
- {{id: extra, consumer: c, color: red, secret: "base64:{good}", created: 2026-01-01}}
- {{id: numeric, consumer: c, secret: 12345678901234567890, created: 2026-01-01}}
- {{id: dates, consumer: "bad consumer", secret: "base64:{good}", created: yesterday, expires: 2020-01-01}}
- {{id: order, consumer: c, secret: "base64:{good}", created: 2026-01-01, expires: 2025-01-01}}
- {{consumer: c, created: 2026-01-01, disabled: "yes"}}
- just a string
"#
    );
    let problems = SigningKeyring::parse(&raw, &|t| t == "gold").expect_err("refused");
    let expect = [
        "keys[0].secret: must decode to at least 32 bytes",
        "keys[1].secret: is not valid standard base64",
        "keys[2].secret: must be \"base64:\"",
        "keys[4].id: duplicate of keys[3].id",
        "keys[5].id: must be",
        "keys[6].tier: is not a known tier",
        "keys[7]: unknown field `color`",
        "keys[8].secret: must be a string",
        "keys[9].consumer: must be",
        "keys[9].created: must be YYYY-MM-DD",
        "keys[10].expires: must be after created",
        "keys[11].id: missing",
        "keys[11].secret: missing",
        "keys[11].disabled: must be true or false",
        "keys[12]: must be a mapping",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "{e} not in {problems:#?}"
        );
    }
    let all = problems.join("\n");
    for secret in [&good, &short, "SECRETVALUE", "12345678901234567890"] {
        assert!(!all.contains(secret), "secret leaked: {all}");
    }
    let bad_yaml = format!("keys:\n- id: x\n  secret: \"base64:{good}\n  : [\n");
    let problems = SigningKeyring::parse(&bad_yaml, &|_| true).expect_err("not yaml");
    assert!(!problems.join("\n").contains(&good));
    assert!(SigningKeyring::parse("keys: 1\n", &|_| true).is_err());
    assert!(SigningKeyring::parse("other: []\n", &|_| true).is_err());
    assert!(SigningKeyring::parse("", &|_| true).is_err());
}

#[test]
fn debug_never_prints_secrets() {
    let k = keyring();
    let b64 = STANDARD.encode(secret());
    let bytes = format!("{:?}", secret());
    let entry = k.active("k1", NOW).expect("k1");
    for text in [
        format!("{k:?}"),
        format!("{entry:?}"),
        format!("{entry:#?}"),
    ] {
        assert!(
            !text.contains(&b64) && !text.contains(&bytes[1..20]),
            "{text}"
        );
    }
    assert!(format!("{entry:?}").contains("<redacted>"));
}

#[test]
fn signing_keys_reload() {
    let dir = std::env::temp_dir().join(format!("httpsig-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("signing-keys.yaml");
    std::fs::write(&path, keys_yaml()).expect("write");
    let keys = SigningKeys::load(path.clone(), vec!["gold".into()]).expect("load");
    assert_eq!(keys.current().len(), 3);
    assert!(keys.reload_if_changed().is_none());
    std::fs::write(&path, format!("{}  color: red\n", keys_yaml())).expect("write");
    let problems = keys
        .reload_if_changed()
        .expect("changed")
        .expect_err("refused");
    assert!(problems
        .iter()
        .any(|p| p.starts_with("keys[2]: unknown field")));
    assert_eq!(keys.current().len(), 3, "keys in force stay");
    assert!(
        keys.reload_if_changed().is_none(),
        "reported once per change"
    );
    let one = keys_yaml().lines().take(8).collect::<Vec<_>>().join("\n");
    std::fs::write(&path, format!("{one}\n")).expect("write");
    assert_eq!(keys.reload_if_changed(), Some(Ok(1)));
    assert!(!format!("{keys:?}").contains(&STANDARD.encode(secret())));
    std::fs::remove_file(&path).expect("rm");
    assert!(keys.reload().is_err());
    assert_eq!(keys.current().len(), 1);
    let _ = std::fs::remove_dir(&dir);
    assert!(SigningKeys::load(path, vec![]).is_err());
}

// ----- no panics --------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

const INTERESTING: &[u8] = b" \t\"()=;:,?*-\\/+=abczAZ0199@\x7f\x80\xff";

fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(out.len() + 1);
        let byte = if rng.below(4) == 0 {
            (rng.next() & 0xff) as u8
        } else {
            INTERESTING[rng.below(INTERESTING.len())]
        };
        match rng.below(5) {
            0 if pos < out.len() => out[pos] = byte,
            1 => out.insert(pos, byte),
            2 if pos < out.len() => {
                out.remove(pos);
            }
            3 => out.truncate(pos),
            _ => {
                let end = (pos + rng.below(16)).min(out.len());
                let chunk = out[pos..end].to_vec();
                out.splice(pos..pos, chunk);
            }
        }
    }
    out
}

#[test]
fn no_panic_on_garbled_headers() {
    let signed = Req::post().signed();
    let keys = keyring();
    let rules = SignatureRules::default();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut refused = 0;
    for i in 0..5000 {
        let mut r = signed.clone();
        let header = ["signature-input", "signature", "content-digest"][i % 3];
        let original = r.headers[header].as_bytes().to_vec();
        let garbled = mutate(&mut rng, &original);
        let Ok(value) = HeaderValue::from_bytes(&garbled) else {
            continue;
        };
        r.headers.insert(header, value);
        if rng.below(8) == 0 {
            r.body = mutate(&mut rng, &r.body);
        }
        if verify(&r.view(), &keys, &rules, NOW).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 1000);
    // Random bytes straight into the structured-field parser.
    for _ in 0..5000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| INTERESTING[rng.below(INTERESTING.len())])
            .collect();
        let _ = sfv::parse_dictionary(&String::from_utf8_lossy(&bytes));
    }
    // Garbled keys files.
    let yaml = keys_yaml();
    for _ in 0..300 {
        let garbled = mutate(&mut rng, yaml.as_bytes());
        let _ = SigningKeyring::parse(&String::from_utf8_lossy(&garbled), &|_| true);
    }
}

#[test]
fn structured_field_round_trip() {
    let input = r#"a=("x" "y\"z\\";p=?0;q=tok/en:1);n=-12;s="s";b=:AAE=:;t, b, c=?0, d=:: "#;
    let dict = sfv::parse_dictionary(input).expect("parses");
    assert_eq!(dict.len(), 4);
    let Some((_, sfv::Member::InnerList(list))) = dict.first() else {
        panic!("first member is an inner list");
    };
    assert_eq!(
        sfv::serialize_inner_list(list),
        r#"("x" "y\"z\\";p=?0;q=tok/en:1);n=-12;s="s";b=:AAE=:;t"#
    );
    for bad in [
        "a=1,",
        "a=1,,b=2",
        "A=1",
        "a=1;p=1;p=2",
        "a=1, a=2",
        "a=\"\\n\"",
        "a=:AAE:",
        "a=(1 2",
        "a=1.5",
        "a=?2",
        "a=1 b=2",
    ] {
        assert!(sfv::parse_dictionary(bad).is_err(), "{bad}");
    }
}
