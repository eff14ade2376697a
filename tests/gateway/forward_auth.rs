//! ForwardAuth end to end: a real HTTP auth service (here, in the test) decides each request.
//! What the service is told (the request's method, URI, host and client, and only the headers
//! it is configured to see), what the backend gets on a 2xx (the service's identity headers,
//! never the client's forged ones), the service's own answer on a refusal or a login
//! redirect, and 503 when it does not answer; alone and inside `any`.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the auth service received: its request line and headers (lower-case names).
#[derive(Debug, Clone)]
struct Asked {
    line: String,
    headers: Vec<(String, String)>,
}

impl Asked {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The auth service. By the `Authorization` it is shown: `Bearer good` is allowed (200, with
/// identity headers and one header it is not asked for), `Bearer user` too (other roles); `Bearer login` is sent to log in
/// (302); `Bearer slow` is answered after 3 s; anything else is refused with 401 and a JSON
/// body of its own.
struct AuthService {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl AuthService {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut headers);
                    if req.parse(&buf).is_err() {
                        return;
                    }
                    let asked = Asked {
                        line: format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or("")),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                    };
                    let authorization = asked.header("authorization").unwrap_or("").to_string();
                    seen.lock().unwrap().push(asked);
                    let answer = match authorization.as_str() {
                        "Bearer good" => "HTTP/1.1 200 OK\r\nX-User-ID: alice\r\nX-User-Role: admin\r\nX-Tenant-ID: acme\r\nX-Internal: secret\r\nContent-Length: 0\r\n\r\n".to_string(),
                        "Bearer user" => "HTTP/1.1 200 OK\r\nX-User-ID: bob\r\nX-User-Role: viewer, editor\r\nContent-Length: 0\r\n\r\n".to_string(),
                        "Bearer login" => "HTTP/1.1 302 Found\r\nLocation: https://login.example.com/?rd=back\r\nSet-Cookie: state=1\r\nContent-Length: 0\r\n\r\n".to_string(),
                        "Bearer slow" => {
                            std::thread::sleep(Duration::from_secs(3));
                            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                        }
                        _ => {
                            let body = r#"{"error":"no session"}"#;
                            format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Bearer realm=\"sso\"\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        }
                    };
                    let _ = conn.write_all(answer.as_bytes());
                });
            }
        });
        Self { addr, asked }
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

/// `GET path` with this `Authorization`.
fn get(gw: &Gateway, path: &str, authorization: impl AsRef<str>) -> reqwest::blocking::Response {
    client()
        .get(gw.url(path))
        .header("authorization", authorization.as_ref())
        .send()
        .unwrap()
}

/// A gateway with the ForwardAuth service `sso` at `url`: `/app` takes it alone, `/either`
/// takes a JWT from `corp` or it.
fn gateway(idp: &SigningIdp, echo: &Echo, url: &str) -> Gateway {
    Gateway::start(&format!(
        "{provider}forward_auth:\n  sso:\n    url: {url}\n    timeout: 500ms\n    request_headers: [Authorization, Cookie]\n    response_headers: [X-User-ID, X-User-Role, X-Tenant-ID]\n    subject_header: X-User-ID\n    roles_header: X-User-Role\n    breaker: {{ failures: 3, open_for: 5s }}\nupstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - {{ name: admin, match: {{ path_prefix: /app/admin }}, upstream: echo, auth: {{ forward_auth: sso, roles: [admin] }} }}\n  - {{ name: app, match: {{ path_prefix: /app }}, upstream: echo, auth: {{ forward_auth: sso }} }}\n  - {{ name: either, match: {{ path_prefix: /either }}, upstream: echo, auth: {{ any: [{{ jwt: corp }}, {{ forward_auth: sso }}] }} }}\n",
        provider = idp.provider_yaml("corp"),
        origin = echo.addr
    ))
}

