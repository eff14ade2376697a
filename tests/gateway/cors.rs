//! CORS for browser clients: preflights answered by the gateway before authentication and
//! never forwarded; CORS headers on actual responses (refusals included) for allowed origins
//! only; and a real browser — headless Chromium — whose page, from an allowed origin, calls a
//! JWT route with a token and reads the 401's JSON without one, while a page from another
//! origin is kept from both by the browser itself.

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A gateway with provider `corp` and two routes on one echo origin: `/orders` (JWT, the
/// top-level `cors` for `origin`) and `/catalogue` (public, GET only, its own `cors: *`).
fn cors_gateway(idp: &SigningIdp, echo: &Echo, origin: &str) -> Gateway {
    Gateway::start(&format!(
        "{provider}cors:\n  allowed_origins: [\"{origin}\", \"https://*.preview.example.com\"]\n  allowed_methods: [GET, POST]\n  allowed_headers: [Authorization, Content-Type]\n  exposed_headers: [X-Request-ID]\n  max_age: 5m\nupstreams:\n  echo:\n    backends: [\"{backend}\"]\nroutes:\n  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: echo, auth: {{ jwt: corp }} }}\n  - name: catalogue\n    match: {{ path_prefix: /catalogue, methods: [GET] }}\n    upstream: echo\n    auth: public\n    cors: {{ allowed_origins: [\"*\"] }}\n",
        provider = idp.provider_yaml("corp"),
        backend = echo.addr
    ))
}

fn header<'r>(r: &'r reqwest::blocking::Response, name: &str) -> Option<&'r str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str) -> reqwest::blocking::Response {
    client()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .unwrap()
}

#[test]
fn o2_a_preflight_from_an_allowed_origin_is_answered_by_the_gateway_and_never_forwarded() {
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let app = "https://app.example.com";
    let gw = cors_gateway(&idp, &echo, app);

    let r = preflight(&gw, "/orders/7", app, "POST");
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(app));
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(header(&r, "access-control-max-age"), Some("300"));
    assert_eq!(header(&r, "vary"), Some("Origin"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert!(r.headers().contains_key("x-request-id"));
    assert!(r.text().unwrap().is_empty());
    // A subdomain of the wildcard pattern, too.
    let r = preflight(&gw, "/orders", "https://pr-12.preview.example.com", "GET");
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://pr-12.preview.example.com")
    );
    assert!(echo.received().is_empty(), "a preflight reached the origin");

    // From another origin it is the OPTIONS request it is: the JWT route wants a token, and
    // nothing tells the browser it may go on.
    let r = preflight(&gw, "/orders/7", "https://evil.test", "POST");
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "vary"), Some("Origin"));
    // Asking for a method the route does not take: no route for it, so no CORS answer.
    let r = preflight(&gw, "/catalogue", "https://any.test", "DELETE");
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert!(echo.received().is_empty());
}

#[test]
fn o3_actual_responses_carry_cors_headers_for_allowed_origins_refusals_included() {
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let app = "https://app.example.com";
    let gw = cors_gateway(&idp, &echo, app);
    let c = client();

    let ok = c
        .get(gw.url("/orders/7"))
        .header("Origin", app)
        .bearer_auth(idp.good_token())
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "access-control-allow-origin"), Some(app));
    assert_eq!(
        header(&ok, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(header(&ok, "vary"), Some("Origin"));

    let refused = c
        .get(gw.url("/orders/7"))
        .header("Origin", app)
        .send()
        .unwrap();
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(app));
    assert_eq!(header(&refused, "vary"), Some("Origin"));
    unauthorized(refused, "token_missing");

    let other = c
        .get(gw.url("/orders/7"))
        .header("Origin", "https://evil.test")
        .bearer_auth(idp.good_token())
        .send()
        .unwrap();
    assert_eq!(other.status(), 200, "CORS never changes the decision");
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    assert_eq!(header(&other, "access-control-expose-headers"), None);
    assert_eq!(header(&other, "vary"), Some("Origin"));

    // `*` on the public route: the same answer for every origin, so no Vary.
    let any = c
        .get(gw.url("/catalogue"))
        .header("Origin", "https://x.test")
        .send()
        .unwrap();
    assert_eq!(any.status(), 200);
    assert_eq!(header(&any, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&any, "vary"), None);
}

/// A child process killed (by its pid) when the test ends, however it ends.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The page a browser loads: it calls `url` with the token and without it, and writes what
/// its script saw (status and JSON, or the error fetch threw) into `#result`.
fn page(url: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="result">pending</pre><script>
const out = {{}};
async function call(name, init) {{
  try {{
    const r = await fetch("{url}", init);
    out[name] = {{ status: r.status, request_id: r.headers.get("x-request-id"), body: await r.json() }};
  }} catch (e) {{
    out[name] = {{ error: String(e) }};
  }}
}}
(async () => {{
  await call("with_token", {{ headers: {{ "Authorization": "Bearer {token}" }} }});
  await call("without_token", {{}});
  document.getElementById("result").textContent = JSON.stringify(out);
}})();
</script></body></html>"#
    )
}

