//! The revocation list end to end: `/admin/revocations` on the real gateway, JWTs and
//! introspected tokens refused once revoked, the list kept across a restart in its state file,
//! and shared by two gateways through a real `redis-server`.

use crate::support::introspection::TestIntrospection;
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Files that outlive one gateway process: the admin token and the state file.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
        Self { dir }
    }

    fn revocation_yaml(&self, backend: &str) -> String {
        format!(
            "revocation:\n  admin_token_file: {}\n{backend}",
            self.dir.path().join("admin-token").display()
        )
    }

    fn state_file(&self) -> String {
        format!(
            "  state_file: {}\n",
            self.dir.path().join("state/revocations.json").display()
        )
    }
}

/// A gateway with the signing IdP as `corp` on `/orders` and `revocation` as given.
fn jwt_gateway(idp: &SigningIdp, echo: &Echo, revocation: &str) -> Gateway {
    Gateway::start(&format!(
        "{provider}{revocation}upstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ jwt: corp }}\n",
        provider = idp.provider_yaml("corp"),
        origin = echo.addr
    ))
}

fn token(idp: &SigningIdp, sub: &str, jti: &str, iat: u64) -> String {
    idp.token(json!({
        "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": sub, "jti": jti,
        "iat": iat, "exp": now() + 300,
    }))
}

fn call(gw: &Gateway, token: &str) -> reqwest::blocking::Response {
    client()
        .get(gw.url("/orders/1"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap()
}

fn admin(gw: &Gateway, method: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let mut req = client()
        .request(method.parse().unwrap(), gw.admin_url("/admin/revocations"))
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

fn assert_revoked(resp: reqwest::blocking::Response) {
    let challenge = unauthorized(resp, "token_revoked");
    assert!(
        challenge.contains(r#"error_description="The token has been revoked.""#),
        "{challenge}"
    );
}

#[test]
fn revoking_a_jti_refuses_that_token_at_once_and_no_other() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    let gw = jwt_gateway(&idp, &echo, &files.revocation_yaml(&files.state_file()));
    let stolen = token(&idp, "alice", "jti-stolen", now());
    let other = token(&idp, "alice", "jti-other", now());
    // Verified and cached before the revocation.
    assert_eq!(call(&gw, &stolen).status(), 200);
    assert_eq!(call(&gw, &stolen).status(), 200);

    let (status, body) = admin(
        &gw,
        "POST",
        Some(json!({"jti": "jti-stolen", "expires_at": now() + 300})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["revoked"]["jti"], "jti-stolen");
    assert_revoked(call(&gw, &stolen));
    assert_eq!(call(&gw, &other).status(), 200, "only that token");
    assert_eq!(
        gw.metric(r#"portcullis_revoked_rejections_total{provider="corp"}"#),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_revocations_active{kind="jti"}"#),
        Some(1.0)
    );

    let (status, list) = admin(&gw, "GET", None);
    assert_eq!(status, 200);
    assert_eq!(list["jti"][0]["jti"], "jti-stolen");
    // Taken back: the token works again.
    let (status, body) = admin(&gw, "DELETE", Some(json!({"jti": "jti-stolen"})));
    assert_eq!((status, body["removed"].clone()), (200, json!(true)));
    assert_eq!(call(&gw, &stolen).status(), 200);
}

#[test]
fn logout_everywhere_refuses_a_subjects_older_tokens_only() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    let gw = jwt_gateway(&idp, &echo, &files.revocation_yaml(&files.state_file()));
    let t = now();
    let old = token(&idp, "mallory-victim", "a1", t - 60);
    let bob = token(&idp, "bob", "b1", t - 60);
    assert_eq!(call(&gw, &old).status(), 200);
    let (status, body) = admin(
        &gw,
        "POST",
        Some(json!({"subject": "mallory-victim", "before": t - 30})),
    );
    assert_eq!(status, 201, "{body}");
    assert_revoked(call(&gw, &old));
    assert_eq!(
        call(&gw, &bob).status(),
        200,
        "other subjects are untouched"
    );
    // Issued after the cut: a fresh login works.
    let fresh = token(&idp, "mallory-victim", "a2", t - 10);
    assert_eq!(call(&gw, &fresh).status(), 200);
    // Without `iat` a token cannot prove it is newer: refused.
    let no_iat = idp.token(json!({
        "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "mallory-victim", "exp": now() + 300,
    }));
    assert_revoked(call(&gw, &no_iat));
}

#[test]
fn an_opaque_token_revoked_at_the_gateway_is_refused_and_its_cached_answer_evicted() {
    let files = Files::new();
    let server = TestIntrospection::start("gw", "secret-secret");
    std::fs::write(files.dir.path().join("client-secret"), "secret-secret").unwrap();
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "identity_providers:\n  sso:\n    issuer: {iss}\n    audiences: [api]\n    introspection:\n      endpoint: {endpoint}\n      client_id: gw\n      client_secret_file: {secret}\n{revocation}upstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth: {{ introspection: sso }}\n",
        iss = server.issuer(),
        endpoint = server.endpoint(),
        secret = files.dir.path().join("client-secret").display(),
        revocation = files.revocation_yaml(&files.state_file()),
        origin = echo.addr
    ));
    server.activate("opaque-abc", json!({"sub": "carol", "exp": now() + 600}));
    assert_eq!(call(&gw, "opaque-abc").status(), 200);
    assert_eq!(call(&gw, "opaque-abc").status(), 200);
    assert_eq!(server.calls_for("opaque-abc"), 1);

    let (status, body) = admin(&gw, "POST", Some(json!({"token": "opaque-abc"})));
    assert_eq!(status, 201, "{body}");
    assert!(
        !body.to_string().contains("opaque-abc"),
        "never echoed: {body}"
    );
    assert_revoked(call(&gw, "opaque-abc"));
    let log = std::fs::read_to_string(gw.dir.path().join("gateway.stderr")).unwrap();
    assert!(!log.contains("opaque-abc"), "never logged");

    // Unrevoked: the cached answer was evicted, so the server is asked again.
    let (status, _) = admin(&gw, "DELETE", Some(json!({"token": "opaque-abc"})));
    assert_eq!(status, 200);
    assert_eq!(call(&gw, "opaque-abc").status(), 200);
    assert_eq!(
        server.calls_for("opaque-abc"),
        2,
        "the revocation evicted the cache entry"
    );
}

#[test]
fn the_admin_api_needs_its_token_and_refuses_bad_bodies_precisely() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    let gw = jwt_gateway(&idp, &echo, &files.revocation_yaml(&files.state_file()));
    let url = gw.admin_url("/admin/revocations");
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token"),
        Some("Basic Zm9vOmJhcg=="),
    ] {
        let mut req = client().post(&url).body(r#"{"subject":"x"}"#);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<serde_json::Value>().unwrap()["error"],
            "admin_unauthorized"
        );
    }
    assert_eq!(
        client().get(&url).send().unwrap().status(),
        401,
        "the list is private too"
    );
    for bad in [
        json!({}),
        json!({"jti": "a", "subject": "b"}),
        json!({"jti": "a", "expires_at": 5}),
        json!({"subject": "a", "expires_at": now() + 5}),
        json!({"jti": "a", "before": now()}),
        json!({"jti": ""}),
        json!({"subject": "line\nbreak"}),
        json!({"jti": "a", "extra": 1}),
        json!("just a string"),
    ] {
        let (status, body) = admin(&gw, "POST", Some(bad.clone()));
        assert_eq!(
            (status, body["error"].clone()),
            (400, json!("invalid_revocation")),
            "{bad}"
        );
    }
    let (status, body) = admin(&gw, "PUT", Some(json!({"jti": "a"})));
    assert_eq!(
        (status, body["error"].clone()),
        (405, json!("method_not_allowed"))
    );
    let (status, body) = admin(&gw, "POST", Some(json!({"jti": "x".repeat(20_000)})));
    assert_eq!(
        (status, body["error"].clone()),
        (413, json!("body_too_large"))
    );
    // Nothing was added by any of it.
    let (_, list) = admin(&gw, "GET", None);
    assert_eq!(list, json!({"jti": [], "subjects": [], "tokens": []}));
}

