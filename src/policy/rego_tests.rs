//! The tables of `policy::rego`, written from Rego's semantics (OPA's documentation), not
//! from what the interpreter happens to answer; and the decision memo against evaluation.

use super::*;

/// The seed's policy: `/health` is public, `/admin/*` needs the admin role; and what
/// richer policies do with `some`, `every`, `data` and request headers.
const SEED: &str = r#"
package gateway.authz

default allow := false

allow if input.path == "/health"

allow if {
input.segments[0] == "admin"
"admin" in input.identity.roles
}

# Per tenant: /tenants/<t>/... only for callers of tenant t.
allow if {
input.segments[0] == "tenants"
input.segments[1] == input.identity.tenant
}

# A scope per method, from data: every scope the method needs is held.
allow if {
input.segments[0] == "orders"
needed := data.scopes[input.method]
every s in needed { s in input.identity.scopes }
}

# Only from the EU region header, with some role of the reporting ones.
allow if {
input.segments[0] == "reports"
input.headers["x-region"] == "eu"
some role in input.identity.roles
role in {"analyst", "auditor"}
}
"#;

fn policy(source: &str, rule: &str) -> RegoPolicy {
    let data =
        json!({"scopes": {"GET": ["orders:read"], "DELETE": ["orders:read", "orders:delete"]}});
    RegoPolicy::new(
        "authz.rego",
        source.to_string(),
        Some(data),
        rule,
        vec![
            http::HeaderName::from_static("x-region"),
            http::header::AUTHORIZATION,
        ],
        vec![HeaderName::from_static("x-user-tier")],
        "r",
    )
    .unwrap()
}

fn identity(roles: &[&str], scopes: &[&str], tenant: Option<&str>) -> Identity {
    Identity {
        method: "jwt",
        subject: "alice".into(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        tenant: tenant.map(str::to_string),
        ..Identity::default()
    }
}

fn decide(
    p: &RegoPolicy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    id: Option<&Identity>,
) -> RegoVerdict {
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let facts = RegoFacts {
        method,
        path,
        query: None,
        headers: &h,
        client_ip: None,
        tls: true,
        now: 1_800_000_000,
        identity: id,
    };
    // Evaluated, and through the memo (first and then remembered): all three agree.
    let evaluated = p.decide_on(p.input(&facts));
    assert_eq!(p.decide(&facts), evaluated, "{method} {path}");
    assert_eq!(p.decide(&facts), evaluated, "{method} {path}, remembered");
    evaluated
}

/// Method, path, headers, caller, and the decision Rego gives.
type Row<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a Identity>,
    RegoVerdict,
);

#[test]
fn the_seed_policy_and_richer_rules_decide_as_rego_says() {
    let p = policy(SEED, "data.gateway.authz.allow");
    let admin = identity(&["admin"], &[], None);
    let user = identity(&["user"], &["orders:read"], Some("acme"));
    let deny = RegoVerdict::Deny(None);
    let allow = RegoVerdict::Allow(vec![]);
    let rows: &[Row<'_>] = &[
        ("GET", "/health", &[], None, allow.clone()),
        ("GET", "/admin/users", &[], Some(&admin), allow.clone()),
        ("GET", "/admin/users", &[], Some(&user), deny.clone()),
        // No identity: `input.identity.roles` is undefined, so the body fails; default.
        ("GET", "/admin/users", &[], None, deny.clone()),
        (
            "GET",
            "/tenants/acme/bills",
            &[],
            Some(&user),
            allow.clone(),
        ),
        (
            "GET",
            "/tenants/other/bills",
            &[],
            Some(&user),
            deny.clone(),
        ),
        // `every` over data: GET needs orders:read (held), DELETE also orders:delete.
        ("GET", "/orders/7", &[], Some(&user), allow.clone()),
        ("DELETE", "/orders/7", &[], Some(&user), deny.clone()),
        // No entry in data for POST: `needed` is undefined, the body fails.
        ("POST", "/orders", &[], Some(&user), deny.clone()),
        (
            "GET",
            "/reports/q3",
            &[("x-region", "eu")],
            Some(&identity(&["auditor"], &[], None)),
            allow.clone(),
        ),
        (
            "GET",
            "/reports/q3",
            &[("x-region", "us")],
            Some(&identity(&["auditor"], &[], None)),
            deny.clone(),
        ),
        (
            "GET",
            "/reports/q3",
            &[("x-region", "eu")],
            Some(&user),
            deny.clone(),
        ),
    ];
    for (method, path, headers, id, want) in rows {
        assert_eq!(
            &decide(&p, method, path, headers, *id),
            want,
            "{method} {path}"
        );
    }
}

