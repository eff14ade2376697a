//! Path-normalisation bypasses (security catalogue P1–P14): the path a policy is decided on is
//! exactly the path forwarded, and ambiguous paths are refused. Setup as in the catalogue:
//! `/api/admin` needs the `admin` scope, `/api/public` is open, and the origin records the
//! exact path it receives.

use crate::support::*;

struct Setup {
    idp: SigningIdp,
    echo: Echo,
    gw: Gateway,
}

fn setup() -> Setup {
    let idp = SigningIdp::new();
    let echo = Echo::start();
    let gw = corp_gateway(
        &idp,
        &echo,
        "",
        r#"  - name: admin
    match: { path_prefix: /api/admin }
    upstream: echo
    auth: { jwt: corp, scopes: [admin] }
  - name: public
    match: { path_prefix: /api/public }
    upstream: echo
    auth: public
  - name: svc
    match: { path_prefix: /svc }
    upstream: echo
    auth: public
"#,
    );
    Setup { idp, echo, gw }
}

/// Status and error code for a raw request-target, without a token.
fn target(s: &Setup, target: &str) -> (u16, String) {
    let raw = raw_request(
        s.gw.addr,
        format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let status = statuses(&raw).first().copied().unwrap_or(0);
    let code = serde_json::from_str::<serde_json::Value>(raw_body(&raw))
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code)
}

