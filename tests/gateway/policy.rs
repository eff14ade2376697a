//! Route policies end to end: the policy matrix (public, jwt, any/all, roles, scopes,
//! permissions, per-method permissions, networks with and without trusted proxies, time
//! windows, report mode), through the real gateway to an echo origin that shows what arrived.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

struct World {
    corp: SigningIdp,
    partner: SigningIdp,
    echo: Echo,
    gw: Gateway,
}

fn world(trusted_proxies: &str) -> World {
    let corp = SigningIdp::new();
    let partner = SigningIdp::new();
    let echo = Echo::start();
    let providers = identity_providers([
        ("corp", corp.provider()),
        // `strict` is corp's key with a one-minute cap on token lifetime, for `all`.
        ("strict", corp.provider().set("max_token_age", "1m")),
        ("partner", partner.provider()),
    ]);
    let gw = Gateway::start(&format!(
        r#"{providers}{trusted_proxies}upstreams:
  echo:
    backends: ["{origin}"]
routes:
  - name: health
    match: {{ path: /health }}
    upstream: echo
    auth: public
  - name: admin
    match: {{ path_prefix: /api/admin }}
    upstream: echo
    auth: {{ jwt: corp, roles: [admin, ops] }}
  - name: reports
    match: {{ path_prefix: /api/reports }}
    upstream: echo
    auth: {{ jwt: corp, scopes: ["reports:read", "reports:export"] }}
  - name: docs
    match: {{ path_prefix: /api/docs }}
    upstream: echo
    auth:
      jwt: corp
      method_permissions: {{ GET: read, POST: write, DELETE: delete }}
  - name: billing
    match: {{ path_prefix: /api/billing }}
    upstream: echo
    auth: {{ jwt: corp, permissions: [billing, read] }}
  - name: internal
    match: {{ path_prefix: /internal }}
    upstream: echo
    auth: {{ public: true, networks: {{ allow: [10.0.0.0/8] }} }}
  - name: local
    match: {{ path_prefix: /local }}
    upstream: echo
    auth: {{ jwt: corp, networks: {{ allow: [127.0.0.0/8], deny: [10.9.0.0/16] }} }}
  - name: beta
    match: {{ path_prefix: /api/beta }}
    upstream: echo
    auth: {{ jwt: corp, roles: [beta], mode: report }}
  - name: either
    match: {{ path_prefix: /api/either }}
    upstream: echo
    auth: {{ any: [{{ jwt: corp }}, {{ jwt: partner }}] }}
  - name: both
    match: {{ path_prefix: /api/both }}
    upstream: echo
    auth: {{ all: [{{ jwt: corp }}, {{ jwt: strict }}] }}
  - name: keep
    match: {{ path_prefix: /api/keep }}
    upstream: echo
    auth: {{ jwt: corp, keep_authorization: true }}
"#,
        origin = echo.addr
    ));
    World {
        corp,
        partner,
        echo,
        gw,
    }
}

struct Answer {
    status: u16,
    body: serde_json::Value,
    challenge: Option<String>,
    echoed: Option<Echoed>,
}

fn send(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client().request(method.parse().unwrap(), gw.url(path));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or(json!(null));
    let echoed = (status == 200).then(|| serde_json::from_str(&text).unwrap());
    Answer {
        status,
        body,
        challenge,
        echoed,
    }
}

fn get(w: &World, path: &str, token: Option<&str>) -> Answer {
    send(&w.gw, "GET", path, token, &[])
}

