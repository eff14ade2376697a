//! Client certificates (mTLS) on a TLS listener: verification against the configured CA, and
//! the verified certificate's facts told to the backend in `X-Client-Cert-*`, encoded so a
//! certificate cannot inject headers; client-sent copies are always stripped.

use crate::support::pki::{Ca, Leaf};
use crate::support::*;
use std::path::{Path, PathBuf};

pub struct Mtls {
    pub gw: Gateway,
    pub echo: Echo,
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    /// The server certificate, for `--cacert`.
    pub server_ca: PathBuf,
}

fn start(mode: &str) -> Mtls {
    start_with(mode, "", &|echo| pass_through(echo))
}

/// A gateway whose one listener asks for client certificates (`mode`) from a CA made here;
/// `tls_extra` adds keys under the listener's `tls` (six spaces); `body` gives the rest of
/// the configuration for the echo origin.
pub fn start_with(
    mode: &str,
    tls_extra: &str,
    body: &dyn Fn(std::net::SocketAddr) -> String,
) -> Mtls {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "clients-ca");
    start_in(dir, ca, mode, tls_extra, body)
}

pub fn start_in(
    dir: tempfile::TempDir,
    ca: Ca,
    mode: &str,
    tls_extra: &str,
    body: &dyn Fn(std::net::SocketAddr) -> String,
) -> Mtls {
    let (cert, key) = self_signed_cert(dir.path(), "edge");
    let echo = Echo::start();
    let gw = Gateway::start_with_listeners(
        &format!(
            "  - address: 127.0.0.1:{}\n    tls:\n      certificate: {}\n      key: {}\n      client_certificate: {mode}\n      client_ca_file: {}\n{tls_extra}",
            free_port(),
            cert.display(),
            key.display(),
            ca.pem.display()
        ),
        &body(echo.addr),
    );
    Mtls {
        gw,
        echo,
        server_ca: cert,
        ca,
        dir,
    }
}

fn curl(m: &Mtls, client: Option<(&Path, &Path)>, headers: &[&str]) -> (u16, String) {
    curl_path(m, "/who", client, headers)
}

