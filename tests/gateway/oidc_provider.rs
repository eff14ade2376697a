//! The gateway against a real, certified OpenID Provider (panva's `oidc-provider`, see
//! `support/oidc.rs`) instead of the harness's stand-ins: discovery from the issuer alone,
//! its client_credentials JWTs and opaque tokens, introspection and revocation as that server
//! does them, `any` of its JWT and its introspection, and its signing-key rotation.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::oidc::{
    OidcProvider, BILLING_JWT, ORDERS_BRIEF_JWT, ORDERS_JWT, ORDERS_OPAQUE, SERVICE_CLIENT,
};
use crate::support::*;

/// `/jwt` takes the provider's JWTs, `/opaque` its opaque tokens (introspected), `/either`
/// any of the two.
const ROUTES: &str = "routes:
  - name: jwt
    match: { path_prefix: /jwt }
    upstream: echo
    auth: { jwt: oidc }
  - name: opaque
    match: { path_prefix: /opaque }
    upstream: echo
    auth: { introspection: oidc }
  - name: either
    match: { path_prefix: /either }
    upstream: echo
    auth: { any: [{ jwt: oidc }, { introspection: oidc }] }
";

/// A gateway with `provider` as provider `oidc`, in front of `echo`.
fn gateway(provider: Conf, echo: &Echo) -> Gateway {
    Gateway::start(&format!(
        "{providers}upstreams:\n  echo:\n    backends: [\"{origin}\"]\n{ROUTES}",
        providers = identity_providers([("oidc", provider)]),
        origin = echo.addr,
    ))
}

fn get(gw: &Gateway, path: &str, token: &str) -> reqwest::blocking::Response {
    client()
        .get(gw.url(path))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap()
}

/// Assert a 200 and return what reached the origin for it.
fn passed(resp: reqwest::blocking::Response, echo: &Echo) -> Echoed {
    let status = resp.status();
    assert_eq!(status, 200, "{}", resp.text().unwrap());
    echo.logged().pop().expect("the origin saw the request")
}

/// Assert a refusal with this status and error code.
fn refused(resp: reqwest::blocking::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    let body = error_body(&resp.text().unwrap());
    assert_eq!(body["error"], code, "{body}");
}