#[test]
fn roles_need_any_one_of_the_listed() {
    let w = world("");
    let ops = w.corp.token_for("olga", &["ops"], &[], &[]);
    let a = get(&w, "/api/admin/users", Some(&ops));
    assert_eq!(a.status, 200);
    let e = a.echoed.unwrap();
    assert_eq!(e.header("x-user-id"), Some("olga"));
    assert_eq!(e.header("x-user-roles"), Some("ops"));
    assert_eq!(e.header("authorization"), None);

    let user = w.corp.token_for("ursula", &["user", "viewer"], &[], &[]);
    let a = get(&w, "/api/admin/users", Some(&user));
    assert_eq!(a.status, 403);
    assert_eq!(a.body["error"], "insufficient_role");
    assert_eq!(
        a.body["message"],
        "Insufficient roles: required one of [admin, ops], have [user, viewer]"
    );
    assert_eq!(
        a.challenge.as_deref(),
        Some(r#"Bearer realm="portcullis", error="insufficient_scope""#)
    );
    // No credential at all is 401, not 403.
    let a = get(&w, "/api/admin/users", None);
    assert_eq!(a.status, 401);
    assert_eq!(a.body["error"], "token_missing");
    assert_eq!(a.challenge.as_deref(), Some(r#"Bearer realm="portcullis""#));
    assert_eq!(w.echo.received().len(), 1);
}

#[test]
fn scopes_and_permissions_need_all_of_the_listed() {
    let w = world("");
    let both = w
        .corp
        .token_for("sam", &[], &["reports:read", "reports:export"], &[]);
    assert_eq!(get(&w, "/api/reports/q3", Some(&both)).status, 200);
    let one = w.corp.token_for("sam", &[], &["reports:read"], &[]);
    let a = get(&w, "/api/reports/q3", Some(&one));
    assert_eq!(a.status, 403);
    assert_eq!(a.body["error"], "insufficient_scope");
    assert_eq!(
        a.body["message"],
        "Insufficient scopes: required [reports:read, reports:export], have [reports:read]"
    );
    assert_eq!(
        a.challenge.as_deref(),
        Some(
            r#"Bearer realm="portcullis", error="insufficient_scope", scope="reports:read reports:export""#
        )
    );

    let payer = w.corp.token_for("pat", &[], &[], &["billing", "read"]);
    assert_eq!(get(&w, "/api/billing/1", Some(&payer)).status, 200);
    let reader = w.corp.token_for("pat", &[], &[], &["read"]);
    let a = get(&w, "/api/billing/1", Some(&reader));
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body["message"],
        "Insufficient permissions: required [billing, read], have [read]"
    );
}

#[test]
fn each_method_needs_its_own_permission() {
    let w = world("");
    let reader = w.corp.token_for("rita", &[], &[], &["read"]);
    let writer = w.corp.token_for("will", &[], &[], &["read", "write"]);
    let cases = [
        ("GET", &reader, 200),
        ("POST", &reader, 403),
        ("DELETE", &reader, 403),
        ("POST", &writer, 200),
        ("DELETE", &writer, 403),
        // A method without a listed permission needs only the credential.
        ("PUT", &reader, 200),
    ];
    for (method, token, status) in cases {
        let a = send(&w.gw, method, "/api/docs/7", Some(token), &[]);
        assert_eq!(a.status, status, "{method}");
    }
    let a = send(&w.gw, "DELETE", "/api/docs/7", Some(&reader), &[]);
    assert_eq!(a.body["error"], "insufficient_permissions");
    assert_eq!(
        a.body["message"],
        "Insufficient permissions: required [delete], have [read]"
    );
    let m = w.gw.metrics();
    assert!(
        m.contains(r#"portcullis_policy_decisions_total{decision="deny",mode="enforce",reason="insufficient_permissions",route="docs"} 4"#),
        "{m}"
    );
    assert!(m.contains(
        r#"portcullis_policy_decisions_total{decision="allow",mode="enforce",reason="ok",route="docs"} 3"#
    ));
}

#[test]
fn any_takes_the_first_credential_that_verifies_and_reports_the_most_specific_failure() {
    let w = world("");
    let from_partner = w.partner.token_for("pia", &[], &[], &[]);
    let a = get(&w, "/api/either/1", Some(&from_partner));
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed.unwrap().header("x-auth-provider"), Some("partner"));
    let from_corp = w.corp.token_for("cora", &[], &[], &[]);
    let a = get(&w, "/api/either/1", Some(&from_corp));
    assert_eq!(a.echoed.unwrap().header("x-auth-provider"), Some("corp"));

    // Expired at its own provider: "expired" is more telling than the other provider's
    // "bad signature".
    let expired = w.partner.token(json!({
        "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "pia", "exp": now() - 120
    }));
    let a = get(&w, "/api/either/1", Some(&expired));
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (401, Some("token_expired"))
    );
    let a = get(&w, "/api/either/1", None);
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (401, Some("token_missing"))
    );
}