#[test]
fn the_list_survives_a_restart_without_redis() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    let revocation = files.revocation_yaml(&files.state_file());
    let stolen = token(&idp, "dave", "jti-persisted", now());
    {
        let gw = jwt_gateway(&idp, &echo, &revocation);
        let (status, _) = admin(
            &gw,
            "POST",
            Some(json!({"jti": "jti-persisted", "expires_at": now() + 300})),
        );
        assert_eq!(status, 201);
        let (status, _) = admin(&gw, "POST", Some(json!({"subject": "erin"})));
        assert_eq!(status, 201);
        assert_revoked(call(&gw, &stolen));
    }
    let state = files.dir.path().join("state/revocations.json");
    assert!(state.exists(), "written to the state file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let gw = jwt_gateway(&idp, &echo, &revocation);
    assert_revoked(call(&gw, &stolen));
    assert_revoked(call(&gw, &token(&idp, "erin", "e1", now() - 60)));
    let (_, list) = admin(&gw, "GET", None);
    assert_eq!(list["subjects"][0]["subject"], "erin");
}

#[test]
fn revocations_reach_every_gateway_through_redis() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    let redis = RedisServer::start();
    let revocation = files.revocation_yaml(&format!("  redis:\n    url: \"{}\"\n", redis.url()));
    let a = jwt_gateway(&idp, &echo, &revocation);
    let b = jwt_gateway(&idp, &echo, &revocation);
    let stolen = token(&idp, "frank", "jti-fleet", now());
    assert_eq!(
        call(&b, &stolen).status(),
        200,
        "cached at b before the revocation"
    );

    let (status, body) = admin(
        &a,
        "POST",
        Some(json!({"jti": "jti-fleet", "expires_at": now() + 300})),
    );
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    assert!(
        b.eventually(Duration::from_secs(1), || call(&b, &stolen).status() == 401),
        "b did not learn of the revocation within a second"
    );
    eprintln!("propagated in {:?}", started.elapsed());
    assert_revoked(call(&a, &stolen));

    // A gateway that starts later loads the list, and says so when ready.
    let c = jwt_gateway(&idp, &echo, &revocation);
    let ready: serde_json::Value = client()
        .get(c.admin_url("/health/ready"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        ready["revocations"],
        json!({"loaded": true, "shared": true})
    );
    assert_revoked(call(&c, &stolen));
    let (_, list) = admin(&c, "GET", None);
    assert_eq!(list["jti"][0]["jti"], "jti-fleet");

    // Taken back on c: a and b accept the token again.
    let (status, _) = admin(&c, "DELETE", Some(json!({"jti": "jti-fleet"})));
    assert_eq!(status, 200);
    assert!(a.eventually(Duration::from_secs(2), || call(&a, &stolen).status() == 200));
    assert!(b.eventually(Duration::from_secs(2), || call(&b, &stolen).status() == 200));
}

