//! Answers the gateway writes itself: codes and JSON bodies.

use crate::support::*;
use std::time::{Duration, Instant};

fn assert_json_error(
    resp: reqwest::blocking::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], code);
    assert_eq!(v["request_id"], id.as_str(), "body and header ids differ");
    v
}

#[test]
fn no_route_gives_404_json() {
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: echo\n    auth: public\n",
        echo.addr
    ));
    let resp = client()
        .get(gw.url("/nope"))
        .header("X-Request-ID", "rid-404")
        .send()
        .unwrap();
    let v = assert_json_error(resp, 404, "route_not_found");
    assert_eq!(v["request_id"], "rid-404");
    // The admin endpoints are not on the public listener.
    let resp = client().get(gw.url("/metrics")).send().unwrap();
    assert_json_error(resp, 404, "route_not_found");
    let resp = client().get(gw.url("/health/ready")).send().unwrap();
    assert_json_error(resp, 404, "route_not_found");
}

#[test]
fn unreachable_upstream_gives_502_after_retries() {
    let closed = free_port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  dead:\n    backends: [\"127.0.0.1:{closed}\"]\n    retries: 2\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: dead\n    auth: public\n"
    ));
    let resp = client().get(gw.url("/x")).send().unwrap();
    assert_json_error(resp, 502, "upstream_unreachable");
    let series = format!(
        "portcullis_upstream_connect_errors_total{{backend=\"127.0.0.1:{closed}\",upstream=\"dead\"}}"
    );
    // One backend: the first attempt fails and there is no other backend to retry on.
    assert_eq!(gw.metric(&series), Some(1.0));
}

#[test]
fn connection_failure_is_retried_on_another_backend() {
    let echo = Echo::start();
    let closed = free_port();
    // No health check: the dead backend stays in rotation, so only retries can save the
    // requests that land on it.
    let gw = Gateway::start(&format!(
        "upstreams:\n  mixed:\n    backends: [\"127.0.0.1:{closed}\", \"{}\"]\n    retries: 1\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: mixed\n    auth: public\n",
        echo.addr
    ));
    let c = client();
    for i in 0..10 {
        let resp = c
            .post(gw.url("/retry"))
            .body(format!("body {i}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        let r: Echoed = resp.json().unwrap();
        assert_eq!(r.server, echo.addr.to_string());
        assert_eq!(r.body_sha256, sha256_hex(format!("body {i}").as_bytes()));
    }
    let series = format!(
        "portcullis_upstream_connect_errors_total{{backend=\"127.0.0.1:{closed}\",upstream=\"mixed\"}}"
    );
    // Every failed attempt is counted; how many requests picked the dead backend first
    // depends on the rotation, but at least one did and none failed.
    let failures = gw.metric(&series).unwrap_or(0.0);
    assert!(
        (1.0..=10.0).contains(&failures),
        "{failures} connect errors"
    );
}

#[test]
fn retries_zero_means_one_attempt() {
    let echo = Echo::start();
    let closed = free_port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  mixed:\n    backends: [\"127.0.0.1:{closed}\", \"{}\"]\n    retries: 0\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: mixed\n    auth: public\n",
        echo.addr
    ));
    let c = client();
    let statuses: Vec<u16> = (0..4)
        .map(|_| c.get(gw.url("/r")).send().unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
}

#[test]
fn slow_upstream_gives_504() {
    let stalled = StalledOrigin::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  slow:\n    backends: [\"{}\"]\n    read_timeout: 10s\nroutes:\n  - name: slow\n    match: {{ path_prefix: / }}\n    upstream: slow\n    auth: public\n    timeouts: {{ read: 300ms }}\n",
        stalled.addr
    ));
    let started = Instant::now();
    let resp = client().get(gw.url("/wait")).send().unwrap();
    let took = started.elapsed();
    assert_json_error(resp, 504, "upstream_timeout");
    // The route's 300ms applies, not the pool's 10s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Security catalogue H19: two Host headers are ambiguous (which one did the policy see?).
/// Pingora's HTTP/1 parser rejects them before any hook runs, with a bare 400 and a closed
/// connection; nothing is forwarded.
#[test]
fn h19_two_host_headers_are_rejected() {
    let echo = Echo::start();
    let gw = Gateway::start(&pass_through(echo.addr));
    // No `Connection: close`: the gateway must close the connection by itself.
    let resp = raw_request(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        !resp.contains("\"server\""),
        "the request reached the origin: {resp}"
    );
}