#[test]
fn all_needs_every_credential_to_verify() {
    let w = world("");
    // Five minutes of lifetime: fine for corp, too long for strict.
    let long = w.corp.token_for("lena", &[], &[], &[]);
    let a = get(&w, "/api/both/1", Some(&long));
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (401, Some("token_too_old"))
    );
    let short = w.corp.token(json!({
        "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "lena", "iat": now(), "exp": now() + 30
    }));
    let a = get(&w, "/api/both/1", Some(&short));
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed.unwrap().header("x-user-id"), Some("lena"));
}

#[test]
fn networks_use_the_peer_unless_a_trusted_proxy_forwarded_the_request() {
    // No trusted proxies: X-Forwarded-For is the client's own claim and means nothing.
    let w = world("");
    let a = send(
        &w.gw,
        "GET",
        "/internal/x",
        None,
        &[("X-Forwarded-For", "10.1.2.3")],
    );
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (403, Some("network_denied"))
    );
    assert_eq!(a.challenge, None);
    let token = w.corp.token_for("lou", &[], &[], &[]);
    assert_eq!(get(&w, "/local/x", Some(&token)).status, 200);
    // Network rules come first: a refused network gets 403 even without a credential.
    let a = send(&w.gw, "GET", "/internal/x", None, &[]);
    assert_eq!(a.status, 403);

    // The test client (127.0.0.1) as a trusted proxy: the rightmost untrusted entry is the
    // client; entries to its left are whatever the client wrote.
    let w = world("trusted_proxies: [127.0.0.1/32]\n");
    let a = send(
        &w.gw,
        "GET",
        "/internal/x",
        None,
        &[("X-Forwarded-For", "10.1.2.3")],
    );
    assert_eq!(a.status, 200);
    let e = a.echoed.unwrap();
    assert_eq!(e.header("x-real-ip"), Some("10.1.2.3"));
    assert_eq!(e.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    let a = send(
        &w.gw,
        "GET",
        "/internal/x",
        None,
        &[("X-Forwarded-For", "10.1.2.3, 198.51.100.7")],
    );
    assert_eq!(a.status, 403, "the client is 198.51.100.7, not 10.1.2.3");
    // A deny block wins over the allow block.
    let a = send(
        &w.gw,
        "GET",
        "/local/x",
        Some(&token),
        &[("X-Forwarded-For", "10.9.8.7")],
    );
    assert_eq!(a.status, 403);
    // An address that is not one: unknown client, refused rather than guessed.
    let a = send(
        &w.gw,
        "GET",
        "/internal/x",
        None,
        &[("X-Forwarded-For", "10.1.2.3, junk")],
    );
    assert_eq!(a.status, 403);
}

