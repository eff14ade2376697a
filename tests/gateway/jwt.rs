//! JWT-protected routes end to end: the real gateway with a provider whose key is a PEM file,
//! in front of a real origin that records what it receives.

use crate::support::*;
use serde_json::json;

const ISS: &str = SIGNING_ISS;
const AUD: &str = SIGNING_AUD;

fn idp() -> SigningIdp {
    SigningIdp::new()
}

/// A gateway with the IdP as provider `corp`: `/orders` needs its tokens, `/public` does not.
fn orders_gateway(idp: &SigningIdp, echo: &Echo) -> Gateway {
    corp_gateway(
        idp,
        echo,
        "",
        r#"  - name: orders
    match: { path_prefix: /orders }
    upstream: echo
    auth: { jwt: corp }
  - name: public
    match: { path_prefix: /public }
    upstream: echo
    auth: public
"#,
    )
}

#[test]
fn verified_identity_reaches_the_backend_and_forged_headers_do_not() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let token = idp.good_token();
    let resp = client()
        .get(gw.url("/orders/7"))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-User-ID", "mallory")
        .header("x_user_roles", "root")
        .header("X.Tenant.ID", "evil")
        .header("X-Auth-Method", "none")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header_all("x-user-id"), ["alice"]);
    assert_eq!(r.header_all("x-user-roles"), ["orders-admin,user"]);
    assert_eq!(r.header_all("x-user-scopes"), ["orders:read,orders:write"]);
    assert_eq!(r.header_all("x-tenant-id"), ["acme"]);
    assert_eq!(r.header_all("x-auth-method"), ["jwt"]);
    assert_eq!(r.header_all("x-auth-provider"), ["corp"]);
    for forged in ["x_user_roles", "x.tenant.id"] {
        assert_eq!(r.header(forged), None, "{forged} reached the backend");
    }
    assert_eq!(
        r.header("authorization"),
        None,
        "the token is not forwarded"
    );

    // The scheme is case-insensitive; the same token again is served from the cache.
    let resp = client()
        .get(gw.url("/orders/7"))
        .header("Authorization", format!("bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header_all("x-user-id"), ["alice"]);
    assert_eq!(
        gw.metric(r#"portcullis_jwt_cache_total{provider="corp",result="miss"}"#),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_jwt_cache_total{provider="corp",result="hit"}"#),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_jwt_keys{provider="corp"}"#),
        Some(1.0)
    );
}

#[test]
fn public_routes_also_drop_forged_identity_headers() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let r: Echoed = client()
        .get(gw.url("/public/x"))
        .header("X-User-ID", "mallory")
        .header("X_USER_ID", "mallory")
        .header("X-Client-ID", "forged")
        .send()
        .unwrap()
        .json()
        .unwrap();
    for h in ["x-user-id", "x_user_id", "x-client-id", "x-auth-method"] {
        assert_eq!(r.header(h), None, "{h} reached the backend");
    }
}

#[test]
fn refused_tokens_get_401_with_a_precise_code_and_are_never_forwarded() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let c = client();
    let get = |auth: Option<String>| {
        let mut req = c.get(gw.url("/orders/secret"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().unwrap()
    };

    let challenge = unauthorized(get(None), "token_missing");
    assert_eq!(challenge, r#"Bearer realm="portcullis""#);
    unauthorized(
        get(Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l".into())),
        "token_missing",
    );

    let expired = idp.token(json!({"iss": ISS, "aud": AUD, "sub": "a", "exp": now() - 120}));
    let challenge = unauthorized(get(Some(format!("Bearer {expired}"))), "token_expired");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"error_description="Token expired""#),
        "{challenge}"
    );

    let wrong_aud =
        idp.token(json!({"iss": ISS, "aud": "api://other", "sub": "a", "exp": now() + 60}));
    unauthorized(
        get(Some(format!("Bearer {wrong_aud}"))),
        "token_wrong_audience",
    );
    let wrong_iss =
        idp.token(json!({"iss": "https://evil", "aud": AUD, "sub": "a", "exp": now() + 60}));
    unauthorized(
        get(Some(format!("Bearer {wrong_iss}"))),
        "token_wrong_issuer",
    );

    let good = idp.good_token();
    let (msg, _) = good.rsplit_once('.').unwrap();
    let other = idp.token(json!({"iss": ISS, "aud": AUD, "sub": "b", "exp": now() + 60}));
    let foreign_sig = other.rsplit_once('.').unwrap().1;
    unauthorized(
        get(Some(format!("Bearer {msg}.{foreign_sig}"))),
        "token_bad_signature",
    );
    // E4: two spaces, or nothing, after the scheme.
    unauthorized(get(Some(format!("Bearer  {good}"))), "token_malformed");
    unauthorized(get(Some("Bearer ".into())), "token_missing");

    // The token never appears in the access log.
    assert!(gw.eventually(std::time::Duration::from_secs(5), || gw
        .access_log()
        .lines()
        .count()
        >= 8));
    assert!(!gw.access_log().contains(&good[..40]));
    assert!(!gw.access_log().contains(&expired[..40]));
    // Nothing above reached the origin.
    assert!(echo.received().is_empty(), "{:?}", echo.received());

    let m = gw.metrics();
    assert!(m.contains(r#"portcullis_auth_decisions_total{provider="corp",reason="token_expired",result="deny"} 1"#), "{m}");
}

/// Security catalogue T1: two Authorization headers are ambiguous, never "first one wins".
#[test]
fn t1_two_authorization_headers_are_refused() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let good = idp.good_token();
    let raw = raw_request(
        gw.addr,
        format!(
            "GET /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {good}\r\nAuthorization: Bearer junk\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains(r#"www-authenticate: bearer realm="portcullis", error="invalid_request""#),
        "{raw}"
    );
    let v = error_body(raw_body(&raw));
    assert_eq!(v["error"], "ambiguous_credentials");
    assert!(echo.received().is_empty());
}

/// Security catalogue T2: comma-joined credentials in one header are not a token.
#[test]
fn t2_comma_joined_bearer_values_are_refused() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let good = idp.good_token();
    for value in [
        format!("Bearer {good}, Bearer junk"),
        format!("Bearer junk, Bearer {good}"),
        format!("Bearer {good},Bearer {good}"),
    ] {
        let resp = client()
            .get(gw.url("/orders/1"))
            .header("Authorization", value)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            error_body(&resp.text().unwrap())["error"],
            "token_malformed"
        );
    }
    assert!(echo.received().is_empty());
}

/// The status and error code for one raw `Authorization` header value.
fn raw_auth(gw: &Gateway, value: &str) -> (u16, String) {
    let raw = raw_request(
        gw.addr,
        format!("GET /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization:{value}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let status = statuses(&raw).first().copied().unwrap_or(0);
    let code = if status == 200 {
        String::new()
    } else {
        error_body(raw_body(&raw))["error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    (status, code)
}

/// Security catalogue E4: the scheme name is case-insensitive (RFC 9110 §11.1); the token
/// follows exactly one space and its bytes are taken as they are. Whitespace around the whole
/// field value is not part of it (RFC 9110 §5.5), so it changes nothing.
#[test]
fn e4_bearer_scheme_case_and_whitespace() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let good = idp.good_token();
    for (value, expected) in [
        (format!(" Bearer {good}"), (200, "")),
        (format!(" bearer {good}"), (200, "")),
        (format!(" BEARER {good}"), (200, "")),
        (format!("  Bearer {good}  "), (200, "")),
        (format!("\tBearer {good}\t"), (200, "")),
        (format!(" Bearer  {good}"), (401, "token_malformed")),
        (format!(" Bearer\t{good}"), (401, "token_missing")),
        (
            format!(" Bearer {}", good.to_uppercase()),
            (401, "token_malformed"),
        ),
        (" Bearer".to_string(), (401, "token_missing")),
        (" Bearer ".to_string(), (401, "token_missing")),
        (format!(" Basic {good}"), (401, "token_missing")),
        (format!(" Bearer{good}"), (401, "token_missing")),
    ] {
        let got = raw_auth(&gw, &value);
        assert_eq!((got.0, got.1.as_str()), expected, "Authorization:{value:?}");
    }
    assert_eq!(echo.received().len(), 5);
}

/// Security catalogue T3: the token is read from the `Authorization` header only. One in the
/// query string or a cookie is not a credential, so it can neither stand in for the header nor
/// compete with it.
#[test]
fn t3_tokens_elsewhere_than_the_authorization_header_are_not_credentials() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let good = idp.good_token();
    let in_query = client()
        .get(gw.url(&format!("/orders/1?access_token={good}")))
        .send()
        .unwrap();
    assert_eq!(in_query.status(), 401);
    assert_eq!(
        error_body(&in_query.text().unwrap())["error"],
        "token_missing"
    );
    let in_cookie = client()
        .get(gw.url("/orders/1"))
        .header("Cookie", format!("access_token={good}; token={good}"))
        .send()
        .unwrap();
    assert_eq!(in_cookie.status(), 401);
    assert!(echo.received().is_empty());

    // With a good header, a junk token in the query is not looked at; the header decides.
    let both = client()
        .get(gw.url("/orders/1?access_token=junk"))
        .header("Authorization", format!("Bearer {good}"))
        .send()
        .unwrap();
    assert_eq!(both.status(), 200);
    // And a bad header is not rescued by a good token in the query.
    let rescued = client()
        .get(gw.url(&format!("/orders/1?access_token={good}")))
        .header("Authorization", "Bearer junk")
        .send()
        .unwrap();
    assert_eq!(rescued.status(), 401);
    assert_eq!(echo.received().len(), 1);
}

/// Security catalogue T4: a token in `Proxy-Authorization` is not a credential for the route,
/// and the header never reaches the backend.
#[test]
fn t4_proxy_authorization_is_neither_used_nor_forwarded() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let good = idp.good_token();
    let resp = client()
        .get(gw.url("/orders/1"))
        .header("Proxy-Authorization", format!("Bearer {good}"))
        .send()
        .unwrap();
    unauthorized(resp, "token_missing");
    let r: Echoed = client()
        .get(gw.url("/public/1"))
        .header("Proxy-Authorization", format!("Bearer {good}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r.header("proxy-authorization"), None);
}

/// Security catalogue T5: after a successful authentication the token is not forwarded; the
/// backend gets the verified identity instead.
#[test]
fn t5_authorization_is_not_forwarded_after_authentication() {
    let idp = idp();
    let echo = Echo::start();
    let gw = orders_gateway(&idp, &echo);
    let good = idp.good_token();
    let r: Echoed = client()
        .post(gw.url("/orders/1"))
        .header("Authorization", format!("Bearer {good}"))
        .body("x")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("x-user-id"), Some("alice"));
}
