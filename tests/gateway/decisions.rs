//! The engine's other front ends: `portcullis explain` and the JSON-lines decision protocol
//! (`portcullis stdio`), run as the real binary.

use crate::support::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

// ------------------------------------------------------------------ explain

fn explain_config(idp: &SigningIdp, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("explain.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners: [{{address: 127.0.0.1:1}}]\n{provider}upstreams:\n  orders:\n    backends: [127.0.0.1:9]\nroutes:\n  - name: health\n    match: {{ path: /health }}\n    upstream: orders\n    auth: public\n  - name: admin\n    match: {{ path_prefix: /api/admin }}\n    upstream: orders\n    auth: {{ jwt: corp, roles: [admin] }}\n",
            provider = idp.provider_yaml("corp")
        ),
    )
    .unwrap();
    path
}

fn explain(conf: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("explain")
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn explain_shows_an_allowed_request_and_the_exact_upstream_headers() {
    let idp = SigningIdp::new();
    let dir = tempfile::tempdir().unwrap();
    let conf = explain_config(&idp, dir.path());
    let admin = idp.token_for("ada", &["admin"], &[], &[]);
    let (code, text) = explain(
        &conf,
        &[
            "-H",
            &format!("Authorization: Bearer {admin}"),
            "-H",
            "X-User-ID: forged",
            "GET",
            "http://api.example.com/api/public/../admin/users?x=1",
        ],
    );
    assert_eq!(code, 0, "{text}");
    for expected in [
        "canonical path  /api/admin/users",
        "route           admin (upstream orders, enforce mode)",
        "jwt (corp)",
        "verified: subject ada",
        "roles: any of [admin]",
        "decision        forward to upstream orders",
        "  GET /api/admin/users?x=1",
        "  x-user-id: ada",
        "  x-user-roles: admin",
        "  x-forwarded-for: 127.0.0.1",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("forged"), "{text}");
    assert!(
        !text.contains(&admin),
        "the token is never printed:\n{text}"
    );
}

#[test]
fn explain_shows_401_and_403_with_their_reasons() {
    let idp = SigningIdp::new();
    let dir = tempfile::tempdir().unwrap();
    let conf = explain_config(&idp, dir.path());
    let (code, text) = explain(&conf, &["GET", "/api/admin/users"]);
    assert_eq!(code, 3);
    assert!(
        text.contains("decision        401 token_missing: A bearer token is required."),
        "{text}"
    );
    assert!(
        text.contains(r#"www-authenticate: Bearer realm="portcullis""#),
        "{text}"
    );
    assert!(!text.contains("upstream request"), "{text}");

    let user = idp.token_for("uma", &["user"], &[], &[]);
    let (code, out) = explain(
        &conf,
        &[
            "--json",
            "-H",
            &format!("Authorization: Bearer {user}"),
            "DELETE",
            "/api/admin/users/7",
        ],
    );
    assert_eq!(code, 3);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["route"]["name"], "admin");
    assert_eq!(v["decision"]["status"], 403);
    assert_eq!(v["decision"]["error"], "insufficient_role");
    assert_eq!(
        v["decision"]["message"],
        "Insufficient roles: required one of [admin], have [user]"
    );
    assert_eq!(v["upstream_request"], Value::Null);
    let steps: Vec<String> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} => {}", s["check"], s["outcome"]))
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.contains("not satisfied (have [user])")),
        "{steps:?}"
    );

    // A path the gateway refuses is explained too.
    let (code, out) = explain(&conf, &["--json", "GET", "/api/%2e%2e/admin"]);
    assert_eq!(code, 3);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"]["error"], "path_encoded_dot");
    assert_eq!(v["route"], Value::Null);
}

// ------------------------------------------------------------------- stdio