#[test]
fn undefined_objects_reasons_and_errors() {
    let allow = RegoVerdict::Allow(vec![]);
    // No default: a request no rule holds for leaves the rule undefined, a refusal.
    let p = policy(
        "package t\nallow if input.method == \"GET\"\n",
        "data.t.allow",
    );
    assert_eq!(decide(&p, "GET", "/", &[], None), allow.clone());
    assert_eq!(decide(&p, "POST", "/", &[], None), RegoVerdict::Deny(None));
    // An object result carries the reason.
    let p = policy(
        "package t\ndefault decision := {\"allow\": false, \"reason\": \"read-only on weekends\"}\ndecision := {\"allow\": true} if input.method == \"GET\"\n",
        "data.t.decision",
    );
    assert_eq!(decide(&p, "GET", "/", &[], None), allow.clone());
    assert_eq!(
        decide(&p, "PUT", "/", &[], None),
        RegoVerdict::Deny(Some("read-only on weekends".into()))
    );
    // A value that is no decision is an error: found at load when it always is one, at
    // the request when it depends on the input.
    let at_load = RegoPolicy::new(
        "t.rego",
        "package t\nallow := \"yes\"\n".into(),
        None,
        "data.t.allow",
        vec![],
        vec![],
        "r",
    );
    assert!(at_load.is_err());
    let p = policy("package t\nallow := input.method\n", "data.t.allow");
    assert!(matches!(
        decide(&p, "GET", "/", &[], None),
        RegoVerdict::Error(_)
    ));
    let p = policy("package t\nallow if 1 / input.zero > 0\n", "data.t.allow");
    let zero = decide(&p, "GET", "/", &[], None);
    assert!(
        matches!(zero, RegoVerdict::Deny(None) | RegoVerdict::Error(_)),
        "{zero:?}"
    );
}

#[test]
fn an_allowing_result_adds_only_declared_headers_with_text_values() {
    let tier = |name: &str, value: &str| {
        let p = policy(
            &format!("package t\ndecision := {{\"allow\": true, \"headers\": {{\"{name}\": {value}}}}} if input.method == \"GET\"\n"),
            "data.t.decision",
        );
        decide(&p, "GET", "/", &[], None)
    };
    assert_eq!(
        tier("X-User-Tier", "\"gold\""),
        RegoVerdict::Allow(vec![(
            HeaderName::from_static("x-user-tier"),
            "gold".into()
        )])
    );
    for (name, value) in [
        ("X-User-Role", "\"root\""),
        ("X-User-Tier", "7"),
        ("X-User-Tier", "\"a\\nb\""),
    ] {
        assert!(
            matches!(tier(name, value), RegoVerdict::Error(_)),
            "{name}: {value}"
        );
    }
}

