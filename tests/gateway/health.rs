//! Active health checks take dead backends out of rotation and bring them back.

use crate::support::*;
use std::time::Duration;

fn pool_config(echoes: &[&Echo], check: &str) -> String {
    let backends: Vec<_> = echoes.iter().map(|e| e.addr).collect();
    pool_of(
        &backends,
        &format!("    retries: 0\n    health_check:\n{check}\n"),
    )
}

fn healthy_series(addr: &std::net::SocketAddr) -> String {
    format!("portcullis_backend_healthy{{backend=\"{addr}\",upstream=\"pool\"}}")
}

#[test]
fn killed_backend_is_taken_out_and_returns_when_back() {
    let a = Echo::start();
    let mut b = Echo::start();
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        "      type: tcp\n      interval: 200ms\n      timeout: 200ms\n      unhealthy_threshold: 1\n      healthy_threshold: 1",
    ));
    assert_eq!(gw.metric(&healthy_series(&b.addr)), Some(1.0));

    b.stop();
    assert!(
        gw.eventually(Duration::from_secs(10), || gw
            .metric(&healthy_series(&b.addr))
            == Some(0.0)),
        "the stopped backend was never marked unhealthy"
    );
    // With retries off, any request sent to the dead backend would fail: none may.
    let c = client();
    for i in 0..20 {
        let resp = c.get(gw.url("/h")).send().unwrap();
        assert_eq!(resp.status(), 200, "request {i} went to the dead backend");
        let r: Echoed = resp.json().unwrap();
        assert_eq!(r.server, a.addr.to_string());
    }

    b.restart();
    assert!(
        gw.eventually(Duration::from_secs(10), || gw
            .metric(&healthy_series(&b.addr))
            == Some(1.0)),
        "the restarted backend never came back"
    );
    let mut servers = std::collections::HashSet::new();
    for _ in 0..10 {
        let r: Echoed = c.get(gw.url("/h")).send().unwrap().json().unwrap();
        servers.insert(r.server);
    }
    assert!(
        servers.contains(&b.addr.to_string()),
        "no traffic after recovery"
    );
}

#[test]
fn http_check_uses_path_and_expected_status() {
    // `portcullis echo` answers 200 to every path; expecting 204 marks both unhealthy.
    let a = Echo::start();
    let gw_ok = Gateway::start(&pool_config(
        &[&a],
        "      type: http\n      path: /healthz\n      expected_status: 200\n      interval: 200ms",
    ));
    assert_eq!(gw_ok.metric(&healthy_series(&a.addr)), Some(1.0));
    assert_eq!(client().get(gw_ok.url("/x")).send().unwrap().status(), 200);

    let gw_bad = Gateway::start(&pool_config(
        &[&a],
        "      type: http\n      path: /healthz\n      expected_status: 204\n      interval: 200ms",
    ));
    assert!(gw_bad.eventually(Duration::from_secs(10), || gw_bad
        .metric(&healthy_series(&a.addr))
        == Some(0.0)));
    let resp = client().get(gw_bad.url("/x")).send().unwrap();
    assert_eq!(resp.status(), 503);
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], "no_healthy_upstream");
}

#[test]
fn pool_with_no_healthy_backend_gives_503() {
    let mut a = Echo::start();
    let gw = Gateway::start(&pool_config(
        &[&a],
        "      type: tcp\n      interval: 200ms\n      timeout: 200ms",
    ));
    a.stop();
    assert!(gw.eventually(Duration::from_secs(10), || gw
        .metric(&healthy_series(&a.addr))
        == Some(0.0)));
    let resp = client().get(gw.url("/x")).send().unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], "no_healthy_upstream");
    // Readiness is about the gateway, not one pool: still ready, with the pool shown empty.
    let ready = client().get(gw.admin_url("/health/ready")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().unwrap();
    assert_eq!(body["upstreams"]["pool"]["healthy"], 0);
}

#[test]
fn thresholds_need_consecutive_results_to_flip() {
    let a = Echo::start();
    let mut b = Echo::start();
    // Out after 3 failures, back after 3 successes, checked every 300ms.
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        "      type: tcp\n      interval: 300ms\n      timeout: 200ms\n      unhealthy_threshold: 3\n      healthy_threshold: 3",
    ));
    let series = healthy_series(&b.addr);
    b.stop();
    let stopped = std::time::Instant::now();
    assert!(gw.eventually(Duration::from_secs(10), || gw.metric(&series) == Some(0.0)));
    let to_out = stopped.elapsed();
    // Three failing checks take at least two intervals after the first one.
    assert!(
        to_out >= Duration::from_millis(550),
        "flipped after {to_out:?}"
    );

    b.restart();
    let restarted = std::time::Instant::now();
    assert!(gw.eventually(Duration::from_secs(10), || gw.metric(&series) == Some(1.0)));
    let to_in = restarted.elapsed();
    assert!(
        to_in >= Duration::from_millis(550),
        "came back after {to_in:?}"
    );
}
