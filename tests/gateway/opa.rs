//! Decisions of an OPA server (`opa:`), against an OPA Data API evaluated by rego-cpp
//! (`support::opa`): what the gateway sends, how the answer decides, the cache, and what
//! happens when the server is down, slow or cannot evaluate its policy.

use crate::support::opa::OpaServer;
use crate::support::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

/// The seed policy of conf/rego.yaml, served with its data.
fn seed_server() -> OpaServer {
    let conf = conf_dir();
    OpaServer::start(
        &[&conf.join("rego/authz.rego")],
        Some(&conf.join("rego/data.json")),
    )
}

/// conf/opa.yaml as it is, with the test's provider, origin and OPA server.
fn example_gateway(idp: &SigningIdp, echo: &Echo, opa: &OpaServer) -> Gateway {
    let body = Conf::read(&conf_dir().join("opa.yaml"))
        .remove("listeners")
        .remove("identity_providers")
        .set("upstreams.app.backends", json!([echo.addr.to_string()]))
        .set("opa.authz.url", opa.url("gateway/authz/allow"));
    Gateway::start(&format!("{}{}", idp.provider_yaml("corp"), body.yaml()))
}

fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client().request(method, gw.url(path));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().unwrap())
}

#[test]
fn the_opa_example_decides_as_the_in_process_policy_does_and_sends_opa_the_input_document() {
    let (idp, echo, opa) = (SigningIdp::new(), Echo::start(), seed_server());
    let gw = example_gateway(&idp, &echo, &opa);
    // good_token: roles orders-admin and user, scopes orders:read orders:write, tenant acme.
    let alice = idp.good_token();
    let admin = idp.token_for("root", &["admin"], &[], &[]);
    use reqwest::Method;
    let cases = [
        (Method::GET, "/health", None, 200),
        (Method::GET, "/admin/users", Some(&admin), 200),
        (Method::GET, "/admin/users", Some(&alice), 403),
        (Method::GET, "/tenants/acme/bills", Some(&alice), 200),
        (Method::GET, "/tenants/other/bills", Some(&alice), 403),
        (Method::GET, "/orders/7", Some(&alice), 200),
        (Method::POST, "/orders", Some(&alice), 200),
        (Method::DELETE, "/orders/7", Some(&alice), 403),
    ];
    for (method, path, token, status) in &cases {
        let (got, _, body) = call(&gw, method.clone(), path, token.map(|t| t.as_str()));
        assert_eq!(got, *status, "{method} {path}: {body}");
        if *status == 403 {
            assert_eq!(error_body(&body)["error"], "policy_denied", "{body}");
        }
    }
    // The credential first: no token is a 401, and OPA is not asked.
    assert_eq!(call(&gw, Method::GET, "/admin/users", None).0, 401);
    assert_eq!(opa.asked().len(), cases.len());
    assert_eq!(echo.received().len(), 5);

    // What OPA was sent: POST {"input": ...} to the document's address, as JSON; the
    // declared header and never the Authorization.
    let resp = client()
        .get(gw.url("/admin/users?page=2&page=3"))
        .header("authorization", format!("Bearer {admin}"))
        .header("x-region", "eu")
        .header("x-other", "not declared")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let asked = opa.asked();
    let last = asked.last().unwrap();
    assert_eq!(last["path"], "/v1/data/gateway/authz/allow");
    assert_eq!(last["headers"]["content-type"], "application/json");
    let sent: Value = serde_json::from_str(last["body"].as_str().unwrap()).unwrap();
    let input = &sent["input"];
    assert_eq!(sent.as_object().unwrap().len(), 1, "{sent}");
    assert_eq!(input["method"], "GET");
    assert_eq!(input["path"], "/admin/users");
    assert_eq!(input["segments"], json!(["admin", "users"]));
    assert_eq!(
        input["query"],
        json!({"page": "2"}),
        "the first value of each"
    );
    assert_eq!(input["headers"], json!({"x-region": "eu"}));
    assert_eq!(input["client_ip"], "127.0.0.1");
    assert_eq!(input["tls"], false);
    assert_eq!(input["route"], "api");
    assert!(input["time"]["unix"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(input["identity"]["subject"], "root");
    assert_eq!(input["identity"]["roles"], json!(["admin"]));
    assert_eq!(input["identity"]["method"], "jwt");
    assert!(!last["body"].as_str().unwrap().contains(&admin));

    // The example caches decisions: the same request again is not asked again, another is.
    let before = opa.asked().len();
    assert_eq!(call(&gw, Method::GET, "/orders/7", Some(&alice)).0, 200);
    assert_eq!(call(&gw, Method::GET, "/health", None).0, 200);
    assert_eq!(opa.asked().len(), before);
    assert_eq!(call(&gw, Method::GET, "/orders/8", Some(&alice)).0, 200);
    assert_eq!(opa.asked().len(), before + 1);
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="cached",server="authz"}"#),
        Some(2.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="decided",server="authz"}"#),
        Some((before + 1) as f64)
    );

    // explain asks the server too, and shows the input and the decision.
    let v = gw.explain(
        &[&format!("Authorization: Bearer {alice}")],
        "GET",
        "/admin/users",
    );
    let steps = v["steps"].to_string();
    assert!(steps.contains("opa input"), "{steps}");
    assert!(
        steps.contains(r#"{"check":"opa authz","outcome":"deny"}"#),
        "{steps}"
    );
    assert_eq!(v["decision"]["status"], 403, "{v}");
    assert_eq!(v["decision"]["error"], "policy_denied", "{v}");
}

/// A gateway whose `/app` is decided by the OPA server at `url`, uncached.
fn gateway(idp: &SigningIdp, echo: &Echo, url: &str, breaker: &str) -> Gateway {
    Gateway::start(&format!(
        "{provider}opa:\n  authz:\n    url: {url}\n    timeout: 300ms\n    breaker: {breaker}\nupstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: echo, auth: {{ jwt: corp, opa: authz }} }}\n",
        provider = idp.provider_yaml("corp"),
        origin = echo.addr
    ))
}

/// The refusal of a server that gave no answer.
fn assert_unavailable(gw: &Gateway, token: &str) -> u64 {
    let (status, headers, body) = call(gw, reqwest::Method::GET, "/admin/x", Some(token));
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_body(&body)["error"], "policy_unavailable", "{body}");
    headers["retry-after"].to_str().unwrap().parse().unwrap()
}