#[test]
fn report_mode_forwards_and_counts_what_it_would_refuse() {
    let w = world("");
    let outsider = w.corp.token_for("otto", &["user"], &[], &[]);
    let a = get(&w, "/api/beta/feature", Some(&outsider));
    assert_eq!(a.status, 200, "report mode never blocks");
    let e = a.echoed.unwrap();
    assert_eq!(
        e.header("x-user-id"),
        Some("otto"),
        "the verified identity still goes"
    );
    // Without a credential it is forwarded too, with no identity and nothing forged.
    let a = send(
        &w.gw,
        "GET",
        "/api/beta/feature",
        None,
        &[("X-User-ID", "admin")],
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed.unwrap().header("x-user-id"), None);

    let m = w.gw.metrics();
    for reason in ["insufficient_role", "token_missing"] {
        let series = format!(
            r#"portcullis_policy_decisions_total{{decision="deny",mode="report",reason="{reason}",route="beta"}} 1"#
        );
        assert!(m.contains(&series), "{series} in {m}");
    }
    assert!(w.gw.eventually(std::time::Duration::from_secs(5), || w
        .gw
        .access_log()
        .contains(r#""policy_report":"insufficient_role""#)));
}

#[test]
fn authorization_is_removed_unless_the_route_keeps_it_and_public_routes_pass_it() {
    let w = world("");
    let token = w.corp.token_for("kim", &[], &[], &[]);
    let kept = get(&w, "/api/keep/1", Some(&token)).echoed.unwrap();
    assert_eq!(
        kept.header("authorization").map(|v| v.to_string()),
        Some(format!("Bearer {token}"))
    );
    assert_eq!(kept.header("x-user-id"), Some("kim"));
    let public = send(
        &w.gw,
        "GET",
        "/health",
        None,
        &[("Authorization", "Basic eDp5")],
    );
    assert_eq!(
        public.echoed.unwrap().header("authorization"),
        Some("Basic eDp5")
    );
}

#[test]
fn a_time_window_opens_a_route_only_during_its_hours() {
    // Windows around the current time: `open` from two hours ago to two hours ahead (UTC);
    // the others from five to six hours ahead on a UTC clock, which is still three or more
    // hours ahead in Europe/Berlin (one or two hours ahead of UTC). A window may cross
    // midnight (it runs overnight), and every day is listed.
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let minute = now.hour() as i32 * 60 + now.minute() as i32;
    let at = |offset: i32| {
        let m = (minute + offset).rem_euclid(24 * 60);
        format!("\"{:02}:{:02}\"", m / 60, m % 60)
    };
    let idp = SigningIdp::new();
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - {{ name: open, match: {{ path_prefix: /open }}, upstream: echo, auth: {{ jwt: corp, during: {{ timezone: UTC, from: {a}, to: {b} }} }} }}\n  - {{ name: later, match: {{ path_prefix: /later }}, upstream: echo, auth: {{ jwt: corp, during: {{ timezone: Europe/Berlin, days: [mon-sun], from: {c}, to: {d} }} }} }}\n  - {{ name: maintenance, match: {{ path_prefix: /maintenance }}, upstream: echo, auth: {{ public: true, during: {{ from: {c}, to: {d} }} }} }}\n",
        provider = idp.provider_yaml("corp"),
        origin = echo.addr,
        a = at(-120),
        b = at(120),
        c = at(300),
        d = at(360),
    ));
    let bearer = format!("Bearer {}", idp.good_token());
    let open = client()
        .get(gw.url("/open"))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(open.status(), 200);
    let resp = client()
        .get(gw.url("/later"))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"], "outside_time_window");
    assert!(
        body["message"].as_str().unwrap().contains("Europe/Berlin"),
        "{body}"
    );
    // Checked before the credential: no token, still the window's answer.
    let resp = client().get(gw.url("/later")).send().unwrap();
    assert_eq!(resp.status(), 403);
    let public = client().get(gw.url("/maintenance")).send().unwrap();
    assert_eq!(public.status(), 403);
    assert_eq!(
        echo.received().len(),
        1,
        "only the open route reached the origin"
    );
}

#[test]
fn the_rego_example_decides_each_request_after_the_credential() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let idp = SigningIdp::new();
    let echo = Echo::start();
    // conf/rego.yaml as it is, with the test's provider, origin and absolute policy paths.
    let mut body = Conf::read(&conf.join("rego.yaml"))
        .remove("listeners")
        .remove("identity_providers")
        .set("upstreams.app.backends", json!([echo.addr.to_string()]));
    for (route, data) in [("health", false), ("api", true)] {
        body = body.set(
            format!("routes[{route}].auth.rego.policy"),
            conf.join("rego/authz.rego").display().to_string(),
        );
        if data {
            body = body.set(
                format!("routes[{route}].auth.rego.data"),
                conf.join("rego/data.json").display().to_string(),
            );
        }
    }
    let gw = Gateway::start(&format!("{}{}", idp.provider_yaml("corp"), body.yaml()));
    // good_token: roles orders-admin and user, scopes orders:read orders:write, tenant acme.
    let alice = idp.good_token();
    let admin = idp.token_for("root", &["admin"], &[], &[]);
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut req = client().request(method, gw.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().unwrap())
    };
    use reqwest::Method;
    assert_eq!(call(Method::GET, "/health", None).0, 200);
    assert_eq!(call(Method::GET, "/admin/users", Some(&admin)).0, 200);
    let (status, body) = call(Method::GET, "/admin/users", Some(&alice));
    assert_eq!(status, 403);
    assert_eq!(error_body(&body)["error"], "policy_denied");
    // The credential first: no token is a 401, not the policy's 403.
    assert_eq!(call(Method::GET, "/admin/users", None).0, 401);
    assert_eq!(
        call(Method::GET, "/tenants/acme/bills", Some(&alice)).0,
        200
    );
    assert_eq!(
        call(Method::GET, "/tenants/other/bills", Some(&alice)).0,
        403
    );
    assert_eq!(call(Method::GET, "/orders/7", Some(&alice)).0, 200);
    assert_eq!(call(Method::POST, "/orders", Some(&alice)).0, 200);
    assert_eq!(
        call(Method::DELETE, "/orders/7", Some(&alice)).0,
        403,
        "needs orders:delete"
    );
    assert_eq!(echo.received().len(), 5);

    // explain shows the input document the policy saw, and its decision.
    let v = gw.explain(
        &[&format!("Authorization: Bearer {alice}")],
        "GET",
        "/admin/users",
    );
    let steps = v["steps"].to_string();
    assert!(steps.contains("rego input"), "{steps}");
    assert!(
        steps.contains(r#"\"segments\":[\"admin\",\"users\"]"#),
        "{steps}"
    );
    assert!(steps.contains("deny"), "{steps}");
}

