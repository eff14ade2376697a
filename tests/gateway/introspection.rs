//! Opaque tokens end to end: the real gateway asks a real RFC 7662 introspection server
//! (`support::introspection`), caches its answers, shares one call among concurrent requests,
//! and answers 503 — never 401, never an allow — when the server fails.

use crate::support::introspection::TestIntrospection;
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "portcullis-gw";
const SECRET: &str = "s3cret+with%odd chars";
const AUD: &str = "api://orders";

/// A gateway with provider `sso` (introspection only, `settings` YAML added under
/// `introspection:`), `/orders` needing its tokens and `/public` open.
struct Setup {
    server: TestIntrospection,
    _echo: Echo,
    gw: Gateway,
    _secrets: tempfile::TempDir,
}

/// An introspection-only provider for `server`, with `settings` (YAML, e.g. `timeout: 300ms`)
/// added under `introspection:`.
fn provider(server: &TestIntrospection, secret_file: &std::path::Path, settings: &str) -> Conf {
    Conf::from(json!({
        "issuer": server.issuer(),
        "audiences": [AUD],
        "claims": { "roles": "roles", "tenant": "tid" },
        "introspection": {
            "endpoint": server.endpoint(),
            "client_id": CLIENT_ID,
            "client_secret_file": secret_file,
        },
    }))
    .merge("introspection", Conf::parse(settings))
}

/// The `identity_providers:` section with `provider(..)` as `sso`.
fn provider_yaml(
    server: &TestIntrospection,
    secret_file: &std::path::Path,
    settings: &str,
) -> String {
    identity_providers([("sso", provider(server, secret_file, settings))])
}

/// A directory holding the client secret file (trailing newline, as editors leave it).
fn secret_file(secret: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("client-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    (secrets, secret_file)
}

fn setup_with(server: TestIntrospection, secret: &str, settings: &str) -> Setup {
    let (secrets, secret_file) = secret_file(secret);
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ introspection: sso, scopes: [orders:read] }}\n  - name: public\n    match: {{ path_prefix: /public }}\n    upstream: echo\n    auth: public\n",
        provider = provider_yaml(&server, &secret_file, settings),
        origin = echo.addr
    ));
    Setup {
        server,
        _echo: echo,
        gw,
        _secrets: secrets,
    }
}

fn setup(settings: &str) -> Setup {
    setup_with(
        TestIntrospection::start(CLIENT_ID, SECRET),
        SECRET,
        settings,
    )
}