#[test]
fn r13_an_opa_server_that_is_down_or_failing_is_503_and_opens_the_breaker() {
    let (idp, echo, mut opa) = (SigningIdp::new(), Echo::start(), seed_server());
    let gw = gateway(
        &idp,
        &echo,
        &opa.url("gateway/authz"),
        "{ failures: 3, open_for: 1s }",
    );
    let admin = idp.token_for("root", &["admin"], &[], &[]);
    // The package's document: {"allow": true} decides as `allow` does.
    assert_eq!(
        call(&gw, reqwest::Method::GET, "/admin/x", Some(&admin)).0,
        200
    );

    // An error status (a proxy in front of OPA, say) is no answer, nor is a 200 that is not
    // OPA's document (here, an empty body).
    opa.control(0, 502);
    assert_eq!(assert_unavailable(&gw, &admin), 1);
    opa.control(0, 200);
    assert_eq!(assert_unavailable(&gw, &admin), 1);
    opa.control(0, 0);
    assert_eq!(
        call(&gw, reqwest::Method::GET, "/admin/x", Some(&admin)).0,
        200
    );

    // Down: three failures in a row open the circuit, which then answers without calling.
    opa.stop();
    assert_unavailable(&gw, &admin);
    assert_unavailable(&gw, &admin);
    assert_eq!(assert_unavailable(&gw, &admin), 1, "the opening call");
    assert_eq!(
        gw.metric(r#"portcullis_opa_breaker_state{server="authz"}"#),
        Some(1.0)
    );
    assert_unavailable(&gw, &admin);
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="circuit_open",server="authz"}"#),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="unreachable",server="authz"}"#),
        Some(3.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="error_status",server="authz"}"#),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="invalid_response",server="authz"}"#),
        Some(1.0)
    );
    assert_eq!(
        echo.received().len(),
        2,
        "nothing undecided reached the origin"
    );

    // Back: after open_for one probe closes the circuit.
    opa.restart();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        call(&gw, reqwest::Method::GET, "/admin/x", Some(&admin)).0,
        200
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_breaker_state{server="authz"}"#),
        Some(0.0)
    );
}

