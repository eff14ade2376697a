//! The admin listener: metrics and health endpoints.

use crate::support::*;

#[test]
fn metrics_expose_the_documented_series_after_traffic() {
    let echo = Echo::start();
    let closed = free_port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  echo:\n    backends: [\"{}\"]\n    health_check: {{ type: tcp, interval: 1s }}\n  dead:\n    backends: [\"127.0.0.1:{closed}\"]\n    retries: 0\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: echo\n    auth: public\n  - name: dead\n    match: {{ path_prefix: /dead }}\n    upstream: dead\n    auth: public\n",
        echo.addr
    ));
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(gw.url("/api/x")).send().unwrap().status(), 200);
    }
    assert_eq!(c.post(gw.url("/api/x")).send().unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/missing")).send().unwrap().status(), 404);
    assert_eq!(c.get(gw.url("/dead")).send().unwrap().status(), 502);

    // Request metrics are recorded in the logging phase, just after the response is sent:
    // wait until the last request is counted.
    assert!(
        gw.eventually(std::time::Duration::from_secs(5), || gw.metrics().contains(
            "portcullis_requests_total{method=\"GET\",route=\"dead\",status_class=\"5xx\"} 1"
        ))
    );
    let resp = c.get(gw.admin_url("/metrics")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = resp.text().unwrap();
    let has = |series: &str, value: f64| {
        m.lines().find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap())
        }) == Some(value)
    };
    assert!(
        has(
            "portcullis_requests_total{method=\"GET\",route=\"api\",status_class=\"2xx\"}",
            3.0
        ),
        "{m}"
    );
    assert!(
        has(
            "portcullis_requests_total{method=\"POST\",route=\"api\",status_class=\"2xx\"}",
            1.0
        ),
        "{m}"
    );
    assert!(
        has(
            "portcullis_requests_total{method=\"GET\",route=\"none\",status_class=\"4xx\"}",
            1.0
        ),
        "{m}"
    );
    assert!(
        has(
            "portcullis_requests_total{method=\"GET\",route=\"dead\",status_class=\"5xx\"}",
            1.0
        ),
        "{m}"
    );
    assert!(
        has(
            "portcullis_request_duration_seconds_count{route=\"api\"}",
            4.0
        ),
        "{m}"
    );
    assert!(
        has(
            &format!(
                "portcullis_backend_healthy{{backend=\"{}\",upstream=\"echo\"}}",
                echo.addr
            ),
            1.0
        ),
        "{m}"
    );
    assert!(has(&format!("portcullis_upstream_connect_errors_total{{backend=\"127.0.0.1:{closed}\",upstream=\"dead\"}}"), 1.0), "{m}");
    assert!(
        has("portcullis_config_reloads_total{result=\"success\"}", 1.0),
        "{m}"
    );
    assert!(
        m.contains("portcullis_config_last_reload_timestamp_seconds "),
        "{m}"
    );
    assert!(m.contains("portcullis_build_info{version="), "{m}");
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("portcullis_"), "unprefixed series {line}");
    }
}

#[test]
fn health_endpoints_answer() {
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  echo:\n    backends: [\"{}\"]\n    health_check: {{ type: http, path: /healthz, interval: 500ms }}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: echo\n    auth: public\n",
        echo.addr
    ));
    let c = client();
    let live = c.get(gw.admin_url("/health/live")).send().unwrap();
    assert_eq!(live.status(), 200);
    let live: serde_json::Value = live.json().unwrap();
    assert_eq!(live["pid"], gw.pid(), "the answering process names itself");
    let ready = c.get(gw.admin_url("/health/ready")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let v: serde_json::Value = ready.json().unwrap();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["upstreams"]["echo"]["healthy"], 1);
    assert_eq!(v["upstreams"]["echo"]["first_check_done"], true);
    let other = c.get(gw.admin_url("/nothing")).send().unwrap();
    assert_eq!(other.status(), 404);
    let post = c.post(gw.admin_url("/metrics")).send().unwrap();
    assert_eq!(post.status(), 405);
}