/// `curl` over HTTPS with an optional client certificate: (status, body); status 0 when the
/// handshake failed.
pub fn curl_path(
    m: &Mtls,
    path: &str,
    client: Option<(&Path, &Path)>,
    headers: &[&str],
) -> (u16, String) {
    let mut extra: Vec<String> = Vec::new();
    if let Some((cert, key)) = client {
        extra.extend(["--cert".into(), cert.display().to_string()]);
        extra.extend(["--key".into(), key.display().to_string()]);
    }
    for h in headers {
        extra.extend(["-H".into(), h.to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let url = format!("https://localhost:{}{path}", m.gw.addr.port());
    curl_https(&url, &m.server_ca, &extra)
}

pub fn echoed(body: &str) -> Echoed {
    serde_json::from_str(body).unwrap()
}

#[test]
fn verified_certificate_facts_reach_the_backend_and_forged_ones_do_not() {
    let m = start("required");
    let (cert, key, x509) = m.ca.issue(
        m.dir.path(),
        "billing",
        &Leaf {
            cn: "billing",
            org: Some("Acme"),
            san_uri: &["spiffe://acme.example/ns/prod/sa/billing"],
            san_dns: &["billing.acme.internal"],
            san_email: &["ops@acme.example"],
            ..Leaf::default()
        },
    );
    let (status, body) = curl(
        &m,
        Some((&cert, &key)),
        &[
            "X-Client-Cert-Fingerprint: 00",
            "X-Forwarded-Client-Cert: By=spiffe://x;Hash=victim",
            "X-SSL-Client-Verify: SUCCESS",
        ],
    );
    assert_eq!(status, 200, "{body}");
    let r = echoed(&body);
    assert_eq!(r.header_all("x-client-cert-subject"), ["CN=billing,O=Acme"]);
    assert_eq!(
        r.header_all("x-client-cert-san"),
        ["URI:spiffe://acme.example/ns/prod/sa/billing,DNS:billing.acme.internal,email:ops@acme.example"]
    );
    let fingerprint = hex::encode(x509.digest(openssl::hash::MessageDigest::sha256()).unwrap());
    assert_eq!(
        r.header_all("x-client-cert-fingerprint"),
        [fingerprint.as_str()]
    );
    let serial = crate::support::pki::serial_hex(&x509);
    assert_eq!(r.header_all("x-client-cert-serial"), [serial.as_str()]);
    // X7: client copies of certificate headers never reach the backend.
    assert_eq!(r.header("x-forwarded-client-cert"), None);
    assert_eq!(r.header("x-ssl-client-verify"), None);
}

#[test]
fn x1_a_required_certificate_missing_fails_the_handshake() {
    let m = start("required");
    let (status, _) = curl(&m, None, &[]);
    assert_eq!(status, 0, "no response without a client certificate");
}

#[test]
fn x2_a_certificate_from_another_ca_is_refused_even_with_the_same_name() {
    let m = start("required");
    let other = Ca::new(m.dir.path(), "rogue-ca");
    // Same subject as a legitimate client, signed by a CA the listener does not trust.
    let (cert, key, _) = other.issue(
        m.dir.path(),
        "rogue-billing",
        &Leaf {
            cn: "billing",
            ..Leaf::default()
        },
    );
    assert_eq!(curl(&m, Some((&cert, &key)), &[]).0, 0);
    // The listener still serves its own clients.
    let (cert, key, _) = m.ca.issue(
        m.dir.path(),
        "billing",
        &Leaf {
            cn: "billing",
            ..Leaf::default()
        },
    );
    assert_eq!(curl(&m, Some((&cert, &key)), &[]).0, 200);
}

#[test]
fn x3_expired_and_not_yet_valid_certificates_are_refused() {
    let m = start("required");
    for (name, days) in [("expired", (-10, -1)), ("future", (1, 10))] {
        let (cert, key, _) = m.ca.issue(
            m.dir.path(),
            name,
            &Leaf {
                cn: name,
                days,
                ..Leaf::default()
            },
        );
        assert_eq!(curl(&m, Some((&cert, &key)), &[]).0, 0, "{name}");
    }
}

#[test]
fn x6_a_certificate_for_servers_only_is_refused() {
    let m = start("required");
    let (cert, key, _) = m.ca.issue(
        m.dir.path(),
        "server-only",
        &Leaf {
            cn: "server-only",
            client_auth: false,
            ..Leaf::default()
        },
    );
    assert_eq!(curl(&m, Some((&cert, &key)), &[]).0, 0);
}

#[test]
fn x8_certificate_names_cannot_inject_headers() {
    let m = start("required");
    let (cert, key, _) = m.ca.issue(
        m.dir.path(),
        "odd",
        &Leaf {
            cn: "odd, \"name\"; x=1",
            san_uri: &["urn:a,b;c=\"d\""],
            ..Leaf::default()
        },
    );
    let (status, body) = curl(&m, Some((&cert, &key)), &[]);
    assert_eq!(status, 200, "{body}");
    let r = echoed(&body);
    assert_eq!(
        r.header_all("x-client-cert-subject"),
        ["CN=odd%2C%20%22name%22%3B%20x%3D1"]
    );
    assert_eq!(
        r.header_all("x-client-cert-san"),
        ["URI:urn:a%2Cb%3Bc%3D%22d%22"]
    );
}

#[test]
fn an_optional_listener_serves_clients_without_a_certificate_and_strips_forged_facts() {
    let m = start("optional");
    let (status, body) = curl(&m, None, &["X-Client-Cert-Subject: CN=admin"]);
    assert_eq!(status, 200, "{body}");
    let r = echoed(&body);
    assert_eq!(r.header("x-client-cert-subject"), None);
    // With a certificate, its facts are told.
    let (cert, key, _) = m.ca.issue(
        m.dir.path(),
        "svc",
        &Leaf {
            cn: "svc",
            ..Leaf::default()
        },
    );
    let (status, body) = curl(&m, Some((&cert, &key)), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        echoed(&body).header_all("x-client-cert-subject"),
        ["CN=svc"]
    );
    // An invalid certificate is refused even where one is optional.
    let other = Ca::new(m.dir.path(), "rogue-ca");
    let (cert, key, _) = other.issue(m.dir.path(), "rogue", &Leaf::default());
    assert_eq!(curl(&m, Some((&cert, &key)), &[]).0, 0);
}

#[test]
fn x7_forged_certificate_headers_are_stripped_on_plain_listeners() {
    let echo = Echo::start();
    let gw = Gateway::start(&pass_through(echo.addr));
    let r: Echoed = client()
        .get(gw.url("/who"))
        .header("X-Client-Cert-Subject", "CN=admin")
        .header("X-Client-Cert-Fingerprint", "ab")
        .header("Client-Cert", ":YWJj:")
        .header("X-Forwarded-Client-Cert", "Hash=abc")
        .send()
        .unwrap()
        .json()
        .unwrap();
    for h in [
        "x-client-cert-subject",
        "x-client-cert-fingerprint",
        "client-cert",
        "x-forwarded-client-cert",
    ] {
        assert_eq!(r.header(h), None, "{h} reached the backend");
    }
}