#[test]
fn a_rego_result_adds_identity_headers_and_the_policy_reloads_when_its_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tier.rego");
    let write = |text: &str| std::fs::write(&policy, text).unwrap();
    write(
        "package t\n\ndecision := {\"allow\": true, \"headers\": {\"X-User-Tier\": \"gold\"}} if input.method == \"GET\"\n",
    );
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let gw = Gateway::start(&format!(
        "{}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: echo\n    auth:\n      jwt: corp\n      rego: {{ policy: {}, query: data.t.decision, result_headers: [X-User-Tier] }}\n",
        idp.provider_yaml("corp"),
        echo.addr,
        policy.display()
    ));
    let token = idp.good_token();
    let get = || {
        client()
            .get(gw.url("/x"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-tier", "platinum")
            .send()
            .unwrap()
    };
    let resp = get();
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(
        seen.header("x-user-tier"),
        Some("gold"),
        "the policy's value, never the client's"
    );
    assert_eq!(seen.header("x-user-id"), Some("alice"));

    // A new version of the file is in force within the reload interval.
    write("package t\n\ndecision := {\"allow\": false, \"reason\": \"frozen for the audit\"}\n");
    assert!(gw.eventually(Duration::from_secs(5), || get().status() == 403));
    let body = get().text().unwrap();
    assert_eq!(error_body(&body)["message"], "frozen for the audit");
    let reached = echo.received().len();
    // One that does not parse is refused, and the one in force stays.
    write("package t\n\ndecision := {\n");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(get().status(), 403);
    // A result header the route did not declare is the policy's error: 500, fail closed.
    write("package t\n\ndecision := {\"allow\": true, \"headers\": {\"X-User-Role\": \"root\"}} if input.method == \"GET\"\n");
    assert!(gw.eventually(Duration::from_secs(5), || get().status() == 500));
    let body = get().text().unwrap();
    assert_eq!(error_body(&body)["error"], "policy_error");
    assert_eq!(
        echo.received().len(),
        reached,
        "nothing refused reached the origin"
    );
}
