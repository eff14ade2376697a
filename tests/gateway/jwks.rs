//! Keys from a `jwks_uri`: rotation, floods of unknown `kid`s, outages and recovery, against a
//! real JWKS server on loopback that counts its requests.

use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::json;
use std::time::Duration;

const ISS: &str = "https://idp.test";
const AUD: &str = "api://orders";

struct Key {
    kid: String,
    rsa: Rsa<Private>,
}

impl Key {
    fn new(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            rsa: Rsa::generate(2048).unwrap(),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        json!({
            "kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(self.rsa.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(self.rsa.e().to_vec()),
        })
    }

    fn token_with_kid(&self, kid: &str, sub: &str) -> String {
        self.token_from(ISS, kid, sub)
    }

    fn token_from(&self, iss: &str, kid: &str, sub: &str) -> String {
        let pem = PKey::from_rsa(self.rsa.clone())
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": iss, "aud": AUD, "sub": sub, "iat": now, "exp": now + 600});
        encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
    }

    fn token(&self, sub: &str) -> String {
        self.token_with_kid(&self.kid, sub)
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

fn gateway(idp: &TestIdp, echo: &Echo, jwks_settings: &str) -> Gateway {
    let keys = format!("      jwks_uri: {}\n", idp.jwks_uri());
    gateway_with(ISS, &keys, echo, jwks_settings)
}

/// A gateway whose provider finds its keys through the IdP's discovery document.
fn discovery_gateway(idp: &TestIdp, echo: &Echo, jwks_settings: &str) -> Gateway {
    gateway_with(
        &idp.issuer(),
        "      oidc_discovery: true\n",
        echo,
        jwks_settings,
    )
}

fn gateway_with(issuer: &str, keys: &str, echo: &Echo, jwks_settings: &str) -> Gateway {
    Gateway::start(&format!(
        r#"identity_providers:
  corp:
    issuer: {issuer}
    audiences: [{AUD}]
    algorithms: [RS256]
    keys:
{keys}    jwks:
{jwks_settings}
upstreams:
  echo:
    backends: ["{origin}"]
routes:
  - name: orders
    match: {{ path_prefix: /orders }}
    upstream: echo
    auth: {{ jwt: corp }}
"#,
        origin = echo.addr
    ))
}

fn status_with(gw: &Gateway, token: &str) -> (u16, serde_json::Value) {
    let resp = client()
        .get(gw.url("/orders/1"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[test]
fn rotation_is_picked_up_with_exactly_one_refetch() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = TestIdp::start(jwks(&[&k1]));
    let echo = Echo::start();
    let gw = gateway(&idp, &echo, "      refresh: 1h\n      cooldown: 200ms\n");
    assert_eq!(idp.fetch_count(), 1, "keys are fetched once at start-up");
    assert_eq!(status_with(&gw, &k1.token("alice")).0, 200);

    idp.set_jwks(jwks(&[&k1, &k2]));
    std::thread::sleep(Duration::from_millis(250));
    let (status, body) = status_with(&gw, &k2.token("bob"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.fetch_count(), 2, "one refetch for the new kid");
    // Known keys and cached tokens cost the identity provider nothing.
    for _ in 0..5 {
        assert_eq!(status_with(&gw, &k2.token("bob")).0, 200);
        assert_eq!(status_with(&gw, &k1.token("carol")).0, 200);
    }
    assert_eq!(idp.fetch_count(), 2);
    assert!(gw
        .metrics()
        .contains(r#"portcullis_jwks_fetches_total{outcome="success",provider="corp"} 2"#));
}

#[test]
fn a_flood_of_unknown_kids_costs_at_most_one_fetch_per_cooldown() {
    let k1 = Key::new("k1");
    let idp = TestIdp::start(jwks(&[&k1]));
    let echo = Echo::start();
    let gw = gateway(&idp, &echo, "      refresh: 1h\n      cooldown: 2s\n");
    // Let the start-up fetch's cooldown pass, so the flood is free to cause a fetch.
    std::thread::sleep(Duration::from_millis(2100));
    let before = idp.fetch_count();
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let url = gw.url("/orders/1");
            let tokens: Vec<String> = (0..8)
                .map(|i| k1.token_with_kid(&format!("random-{w}-{i}"), "mallory"))
                .collect();
            std::thread::spawn(move || {
                let c = client();
                tokens
                    .iter()
                    .map(|t| {
                        let r = c
                            .get(&url)
                            .header("Authorization", format!("Bearer {t}"))
                            .send()
                            .unwrap();
                        let status = r.status().as_u16();
                        let v: serde_json::Value = r.json().unwrap();
                        (status, v["error"].as_str().unwrap_or("").to_string())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for w in workers {
        for (status, code) in w.join().unwrap() {
            assert_eq!((status, code.as_str()), (401, "token_unknown_key"));
        }
    }
    let extra = idp.fetch_count() - before;
    if started.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            extra, 1,
            "32 random kids within one cooldown: exactly one fetch"
        );
    } else {
        assert!(extra <= 2, "{extra} fetches in {:?}", started.elapsed());
    }
    assert!(echo.received().is_empty());
}

#[test]
fn an_outage_serves_last_good_keys_until_max_stale_then_fails_closed_and_recovers() {
    let k1 = Key::new("k1");
    let idp = TestIdp::start(jwks(&[&k1]));
    let echo = Echo::start();
    let gw = gateway(
        &idp,
        &echo,
        "      refresh: 300ms\n      min_refresh: 300ms\n      cooldown: 200ms\n      max_stale: 2s\n",
    );
    let token = k1.token("alice");
    assert_eq!(status_with(&gw, &token).0, 200);

    idp.set_status(500);
    // Still inside max_stale: the last good keys serve, new tokens too.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status_with(&gw, &k1.token("bob")).0, 200);

    // Past max_stale: fail closed with 503, not 401 and not an allow, even for a token
    // that was verified (and cached) before.
    assert!(
        gw.eventually(Duration::from_secs(10), || status_with(&gw, &token).0
            == 503)
    );
    let resp = client()
        .get(gw.url("/orders/1"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], "auth_unavailable");
    let ready = client().get(gw.admin_url("/health/ready")).send().unwrap();
    assert_eq!(
        ready.status(),
        503,
        "not ready while a provider has no usable keys"
    );
    assert!(gw
        .metrics()
        .contains(r#"portcullis_jwks_fetches_total{outcome="bad_status",provider="corp"}"#));

    // The provider comes back: so do the keys.
    idp.set_status(200);
    assert!(
        gw.eventually(Duration::from_secs(10), || status_with(&gw, &token).0
            == 200)
    );
    assert_eq!(
        client()
            .get(gw.admin_url("/health/ready"))
            .send()
            .unwrap()
            .status(),
        200
    );
    // Only the requests made while keys were good reached the origin.
    assert!(echo.received().len() >= 2);
}

#[test]
fn oidc_discovery_finds_the_jwks() {
    let k1 = Key::new("k1");
    let idp = TestIdp::start(jwks(&[&k1]));
    idp.enable_discovery();
    let echo = Echo::start();
    let issuer = idp.issuer();
    let gw = discovery_gateway(&idp, &echo, "");
    assert_eq!(
        idp.fetch_count(),
        1,
        "the JWKS named by discovery was fetched"
    );
    let token = k1.token_from(&issuer, "k1", "dora");
    let resp = client()
        .get(gw.url("/orders/1"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header("x-user-id"), Some("dora"));
}

#[test]
fn an_unknown_kid_is_remembered_only_until_the_next_refetch_may_happen() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = TestIdp::start(jwks(&[&k1]));
    let echo = Echo::start();
    // A cooldown long enough that the checks inside it finish in time on a busy machine.
    let gw = gateway(&idp, &echo, "      refresh: 1h\n      cooldown: 3s\n");
    std::thread::sleep(Duration::from_millis(3100));
    let token = k2.token("bob");

    // k2 is not published yet: one refetch, still unknown.
    let before = idp.fetch_count();
    let refetched = std::time::Instant::now();
    assert_eq!(status_with(&gw, &token).1["error"], "token_unknown_key");
    assert_eq!(idp.fetch_count(), before + 1);

    // Published now, but within the cooldown the gateway neither fetches nor accepts it...
    idp.set_jwks(jwks(&[&k1, &k2]));
    for _ in 0..2 {
        assert_eq!(status_with(&gw, &token).0, 401);
    }
    assert!(
        refetched.elapsed() < Duration::from_secs(3),
        "the checks took too long"
    );
    assert_eq!(
        idp.fetch_count(),
        before + 1,
        "no fetch within the cooldown"
    );

    // ...and once the cooldown is over, the next token with it causes one fetch and passes.
    assert!(
        gw.eventually(Duration::from_secs(10), || status_with(&gw, &token).0
            == 200)
    );
    assert_eq!(idp.fetch_count(), before + 2);
}

fn fetches(gw: &Gateway, outcome: &str) -> f64 {
    gw.metric(&format!(
        r#"portcullis_jwks_fetches_total{{outcome="{outcome}",provider="corp"}}"#
    ))
    .unwrap_or(0.0)
}

#[test]
fn failed_jwks_fetches_are_counted_by_outcome_and_the_last_good_keys_keep_serving() {
    let k1 = Key::new("k1");
    let good = jwks(&[&k1]);
    let idp = TestIdp::start(good.clone());
    let echo = Echo::start();
    let gw = gateway(
        &idp,
        &echo,
        "      refresh: 200ms\n      min_refresh: 200ms\n      cooldown: 100ms\n      timeout: 300ms\n      max_bytes: 2048\n",
    );
    let hmac_only = r#"{"keys":[{"kty":"oct","kid":"s","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]}"#;
    let padded = format!(
        r#"{{"keys":[{}],"padding":"{}"}}"#,
        k1.jwk(),
        "x".repeat(4096)
    );
    let scenarios: [(&str, String, Duration); 4] = [
        ("invalid", "this is not JSON".into(), Duration::ZERO),
        ("no_usable_keys", hmac_only.into(), Duration::ZERO),
        ("too_large", padded, Duration::ZERO),
        ("timeout", good.clone(), Duration::from_secs(1)),
    ];
    for (outcome, body, delay) in scenarios {
        assert_eq!(fetches(&gw, outcome), 0.0);
        {
            let mut s = idp.state.lock().unwrap();
            s.jwks = body;
            s.delay = delay;
        }
        assert!(
            gw.eventually(Duration::from_secs(10), || fetches(&gw, outcome) >= 1.0),
            "no fetch counted as {outcome}"
        );
        // The keys fetched before keep verifying, new tokens too.
        let (status, body) = status_with(&gw, &k1.token(outcome));
        assert_eq!(status, 200, "{outcome}: {body}");
        assert_eq!(
            gw.metric(r#"portcullis_jwt_keys{provider="corp"}"#),
            Some(1.0),
            "{outcome}: the last good key set stays loaded"
        );
        {
            let mut s = idp.state.lock().unwrap();
            s.jwks = good.clone();
            s.delay = Duration::ZERO;
        }
        let successes = fetches(&gw, "success");
        assert!(
            gw.eventually(Duration::from_secs(10), || fetches(&gw, "success")
                > successes)
        );
    }
    assert!(echo.received().len() >= 4);
}

#[test]
fn a_discovery_document_naming_an_unsafe_jwks_address_is_refused() {
    let k1 = Key::new("k1");
    let idp = TestIdp::start(jwks(&[&k1]));
    idp.enable_discovery();
    let echo = Echo::start();
    let issuer = idp.issuer();
    let gw = discovery_gateway(
        &idp,
        &echo,
        "      refresh: 200ms\n      min_refresh: 200ms\n      cooldown: 100ms\n",
    );
    let token = k1.token_from(&issuer, "k1", "dora");
    assert_eq!(status_with(&gw, &token).0, 200);

    // The provider "moves" its keys: the JWKS fails, so discovery is asked again, and now
    // names a plain-HTTP address off this host, which is never fetched.
    let before = idp.fetch_count();
    idp.state.lock().unwrap().discovery = Some(
        json!({"issuer": issuer, "jwks_uri": "http://keys.example.com/jwks.json"}).to_string(),
    );
    idp.set_status(500);
    assert!(gw.eventually(Duration::from_secs(10), || fetches(
        &gw,
        "discovery_invalid"
    ) >= 1.0));
    let garbage_fetches = idp.fetch_count();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        idp.fetch_count(),
        garbage_fetches,
        "no JWKS fetch while discovery is invalid"
    );
    assert!(garbage_fetches > before);
    assert_eq!(
        status_with(&gw, &token).0,
        200,
        "last good keys keep serving"
    );

    // Discovery is fixed: keys are fetched from the right place again.
    idp.enable_discovery();
    idp.set_status(200);
    let successes = fetches(&gw, "success");
    assert!(
        gw.eventually(Duration::from_secs(10), || fetches(&gw, "success")
            > successes)
    );
}

#[test]
fn jwks_age_grows_between_refreshes_and_keys_are_counted() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = TestIdp::start(jwks(&[&k1, &k2]));
    let echo = Echo::start();
    let gw = gateway(&idp, &echo, "      refresh: 1h\n");
    let series = r#"portcullis_jwks_age_seconds{provider="corp"}"#;
    let first = gw.metric(series).expect("age reported");
    std::thread::sleep(Duration::from_millis(1200));
    let later = gw.metric(series).expect("age reported");
    assert!(later >= first + 1.0, "age {first} then {later}");
    assert_eq!(
        gw.metric(r#"portcullis_jwt_keys{provider="corp"}"#),
        Some(2.0)
    );
}

#[test]
fn k6_r6_a_key_rotated_right_after_a_fetch_is_fetched_at_once_and_floods_stay_bounded() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = TestIdp::start(jwks(&[&k1]));
    let echo = Echo::start();
    // A long cooldown: everything below happens inside the one after the start-up fetch.
    let gw = gateway(&idp, &echo, "      refresh: 1h\n      cooldown: 30s\n");
    let before = idp.fetch_count();
    // The provider rotates to k2 a moment after the gateway fetched its keys.
    idp.set_jwks(jwks(&[&k1, &k2]));
    let (status, body) = status_with(&gw, &k2.token("erin"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        idp.fetch_count(),
        before + 1,
        "the first unknown kid after a scheduled fetch refetches at once"
    );
    // That fetch was caused by a kid: now the cooldown holds, for made-up kids and new keys.
    for i in 0..5 {
        let (status, body) = status_with(&gw, &k1.token_with_kid(&format!("made-up-{i}"), "x"));
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_unknown_key"))
        );
    }
    assert_eq!(
        idp.fetch_count(),
        before + 1,
        "no more fetches within the cooldown"
    );
    assert!(echo.received().len() == 1);
}