/// `input.time.ns` is what OPA's time builtins take: a business-hours window written in
/// the policy, in Berlin's time (CET in December, CEST in July).
#[test]
fn a_time_window_in_the_policy_reads_input_time_ns() {
    let p = policy(
        r#"package t
default allow := false
allow if {
[hour, _, _] := time.clock([input.time.ns, "Europe/Berlin"])
hour >= 8
hour < 18
not time.weekday([input.time.ns, "Europe/Berlin"]) in {"Saturday", "Sunday"}
}
"#,
        "data.t.allow",
    );
    let at = |unix: u64| {
        let h = http::HeaderMap::new();
        p.decide_on(p.input(&RegoFacts {
            method: "GET",
            path: "/maintenance",
            query: None,
            headers: &h,
            client_ip: None,
            tls: false,
            now: unix,
            identity: None,
        }))
    };
    let allow = RegoVerdict::Allow(vec![]);
    let deny = RegoVerdict::Deny(None);
    // Thu 2026-12-03 07:30 UTC is 08:30 in Berlin (CET, UTC+1): open.
    assert_eq!(at(1_796_283_000), allow);
    // 06:30 UTC is 07:30 in Berlin: closed.
    assert_eq!(at(1_796_279_400), deny);
    // Thu 2026-07-02 06:30 UTC is 08:30 in Berlin (CEST, UTC+2): open.
    assert_eq!(at(1_782_973_800), allow);
    // Sat 2026-12-05 10:00 UTC: a weekend.
    assert_eq!(at(1_796_464_800), deny);
}

/// Each thread keeps its own engine; a reload must reach it, and a policy that no longer
/// loads must leave the one in force.
#[test]
fn a_reload_reaches_the_engine_a_thread_already_holds() {
    use crate::reload::Reloadable;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rego");
    let file = file.to_str().unwrap();
    std::fs::write(file, "package t\nallow := true\n").unwrap();
    let files = read_files(file, None).unwrap();
    let p = RegoPolicy::load(files, "data.t.allow", vec![], vec![], "r").unwrap();
    let allow = RegoVerdict::Allow(vec![]);
    assert_eq!(decide(&p, "GET", "/", &[], None), allow);
    std::fs::write(file, "package t\nallow := false\n").unwrap();
    assert_eq!(p.reload(), Ok(1));
    assert_eq!(decide(&p, "GET", "/", &[], None), RegoVerdict::Deny(None));
    std::fs::write(file, "package t\nallow := \n").unwrap();
    assert!(p.reload().is_err());
    assert_eq!(decide(&p, "GET", "/", &[], None), RegoVerdict::Deny(None));
    // Another thread, which had no engine yet, gets the one in force.
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(decide(&p, "GET", "/", &[], None), RegoVerdict::Deny(None)));
    });
}

/// The memo gives a request the decision of an earlier one only when their input
/// documents are the same: each fact the document is built from is changed in turn, and
/// the remembered decision must be the evaluated one. The policy's reason is the whole
/// input but its time, so any fact the memo failed to tell apart would show.
#[test]
fn the_memo_tells_apart_every_fact_of_the_input() {
    let p = RegoPolicy::new(
        "echo.rego",
        "package t\ndecision := {\"allow\": false, \"reason\": json.marshal(object.remove(input, {\"time\"}))}\n".into(),
        None,
        "data.t.decision",
        vec![HeaderName::from_static("x-region")],
        vec![],
        "r",
    )
    .unwrap();
    assert!(p.memoize);
    let alice = Identity {
        method: "jwt",
        subject: "alice".into(),
        provider: "corp".into(),
        roles: vec!["user".into()],
        scopes: vec!["read".into()],
        permissions: vec!["p".into()],
        tenant: Some("acme".into()),
        client_id: Some("app".into()),
        ..Identity::default()
    };
    let changed = |f: fn(&mut Identity)| {
        let mut id = alice.clone();
        f(&mut id);
        id
    };
    let identities = [
        changed(|id| id.subject = "bob".into()),
        changed(|id| id.method = "api_key"),
        changed(|id| id.provider = "other".into()),
        changed(|id| id.roles.push("admin".into())),
        changed(|id| id.scopes.clear()),
        changed(|id| id.permissions = vec!["q".into()]),
        changed(|id| id.tenant = None),
        changed(|id| id.client_id = Some("other".into())),
    ];
    let mut eu = http::HeaderMap::new();
    eu.insert("x-region", "eu".parse().unwrap());
    let mut us = http::HeaderMap::new();
    us.insert("x-region", "us".parse().unwrap());
    let none = http::HeaderMap::new();
    let base = RegoFacts {
        method: "GET",
        path: "/a",
        query: Some("x=1"),
        headers: &eu,
        client_ip: Some("10.0.0.1".parse().unwrap()),
        tls: false,
        now: 1_800_000_000,
        identity: Some(&alice),
    };
    let mut variants = vec![
        RegoFacts {
            method: "POST",
            ..base
        },
        RegoFacts { path: "/b", ..base },
        RegoFacts {
            query: Some("x=2"),
            ..base
        },
        RegoFacts {
            query: None,
            ..base
        },
        RegoFacts {
            headers: &us,
            ..base
        },
        RegoFacts {
            headers: &none,
            ..base
        },
        RegoFacts {
            client_ip: Some("10.0.0.2".parse().unwrap()),
            ..base
        },
        RegoFacts {
            client_ip: None,
            ..base
        },
        RegoFacts { tls: true, ..base },
        RegoFacts {
            identity: None,
            ..base
        },
    ];
    for id in &identities {
        variants.push(RegoFacts {
            identity: Some(id),
            ..base
        });
    }
    let base_decision = p.decide(&base);
    for (i, variant) in variants.iter().enumerate() {
        let evaluated = p.decide_on(p.input(variant));
        assert_ne!(evaluated, base_decision, "variant {i} changes the input");
        assert_eq!(p.decide(variant), evaluated, "variant {i}");
    }
    assert_eq!(p.decide(&base), base_decision);
    // The next second is evaluated again: a policy reading the time sees it change.
    let p = policy(
        "package t\nallow if input.time.unix % 2 == 0\n",
        "data.t.allow",
    );
    let at = |now| {
        p.decide(&RegoFacts {
            now,
            identity: None,
            ..base
        })
    };
    assert_eq!(at(1_800_000_000), RegoVerdict::Allow(vec![]));
    assert_eq!(at(1_800_000_001), RegoVerdict::Deny(None));
    assert_eq!(at(1_800_000_002), RegoVerdict::Allow(vec![]));
    // A policy that reads the clock itself is never remembered.
    let p = policy("package t\nallow if time.now_ns() > 0\n", "data.t.allow");
    assert!(!p.memoize);
}

