//! Requests and responses pass through intact, with the right proxy headers.

use crate::support::*;

fn one_echo() -> (Echo, Gateway) {
    let echo = Echo::start();
    let gw = Gateway::start(&pass_through(echo.addr));
    (echo, gw)
}

#[test]
fn get_and_post_bodies_of_0_1k_and_1m_arrive_intact() {
    let (_echo, gw) = one_echo();
    let c = client();
    let r: Echoed = c
        .get(gw.url("/items?x=1&y=two"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/items");
    assert_eq!(r.query.as_deref(), Some("x=1&y=two"));
    assert_eq!(r.body_length, 0);

    for size in [0usize, 1024, 1024 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let resp = c.post(gw.url("/upload")).body(body.clone()).send().unwrap();
        assert_eq!(resp.status(), 200, "POST of {size} bytes");
        let r: Echoed = resp.json().unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.body_length, size,
            "POST of {size} bytes arrived with another length"
        );
        assert_eq!(
            r.body_sha256,
            sha256_hex(&body),
            "POST of {size} bytes was altered"
        );
    }
}

#[test]
fn chunked_request_body_arrives_intact() {
    let (_echo, gw) = one_echo();
    let resp = raw_request(
        gw.addr,
        b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let r: Echoed = serde_json::from_str(raw_body(&resp)).unwrap();
    assert_eq!(r.body_length, 11);
    assert_eq!(r.body_sha256, sha256_hex(b"hello world"));
}

#[test]
fn end_to_end_headers_are_preserved_in_order() {
    let (_echo, gw) = one_echo();
    let r: Echoed = client()
        .get(gw.url("/h"))
        .header("X-Custom", "one")
        .header("Accept-Language", "en")
        .header("Authorization", "Bearer not-checked-yet")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r.header("x-custom"), Some("one"));
    assert_eq!(r.header("accept-language"), Some("en"));
    assert_eq!(r.header("authorization"), Some("Bearer not-checked-yet"));
    // Repeated headers keep every value, in order.
    let resp = raw_request(
        gw.addr,
        b"GET /dup HTTP/1.1\r\nHost: a\r\nX-Multi: 1\r\nX-Multi: 2\r\nConnection: close\r\n\r\n",
    );
    let r: Echoed = serde_json::from_str(raw_body(&resp)).unwrap();
    assert_eq!(r.header_all("x-multi"), ["1", "2"]);
}

/// Security catalogue H9: a direct client cannot choose the address the backend sees.
#[test]
fn h9_forwarding_headers_from_a_direct_client_are_replaced() {
    let (_echo, gw) = one_echo();
    let r: Echoed = client()
        .get(gw.url("/f"))
        .header("Host", "api.example.com")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Real-IP", "10.0.0.1")
        .header("Forwarded", "for=10.0.0.1")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.header_all("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(r.header("forwarded"), None);
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header_all("x-forwarded-host"), ["api.example.com"]);
    assert_eq!(r.header("host"), Some("api.example.com"));
}

/// Security catalogue H11/H14: hop-by-hop headers and headers nominated by `Connection`
/// never reach the backend.
#[test]
fn h11_h14_connection_nominated_and_hop_by_hop_headers_are_not_forwarded() {
    let (_echo, gw) = one_echo();
    let resp = raw_request(
        gw.addr,
        b"POST /hop HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nConnection: keep-alive\r\nX-Secret: s3cr3t\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Forwarded-For: 198.51.100.1\r\nX-Kept: yes\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let r: Echoed = serde_json::from_str(raw_body(&resp)).unwrap();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ] {
        assert_eq!(r.header(gone), None, "{gone} reached the backend");
    }
    assert_eq!(r.header("x-kept"), Some("yes"));
    assert_eq!(r.body_length, 5);
    assert_eq!(r.body_sha256, sha256_hex(b"hello"));
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn request_id_is_kept_generated_or_replaced_and_returned() {
    let (_echo, gw) = one_echo();
    let c = client();

    // Kept when well-formed: the backend and the client both see it.
    let resp = c
        .get(gw.url("/id"))
        .header("X-Request-ID", "trace-42.a_b:c")
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-42.a_b:c");
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header_all("x-request-id"), ["trace-42.a_b:c"]);

    // Generated when absent.
    let resp = c.get(gw.url("/id")).send().unwrap();
    let returned = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(returned.len(), 32);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header_all("x-request-id"), [returned.as_str()]);

    // Replaced when malformed: too long, unsafe characters, or sent twice.
    let long = "a".repeat(129);
    for bad in [
        long.as_str(),
        "has space",
        "semi;colon",
        "quote\"d",
        "<script>",
    ] {
        let resp = c
            .get(gw.url("/id"))
            .header("X-Request-ID", bad)
            .send()
            .unwrap();
        let returned = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(returned, bad);
        assert_eq!(
            returned.len(),
            32,
            "{bad:?} was not replaced by a generated id"
        );
        let r: Echoed = resp.json().unwrap();
        assert_eq!(r.header_all("x-request-id"), [returned.as_str()]);
    }
    let resp = raw_request(
        gw.addr,
        b"GET /id HTTP/1.1\r\nHost: a\r\nX-Request-ID: one\r\nX-Request-ID: two\r\nConnection: close\r\n\r\n",
    );
    let r: Echoed = serde_json::from_str(raw_body(&resp)).unwrap();
    let ids = r.header_all("x-request-id");
    assert_eq!(ids.len(), 1);
    assert!(ids[0] != "one" && ids[0] != "two");

    // The id is in the access log line of the request.
    assert!(gw.eventually(std::time::Duration::from_secs(5), || gw
        .access_log()
        .contains("\"request_id\":\"trace-42.a_b:c\"")));
}

