//! TLS on the public listener, and TLS with SNI and verification to upstreams.

use crate::support::*;

/// A gateway with one TLS listener (a self-signed certificate for localhost) and `upstream`
/// as the rest of its configuration; the certificate, for `--cacert`.
pub fn tls_gateway(upstream: &str) -> (Gateway, std::path::PathBuf) {
    tls_gateway_with_server("", upstream)
}

/// Like `tls_gateway`, with `server` lines (see `Gateway::start_with_server`).
pub fn tls_gateway_with_server(server: &str, upstream: &str) -> (Gateway, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path(), "edge");
    let port = free_port();
    let gw = Gateway::start_with(
        &format!(
            "  - address: 127.0.0.1:{port}\n    tls:\n      certificate: {}\n      key: {}\n",
            cert.display(),
            key.display()
        ),
        server,
        upstream,
    );
    let kept = gw.dir.path().join("edge.crt");
    std::fs::copy(&cert, &kept).unwrap();
    (gw, kept)
}

#[test]
fn tls_listener_serves_https_and_sets_forwarded_proto() {
    let echo = Echo::start();
    let (gw, ca) = tls_gateway(&pass_through(echo.addr));
    let url = format!("https://localhost:{}/secure", gw.addr.port());
    let (status, body) = curl_https(
        &url,
        &ca,
        &[
            "--resolve",
            &format!("localhost:{}:127.0.0.1", gw.addr.port()),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let r: Echoed = serde_json::from_str(&body).unwrap();
    assert_eq!(r.path, "/secure");
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    // HTTP/2 is offered on TLS listeners.
    let (version_status, body) = curl_https_raw(
        &url,
        &ca,
        &[
            "--http2",
            "--resolve",
            &format!("localhost:{}:127.0.0.1", gw.addr.port()),
        ],
        "%{http_version} %{http_code}",
    );
    assert_eq!(version_status, "2 200", "{body}");
    let r: Echoed = serde_json::from_str(&body).unwrap();
    assert_eq!(r.path, "/secure");
    let authority = format!("localhost:{}", gw.addr.port());
    assert_eq!(r.header("x-forwarded-host"), Some(authority.as_str()));
    // Plain HTTP on the TLS port does not get through.
    let plain = fresh_client()
        .get(format!("http://{}/secure", gw.addr))
        .send();
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[test]
fn upstream_tls_verifies_the_certificate_for_the_configured_sni() {
    let echo = Echo::start();
    // The TLS origin is itself a Portcullis with a TLS listener in front of an echo origin.
    let (origin, ca) = tls_gateway(&pass_through(echo.addr));
    let pool = |sni: &str| {
        format!(
            "upstreams:\n  secure:\n    backends: [\"{}\"]\n    retries: 0\n    tls:\n      sni: {sni}\n      ca_file: {}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: secure\n    auth: public\n",
            origin.addr,
            ca.display()
        )
    };
    let good = Gateway::start(&pool("localhost"));
    let resp = client().get(good.url("/through-tls")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.path, "/through-tls");
    assert_eq!(
        r.header("x-forwarded-proto"),
        Some("https"),
        "the origin gateway saw TLS"
    );

    // The certificate is not valid for another name: verification refuses the connection.
    let wrong = Gateway::start(&pool("wrong.example"));
    let resp = client().get(wrong.url("/through-tls")).send().unwrap();
    assert_eq!(resp.status(), 502);
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], "upstream_unreachable");
}

/// S10 over TLS, where OpenSSL reads ahead: a second request in the same write as the first is
/// dropped after the first is answered; one sent while the first is being proxied ends it with
/// `400 pipelined_request`. Neither is forwarded, and neither is called an upstream failure.
#[test]
fn s10_pipelined_requests_over_tls_are_never_forwarded_nor_called_an_upstream_failure() {
    let echo = Echo::start();
    let (gw, _) = tls_gateway(&pass_through(echo.addr));
    let raw = raw_writes_until_closed(
        &mut raw_tls_connect(gw.addr, None),
        &[b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\nGET /two HTTP/1.1\r\nHost: localhost\r\n\r\n"],
        std::time::Duration::ZERO,
    );
    assert_eq!(statuses(&raw), [200], "{raw}");
    assert_eq!(echo.received(), [("GET".to_string(), "/one".to_string())]);

    let stalled = StalledOrigin::start();
    let (gw, _) = tls_gateway(&pass_through(stalled.addr));
    let raw = raw_writes_until_closed(
        &mut raw_tls_connect(gw.addr, None),
        &[
            b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"GET /two HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ],
        std::time::Duration::from_millis(300),
    );
    assert_eq!(statuses(&raw), [400], "{raw}");
    assert!(raw.contains("\"error\":\"pipelined_request\""), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("connection: close"),
        "{raw}"
    );
}