#[test]
fn a_change_redis_cannot_store_is_refused_not_half_applied() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    let mut redis = RedisServer::start();
    let revocation = files.revocation_yaml(&format!(
        "  redis:\n    url: \"{}\"\n    timeout: 200ms\n",
        redis.url()
    ));
    let gw = jwt_gateway(&idp, &echo, &revocation);
    let t = token(&idp, "gina", "jti-g", now());
    redis.stop();
    let (status, body) = admin(&gw, "POST", Some(json!({"jti": "jti-g"})));
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("revocation_unavailable"))
    );
    assert_eq!(call(&gw, &t).status(), 200, "nothing was applied");
    // Redis back (empty: no persistence): the gateway reconnects and the change goes through.
    redis.restart();
    assert!(gw.eventually(Duration::from_secs(10), || {
        admin(&gw, "POST", Some(json!({"jti": "jti-g"}))).0 == 201
    }));
    assert_revoked(call(&gw, &t));
}

#[test]
fn r11_after_a_redis_outage_the_first_revocation_reaches_redis_and_every_gateway() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    let mut redis = RedisServer::start();
    // Room for a reconnect on a machine busy running the rest of the suite.
    let revocation = files.revocation_yaml(&format!(
        "  redis:\n    url: \"{}\"\n    timeout: 200ms\n",
        redis.url()
    ));
    let a = jwt_gateway(&idp, &echo, &revocation);
    let b = jwt_gateway(&idp, &echo, &revocation);
    let stolen = token(&idp, "hana", "jti-outage", now());
    let (status, _) = admin(&a, "POST", Some(json!({"subject": "before-the-outage"})));
    assert_eq!(status, 201, "the list works before the outage");
    assert_eq!(call(&a, &stolen).status(), 200);
    assert_eq!(call(&b, &stolen).status(), 200);
    redis.stop();
    // Down: a change cannot be stored, so it is refused and nothing changes; tokens are
    // still checked against the list each gateway holds.
    let revoke = json!({"jti": "jti-outage", "expires_at": now() + 300});
    let (status, body) = admin(&a, "POST", Some(revoke.clone()));
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("revocation_unavailable"))
    );
    assert_eq!(call(&a, &stolen).status(), 200, "nothing was applied");
    std::thread::sleep(OUTAGE);
    redis.restart();
    let log = |gw: &Gateway| {
        std::fs::read_to_string(gw.dir.path().join("gateway.stderr")).unwrap_or_default()
    };
    let logged_before = (log(&a).len(), log(&b).len());
    std::thread::sleep(Duration::from_millis(1500));
    // The first change after the outage is stored...
    let (status, body) = admin(&a, "POST", Some(revoke));
    assert_eq!(status, 201, "the first call after the outage: {body}");
    assert_revoked(call(&a, &stolen));
    // ...and reaches the other gateway once its subscription is back (its reconnect waits
    // at most the sync loop's longest backoff, 5 s).
    assert!(
        b.eventually(Duration::from_secs(8), || call(&b, &stolen).status() == 401),
        "b never learnt of the revocation made after the outage"
    );
    assert_revoked(call(&b, &stolen));
    // Each sync loop's first load after the outage reached Redis too: none was interrupted.
    for (gw, before) in [(&a, logged_before.0), (&b, logged_before.1)] {
        let since = log(gw)[before..].to_string();
        assert!(
            !since.contains("Redis sync interrupted"),
            "a sync after the outage failed:\n{since}"
        );
    }
}

#[test]
fn the_admin_api_is_closed_without_a_token_file_and_absent_without_a_list() {
    let (idp, echo, files) = (SigningIdp::new(), Echo::start(), Files::new());
    // A list, but no admin token: closed.
    let gw = jwt_gateway(&idp, &echo, &format!("revocation:\n{}", files.state_file()));
    let (status, body) = admin(&gw, "GET", None);
    assert_eq!(
        (status, body["error"].clone()),
        (403, json!("admin_api_disabled"))
    );
    // No list at all: not found.
    let gw = jwt_gateway(&idp, &echo, "");
    let (status, body) = admin(&gw, "POST", Some(json!({"subject": "x"})));
    assert_eq!((status, body["error"].clone()), (404, json!("not_found")));
}