#[test]
fn r13_a_slow_opa_server_times_out_with_503() {
    let (idp, echo, opa) = (SigningIdp::new(), Echo::start(), seed_server());
    let gw = gateway(
        &idp,
        &echo,
        &opa.url("gateway/authz/allow"),
        "{ failures: 5, open_for: 10s }",
    );
    let admin = idp.token_for("root", &["admin"], &[], &[]);
    opa.control(1500, 0);
    let started = std::time::Instant::now();
    assert_unavailable(&gw, &admin);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "held to the timeout"
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="timeout",server="authz"}"#),
        Some(1.0)
    );
    assert!(echo.received().is_empty());
}

/// A policy that cannot be evaluated on some inputs: two rules give `allow` different
/// values when the request carries `x-mode: conflict` (OPA: "complete rules must not produce
/// multiple outputs"); with `x-mode: text` its value is no decision.
const CONFLICTING: &str = r#"package gateway.authz

allow := true if input.headers["x-mode"] == "conflict"
allow := false if input.headers["x-mode"] == "conflict"
allow := "maybe" if input.headers["x-mode"] == "text"
allow := true if not input.headers["x-mode"]
"#;

#[test]
fn r14_an_input_the_policy_cannot_evaluate_is_500_and_never_opens_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("conflicting.rego");
    std::fs::write(&policy, CONFLICTING).unwrap();
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let opa = OpaServer::start(&[&policy], None);
    let gw = Gateway::start(&format!(
        "{provider}opa:\n  authz:\n    url: {url}\n    headers: [X-Mode]\n    breaker: {{ failures: 1, open_for: 30s }}\nupstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: echo, auth: {{ public: true, opa: authz }} }}\n",
        provider = idp.provider_yaml("corp"),
        url = opa.url("gateway/authz/allow"),
        origin = echo.addr
    ));
    // Any client may send the input the policy trips on, again and again; or one on which
    // its value is no decision.
    for mode in ["conflict", "conflict", "conflict", "text"] {
        let resp = client()
            .get(gw.url("/x"))
            .header("x-mode", mode)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(error_body(&resp.text().unwrap())["error"], "policy_error");
    }
    // The server answered each time: the breaker (one failure opens it) stayed closed.
    assert_eq!(client().get(gw.url("/x")).send().unwrap().status(), 200);
    assert_eq!(
        gw.metric(r#"portcullis_opa_breaker_state{server="authz"}"#),
        Some(0.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="policy_error",server="authz"}"#),
        Some(3.0)
    );
    // The server answered "maybe" and then true: both decided, by the server's lights.
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="decided",server="authz"}"#),
        Some(2.0)
    );
    assert_eq!(echo.received().len(), 1);
}

#[test]
fn concurrent_requests_with_one_new_input_make_one_call_when_cached() {
    let (idp, echo, opa) = (SigningIdp::new(), Echo::start(), seed_server());
    let gw = example_gateway(&idp, &echo, &opa);
    // Slow enough that the calls overlap, well within the example's 250ms timeout.
    opa.control(150, 0);
    let admin = idp.token_for("root", &["admin"], &[], &[]);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..20)
            .map(|_| s.spawn(|| call(&gw, reqwest::Method::GET, "/admin/users", Some(&admin)).0))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(opa.asked().len(), 1);
}