fn get(gw: &Gateway, token: &str) -> reqwest::blocking::Response {
    client()
        .get(gw.url("/orders/1"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap()
}

fn active_fields() -> serde_json::Value {
    json!({
        "sub": "alice", "client_id": "web-app", "username": "alice@example.com",
        "scope": "orders:read orders:write", "roles": ["buyer"], "tid": "acme",
        "exp": now() + 300, "iat": now(), "aud": AUD, "token_type": "Bearer",
    })
}

fn refused(
    resp: reqwest::blocking::Response,
    status: u16,
    code: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(resp.status(), status);
    let headers = resp.headers().clone();
    let body = error_body(&resp.text().unwrap());
    assert_eq!(body["error"], code, "{body}");
    headers
}

#[test]
fn an_active_token_is_allowed_with_its_identity_and_the_answer_is_cached() {
    let s = setup("");
    s.server.activate("opaque-token-1", active_fields());
    let resp = client()
        .get(s.gw.url("/orders/1"))
        .header("Authorization", "Bearer opaque-token-1")
        .header("X-User-ID", "mallory")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header_all("x-user-id"), ["alice"]);
    assert_eq!(r.header_all("x-user-scopes"), ["orders:read,orders:write"]);
    assert_eq!(r.header_all("x-user-roles"), ["buyer"]);
    assert_eq!(r.header_all("x-tenant-id"), ["acme"]);
    assert_eq!(r.header_all("x-client-id"), ["web-app"]);
    assert_eq!(r.header_all("x-auth-method"), ["introspection"]);
    assert_eq!(r.header_all("x-auth-provider"), ["sso"]);
    assert_eq!(
        r.header("authorization"),
        None,
        "the token is not forwarded"
    );

    // How the gateway asked: its credentials by HTTP Basic (form-urlencoded first, RFC 6749
    // 2.3.1, which the odd characters of the secret exercise), with the hint.
    let seen = s.server.last_request().unwrap();
    assert_eq!(seen.auth, "client_secret_basic");
    assert_eq!(seen.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(seen.token_type_hint.as_deref(), Some("access_token"));
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );

    for _ in 0..5 {
        assert_eq!(get(&s.gw, "opaque-token-1").status(), 200);
    }
    assert_eq!(
        s.server.calls_for("opaque-token-1"),
        1,
        "answers are cached"
    );
    assert_eq!(
        s.gw.metric(r#"portcullis_introspection_cache_total{provider="sso",result="hit"}"#),
        Some(5.0)
    );
    assert_eq!(
        s.gw.metric(r#"portcullis_introspection_requests_total{outcome="active",provider="sso"}"#),
        Some(1.0)
    );
    // Scopes are enforced on the introspected identity.
    let mut fields = active_fields();
    fields["scope"] = json!("profile");
    s.server.activate("opaque-token-2", fields);
    refused(get(&s.gw, "opaque-token-2"), 403, "insufficient_scope");
}

#[test]
fn i1_i4_i8_inactive_tokens_get_401_and_the_answer_is_cached_briefly() {
    let s = setup("cache: { inactive_ttl: 2s }");
    let h = refused(get(&s.gw, "never-issued"), 401, "token_inactive");
    assert!(h["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(r#"error="invalid_token""#));
    refused(get(&s.gw, "never-issued"), 401, "token_inactive");
    assert_eq!(s.server.calls_for("never-issued"), 1, "negative caching");

    // Activated meanwhile: still refused until the inactive answer expires, then allowed.
    s.server.activate("never-issued", active_fields());
    refused(get(&s.gw, "never-issued"), 401, "token_inactive");
    assert!(s
        .gw
        .eventually(Duration::from_secs(5), || get(&s.gw, "never-issued")
            .status()
            == 200));
    assert_eq!(s.server.calls_for("never-issued"), 2);

    // I1: an inactive answer is inactive whatever else it claims.
    s.server.activate(
        "inactive-admin",
        json!({"active": false, "sub": "admin", "scope": "orders:read admin"}),
    );
    refused(get(&s.gw, "inactive-admin"), 401, "token_inactive");
    // `active: true` with an `exp` in the past is inactive.
    let mut fields = active_fields();
    fields["exp"] = json!(now() - 5);
    s.server.activate("expired-but-active", fields);
    refused(get(&s.gw, "expired-but-active"), 401, "token_inactive");
    // Not valid before a future `nbf`.
    let mut fields = active_fields();
    fields["nbf"] = json!(now() + 600);
    s.server.activate("not-yet", fields);
    refused(get(&s.gw, "not-yet"), 401, "token_inactive");
    // Not a b64token, or larger than `max_token_bytes`: never sent to the server.
    let calls = s.server.calls();
    refused(get(&s.gw, &"a".repeat(9000)), 401, "token_too_large");
    assert_eq!(s.server.calls(), calls);
    let before = s.server.calls();
    refused(get(&s.gw, "a\"b"), 401, "token_malformed");
    assert_eq!(s.server.calls(), before);
}

#[test]
fn a_thousand_concurrent_requests_with_one_new_token_make_one_call() {
    let s = setup("max_concurrent: 4\ntimeout: 10s");
    s.server.activate("burst-token", active_fields());
    // The server is slow, so every request arrives while the first call is in flight.
    s.server.set_delay(Duration::from_millis(1500));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = s.gw.url("/orders/1");
    let statuses: Vec<u16> = rt.block_on(async {
        let c = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let (c, url) = (c.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                match c
                    .get(&url)
                    .header("Authorization", "Bearer burst-token")
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", {
        let mut counts = std::collections::BTreeMap::new();
        for s in &statuses {
            *counts.entry(*s).or_insert(0) += 1;
        }
        counts
    });
    assert_eq!(s.server.calls_for("burst-token"), 1, "exactly one call");
    let joins =
        s.gw.metric(r#"portcullis_introspection_singleflight_joins_total{provider="sso"}"#)
            .unwrap_or(0.0);
    let hits =
        s.gw.metric(r#"portcullis_introspection_cache_total{provider="sso",result="hit"}"#)
            .unwrap_or(0.0);
    assert!(joins >= 1.0, "requests waited for the one call");
    assert_eq!(joins + hits, 999.0);
}

/// At most `max_concurrent` calls are in flight: six new tokens at once through two slots take
/// at least three rounds of the server's delay (a lower bound, so a slow machine cannot fail it).
#[test]
fn calls_in_flight_are_bounded_by_max_concurrent() {
    let s = setup("max_concurrent: 2\ntimeout: 10s");
    s.server.set_delay(Duration::from_millis(500));
    let tokens: Vec<String> = (0..6).map(|i| format!("parallel-{i}")).collect();
    for t in &tokens {
        s.server.activate(t, active_fields());
    }
    let started = Instant::now();
    let handles: Vec<_> = tokens
        .iter()
        .map(|t| {
            let (url, t) = (s.gw.url("/orders/1"), t.clone());
            std::thread::spawn(move || {
                client()
                    .get(url)
                    .header("Authorization", format!("Bearer {t}"))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1450),
        "six calls through two slots finished in {:?}",
        started.elapsed()
    );
    assert_eq!(s.server.calls(), 6);
}

/// A request that cannot get a slot in time is `busy`: the gateway's own limit, answered
/// without a call and not counted against the breaker (only the server's failures are).
/// One slot, a server slower than the timeout: the first request holds the slot until its
/// call times out, the second takes it next, the third gives up waiting.
#[test]
fn waiting_too_long_for_a_slot_is_busy_not_a_server_failure() {
    let s = setup("max_concurrent: 1\ntimeout: 500ms\nbreaker: { failures: 3 }");
    s.server.set_delay(Duration::from_secs(3));
    let handles: Vec<_> = ["first", "second", "third"]
        .into_iter()
        .map(|t| {
            s.server.activate(t, active_fields());
            let url = s.gw.url("/orders/1");
            let h = std::thread::spawn(move || {
                client()
                    .get(url)
                    .header("Authorization", format!("Bearer {t}"))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            });
            std::thread::sleep(Duration::from_millis(100));
            h
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 503);
    }
    let outcome = |o: &str| {
        s.gw.metric(&format!(
            r#"portcullis_introspection_requests_total{{outcome="{o}",provider="sso"}}"#
        ))
    };
    assert_eq!(outcome("busy"), Some(1.0));
    assert_eq!(outcome("timeout"), Some(2.0));
    assert_eq!(
        s.server.calls(),
        2,
        "the busy request never reached the server"
    );
    assert_eq!(
        s.gw.metric(r#"portcullis_introspection_breaker_state{provider="sso"}"#),
        Some(0.0),
        "two server failures of three allowed: busy did not count"
    );
}

#[test]
fn i4_a_cached_answer_ends_at_the_tokens_exp() {
    let s = setup("cache: { ttl: 5m }");
    let mut fields = active_fields();
    fields["exp"] = json!(now() + 2);
    s.server.activate("short-lived", fields);
    assert_eq!(get(&s.gw, "short-lived").status(), 200);
    assert_eq!(get(&s.gw, "short-lived").status(), 200);
    assert_eq!(s.server.calls_for("short-lived"), 1);
    // Past its exp the cached answer is gone: the gateway asks again, and the answer's exp
    // is in the past, so it is inactive.
    std::thread::sleep(Duration::from_millis(3100));
    refused(get(&s.gw, "short-lived"), 401, "token_inactive");
    assert_eq!(s.server.calls_for("short-lived"), 2);
}

#[test]
fn endpoint_down_is_503_and_jwt_routes_are_unaffected() {
    let idp = SigningIdp::new();
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    // The JWT provider and the introspection provider side by side.
    let providers = identity_providers([
        ("corp", idp.provider()),
        ("sso", provider(&server, &secret_file, "timeout: 300ms")),
    ]);
    let gw = Gateway::start(&format!(
        "{providers}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ introspection: sso }}\n  - name: jwt\n    match: {{ path_prefix: /jwt }}\n    upstream: echo\n    auth: {{ jwt: corp }}\n",
        echo.addr
    ));
    server.activate("opaque", active_fields());
    server.set_down(true);
    let h = refused(get(&gw, "opaque"), 503, "introspection_unavailable");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let resp = client()
        .get(gw.url("/jwt/1"))
        .header("Authorization", format!("Bearer {}", idp.good_token()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "JWT routes do not need introspection");
    assert!(gw
        .metric(r#"portcullis_introspection_requests_total{outcome="unreachable",provider="sso"}"#)
        .is_some());
    server.set_down(false);
    assert_eq!(get(&gw, "opaque").status(), 200, "failures are not cached");
}

#[test]
fn r10_a_slow_endpoint_times_out_and_trips_the_breaker() {
    let s = setup("timeout: 300ms\nbreaker: { failures: 3, open_for: 30s }");
    s.server.set_delay(Duration::from_secs(3));
    for i in 0..3 {
        let token = format!("slow{i}");
        s.server.activate(&token, active_fields());
        let started = Instant::now();
        refused(get(&s.gw, &token), 503, "introspection_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the timeout bounds the wait ({:?})",
            started.elapsed()
        );
    }
    assert_eq!(
        s.gw.metric(r#"portcullis_introspection_requests_total{outcome="timeout",provider="sso"}"#),
        Some(3.0)
    );
    // Tripped: later requests do not wait for the slow server at all (no call is made).
    let calls = s.server.calls();
    let resp = get(&s.gw, "slow9");
    assert_eq!(resp.status(), 503);
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1
    );
    let body = error_body(&resp.text().unwrap());
    assert!(
        body["message"].as_str().unwrap().contains("failing"),
        "{body}"
    );
    assert_eq!(s.server.calls(), calls);
}

/// Catalogue I6: random opaque tokens from one client are refused by the failed-auth guard
/// after a few 401s, so they cannot turn into a flood of calls to the authorization server.
#[test]
fn i6_random_opaque_tokens_cannot_amplify_onto_the_authorization_server() {
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "{provider}rate_limits:\n  failed_auth: {{ failures: 5, per: minute, block: 1m }}\nupstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ introspection: sso }}\n",
        echo.addr,
        provider = provider_yaml(&server, &secret_file, ""),
    ));
    let mut statuses = Vec::new();
    for i in 0..50 {
        statuses.push(
            get(&gw, &format!("random-{i}-{}", fastrand::u64(..)))
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..5], &[401; 5]);
    assert!(statuses[6..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(
        server.calls() <= 6,
        "{} calls reached the server",
        server.calls()
    );
}

#[test]
fn i3_r9_the_breaker_opens_after_repeated_failures_and_a_probe_closes_it() {
    let s = setup("breaker: { failures: 3, open_for: 1s }");
    s.server
        .set_override(Some((500, "application/json".into(), "{}".into())));
    for i in 0..3 {
        refused(
            get(&s.gw, &format!("t{i}")),
            503,
            "introspection_unavailable",
        );
    }
    assert_eq!(s.server.calls(), 3);
    assert_eq!(
        s.gw.metric(r#"portcullis_introspection_breaker_state{provider="sso"}"#),
        Some(1.0)
    );
    // Open: no call is made, the answer comes at once with Retry-After.
    let resp = get(&s.gw, "t9");
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = error_body(&resp.text().unwrap());
    assert_eq!(body["error"], "introspection_unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("failing"),
        "{body}"
    );
    assert_eq!(
        s.server.calls(),
        3,
        "nothing sent while the circuit is open"
    );
    assert!(s
        .gw
        .metric(r#"portcullis_introspection_requests_total{outcome="circuit_open",provider="sso"}"#)
        .is_some());

    // The server recovers; after open_for one probe goes through and closes the circuit.
    s.server.set_override(None);
    s.server.activate("good", active_fields());
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&s.gw, "good").status(), 200);
    assert_eq!(
        s.gw.metric(r#"portcullis_introspection_breaker_state{provider="sso"}"#),
        Some(0.0)
    );
    assert_eq!(
        get(&s.gw, "t9").status(),
        401,
        "calls flow again (inactive)"
    );
}

#[test]
fn i2_i3_r9_malformed_answers_are_a_dependency_failure_not_a_401() {
    let s = setup("breaker: { failures: 100 }");
    let cases = [
        (
            200,
            "application/json",
            r#"{"sub":"alice","exp":9999999999}"#,
        ),
        (
            200,
            "application/json",
            r#"{"active":"true","sub":"alice"}"#,
        ),
        (200, "application/json", r#"{"active":1}"#),
        (200, "text/html", "<html><body>Login</body></html>"),
        (200, "application/json", r#"{"active":true,"exp":"soon"}"#),
        (200, "application/json", r#"{"active":true,"active":false}"#),
        (500, "application/json", "{}"),
        (302, "text/html", ""),
    ];
    for (i, (status, ctype, body)) in cases.iter().enumerate() {
        s.server
            .set_override(Some((*status, ctype.to_string(), body.to_string())));
        let token = format!("tok{i}");
        refused(get(&s.gw, &token), 503, "introspection_unavailable");
    }
    assert_eq!(
        s.gw.metric(
            r#"portcullis_introspection_requests_total{outcome="invalid_response",provider="sso"}"#
        ),
        Some(6.0)
    );
    assert_eq!(
        s.gw.metric(
            r#"portcullis_introspection_requests_total{outcome="bad_status",provider="sso"}"#
        ),
        Some(2.0)
    );
}

#[test]
fn a_wrong_client_secret_is_503_with_a_log_line_naming_the_cause() {
    let s = setup_with(
        TestIntrospection::start(CLIENT_ID, SECRET),
        "not-the-secret",
        "",
    );
    s.server.activate("opaque", active_fields());
    refused(get(&s.gw, "opaque"), 503, "introspection_unavailable");
    let log = std::fs::read_to_string(s.gw.dir.path().join("gateway.stderr")).unwrap();
    assert!(
        log.contains("refused the gateway's client credentials"),
        "{log}"
    );
    assert!(
        !log.contains("not-the-secret"),
        "the secret is never logged"
    );
    assert!(!log.contains("opaque"), "the token is never logged");
    assert_eq!(
        s.gw.metric(
            r#"portcullis_introspection_requests_total{outcome="unauthorized",provider="sso"}"#
        ),
        Some(1.0),
        "counted as a refusal of the gateway's credentials, not as an unreachable server"
    );
}

#[test]
fn i7_wrong_issuer_or_audience_in_the_answer_is_refused() {
    let s = setup("");
    let mut fields = active_fields();
    fields["iss"] = json!("https://someone-else.example");
    s.server.activate("foreign-iss", fields);
    refused(get(&s.gw, "foreign-iss"), 401, "token_wrong_issuer");
    let mut fields = active_fields();
    fields["aud"] = json!(["api://billing"]);
    s.server.activate("foreign-aud", fields);
    refused(get(&s.gw, "foreign-aud"), 401, "token_wrong_audience");
    let mut fields = active_fields();
    fields["iss"] = json!(s.server.issuer());
    s.server.activate("own-iss", fields);
    assert_eq!(get(&s.gw, "own-iss").status(), 200);
    // Answers refused on their claims are counted apart from inactive tokens and failures,
    // and cached like inactive ones: asking again does not call the server again.
    assert_eq!(
        s.gw.metric(r#"portcullis_introspection_requests_total{outcome="refused",provider="sso"}"#),
        Some(2.0)
    );
    let calls = s.server.calls();
    refused(get(&s.gw, "foreign-iss"), 401, "token_wrong_issuer");
    assert_eq!(s.server.calls(), calls);
}

#[test]
fn keycloak_style_discovery_finds_the_endpoint_and_client_secret_post_works() {
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    server.enable_discovery(None);
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    let provider = identity_providers([(
        "sso",
        provider(&server, &secret_file, "client_auth: client_secret_post")
            .remove("introspection.endpoint")
            .set("introspection.discovery", true),
    )]);
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ introspection: sso }}\n",
        echo.addr
    ));
    // A client-credentials token: no `sub`, the client stands in.
    server.activate(
        "svc-token",
        json!({"client_id": "billing-job", "scope": "orders:read", "exp": now() + 60}),
    );
    let resp = get(&gw, "svc-token");
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header_all("x-user-id"), ["billing-job"]);
    assert_eq!(r.header_all("x-client-id"), ["billing-job"]);
    let seen = server.last_request().unwrap();
    assert_eq!(seen.auth, "client_secret_post");
    assert_eq!(server.discovery_calls(), 1);
    assert_eq!(get(&gw, "svc-token").status(), 200);
    assert_eq!(server.discovery_calls(), 1, "the endpoint is remembered");

    // A failing endpoint is looked up again: the provider may have moved it.
    server.set_override(Some((404, "text/plain".into(), "gone".into())));
    server.activate(
        "second-token",
        json!({"client_id": "billing-job", "exp": now() + 60}),
    );
    assert_eq!(get(&gw, "second-token").status(), 503);
    server.set_override(None);
    assert_eq!(get(&gw, "second-token").status(), 200);
    assert_eq!(
        server.discovery_calls(),
        2,
        "rediscovered after the failure"
    );
}

#[test]
fn a_discovery_document_without_a_usable_endpoint_is_503() {
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    let provider = identity_providers([(
        "sso",
        provider(&server, &secret_file, "")
            .remove("introspection.endpoint")
            .set("introspection.discovery", true),
    )]);
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ introspection: sso }}\n",
        echo.addr
    ));
    server.activate("svc-token", active_fields());
    // The server publishes no discovery document (404).
    refused(get(&gw, "svc-token"), 503, "introspection_unavailable");
    assert_eq!(server.calls(), 0);
    assert_eq!(
        gw.metric(
            r#"portcullis_introspection_requests_total{outcome="bad_status",provider="sso"}"#
        ),
        Some(1.0)
    );
    // Once it does, the next request finds the endpoint.
    server.enable_discovery(None);
    assert_eq!(get(&gw, "svc-token").status(), 200);
}

#[test]
fn introspect_jwts_catches_a_jwt_the_authorization_server_revoked() {
    let idp = SigningIdp::new();
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    let provider = identity_providers([(
        "corp",
        idp.provider().set(
            "introspection",
            json!({
                "endpoint": server.endpoint(),
                "client_id": CLIENT_ID,
                "client_secret_file": secret_file,
                "introspect_jwts": true,
                "cache": { "ttl": "2s" },
            }),
        ),
    )]);
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: jwt\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ jwt: corp }}\n",
        echo.addr
    ));
    let token = idp.good_token();
    server.activate(&token, json!({"sub": "alice"}));
    let resp = get(&gw, &token);
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(
        r.header_all("x-auth-method"),
        ["jwt"],
        "the JWT names the caller"
    );
    assert_eq!(get(&gw, &token).status(), 200);
    assert_eq!(server.calls_for(&token), 1, "one call per token per TTL");
    // Revoked at the authorization server: refused once the cached answer (2 s) is gone.
    server.deactivate(&token);
    assert!(gw.eventually(Duration::from_secs(6), || get(&gw, &token).status() == 401));
    refused(get(&gw, &token), 401, "token_inactive");
    // A JWT that does not verify is never sent to the authorization server.
    let calls = server.calls();
    refused(
        get(&gw, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
        401,
        "token_algorithm_not_allowed",
    );
    assert_eq!(server.calls(), calls);
}

#[test]
fn i3_i6_a_400_about_the_token_is_inactive_and_junk_never_opens_the_breaker() {
    let s = setup("breaker: { failures: 3, open_for: 30s }");
    // A server that cannot introspect some tokens says so with an OAuth error (real servers
    // answer JWTs this way): the token is not active.
    s.server.set_override(Some((
        400,
        "application/json".into(),
        r#"{"error":"unsupported_token_type","error_description":"JWTs cannot be introspected"}"#
            .into(),
    )));
    for i in 0..10 {
        refused(get(&s.gw, &format!("junk.{i}.jwt")), 401, "token_inactive");
    }
    // Cached like any inactive answer: the same token again is not asked about.
    refused(get(&s.gw, "junk.0.jwt"), 401, "token_inactive");
    assert_eq!(s.server.calls_for("junk.0.jwt"), 1);
    // Ten refusals later the breaker is still closed: a real user's token is asked about.
    s.server.set_override(None);
    s.server.activate("user-token", active_fields());
    let resp = get(&s.gw, "user-token");
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    // A 400 about the gateway's own request is its configuration, not the caller's: 503.
    s.server.set_override(Some((
        400,
        "application/json".into(),
        r#"{"error":"invalid_client"}"#.into(),
    )));
    refused(
        get(&s.gw, "another-token"),
        503,
        "introspection_unavailable",
    );
}

#[test]
fn i3_a_jwt_of_the_provider_refused_on_its_claims_gets_its_own_401_and_is_never_introspected() {
    let idp = SigningIdp::new();
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    // A server that cannot introspect JWTs, as real ones answer them.
    server.set_override(Some((
        500,
        "application/json".into(),
        r#"{"error":"server_error"}"#.into(),
    )));
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    let provider = identity_providers([(
        "corp",
        idp.provider().set(
            "introspection",
            json!({"endpoint": server.endpoint(), "client_id": CLIENT_ID,
                   "client_secret_file": secret_file}),
        ),
    )]);
    // Listed introspection first: the JWT check of the same provider still comes first.
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: both\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ any: [{{ introspection: corp }}, {{ jwt: corp }}] }}\n",
        echo.addr
    ));
    let claims = |extra: serde_json::Value| {
        let mut c = json!({"iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "alice",
                           "iat": now() - 10, "exp": now() + 300});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        idp.token(c)
    };
    for (token, code) in [
        (claims(json!({"exp": now() - 120})), "token_expired"),
        (
            claims(json!({"aud": "someone-else"})),
            "token_wrong_audience",
        ),
        (
            claims(json!({"iss": "https://elsewhere"})),
            "token_wrong_issuer",
        ),
        (claims(json!({"nbf": now() + 600})), "token_not_yet_valid"),
    ] {
        refused(get(&gw, &token), 401, code);
        assert_eq!(server.calls_for(&token), 0, "{code}: sent to introspection");
    }
    // A valid JWT passes without introspection; an opaque token still goes to it (and the
    // server's failure is then a 503, the dependency's).
    assert_eq!(get(&gw, &idp.good_token()).status(), 200);
    refused(get(&gw, "opaque-token-1"), 503, "introspection_unavailable");
    assert_eq!(server.calls_for("opaque-token-1"), 1);
}

#[test]
fn introspect_jwts_against_a_server_that_cannot_introspect_jwts_says_so_in_the_log() {
    let idp = SigningIdp::new();
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    server.set_override(Some((
        400,
        "application/json".into(),
        r#"{"error":"unsupported_token_type"}"#.into(),
    )));
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    let provider = identity_providers([(
        "corp",
        idp.provider().set(
            "introspection",
            json!({"endpoint": server.endpoint(), "client_id": CLIENT_ID,
                   "client_secret_file": secret_file, "introspect_jwts": true}),
        ),
    )]);
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: jwt\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ jwt: corp }}\n",
        echo.addr
    ));
    // The server's answer is the answer: the JWT is not active...
    refused(get(&gw, &idp.good_token()), 401, "token_inactive");
    // ...and the log says why, and what to change.
    let log_path = gw.dir.path().join("gateway.stderr");
    assert!(
        gw.eventually(Duration::from_secs(5), || std::fs::read_to_string(
            &log_path
        )
        .unwrap_or_default()
        .contains("cannot introspect JWTs")),
        "{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("set introspect_jwts: false"), "{log}");
}