/// The JOSE header of a compact JWT.
fn jose_header(jwt: &str) -> Value {
    let segment = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn discovery_from_the_issuer_alone_finds_the_keys_and_the_introspection_endpoint() {
    let op = OidcProvider::start();
    let echo = Echo::start();
    // Neither a `jwks_uri` nor an introspection endpoint is configured: both come from
    // {issuer}/.well-known/openid-configuration.
    let gw = gateway(op.provider(), &echo);

    // A client_credentials JWT access token (RFC 9068, `typ: at+jwt`) for the orders API.
    let jwt = op.token(ORDERS_JWT);
    assert_eq!(jose_header(&jwt)["typ"], "at+jwt");
    let seen = passed(get(&gw, "/jwt/orders", &jwt), &echo);
    assert_eq!(seen.header_all("x-user-id"), [SERVICE_CLIENT.0], "sub");
    assert_eq!(seen.header_all("x-client-id"), [SERVICE_CLIENT.0]);
    assert_eq!(seen.header_all("x-user-scopes"), ["orders:read"]);
    assert_eq!(seen.header_all("x-auth-method"), ["jwt"]);
    assert_eq!(seen.header_all("x-auth-provider"), ["oidc"]);
    assert_eq!(seen.header("authorization"), None);
    // `any` of the provider's JWT and its introspection takes it too, without asking.
    let seen = passed(get(&gw, "/either/orders", &jwt), &echo);
    assert_eq!(seen.header_all("x-auth-method"), ["jwt"]);
    assert_eq!(
        op.introspection_calls(),
        0,
        "a JWT that verified was introspected"
    );

    // An opaque token from the same provider, introspected at the endpoint discovery named.
    // The provider's answer has no `sub` for a client_credentials token: the client stands in.
    let opaque = op.token(ORDERS_OPAQUE);
    assert_eq!(op.introspect(&opaque).1["active"], true);
    let seen = passed(get(&gw, "/opaque/orders", &opaque), &echo);
    assert_eq!(seen.header_all("x-user-id"), [SERVICE_CLIENT.0]);
    assert_eq!(seen.header_all("x-client-id"), [SERVICE_CLIENT.0]);
    assert_eq!(seen.header_all("x-user-scopes"), ["orders:read"]);
    assert_eq!(seen.header_all("x-auth-method"), ["introspection"]);

    // A JWT is not an opaque token the provider keeps, and an opaque one is no JWT.
    refused(get(&gw, "/opaque/orders", &jwt), 401, "token_inactive");
    refused(get(&gw, "/jwt/orders", &opaque), 401, "token_malformed");
    assert_eq!(echo.logged().len(), 3);
}

#[test]
fn i4_an_opaque_token_revoked_at_the_provider_is_refused_once_its_cached_answer_expires() {
    let op = OidcProvider::start();
    let echo = Echo::start();
    // An active answer cached for 3 s: long enough that the second request comes within it
    // on a busy machine too (at 1 s it once did not, in CI).
    let gw = gateway(op.provider().set("introspection.cache.ttl", "3s"), &echo);
    let token = op.token(ORDERS_OPAQUE);

    let calls = op.introspection_calls();
    passed(get(&gw, "/opaque/orders", &token), &echo);
    passed(get(&gw, "/opaque/orders", &token), &echo);
    assert_eq!(
        op.introspection_calls(),
        calls + 1,
        "the second request used the cached answer"
    );

    // Revoked by the client it was issued to (RFC 7009): the provider forgets it at once...
    op.revoke(&token);
    let (status, answer) = op.introspect(&token);
    assert_eq!((status, &answer), (200, &json!({"active": false})));
    // ...and the gateway once its cached answer is older than the 3 s TTL.
    std::thread::sleep(Duration::from_millis(3300));
    refused(get(&gw, "/opaque/orders", &token), 401, "token_inactive");
    assert_eq!(
        echo.logged().len(),
        2,
        "the revoked token never reached the origin"
    );
}

#[test]
fn i3_i6_jwt_or_introspection_gives_each_of_the_providers_tokens_its_own_answer_and_junk_never_opens_the_breaker(
) {
    let op = OidcProvider::start();
    let echo = Echo::start();
    let provider = op
        .provider()
        .set("introspection.introspect_jwts", true)
        // Two failed calls would open the breaker for everyone, for longer than this test.
        .set(
            "introspection.breaker",
            json!({"failures": 2, "open_for": "1m"}),
        )
        // So that the provider's one-second token is expired a second after its `exp`.
        .set("leeway", "0s");
    let gw = gateway(provider, &echo);

    // JWTs that verify under the provider's keys but are refused on their claims get their
    // own 401, and are never sent to introspection (which could only make them a 503).
    let brief = op.token(ORDERS_BRIEF_JWT);
    let billing = op.token(BILLING_JWT);
    let calls = op.introspection_calls();
    refused(
        get(&gw, "/either/orders", &billing),
        401,
        "token_wrong_audience",
    );
    std::thread::sleep(Duration::from_millis(2100));
    refused(get(&gw, "/either/orders", &brief), 401, "token_expired");
    assert_eq!(
        op.introspection_calls(),
        calls,
        "claim refusals were introspected"
    );

    // An opaque token passes through introspection.
    let seen = passed(get(&gw, "/either/orders", &op.token(ORDERS_OPAQUE)), &echo);
    assert_eq!(seen.header_all("x-auth-method"), ["introspection"]);
    assert_eq!(seen.header_all("x-user-id"), [SERVICE_CLIENT.0]);

    // A server that cannot introspect JWTs is expected to answer them `400
    // unsupported_token_type` (and the gateway then says so in its log). This one does not:
    // it never stores its JWT access tokens, so it answers every one `active: false`, exactly
    // as it answers a revoked token. With introspect_jwts its valid JWTs are therefore
    // refused as inactive: the setting is only for servers that introspect their JWTs.
    let jwt = op.token(ORDERS_JWT);
    assert_eq!(op.introspect(&jwt), (200, json!({"active": false})));
    let calls = op.introspection_calls();
    refused(get(&gw, "/either/orders", &jwt), 401, "token_inactive");
    assert_eq!(
        op.introspection_calls(),
        calls + 1,
        "asked once, then cached"
    );
    // The gateway cannot tell that from a revocation, but the log points at the setting.
    let log_path = gw.dir.path().join("gateway.stderr");
    assert!(
        gw.eventually(Duration::from_secs(5), || std::fs::read_to_string(
            &log_path
        )
        .unwrap_or_default()
        .contains("answered active: false for a JWT that verified")),
        "{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    // Tokens never issued: each one is asked about once and is inactive, a verdict on the
    // token that never counts toward the breaker.
    let calls = op.introspection_calls();
    for i in 0..20 {
        let junk = format!("never-issued-{i}");
        refused(get(&gw, "/either/orders", &junk), 401, "token_inactive");
    }
    assert_eq!(op.introspection_calls(), calls + 20);
    // A real caller's new token (so nothing is cached for it) still gets through.
    let seen = passed(get(&gw, "/either/orders", &op.token(ORDERS_OPAQUE)), &echo);
    assert_eq!(seen.header_all("x-auth-method"), ["introspection"]);
    assert_eq!(
        gw.metric("portcullis_introspection_breaker_state{provider=\"oidc\"}"),
        Some(0.0)
    );
    assert_eq!(echo.logged().len(), 2);
}

#[test]
fn k6_r6_after_the_provider_rotates_its_key_new_tokens_pass_at_once_and_old_ones_while_published() {
    let op = OidcProvider::start();
    let echo = Echo::start();
    let gw = gateway(op.provider(), &echo);
    let first_kid = jose_header(&op.token(ORDERS_JWT))["kid"].clone();
    let old = op.token(ORDERS_JWT);
    let old_unused = op.token(ORDERS_JWT);
    passed(get(&gw, "/jwt/orders", &old), &echo);

    // The provider makes a new key its signer and publishes it beside the old one.
    let kid = op.rotate();
    assert_ne!(json!(kid), first_kid);
    assert_eq!(
        op.published_kids(),
        [kid.clone(), first_kid.as_str().unwrap().to_string()]
    );
    let new = op.token(ORDERS_JWT);
    assert_eq!(jose_header(&new)["kid"], json!(kid));
    let fetches = op.jwks_fetches();

    // The unknown kid makes the gateway fetch the keys again, once, and the token passes.
    passed(get(&gw, "/jwt/orders", &new), &echo);
    assert_eq!(op.jwks_fetches(), fetches + 1);
    // Tokens signed with the old key still pass: it is still published.
    passed(get(&gw, "/jwt/orders", &old), &echo);
    passed(get(&gw, "/jwt/orders", &old_unused), &echo);
    assert_eq!(
        op.jwks_fetches(),
        fetches + 1,
        "the old key was in the set just fetched"
    );
}