#[test]
fn routes_match_most_specific_first_by_host_path_and_method() {
    let a = Echo::start();
    let b = Echo::start();
    let c_ = Echo::start();
    let gw = Gateway::start(&format!(
        r#"upstreams:
  a:
    backends: ["{a}"]
  b:
    backends: ["{b}"]
  c:
    backends: ["{c}"]
routes:
  - name: catch-all
    match: {{ path_prefix: / }}
    upstream: a
    auth: public
  - name: users
    match: {{ path_prefix: /users }}
    upstream: b
    auth: public
  - name: login
    match: {{ path: /login, methods: [POST] }}
    upstream: c
    auth: public
  - name: admin-host
    match: {{ host: admin.example.com, path_prefix: / }}
    upstream: c
    auth: public
"#,
        a = a.addr,
        b = b.addr,
        c = c_.addr
    ));
    let cl = client();
    let served_by = |method: reqwest::Method, path: &str, host: Option<&str>| -> String {
        let mut req = cl.request(method, gw.url(path));
        if let Some(h) = host {
            req = req.header("Host", h);
        }
        let r: Echoed = req.send().unwrap().json().unwrap();
        r.server
    };
    let (a, b, c) = (a.addr.to_string(), b.addr.to_string(), c_.addr.to_string());
    assert_eq!(served_by(reqwest::Method::GET, "/users/7", None), b);
    assert_eq!(served_by(reqwest::Method::GET, "/users", None), b);
    assert_eq!(served_by(reqwest::Method::GET, "/usersettings", None), a);
    assert_eq!(served_by(reqwest::Method::POST, "/login", None), c);
    assert_eq!(served_by(reqwest::Method::GET, "/login", None), a);
    assert_eq!(
        served_by(
            reqwest::Method::GET,
            "/users/7",
            Some("ADMIN.example.com:8080")
        ),
        c
    );
}

#[test]
fn method_not_on_the_route_gets_405_with_allow() {
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: login\n    match: {{ path: /login, methods: [POST, PUT] }}\n    upstream: echo\n    auth: public\n",
        echo.addr
    ));
    let resp = client().delete(gw.url("/login")).send().unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST, PUT");
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], "method_not_allowed");
}

#[test]
fn round_robin_spreads_requests_evenly_across_the_pool() {
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let gw = Gateway::start(&pool_of(&addrs(&echoes), "    selection: round_robin\n"));
    let c = client();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..30 {
        let r: Echoed = c.get(gw.url("/rr")).send().unwrap().json().unwrap();
        *counts.entry(r.server).or_insert(0) += 1;
    }
    for e in &echoes {
        assert_eq!(counts.get(&e.addr.to_string()), Some(&10), "{counts:?}");
    }
}