#[test]
fn h21_an_allowed_request_carries_the_services_identity_headers_and_never_the_clients() {
    let (idp, echo, auth) = (SigningIdp::new(), Echo::start(), AuthService::start());
    let gw = gateway(&idp, &echo, &format!("http://{}/verify", auth.addr));
    let resp = client()
        .post(gw.url("/app/orders/../items?page=2"))
        .header("authorization", "Bearer good")
        .header("cookie", "session=abc")
        .header("x-user-id", "mallory")
        .header("x-user-role", "root")
        .header("x-unlisted", "not for the service")
        .body("the body stays with the backend")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("x-user-role"), Some("admin"));
    assert_eq!(seen.header("x-tenant-id"), Some("acme"));
    assert_eq!(seen.header("x-auth-method"), Some("forward_auth"));
    assert_eq!(seen.header("x-auth-provider"), Some("sso"));
    assert_eq!(
        seen.header("x-internal"),
        None,
        "not a listed response header"
    );
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.path, "/app/items");

    // What the service was told: the request, and only the headers it may see.
    let asked = auth.asked();
    assert_eq!(asked.len(), 1);
    let a = &asked[0];
    assert_eq!(a.line, "GET /verify");
    assert_eq!(a.header("x-forwarded-method"), Some("POST"));
    assert_eq!(a.header("x-forwarded-uri"), Some("/app/items?page=2"));
    assert_eq!(a.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        a.header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    assert_eq!(a.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(a.header("authorization"), Some("Bearer good"));
    assert_eq!(a.header("cookie"), Some("session=abc"));
    for hidden in ["x-user-id", "x-user-role", "x-unlisted", "content-length"] {
        assert_eq!(a.header(hidden), None, "{hidden} reached the service");
    }
    // The access log is written after the response, by its own writer.
    assert!(
        gw.eventually(Duration::from_secs(5), || gw
            .access_log()
            .contains(r#""subject":"alice""#)),
        "{}",
        gw.access_log()
    );
}

#[test]
fn the_roles_the_service_lists_are_checked_by_the_routes_requirements() {
    let (idp, echo, auth) = (SigningIdp::new(), Echo::start(), AuthService::start());
    let gw = gateway(&idp, &echo, &format!("http://{}/verify", auth.addr));
    let resp = get(&gw, "/app/admin/users", "Bearer good");
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header("x-user-roles"), Some("admin"));
    // Roles `viewer` and `editor` (the header's list, spaces trimmed): not enough here.
    let resp = get(&gw, "/app/admin/users", "Bearer user");
    assert_eq!(resp.status(), 403);
    assert_eq!(
        error_body(&resp.text().unwrap())["error"],
        "insufficient_role"
    );
    let resp = get(&gw, "/app/orders", "Bearer user");
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header("x-user-roles"), Some("viewer,editor"));
    assert_eq!(seen.header("x-user-id"), Some("bob"));
    assert_eq!(echo.received().len(), 2);
}

#[test]
fn a_refusal_or_a_login_redirect_is_the_services_own_answer() {
    let (idp, echo, auth) = (SigningIdp::new(), Echo::start(), AuthService::start());
    let gw = gateway(&idp, &echo, &format!("http://{}/verify", auth.addr));
    let resp = get(&gw, "/app", "Bearer wrong");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["www-authenticate"], r#"Bearer realm="sso""#);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.text().unwrap(), r#"{"error":"no session"}"#);

    // A browser would follow it; this client shows it.
    let no_redirects = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(gw.url("/app"))
        .header("authorization", "Bearer login")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "https://login.example.com/?rd=back"
    );
    assert!(
        echo.received().is_empty(),
        "nothing refused reached the origin"
    );
    assert_eq!(
        gw.metric(r#"portcullis_forward_auth_requests_total{outcome="denied",service="sso"}"#),
        Some(2.0)
    );
}

#[test]
fn r12_a_service_that_does_not_answer_is_503_and_opens_the_breaker() {
    let (idp, echo, auth) = (SigningIdp::new(), Echo::start(), AuthService::start());
    let gw = gateway(&idp, &echo, &format!("http://{}/verify", auth.addr));
    // Slower than the 500 ms timeout.
    let resp = get(&gw, "/app", "Bearer slow");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        error_body(&resp.text().unwrap())["error"],
        "auth_unavailable"
    );

    // Nobody listening: after three failures in a row the service is not called at all.
    let down = free_port();
    let gw = gateway(&idp, &echo, &format!("http://127.0.0.1:{down}/verify"));
    for _ in 0..5 {
        let resp = get(&gw, "/app", "Bearer good");
        assert_eq!(resp.status(), 503);
    }
    assert_eq!(
        gw.metric(r#"portcullis_forward_auth_requests_total{outcome="unreachable",service="sso"}"#),
        Some(3.0)
    );
    assert_eq!(
        gw.metric(
            r#"portcullis_forward_auth_requests_total{outcome="circuit_open",service="sso"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        gw.metric(r#"portcullis_forward_auth_breaker_state{service="sso"}"#),
        Some(1.0)
    );
    assert!(echo.received().is_empty());
}

#[test]
fn inside_any_a_verified_token_needs_no_call_and_the_service_decides_the_rest() {
    let (idp, echo, auth) = (SigningIdp::new(), Echo::start(), AuthService::start());
    let gw = gateway(&idp, &echo, &format!("http://{}/verify", auth.addr));
    let resp = client()
        .get(gw.url("/either"))
        .header("authorization", format!("Bearer {}", idp.good_token()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header("x-auth-method"), Some("jwt"));
    // Not a JWT of corp's: the service is asked, and its answer stands.
    let resp = get(&gw, "/either", "Bearer good");
    assert_eq!(resp.status(), 200);
    let seen: Echoed = resp.json().unwrap();
    assert_eq!(seen.header("x-auth-method"), Some("forward_auth"));
    let resp = get(&gw, "/either", "Bearer wrong");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().unwrap(), r#"{"error":"no session"}"#);
    assert_eq!(auth.asked().len(), 2, "the verified JWT needed no call");
}