#[test]
fn log_lines_say_what_happened_unreachable_an_error_status_or_an_answer_about_the_token() {
    let server = TestIntrospection::start(CLIENT_ID, SECRET);
    let (_secrets, secret_file) = secret_file(SECRET);
    let echo = Echo::start();
    let provider = identity_providers([(
        "sso",
        provider(&server, &secret_file, "")
            .remove("introspection.endpoint")
            .set("introspection.discovery", true),
    )]);
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ introspection: sso }}\n",
        echo.addr
    ));
    let log_path = gw.dir.path().join("gateway.stderr");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Each step's line is the first one after what was logged before it.
    let mut seen = 0;
    let mut next_lines = |wanted: &str| -> String {
        assert!(
            gw.eventually(Duration::from_secs(5), || log()[seen..].contains(wanted)),
            "no {wanted:?} in:\n{}",
            &log()[seen..]
        );
        let all = log();
        let new = all[seen..].to_string();
        seen = all.len();
        new
    };
    server.activate("svc-token", active_fields());

    // The provider is down: discovery says it is unreachable, not that the document lacks
    // an endpoint.
    server.set_down(true);
    refused(get(&gw, "svc-token"), 503, "introspection_unavailable");
    let lines = next_lines("OIDC discovery failed: the provider is unreachable");
    assert!(!lines.contains("no usable"), "{lines}");
    assert!(!lines.contains("introspection_endpoint"), "{lines}");

    // Up, but without a discovery document: the status it answered.
    server.set_down(false);
    refused(get(&gw, "svc-token"), 503, "introspection_unavailable");
    next_lines("OIDC discovery failed: the discovery document's address answered 404");

    // Discovered; then the endpoint itself answers about a token: that answer, not an outage.
    server.enable_discovery(None);
    assert_eq!(get(&gw, "svc-token").status(), 200);
    server.set_override(Some((
        400,
        "application/json".into(),
        r#"{"error":"unsupported_token_type"}"#.into(),
    )));
    refused(get(&gw, "other-token"), 401, "token_inactive");
    let lines = next_lines("the introspection endpoint answered 400 unsupported_token_type");
    assert!(!lines.contains("did not answer"), "{lines}");
    assert!(!lines.contains("unreachable"), "{lines}");

    // The endpoint down after discovery: unreachable, said of the endpoint.
    server.set_override(None);
    server.set_down(true);
    refused(get(&gw, "third-token"), 503, "introspection_unavailable");
    let lines = next_lines("the introspection endpoint is unreachable");
    assert!(!lines.contains("no usable"), "{lines}");
    assert!(!log().contains("svc-token"), "tokens are never logged");
}