/// Run `portcullis stdio` on these lines; the replies (one JSON per line) and stderr.
fn stdio(args: &[&str], lines: &[String]) -> (Vec<Value>, String) {
    let mut child = Command::new(BIN)
        .arg("stdio")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            stdin.write_all(l.as_bytes()).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let replies = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (replies, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn msg(body: Value) -> String {
    json!({"src": "c1", "dest": "gw", "body": body}).to_string()
}

fn api_request(id: u64, method: &str, path: &str, token: Option<&str>) -> Value {
    let headers = match token {
        Some(t) => json!({"Authorization": format!("Bearer {t}")}),
        None => json!({}),
    };
    json!({"type": "api_request", "msg_id": id, "method": method, "path": path, "headers": headers})
}

fn public_pem(idp: &SigningIdp) -> String {
    std::fs::read_to_string(&idp.public_pem).unwrap()
}

#[test]
fn stdio_answers_the_seed_examples() {
    let idp = SigningIdp::new();
    let valid = idp.token(json!({
        "sub": "user123", "role": "admin", "permissions": ["read", "write"], "exp": now() + 600
    }));
    let expired = idp.token(json!({"sub": "user123", "exp": now() - 60}));
    let reader = idp.token(json!({"sub": "user9", "permissions": ["read"], "exp": now() + 600}));
    let mut bad_signature = valid.clone();
    bad_signature.truncate(valid.len() - 4);
    bad_signature.push_str("AAAA");
    let mut with_permission = api_request(6, "DELETE", "/api/users/123", Some(&reader));
    with_permission["required_permission"] = json!("delete");
    let lines = vec![
        msg(json!({"type": "init", "msg_id": 1, "jwt_public_key": public_pem(&idp)})),
        msg(api_request(2, "GET", "/api/users/123", Some(&valid))),
        msg(api_request(3, "GET", "/api/users/123", Some(&expired))),
        msg(api_request(
            4,
            "GET",
            "/api/users/123",
            Some(&bad_signature),
        )),
        msg(api_request(5, "GET", "/api/orders/1", None)),
        msg(with_permission),
    ];
    let (replies, _) = stdio(&[], &lines);
    assert_eq!(replies.len(), 6);
    for r in &replies {
        assert_eq!(
            (r["src"].as_str(), r["dest"].as_str()),
            (Some("gw"), Some("c1"))
        );
    }
    // Whole bodies: exactly the protocol's fields, nothing more.
    let b: Vec<&Value> = replies.iter().map(|r| &r["body"]).collect();
    assert_eq!(*b[0], json!({"type": "init_ok", "in_reply_to": 1}));
    assert_eq!(
        *b[1],
        json!({"type": "api_response", "in_reply_to": 2, "status": 200,
               "service": "users-service",
               "user_context": {"user_id": "user123", "role": "admin",
                                "permissions": ["read", "write"]}})
    );
    assert_eq!(
        *b[2],
        json!({"type": "api_response", "in_reply_to": 3, "status": 401, "error": "Token expired"})
    );
    assert_eq!(
        *b[3],
        json!({"type": "api_response", "in_reply_to": 4, "status": 401,
               "error": "Invalid or expired token"})
    );
    assert_eq!(
        *b[4],
        json!({"type": "api_response", "in_reply_to": 5, "status": 401, "error": "Missing token"})
    );
    assert_eq!(
        *b[5],
        json!({"type": "api_response", "in_reply_to": 6, "status": 403,
               "error": "Insufficient permissions: required [delete], have [read]"})
    );
}

#[test]
fn stdio_survives_malformed_lines_and_requests_before_init() {
    let idp = SigningIdp::new();
    let valid = idp.token(json!({"sub": "u", "exp": now() + 600}));
    let lines = vec![
        msg(api_request(1, "GET", "/api/users/1", Some(&valid))),
        "this is not json".to_string(),
        json!({"src": "c1", "dest": "gw"}).to_string(),
        msg(json!({"type": "teleport", "msg_id": 2})),
        msg(json!({"type": "api_request", "msg_id": 3, "method": "GET"})),
        msg(json!({"type": "init", "msg_id": 4, "jwt_public_key": "short"})),
        msg(json!({"type": "init", "msg_id": 5, "jwt_public_key": public_pem(&idp)})),
        msg(api_request(6, "GET", "/api/users/1", Some(&valid))),
    ];
    let (replies, stderr) = stdio(&[], &lines);
    let b: Vec<&Value> = replies.iter().map(|r| &r["body"]).collect();
    assert_eq!(b.len(), 6, "{replies:?}");
    // Before init no token can be valid.
    assert_eq!(
        (b[0]["in_reply_to"].as_u64(), b[0]["status"].as_u64()),
        (Some(1), Some(401))
    );
    assert_eq!(
        (b[1]["type"].as_str(), b[1]["in_reply_to"].as_u64()),
        (Some("error"), Some(2))
    );
    assert_eq!(
        (b[2]["type"].as_str(), b[2]["in_reply_to"].as_u64()),
        (Some("error"), Some(3))
    );
    // An HMAC secret under 32 bytes is refused, as in a configuration (J7).
    assert_eq!(b[3]["type"], "error");
    assert!(b[3]["text"].as_str().unwrap().contains("at least 32 bytes"));
    assert_eq!(b[4]["type"], "init_ok");
    assert_eq!(
        (b[5]["in_reply_to"].as_u64(), b[5]["status"].as_u64()),
        (Some(6), Some(200))
    );
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
}

#[test]
fn stdio_with_a_configuration_uses_its_routes_and_policies() {
    let idp = SigningIdp::new();
    let dir = tempfile::tempdir().unwrap();
    let conf = explain_config(&idp, dir.path());
    let admin = idp.token_for("ada", &["admin"], &[], &["read"]);
    let user = idp.token_for("uma", &["user"], &[], &[]);
    let lines = vec![
        msg(api_request(1, "GET", "/api/admin/x", Some(&admin))),
        msg(api_request(2, "GET", "/api/admin/x", Some(&user))),
        msg(api_request(3, "GET", "/health", None)),
        msg(api_request(4, "GET", "/nowhere", None)),
    ];
    let (replies, _) = stdio(&["-c", conf.to_str().unwrap()], &lines);
    let b: Vec<&Value> = replies.iter().map(|r| &r["body"]).collect();
    assert_eq!(
        (b[0]["status"].as_u64(), b[0]["service"].as_str()),
        (Some(200), Some("orders"))
    );
    assert_eq!(b[0]["user_context"]["user_id"], "ada");
    assert_eq!(b[0]["user_context"]["role"], "admin");
    assert_eq!(b[1]["status"], 403);
    assert_eq!(
        b[1]["error"],
        "Insufficient roles: required one of [admin], have [user]"
    );
    assert_eq!(
        (b[2]["status"].as_u64(), b[2]["service"].as_str()),
        (Some(200), Some("orders"))
    );
    assert_eq!(b[3]["status"], 404);
}

// ------------------------------------------- one decision, whichever front end

/// What a front end answered: the status and, where it says one, the stable code.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u64,
    code: Option<String>,
}

fn explain_answer(conf: &std::path::Path, args: &[&str]) -> Answer {
    let out = Command::new(BIN)
        .args(["explain", "--json", "-c"])
        .arg(conf)
        .args(args)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let d = &v["decision"];
    if d["forward"] == json!(true) {
        return Answer {
            status: 200,
            code: None,
        };
    }
    Answer {
        status: d["status"].as_u64().unwrap(),
        code: d["error"].as_str().map(str::to_string),
    }
}

fn stdio_answer(conf: &std::path::Path, request: Value) -> (u64, Value) {
    let (replies, stderr) = stdio(&["-c", conf.to_str().unwrap()], &[msg(request)]);
    assert_eq!(replies.len(), 1, "{stderr}");
    let body = &replies[0]["body"];
    (body["status"].as_u64().unwrap(), body["error"].clone())
}

fn proxy_answer(raw: &str) -> Answer {
    let status: u64 = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let code = serde_json::from_str::<Value>(raw_body(raw))
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string));
    Answer { status, code }
}