/// The path the origin received for `target` sent with an admin token (200 expected).
fn forwarded_as_admin(s: &Setup, target: &str) -> String {
    let token = s.idp.token_for("root", &[], &["admin"], &[]);
    let raw = raw_request(
        s.gw.addr,
        format!(
            "GET {target} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(raw.starts_with("HTTP/1.1 200"), "{target}: {raw}");
    let e: Echoed = serde_json::from_str(raw_body(&raw)).unwrap();
    match e.query {
        Some(q) => format!("{}?{q}", e.path),
        None => e.path,
    }
}

fn refused(s: &Setup, targets: &[&str], code: &str) {
    for t in targets {
        assert_eq!(target(s, t), (400, code.to_string()), "{t}");
    }
    assert!(s.echo.received().is_empty(), "something reached the origin");
}

#[test]
fn p1_dot_segments_are_resolved_before_the_policy_sees_the_path() {
    let s = setup();
    for t in ["/api/public/../admin/users", "/api/public/./../admin/users"] {
        assert_eq!(target(&s, t), (401, "token_missing".into()), "{t}");
        assert_eq!(forwarded_as_admin(&s, t), "/api/admin/users");
    }
    assert_eq!(target(&s, "/api/../../etc/passwd").1, "path_escapes_root");
}

#[test]
fn p2_encoded_dots_are_refused() {
    let s = setup();
    refused(
        &s,
        &[
            "/api/public/%2e%2e/admin/users",
            "/api/public/%2E%2E/admin/users",
            "/api/public/.%2e/admin/users",
            "/api/public/%2e./admin/users",
        ],
        "path_encoded_dot",
    );
}

#[test]
fn p3_encoded_separators_are_refused() {
    let s = setup();
    refused(
        &s,
        &[
            "/api/public%2f..%2fadmin/users",
            "/api/public%2F..%2Fadmin/users",
            "/api/public%5c..%5cadmin",
            "/api/public/..%5Cadmin",
        ],
        "path_encoded_separator",
    );
    refused(&s, &["/api/public\\..\\admin"], "path_backslash");
}

#[test]
fn p4_repeated_slashes_are_merged_before_routing() {
    let s = setup();
    for t in [
        "//api/admin/users",
        "/api//admin/users",
        "/api/admin//users",
    ] {
        assert_eq!(target(&s, t).0, 401, "{t}");
        assert_eq!(forwarded_as_admin(&s, t), "/api/admin/users");
    }
}

#[test]
fn p5_paths_are_case_sensitive_and_an_upper_case_admin_matches_no_route() {
    let s = setup();
    for t in ["/API/Admin/users", "/api/ADMIN"] {
        assert_eq!(target(&s, t), (404, "route_not_found".into()), "{t}");
    }
    assert!(s.echo.received().is_empty());
}

#[test]
fn p6_trailing_dots_and_spaces_are_refused_and_a_trailing_slash_is_kept() {
    let s = setup();
    refused(
        &s,
        &[
            "/api/admin./users",
            "/api/admin/users.",
            "/api/admin%20/users",
        ],
        "path_ambiguous_segment",
    );
    refused(&s, &["/api/admin%09"], "path_encoded_control");
    assert_eq!(target(&s, "/api/admin/users/").0, 401);
    assert_eq!(
        forwarded_as_admin(&s, "/api/admin/users/"),
        "/api/admin/users/"
    );
}

#[test]
fn p7_path_parameters_are_refused() {
    let s = setup();
    refused(
        &s,
        &[
            "/api/admin;x=y/users",
            "/api/public/..;/admin/users",
            "/api/public/..;foo=bar/admin",
            "/api/public/%3b/admin",
        ],
        "path_parameter",
    );
}

#[test]
fn p8_double_encoding_overlong_utf8_and_unicode_dots_are_refused() {
    let s = setup();
    refused(
        &s,
        &["/api/public/%252e%252e/admin"],
        "path_double_encoding",
    );
    refused(
        &s,
        &[
            "/api/public/%c0%ae%c0%ae/admin",
            "/api/public/%u002e%u002e/admin",
        ],
        "path_invalid_encoding",
    );
    // Raw fullwidth ．．／ (U+FF0E, U+FF0F) never gets past the request line.
    let raw = raw_request(
        s.gw.addr,
        "GET /api/public/．．／admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".as_bytes(),
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(s.echo.received().is_empty());
}

/// An encoded `#` is refused. A raw `#` starts a fragment, which Pingora's parser drops
/// before any hook runs: the policy and the backend both see only the part before it, so
/// `/api/public/#/../admin` is decided and forwarded as `/api/public/`, never as admin.
#[test]
fn p9_fragments_never_carry_a_path_past_the_policy() {
    let s = setup();
    refused(&s, &["/api/public%23/../admin"], "path_encoded_fragment");
    let raw = raw_request(
        s.gw.addr,
        b"GET /api/public/#/../admin/users HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let e: Echoed = serde_json::from_str(raw_body(&raw)).unwrap();
    assert_eq!(e.path, "/api/public/");
    assert_eq!(
        s.echo.received(),
        [("GET".to_string(), "/api/public/".to_string())]
    );
}

#[test]
fn p10_encoded_control_bytes_are_refused() {
    let s = setup();
    refused(
        &s,
        &[
            "/api/admin%00/users",
            "/api/admin%0a",
            "/api/public%0d%0aX-User-ID:%20x",
        ],
        "path_encoded_control",
    );
}

#[test]
fn p11_targets_that_are_not_origin_form_paths_are_refused() {
    let s = setup();
    for t in ["*", "api/admin", "@evil/api/admin"] {
        let (status, _) = target(&s, t);
        assert_eq!(status, 400, "{t}");
    }
    // Absolute form: the gateway is not a forward proxy, so only origin-form targets are
    // taken; one naming another host than Host is refused by Pingora's parser already.
    assert_eq!(target(&s, "http://internal-host/api/admin").0, 400);
    assert_eq!(
        target(&s, "http://a/api/admin/users"),
        (400, "path_not_absolute".into())
    );
    assert!(s.echo.received().is_empty());
}

#[test]
fn p12_prefixes_match_whole_segments_and_hidden_separators_are_refused() {
    let s = setup();
    assert_eq!(target(&s, "/svcadmin"), (404, "route_not_found".into()));
    refused(&s, &["/svc%2f..%2fapi/admin"], "path_encoded_separator");
}

#[test]
fn p13_the_query_string_is_not_part_of_the_policy_path_and_is_forwarded_untouched() {
    let s = setup();
    for t in ["/api/public?x=/../admin", "/api/public?%2e%2e"] {
        assert_eq!(target(&s, t).0, 200, "{t}");
    }
    let raw = raw_request(
        s.gw.addr,
        b"GET /api/public/../public/x?next=/../admin&q=%2e%2e HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let e: Echoed = serde_json::from_str(raw_body(&raw)).unwrap();
    assert_eq!(e.path, "/api/public/x");
    assert_eq!(e.query.as_deref(), Some("next=/../admin&q=%2e%2e"));
}

#[test]
fn p14_the_policy_sees_the_decoded_path_the_backend_will_see() {
    let s = setup();
    // `%61` is `a`: without decoding, this would miss the admin route yet reach the admin
    // handler of a backend that decodes.
    assert_eq!(target(&s, "/api/%61dmin/users").0, 401);
    assert_eq!(
        forwarded_as_admin(&s, "/api/%61dmin/users"),
        "/api/admin/users"
    );
    // Reserved characters stay encoded (hex upper-cased) and are forwarded as such.
    assert_eq!(
        forwarded_as_admin(&s, "/api/admin/a%3ab"),
        "/api/admin/a%3Ab"
    );
}