#[test]
fn r15_one_client_flooding_a_public_route_cannot_take_the_opa_server_from_the_others() {
    let (idp, echo, opa) = (SigningIdp::new(), Echo::start(), seed_server());
    // Four calls in flight at most, one of them per client; the gateway trusts the test's
    // X-Forwarded-For, so each request says which client it is.
    let gw = Gateway::start(&format!(
        "{provider}trusted_proxies: [127.0.0.1/32]\nopa:\n  authz:\n    url: {url}\n    timeout: 3s\n    max_concurrent: 4\n    max_concurrent_per_client: 1\nupstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - {{ name: health, match: {{ path_prefix: /health }}, upstream: echo, auth: {{ public: true, opa: authz }} }}\n",
        provider = idp.provider_yaml("corp"),
        url = opa.url("gateway/authz/allow"),
        origin = echo.addr
    ));
    // Each call takes the server 1 s: the flood's requests overlap.
    opa.control(1000, 0);
    let from = |address: &str, path: &str| {
        let resp = client()
            .get(gw.url(path))
            .header("x-forwarded-for", address)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().unwrap())
    };
    let (flood, other) = std::thread::scope(|s| {
        let flood: Vec<_> = (0..6)
            .map(|i| s.spawn(move || from("10.0.0.1", &format!("/health/{i}"))))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let other = from("10.0.0.2", "/health");
        let flood: Vec<_> = flood.into_iter().map(|t| t.join().unwrap()).collect();
        (flood, other)
    });
    // The other client was decided (the seed policy: /health is public).
    assert_eq!(other.0, 200, "{}", other.1);
    // The flooding client had its one call (decided: /health/N is not public), and the rest
    // were refused at once, not queued.
    let decided = flood.iter().filter(|(s, _)| *s == 403).count();
    let refused: Vec<_> = flood.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(decided, 1, "{flood:?}");
    assert_eq!(refused.len(), 5, "{flood:?}");
    for (_, body) in refused {
        assert_eq!(error_body(body)["error"], "policy_unavailable");
    }
    assert_eq!(opa.asked().len(), 2, "one call per client");
    assert_eq!(
        gw.metric(r#"portcullis_opa_requests_total{outcome="client_busy",server="authz"}"#),
        Some(5.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_opa_breaker_state{server="authz"}"#),
        Some(0.0)
    );
}

#[test]
fn an_opa_result_adds_the_declared_identity_headers_and_never_the_clients() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tier.rego");
    std::fs::write(
        &policy,
        "package gateway.authz\n\ndecision := {\"allow\": true, \"headers\": {\"X-User-Tier\": \"gold\"}} if input.identity.subject == \"alice\"\n\ndecision := {\"allow\": true, \"headers\": {\"X-User-Role\": \"root\"}} if input.identity.subject == \"mallory\"\n",
    )
    .unwrap();
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let opa = OpaServer::start(&[&policy], None);
    let gw = Gateway::start(&format!(
        "{provider}opa:\n  authz:\n    url: {url}\n    result_headers: [X-User-Tier]\nupstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: echo, auth: {{ jwt: corp, opa: authz }} }}\n",
        provider = idp.provider_yaml("corp"),
        url = opa.url("gateway/authz/decision"),
        origin = echo.addr
    ));
    let call = |token: &str| {
        client()
            .get(gw.url("/x"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-tier", "platinum")
            .send()
            .unwrap()
    };
    let resp = call(&idp.good_token());
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header("x-user-tier"), Some("gold"));
    // A header the server was not allowed to add fails closed.
    let resp = call(&idp.token_for("mallory", &[], &[], &[]));
    assert_eq!(resp.status(), 500);
    assert_eq!(error_body(&resp.text().unwrap())["error"], "policy_error");
    // No decision for anyone else: undefined, a refusal.
    let resp = call(&idp.token_for("bob", &[], &[], &[]));
    assert_eq!(resp.status(), 403);
    assert_eq!(echo.received().len(), 1);
}