#[test]
fn the_proxy_explain_and_stdio_refuse_hostile_requests_alike() {
    let echo = Echo::start();
    let gw = Gateway::start(&pass_through(echo.addr));
    let conf = gw.config_path.clone();
    // (what, raw HTTP/1.1 request, explain arguments, stdio request, the engine's code)
    let cases: [(&str, &str, &[&str], Value, &str); 3] = [
        (
            "two Host headers (H19)",
            "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            &[
                "-H",
                "Host: a.example",
                "-H",
                "Host: b.example",
                "GET",
                "/a",
            ],
            json!({"host": ["a.example", "b.example"]}),
            "ambiguous_host",
        ),
        (
            "an absolute-form target naming another host (P11)",
            "GET http://b.example/a HTTP/1.1\r\nHost: a.example\r\n\r\n",
            &["-H", "Host: a.example", "GET", "http://b.example/a"],
            json!({"host": "a.example"}),
            "ambiguous_host",
        ),
        (
            "Connection nominating a header the gateway sets (H13)",
            "GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: close, X-Forwarded-For\r\n\r\n",
            &[
                "-H",
                "Host: a.example",
                "-H",
                "Connection: X-Forwarded-For",
                "GET",
                "/a",
            ],
            json!({"host": "a.example", "connection": "X-Forwarded-For"}),
            "invalid_connection_header",
        ),
    ];
    for (i, (what, raw, explain_args, headers, code)) in cases.into_iter().enumerate() {
        let proxy = proxy_answer(&raw_request(gw.addr, raw.as_bytes()));
        let explained = explain_answer(&conf, explain_args);
        let path = if i == 1 { "http://b.example/a" } else { "/a" };
        let (stdio_status, stdio_error) = stdio_answer(
            &conf,
            json!({"type": "api_request", "msg_id": 1, "method": "GET", "path": path, "headers": headers}),
        );
        assert_eq!(
            explained,
            Answer {
                status: 400,
                code: Some(code.into())
            },
            "explain, {what}"
        );
        assert_eq!(stdio_status, 400, "stdio, {what}: {stdio_error}");
        assert_eq!(proxy.status, 400, "proxy, {what}");
        // Pingora's HTTP/1 parser refuses the first two itself, with a bare 400, before the
        // engine sees them; when the engine answers, it is with the same code.
        if let Some(c) = &proxy.code {
            assert_eq!(c, code, "proxy, {what}");
        }
    }
    assert!(
        echo.received().is_empty(),
        "a hostile request was forwarded"
    );

    // `Connection: X-User-ID` is no refusal anywhere (H11): the header is removed, and what
    // the backend gets is the same whether asked of the proxy or of explain.
    let raw = raw_request(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: close, X-User-ID\r\nX-User-ID: admin\r\n\r\n",
    );
    assert_eq!(proxy_answer(&raw).status, 200, "{raw}");
    let seen: Echoed = serde_json::from_str(raw_body(&raw)).unwrap();
    assert_eq!(seen.header("x-user-id"), None, "{raw}");
    let out = Command::new(BIN)
        .args(["explain", "--json", "-c"])
        .arg(&conf)
        .args([
            "-H",
            "Host: a.example",
            "-H",
            "Connection: X-User-ID",
            "-H",
            "X-User-ID: admin",
            "GET",
            "/a",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"]["forward"], json!(true), "{v}");
    let upstream = v["upstream_request"]["headers"].as_array().unwrap();
    assert!(
        !upstream
            .iter()
            .any(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("x-user-id")),
        "{v}"
    );
}

#[test]
fn x9_the_proxy_explain_and_stdio_agree_a_host_other_than_the_tls_server_name_is_misdirected() {
    let m = crate::mtls::start_with("optional", "", &|o| pass_through(o));
    let (cert, key, _) =
        m.ca.issue(m.dir.path(), "agree", &crate::support::pki::Leaf::default());
    let (status, body) =
        crate::mtls::curl_path(&m, "/", Some((&cert, &key)), &["Host: admin.internal"]);
    let proxy = Answer {
        status: u64::from(status),
        code: error_body(&body)["error"].as_str().map(str::to_string),
    };
    let expected = Answer {
        status: 421,
        code: Some("misdirected_request".into()),
    };
    assert_eq!(proxy, expected, "proxy: {body}");
    let conf = &m.gw.config_path;
    assert_eq!(
        explain_answer(
            conf,
            &[
                "--sni",
                "localhost",
                "-H",
                "Host: admin.internal",
                "GET",
                "/"
            ]
        ),
        expected,
        "explain"
    );
    let (stdio_status, _) = stdio_answer(
        conf,
        json!({"type": "api_request", "msg_id": 1, "method": "GET", "path": "/",
               "headers": {"host": "admin.internal"}, "sni": "localhost"}),
    );
    assert_eq!(stdio_status, 421, "stdio");
    // The name the connection was made for passes in all three.
    assert_eq!(
        explain_answer(
            conf,
            &["--sni", "localhost", "-H", "Host: localhost", "GET", "/"]
        )
        .status,
        200
    );
    assert!(m.echo.received().is_empty());
}
