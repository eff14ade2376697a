//! The gateway owns identity headers (security catalogue H1–H20): whatever a client sends in
//! the identity namespace never reaches a backend; the backend sees exactly one value set by
//! the gateway, or none. And the signed identity assertion, verified as a backend would.

use crate::support::*;
use serde_json::json;

fn setup(extra_upstream: &str) -> (SigningIdp, Echo, Gateway) {
    let idp = SigningIdp::new();
    let echo = Echo::start();
    let gw = corp_gateway(
        &idp,
        &echo,
        extra_upstream,
        r#"  - name: orders
    match: { path_prefix: /orders }
    upstream: echo
    auth: { jwt: corp }
  - name: open
    match: { path_prefix: /open }
    upstream: echo
    auth: public
"#,
    );
    (idp, echo, gw)
}

/// Send raw header lines (each ending in CRLF) with a valid token; what the origin saw.
fn raw_with_token(gw: &Gateway, token: &str, path: &str, lines: &str) -> String {
    raw_request(
        gw.addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n{lines}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// What the origin saw of a request with a valid token and these forged header lines.
fn forged(idp: &SigningIdp, gw: &Gateway, lines: &str) -> Echoed {
    echoed(&raw_with_token(gw, &idp.good_token(), "/orders/1", lines))
}

fn echoed(raw: &str) -> Echoed {
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    serde_json::from_str(raw_body(raw)).unwrap()
}

#[test]
fn h1_a_forged_user_id_is_replaced_by_the_verified_one() {
    let (idp, _echo, gw) = setup("");
    let e = forged(&idp, &gw, "X-User-ID: admin\r\n");
    assert_eq!(e.header_all("x-user-id"), ["alice"]);
}

#[test]
fn h2_case_variants_are_all_removed() {
    let (idp, _echo, gw) = setup("");
    let e = forged(
        &idp,
        &gw,
        "x-user-id: admin\r\nX-USER-ID: admin\r\nX-User-Id: admin\r\nX-TENANT-ID: evil\r\n",
    );
    assert_eq!(e.header_all("x-user-id"), ["alice"]);
    assert_eq!(e.header_all("x-tenant-id"), ["acme"]);
}

#[test]
fn h3_separator_variants_are_removed() {
    let (idp, _echo, gw) = setup("");
    let lines = [
        "X_User_ID",
        "X.User.ID",
        "X~User~ID",
        "X+User+ID",
        "X!User!ID",
        "X%User%ID",
        "x_user_roles",
        "X.Auth.Method",
    ]
    .iter()
    .map(|n| format!("{n}: admin\r\n"))
    .collect::<String>();
    let e = echoed(&raw_with_token(&gw, &idp.good_token(), "/orders/1", &lines));
    assert_eq!(e.header_all("x-user-id"), ["alice"]);
    assert_eq!(e.header_all("x-auth-method"), ["jwt"]);
    assert_eq!(e.header_all("x-user-roles"), ["orders-admin,user"]);
    for (name, _) in &e.headers {
        let n = name.to_ascii_lowercase();
        assert!(
            !(n.contains("user") && (n.contains('_') || n.contains('.') || n.contains('~'))),
            "{name} reached the origin"
        );
    }
}

#[test]
fn h4_identity_headers_are_stripped_on_public_routes_too() {
    let (_idp, _echo, gw) = setup("");
    let r = raw_request(
        gw.addr,
        b"GET /open/x HTTP/1.1\r\nHost: a\r\nX-User-ID: admin\r\nX-User-Roles: admin\r\nX-Tenant-ID: t\r\nX-Client-ID: c\r\nConnection: close\r\n\r\n",
    );
    let e = echoed(&r);
    for h in ["x-user-id", "x-user-roles", "x-tenant-id", "x-client-id"] {
        assert_eq!(e.header(h), None, "{h}");
    }
}

#[test]
fn h5_repeated_or_comma_joined_values_leave_a_single_gateway_value() {
    let (idp, _echo, gw) = setup("");
    let e = forged(
        &idp,
        &gw,
        "X-User-ID: admin\r\nX-User-ID: root\r\nX-User-Roles: admin, root\r\n",
    );
    assert_eq!(e.header_all("x-user-id"), ["alice"]);
    assert_eq!(e.header_all("x-user-roles"), ["orders-admin,user"]);
}

#[test]
fn h6_header_syntax_variants_never_pass_a_forged_value() {
    let (idp, _echo, gw) = setup("");
    let token = idp.good_token();
    let e = echoed(&raw_with_token(
        &gw,
        &token,
        "/orders/1",
        "X-User-ID:admin\r\n",
    ));
    assert_eq!(e.header_all("x-user-id"), ["alice"]);
    // Whitespace before the colon is refused outright (RFC 9112 §5.1).
    for line in ["X-User-ID : admin\r\n", "X-User-ID\t: admin\r\n"] {
        let raw = raw_with_token(&gw, &token, "/orders/1", line);
        assert!(raw.starts_with("HTTP/1.1 400"), "{line:?}: {raw}");
    }
}

#[test]
fn h7_trailers_never_become_headers() {
    let (idp, echo, gw) = setup("");
    let token = idp.good_token();
    let raw = raw_request(
        gw.addr,
        format!(
            "POST /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-User-ID: admin\r\nX-Tenant-ID: evil\r\n\r\n"
        )
        .as_bytes(),
    );
    let e = echoed(&raw);
    assert_eq!(e.header_all("x-user-id"), ["alice"]);
    assert_eq!(e.header_all("x-tenant-id"), ["acme"]);
    assert_eq!(e.body_length, 5);
    assert!(e.headers.iter().all(|(_, v)| v != "admin" && v != "evil"));
    assert_eq!(echo.received().len(), 1);
}

#[test]
fn h8_identity_headers_of_other_stacks_are_stripped() {
    let (idp, _echo, gw) = setup("");
    let names = [
        "X-Forwarded-User",
        "X-Remote-User",
        "Remote-User",
        "X-Auth-Request-User",
        "X-Consumer-Username",
        "X-Consumer-ID",
        "X-Credential-Identifier",
        "X-Authenticated-Userid",
        "X-Client-Cert",
        "X-Client-Cert-Chain",
        "X-Forwarded-Client-Cert",
        "X-SSL-Client-DN",
        "X-SSL-Client-Verify",
        "Client-Cert",
        "Client-Cert-Chain",
        "X-Identity-Claims",
        "X-Tenant-Region",
    ];
    let lines: String = names.iter().map(|n| format!("{n}: forged\r\n")).collect();
    let e = echoed(&raw_with_token(&gw, &idp.good_token(), "/orders/1", &lines));
    for n in names {
        assert_eq!(e.header(n), None, "{n} reached the origin");
    }
    assert!(e.headers.iter().all(|(_, v)| v != "forged"));
}

#[test]
fn h10_a_forged_identity_assertion_is_stripped() {
    let (_idp, _echo, gw) = setup("");
    let r = raw_request(
        gw.addr,
        b"GET /open/x HTTP/1.1\r\nHost: a\r\nX-Identity-Assertion: eyJhbGciOiJub25lIn0.e30.\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(echoed(&r).header("x-identity-assertion"), None);
}

#[test]
fn h12_authorization_nominated_by_connection_is_decided_on_then_removed() {
    let (idp, _echo, gw) = setup("");
    let raw = raw_exchange(
        gw.addr,
        format!(
            "GET /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nConnection: keep-alive, Authorization\r\n\r\n",
            idp.good_token()
        )
        .as_bytes(),
        std::time::Duration::from_millis(500),
    );
    let e = echoed(&raw);
    assert_eq!(e.header("authorization"), None);
    assert_eq!(e.header_all("x-user-id"), ["alice"]);
}

#[test]
fn h15_obs_fold_never_forwards_a_folded_identity() {
    let (idp, echo, gw) = setup("");
    let raw = raw_with_token(
        &gw,
        &idp.good_token(),
        "/orders/1",
        "X-User-ID: a\r\n  dmin\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(echo.received().is_empty());
}

#[test]
fn h20_host_case_port_and_trailing_dot_select_the_same_route() {
    let idp = SigningIdp::new();
    let echo = Echo::start();
    let gw = corp_gateway(
        &idp,
        &echo,
        "",
        r#"  - name: api
    match: { host: api.example.com, path_prefix: / }
    upstream: echo
    auth: { jwt: corp }
  - name: rest
    match: { path_prefix: / }
    upstream: echo
    auth: public
"#,
    );
    for host in [
        "api.example.com",
        "API.EXAMPLE.COM:443",
        "api.example.com.",
        "Api.Example.Com.:8080",
    ] {
        let raw = raw_request(
            gw.addr,
            format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            raw.starts_with("HTTP/1.1 401"),
            "{host} escaped the protected route: {raw}"
        );
    }
    assert!(echo.received().is_empty());
}

#[test]
fn the_signed_identity_assertion_verifies_with_the_admin_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let key = openssl::pkey::PKey::generate_ed25519().unwrap();
    let key_file = dir.path().join("assertion.pem");
    std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let (idp, _echo, gw) = setup(&format!(
        "    identity_assertion:\n      key_file: {}\n      kid: gw-2026\n      ttl: 30s\n",
        key_file.display()
    ));
    let resp = client()
        .get(gw.url("/orders/7/items?page=2"))
        .header("Authorization", format!("Bearer {}", idp.good_token()))
        .header("X-Request-ID", "req-assert-1")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e: Echoed = resp.json().unwrap();
    let assertion = e
        .header("x-identity-assertion")
        .expect("assertion sent")
        .to_string();

    let jwks: jsonwebtoken::jwk::JwkSet = client()
        .get(gw.admin_url("/.well-known/jwks.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let jwk = jwks.find("gw-2026").expect("key published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["echo"]);
    validation.set_issuer(&["portcullis"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &assertion,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["path"], "/orders/7/items");
    assert_eq!(claims["jti"], "req-assert-1");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["roles"], json!(["orders-admin", "user"]));
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 30);

    // Public routes carry no assertion: there is no verified identity to assert.
    let open: Echoed = client()
        .get(gw.url("/open/x"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(open.header("x-identity-assertion"), None);
}