/// What the page at `url` wrote, as Chromium's DOM after the script ran; `None` when Chromium
/// cannot be started here.
fn browse(url: &str) -> Option<serde_json::Value> {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // Containers often give /dev/shm only 64 MiB.
            "--disable-dev-shm-usage",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find(r#"<pre id="result">"#)? + r#"<pre id="result">"#.len();
    let end = start + dom[start..].find("</pre>")?;
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    Some(serde_json::from_str(&text).unwrap_or_else(|_| panic!("the page wrote: {text}")))
}

#[test]
fn a_browser_page_from_an_allowed_origin_calls_a_jwt_route_and_reads_its_401() {
    if Command::new("chromium").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: make test-deps installs Debian's chromium"
        );
        eprintln!(
            "SKIPPED: Chromium cannot start here (install Debian's chromium: make test-deps)"
        );
        return;
    }
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let pages = tempfile::tempdir().unwrap();
    let port = free_port();
    // The page's origin, and the same page from another origin (localhost is not 127.0.0.1).
    let allowed = format!("http://127.0.0.1:{port}");
    let gw = cors_gateway(&idp, &echo, &allowed);
    std::fs::write(
        pages.path().join("page.html"),
        page(&gw.url("/orders/7"), &idp.good_token()),
    )
    .unwrap();
    let server = Stopped(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(pages.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for_port(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(10)
    ));

    let Some(seen) = browse(&format!("{allowed}/page.html")) else {
        assert!(std::env::var_os("CI").is_none(), "chromium did not start");
        eprintln!("SKIPPED: Chromium cannot start here");
        return;
    };
    // The preflight passed (the token's request needs one), the origin saw alice.
    let with = &seen["with_token"];
    assert_eq!(with["status"], 200, "{seen}");
    assert!(
        with["request_id"].is_string(),
        "X-Request-ID is exposed: {seen}"
    );
    let headers = with["body"]["headers"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "x-user-id" && h[1] == "alice"),
        "{seen}"
    );
    // Without the token the script reads the refusal.
    let without = &seen["without_token"];
    assert_eq!(without["status"], 401, "{seen}");
    assert_eq!(without["body"]["error"], "token_missing", "{seen}");

    // From another origin the browser keeps both answers from the script.
    let blocked = browse(&format!("http://localhost:{port}/page.html")).unwrap();
    for call in ["with_token", "without_token"] {
        let error = blocked[call]["error"].as_str().unwrap_or_default();
        assert!(error.contains("Failed to fetch"), "{call}: {blocked}");
    }
    // Only the allowed page's call with the token reached the origin: no preflight did, the
    // refused calls stopped at the gateway, and the other page's call with a token was never
    // sent (its preflight got no CORS answer).
    let methods: Vec<String> = echo.received().into_iter().map(|(m, _)| m).collect();
    assert_eq!(methods, ["GET"]);
    drop(server);
}

/// `portcullis explain` of a preflight for POST on `/orders/7` from `origin`.
fn explain_preflight(conf: &str, origin: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["explain", "-c", conf])
        .args(extra)
        .args(["-H", &format!("Origin: {origin}")])
        .args([
            "-H",
            "Access-Control-Request-Method: POST",
            "OPTIONS",
            "/orders/7",
        ])
        .output()
        .unwrap()
}

#[test]
fn explain_and_the_decision_protocol_show_a_preflight_answered_by_the_gateway() {
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let app = "https://app.example.com";
    let gw = cors_gateway(&idp, &echo, app);
    let conf = gw.config_path.to_str().unwrap();
    let out = explain_preflight(conf, app, &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"]["preflight"], true);
    assert_eq!(v["decision"]["status"], 204);
    assert_eq!(v["decision"]["headers"]["access-control-allow-origin"], app);
    assert_eq!(v["upstream_request"], serde_json::Value::Null);
    assert_eq!(v["canonical_path"], "/orders/7");
    assert_eq!(v["client_ip"], "127.0.0.1");
    // The text form names the path and the client like any decision's.
    let text = explain_preflight(conf, app, &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(!text.contains("null"), "{text}");
    assert!(text.contains("/orders/7"), "{text}");
    // From another origin: the OPTIONS request it is, refused without a token (exit 3).
    let other = explain_preflight(conf, "https://evil.test", &[]);
    assert_eq!(other.status.code(), Some(3));

    let mut child = Command::new(BIN)
        .args(["stdio", "-c", conf])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let request = serde_json::json!({"src": "c1", "dest": "gw", "body": {
        "type": "api_request", "msg_id": 1, "method": "OPTIONS", "path": "/orders/7",
        "headers": {"Origin": app, "Access-Control-Request-Method": "POST"}}});
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{request}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let reply: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(reply["body"]["status"], 204, "{reply}");
    assert_eq!(reply["body"]["preflight"], true, "{reply}");
    assert!(echo.received().is_empty());
}

#[test]
fn a_preflight_with_a_body_is_answered_once_and_its_body_never_read_as_a_request() {
    let (idp, echo) = (SigningIdp::new(), Echo::start());
    let app = "https://app.example.com";
    let gw = cors_gateway(&idp, &echo, app);
    // The body is a whole request: read as the next one, it would get an answer of its own.
    let smuggled = "GET /catalogue HTTP/1.1\r\nHost: a\r\n\r\n";
    let raw = format!(
        "OPTIONS /orders/7 HTTP/1.1\r\nHost: a\r\nOrigin: {app}\r\nAccess-Control-Request-Method: POST\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let started = std::time::Instant::now();
    let answer = raw_exchange(gw.addr, raw.as_bytes(), Duration::from_secs(5));
    assert_eq!(statuses(&answer), [204], "{answer}");
    // Nothing read of a body an anonymous client sent: the connection ends with the answer.
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "left open");
    assert!(echo.received().is_empty(), "{:?}", echo.received());
}