#[test]
fn consistent_hash_keeps_a_key_on_one_backend() {
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let gw = Gateway::start(&pool_of(
        &addrs(&echoes),
        "    selection: consistent_hash\n    hash_key: { header: X-User }\n",
    ));
    let c = client();
    let mut seen = std::collections::HashSet::new();
    for user in 0..20 {
        let first: Echoed = c
            .get(gw.url("/ch"))
            .header("X-User", format!("user-{user}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        for _ in 0..3 {
            let again: Echoed = c
                .get(gw.url("/ch"))
                .header("X-User", format!("user-{user}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(again.server, first.server, "user-{user} moved");
        }
        seen.insert(first.server);
    }
    assert!(
        seen.len() >= 2,
        "20 keys all hashed to one backend: {seen:?}"
    );
}

#[test]
fn access_log_has_one_json_line_per_request_without_secrets() {
    let (_echo, gw) = one_echo();
    let c = client();
    c.get(gw.url("/logged?token=abc"))
        .header("Authorization", "Bearer sup3r-s3cret-t0ken")
        .header("X-Request-ID", "log-me")
        .send()
        .unwrap();
    c.get(gw.url("/second")).send().unwrap();
    assert!(gw.eventually(std::time::Duration::from_secs(5), || gw
        .access_log()
        .lines()
        .count()
        >= 2));
    let log = gw.access_log();
    assert!(!log.contains("sup3r-s3cret-t0ken"));
    let line = log
        .lines()
        .find(|l| l.contains("\"log-me\""))
        .expect("line for the request");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/logged");
    assert_eq!(v["route"], "all");
    assert_eq!(v["status"], 200);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["backend"], _echo.addr.to_string());
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(v["bytes_sent"].as_u64().unwrap() > 0);
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

/// Security catalogue H13: `Connection` cannot remove framing, host or gateway-owned
/// headers; such a request is ambiguous and refused before it is routed.
#[test]
fn h13_connection_cannot_nominate_framing_or_gateway_headers() {
    let (_echo, gw) = one_echo();
    for nominated in [
        "Content-Length",
        "transfer-encoding",
        "Host",
        "X-Forwarded-For",
        "x-request-id",
    ] {
        let resp = raw_request(
            gw.addr,
            format!(
                "POST /n HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, {nominated}\r\nContent-Length: 5\r\n\r\nhello"
            )
            .as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 400"), "{nominated}: {resp}");
        let v = error_body(raw_body(&resp));
        assert_eq!(v["error"], "invalid_connection_header", "{nominated}");
    }
    // Nothing of the above was forwarded: the access log shows no upstream for them.
    assert!(gw.eventually(std::time::Duration::from_secs(5), || gw
        .access_log()
        .lines()
        .count()
        == 5));
    for line in gw.access_log().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["backend"], "");
    }
}

#[test]
fn random_selection_uses_every_backend() {
    let echoes: Vec<Echo> = (0..2).map(|_| Echo::start()).collect();
    let gw = Gateway::start(&format!(
        "upstreams:\n  pool:\n    backends: [\"{}\", \"{}\"]\n    selection: random\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: pool\n    auth: public\n",
        echoes[0].addr, echoes[1].addr
    ));
    let c = client();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let r: Echoed = c.get(gw.url("/rand")).send().unwrap().json().unwrap();
        seen.insert(r.server);
    }
    // The chance that 40 random picks miss one of two backends is 2^-39.
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn consistent_hash_on_client_address_pins_a_client() {
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let gw = Gateway::start(&pool_of(
        &addrs(&echoes),
        "    selection: consistent_hash\n    hash_key: client_address\n",
    ));
    let c = fresh_client();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..12 {
        let r: Echoed = c.get(gw.url("/pin")).send().unwrap().json().unwrap();
        seen.insert(r.server);
    }
    assert_eq!(
        seen.len(),
        1,
        "one client address moved between backends: {seen:?}"
    );
}

#[test]
fn the_echo_origins_log_records_the_headers_that_reached_it_in_order_with_duplicates() {
    let (echo, gw) = one_echo();
    let resp = client()
        .get(gw.url("/logged?q=1"))
        .header("X-Dup", "one")
        .header("X-Other", "x")
        .header("X-Dup", "two")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answered: Echoed = resp.json().unwrap();
    assert!(eventually(std::time::Duration::from_secs(5), &mut || !echo
        .logged()
        .is_empty()));
    let logged = echo.logged();
    assert_eq!(logged.len(), 1);
    let line = &logged[0];
    assert_eq!(
        (line.method.as_str(), line.path.as_str()),
        ("GET", "/logged")
    );
    assert_eq!(line.query.as_deref(), Some("q=1"));
    assert_eq!(line.header_all("x-dup"), ["one", "two"]);
    assert_eq!(line.header("x-other"), Some("x"));
    // The log line is the description the origin answered with.
    assert_eq!(line.headers, answered.headers);
}