#[test]
fn the_authorization_header_never_reaches_the_policy() {
    let p = policy(SEED, "data.gateway.authz.allow");
    let mut h = http::HeaderMap::new();
    h.insert("authorization", "Bearer secret".parse().unwrap());
    h.insert("x-region", "eu".parse().unwrap());
    h.insert("x-other", "1".parse().unwrap());
    let facts = RegoFacts {
        method: "GET",
        path: "/a/b",
        query: Some("page=2&page=3&q=x"),
        headers: &h,
        client_ip: Some("10.0.0.7".parse().unwrap()),
        tls: false,
        now: 5,
        identity: None,
    };
    let input: Json = serde_json::from_str(&input_json(&p.input(&facts))).unwrap();
    assert_eq!(input["headers"], json!({"x-region": "eu"}));
    assert_eq!(input["query"], json!({"page": "2", "q": "x"}));
    assert_eq!(input["segments"], json!(["a", "b"]));
    assert_eq!(input["client_ip"], "10.0.0.7");
    assert_eq!(input["identity"], Json::Null);
    // Numbers are JSON integers, as OPA's time builtins and servers read them.
    assert_eq!(input["time"], json!({"unix": 5, "ns": 5_000_000_000u64}));
}

#[test]
fn a_policy_that_does_not_parse_names_its_file_and_line() {
    let err = RegoPolicy::new(
        "broken.rego",
        "package t\n\nallow if {\n  input.x ==\n".into(),
        None,
        "data.t.allow",
        vec![],
        vec![],
        "r",
    )
    .unwrap_err();
    assert!(err.contains("broken.rego"), "{err}");
    assert!(err.contains(":4") || err.contains(":5"), "{err}");
    let err = RegoPolicy::new(
        "unknown.rego",
        "package t\nallow if no_such_builtin(input.x)\n".into(),
        None,
        "data.t.allow",
        vec![],
        vec![],
        "r",
    )
    .unwrap_err();
    assert!(err.contains("no_such_builtin"), "{err}");
    assert!(err.starts_with("--> unknown.rego:2:"), "{err}");
}
