//! The `mtls` credential (a verified client certificate names the caller), revocation lists,
//! chain depth, resumed sessions, certificate-bound tokens (RFC 8705) and mTLS to upstreams.

use crate::mtls::{curl_path, echoed, start_in, start_with, Mtls};
use crate::support::pki::{Ca, Leaf};
use crate::support::*;
use base64::Engine;
use std::path::{Path, PathBuf};

fn issue(m: &Mtls, file: &str, leaf: &Leaf) -> (PathBuf, PathBuf, openssl::x509::X509) {
    m.ca.issue(m.dir.path(), file, leaf)
}

fn routes(origin: std::net::SocketAddr, routes: &str) -> String {
    format!("upstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n{routes}")
}

#[test]
fn the_mtls_credential_names_the_caller_by_san_uri_and_routes_list_allowed_subjects() {
    let m = start_with("optional", "", &|origin| {
        format!(
            "client_certificates:\n  identity: san_uri\n  consumers:\n    - identity: spiffe://acme/billing\n      consumer: acme-billing\n      tenant: acme\n      roles: [service]\n    - identity: spiffe://acme/ops/deploy\n      consumer: ops-deploy\n{}",
            routes(
                origin,
                "  - name: billing\n    match: { path_prefix: /billing }\n    upstream: echo\n    auth: { mtls: true, client_subjects: [\"spiffe://acme/billing\"] }\n  - name: ops\n    match: { path_prefix: /ops }\n    upstream: echo\n    auth: { mtls: true, client_subjects: [\"spiffe://acme/ops/*\"], roles: [deployer] }\n  - name: open\n    match: { path_prefix: / }\n    upstream: echo\n    auth: public\n"
            )
        )
    });
    let billing = issue(
        &m,
        "billing",
        &Leaf {
            cn: "billing",
            san_uri: &["spiffe://acme/billing"],
            ..Leaf::default()
        },
    );
    let ops = issue(
        &m,
        "ops",
        &Leaf {
            cn: "ops",
            san_uri: &["spiffe://acme/ops/deploy"],
            ..Leaf::default()
        },
    );
    let stranger = issue(
        &m,
        "stranger",
        &Leaf {
            cn: "x",
            san_uri: &["spiffe://acme/stranger"],
            ..Leaf::default()
        },
    );
    let two = issue(
        &m,
        "two",
        &Leaf {
            cn: "two",
            san_uri: &["spiffe://acme/billing", "spiffe://acme/ops/deploy"],
            ..Leaf::default()
        },
    );
    let pair = |c: &(PathBuf, PathBuf, openssl::x509::X509)| (c.0.clone(), c.1.clone());
    let call = |path: &str, c: Option<&(PathBuf, PathBuf)>, headers: &[&str]| {
        curl_path(
            &m,
            path,
            c.map(|(a, b)| (a.as_path(), b.as_path())),
            headers,
        )
    };

    // The certificate's URI SAN maps to a consumer; forged identity headers are replaced (M16).
    let (status, body) = call(
        "/billing/x",
        Some(&pair(&billing)),
        &["X-User-ID: admin", "X-Client-ID: root"],
    );
    assert_eq!(status, 200, "{body}");
    let r = echoed(&body);
    assert_eq!(r.header_all("x-user-id"), ["spiffe://acme/billing"]);
    assert_eq!(r.header_all("x-client-id"), ["acme-billing"]);
    assert_eq!(r.header("x-tenant-id"), Some("acme"));
    assert_eq!(r.header("x-user-roles"), Some("service"));
    assert_eq!(r.header("x-auth-method"), Some("mtls"));

    // A known caller, but not one this route lists: authenticated, not allowed.
    let (status, body) = call("/billing/x", Some(&pair(&ops)), &[]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_body(&body)["error"], "client_cert_not_allowed");
    // A prefix pattern lets ops in, where route requirements still apply (no `deployer` role).
    let (status, body) = call("/ops/run", Some(&pair(&ops)), &[]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_body(&body)["error"], "insufficient_role");

    // A certificate of the trusted CA whose identity is not a configured consumer.
    let (status, body) = call("/billing/x", Some(&pair(&stranger)), &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_body(&body)["error"], "client_cert_unknown");
    // Two URI SANs: which one is the caller? Neither (no guessing).
    let (status, body) = call("/billing/x", Some(&pair(&two)), &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_body(&body)["error"], "client_cert_no_identity");
    // X1/X14 on an optional listener: no certificate is no identity, never forwarded.
    let before = m.echo.received().len();
    let (status, body) = call("/billing/x", None, &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_body(&body)["error"], "client_cert_missing");
    assert_eq!(
        m.echo.received().len(),
        before,
        "a refused request reached the origin"
    );
    // The public route still serves clients without a certificate.
    assert_eq!(call("/open", None, &[]).0, 200);
}

#[test]
fn common_name_identity_and_envoy_style_forwarding() {
    let m = start_with("required", "", &|origin| {
        format!(
            "client_certificates:\n  identity: common_name\n  forward: xfcc\n{}",
            routes(origin, "  - name: svc\n    match: { path_prefix: / }\n    upstream: echo\n    auth: { mtls: true, client_subjects: [\"svc-*\"] }\n")
        )
    });
    let (cert, key, x509) = issue(
        &m,
        "svc",
        &Leaf {
            cn: "svc-billing",
            san_dns: &["billing.internal"],
            san_uri: &["urn:a,b;c=\"d\""],
            ..Leaf::default()
        },
    );
    let (status, body) = curl_path(
        &m,
        "/who",
        Some((&cert, &key)),
        &["X-Forwarded-Client-Cert: Hash=victim;Subject=\"CN=admin\""],
    );
    assert_eq!(status, 200, "{body}");
    let r = echoed(&body);
    assert_eq!(r.header("x-user-id"), Some("svc-billing"));
    let fingerprint = hex::encode(x509.digest(openssl::hash::MessageDigest::sha256()).unwrap());
    // One element, the gateway's own, with the SAN's separators encoded (X7, X8).
    assert_eq!(
        r.header_all("x-forwarded-client-cert"),
        [format!("Hash={fingerprint};Subject=\"CN=svc-billing\";URI=urn:a%2Cb%3Bc%3D%22d%22;DNS=billing.internal")]
    );
    assert_eq!(r.header("x-client-cert-subject"), None);

    let (other, other_key, _) = issue(
        &m,
        "other",
        &Leaf {
            cn: "batch",
            ..Leaf::default()
        },
    );
    let (status, body) = curl_path(&m, "/who", Some((&other, &other_key)), &[]);
    assert_eq!(status, 403, "{body}");
}

/// A CRL file beside the listener, first revoking nothing.
fn crl_listener(stale: bool) -> (Mtls, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "clients-ca");
    let crl = dir.path().join("clients.crl");
    ca.write_crl(dir.path(), &crl, &[], stale);
    let extra = format!("      client_crl_file: {}\n", crl.display());
    let m = start_in(dir, ca, "required", &extra, &|o| pass_through(o));
    (m, crl)
}

#[test]
fn x4_a_revoked_certificate_fails_the_handshake_and_the_crl_is_reloaded() {
    let (m, crl) = crl_listener(false);
    let (cert, key, x509) = issue(&m, "soon-revoked", &Leaf::default());
    let (other, other_key, _) = issue(&m, "still-good", &Leaf::default());
    assert_eq!(curl_path(&m, "/", Some((&cert, &key)), &[]).0, 200);

    m.ca.write_crl(m.dir.path(), &crl, &[&x509], false);
    assert!(
        m.gw.eventually(std::time::Duration::from_secs(10), || {
            curl_path(&m, "/", Some((&cert, &key)), &[]).0 == 0
        }),
        "the revoked certificate still completes a handshake"
    );
    assert_eq!(curl_path(&m, "/", Some((&other, &other_key)), &[]).0, 200);
    assert!(
        m.gw.metric("portcullis_client_cert_refusals_total{reason=\"revoked\"}")
            .unwrap_or(0.0)
            >= 1.0
    );

    // A file that is no CRL at all is refused; the lists in force stay.
    std::fs::write(&crl, "not a CRL").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(curl_path(&m, "/", Some((&cert, &key)), &[]).0, 0);
    assert_eq!(curl_path(&m, "/", Some((&other, &other_key)), &[]).0, 200);
}

#[test]
fn x4_a_stale_crl_fails_closed() {
    let (m, _crl) = crl_listener(true);
    let (cert, key, _) = issue(&m, "good", &Leaf::default());
    assert_eq!(
        curl_path(&m, "/", Some((&cert, &key)), &[]).0,
        0,
        "a certificate was accepted while the revocation list is past its nextUpdate"
    );
    assert!(
        m.gw.metric("portcullis_client_cert_refusals_total{reason=\"crl_stale\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// One HTTP/1.1 request with `openssl s_client`, saving or resuming a TLS session; (whether
/// the session was reused, the output).
fn s_client(
    m: &Mtls,
    cert: &Path,
    key: &Path,
    sess_in: Option<&Path>,
    sess_out: Option<&Path>,
) -> (bool, String) {
    s_client_with(
        m,
        cert,
        key,
        sess_in,
        sess_out,
        &["-ign_eof", "-tls1_3"],
        b"",
    )
}

/// `s_client` with these flags, sending `before` ahead of the request.
fn s_client_with(
    m: &Mtls,
    cert: &Path,
    key: &Path,
    sess_in: Option<&Path>,
    sess_out: Option<&Path>,
    flags: &[&str],
    before: &[u8],
) -> (bool, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{}", m.gw.addr.port()),
        "-servername",
        "localhost",
    ])
    .args(flags)
    .arg("-CAfile")
    .arg(&m.server_ca)
    .arg("-cert")
    .arg(cert)
    .arg("-key")
    .arg(key);
    if let Some(p) = sess_in {
        cmd.arg("-sess_in").arg(p);
    }
    if let Some(p) = sess_out {
        cmd.arg("-sess_out").arg(p);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(before).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // s_client exits when the server ends the connection (a refused renegotiation).
    let _ =
        stdin.write_all(b"GET /resumed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (text.contains("Reused, TLSv1.3"), text)
}

#[test]
fn x5_a_resumed_session_of_a_revoked_certificate_is_refused() {
    let (m, crl) = crl_listener(false);
    let (cert, key, x509) = issue(&m, "resumer", &Leaf::default());
    let session = m.dir.path().join("session.pem");
    let (reused, out) = s_client(&m, &cert, &key, None, Some(&session));
    assert!(!reused && out.contains("HTTP/1.1 200"), "{out}");
    // Resumption works while the certificate is good.
    let (reused, out) = s_client(&m, &cert, &key, Some(&session), None);
    assert!(reused, "the session was not resumed:\n{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");

    m.ca.write_crl(m.dir.path(), &crl, &[&x509], false);
    assert!(m.gw.eventually(std::time::Duration::from_secs(10), || {
        curl_path(&m, "/", Some((&cert, &key)), &[]).0 == 0
    }));
    // The old session skips verification, so the gateway checks its certificate again.
    let (reused, out) = s_client(&m, &cert, &key, Some(&session), None);
    assert!(reused, "the session was not resumed:\n{out}");
    assert!(out.contains("HTTP/1.1 401"), "{out}");
    assert!(out.contains("client_cert_revoked"), "{out}");
}

#[test]
fn x13_renegotiation_is_refused() {
    let m = start_with("required", "", &|o| pass_through(o));
    let (cert, key, _) = issue(&m, "renegotiator", &Leaf::default());
    // `R` asks s_client to renegotiate (TLS 1.2) before sending the request.
    let (_, out) = s_client_with(&m, &cert, &key, None, None, &["-tls1_2"], b"R\n");
    assert!(out.contains("RENEGOTIATING"), "{out}");
    // OpenSSL 3 as Pingora sets it up already refuses; the listener also sets
    // NO_RENEGOTIATION explicitly, so the refusal does not hang on a library default.
    assert!(out.contains("no renegotiation"), "{out}");
    assert!(
        !out.contains("HTTP/1.1 200"),
        "the request went through after a renegotiation:\n{out}"
    );
}

#[test]
fn x11_a_chain_deeper_than_max_chain_depth_is_refused() {
    for (depth, expected) in [(1, 0), (2, 200)] {
        let dir = tempfile::tempdir().unwrap();
        let root = Ca::new(dir.path(), "root");
        let policy = root.intermediate(dir.path(), "policy");
        let issuing = policy.intermediate(dir.path(), "issuing");
        let extra = format!("      max_chain_depth: {depth}\n");
        let (cert, key, _) = issuing.issue(dir.path(), "deep", &Leaf::default());
        // The client sends its certificate and two intermediates; only the root is trusted.
        let chain = dir.path().join("deep-chain.crt");
        let mut pem = std::fs::read(&cert).unwrap();
        pem.extend(issuing.cert.to_pem().unwrap());
        pem.extend(policy.cert.to_pem().unwrap());
        std::fs::write(&chain, pem).unwrap();
        let m = start_in(dir, root, "required", &extra, &|o| pass_through(o));
        let (direct, direct_key, _) = issue(&m, "direct", &Leaf::default());
        assert_eq!(curl_path(&m, "/", Some((&direct, &direct_key)), &[]).0, 200);
        assert_eq!(
            curl_path(&m, "/", Some((&chain, &key)), &[]).0,
            expected,
            "max_chain_depth {depth}"
        );
    }
}

#[test]
fn x3_a_valid_certificate_under_an_expired_intermediate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::new(dir.path(), "root");
    let lapsed = root.intermediate_valid(dir.path(), "lapsed", (-30, -1));
    let current = root.intermediate(dir.path(), "current");
    let chain = |ca: &Ca, name: &str| {
        let (cert, key, _) = ca.issue(dir.path(), name, &Leaf::default());
        let path = dir.path().join(format!("{name}-chain.crt"));
        let mut pem = std::fs::read(&cert).unwrap();
        pem.extend(ca.cert.to_pem().unwrap());
        std::fs::write(&path, pem).unwrap();
        (path, key)
    };
    let (bad, bad_key) = chain(&lapsed, "under-lapsed");
    let (good, good_key) = chain(&current, "under-current");
    let m = start_in(dir, root, "required", "", &|o| pass_through(o));
    assert_eq!(curl_path(&m, "/", Some((&good, &good_key)), &[]).0, 200);
    assert_eq!(curl_path(&m, "/", Some((&bad, &bad_key)), &[]).0, 0);
}

/// `cnf.x5t#S256` of a certificate: base64url of its DER's SHA-256.
fn thumbprint(x509: &openssl::x509::X509) -> String {
    let d = x509.digest(openssl::hash::MessageDigest::sha256()).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}

#[test]
fn x10_certificate_bound_tokens_need_their_certificate() {
    let idp = SigningIdp::new();
    let m = start_with("optional", "", &|origin| {
        format!(
            "{}{}",
            idp.provider_yaml("corp"),
            routes(origin, "  - name: bound-only\n    match: { path_prefix: /bound }\n    upstream: echo\n    auth: { jwt: corp, bound_tokens: true }\n  - name: api\n    match: { path_prefix: / }\n    upstream: echo\n    auth: { jwt: corp }\n")
        )
    });
    let (cert, key, x509) = issue(&m, "holder", &Leaf::default());
    let (thief, thief_key, _) = issue(&m, "thief", &Leaf::default());
    let claims = |cnf: serde_json::Value| {
        serde_json::json!({
            "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "svc", "iat": now(), "exp": now() + 300,
            "cnf": cnf,
        })
    };
    let bound = idp.token(claims(serde_json::json!({ "x5t#S256": thumbprint(&x509) })));
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let code = |(status, body): (u16, String)| {
        (
            status,
            if status == 200 {
                String::new()
            } else {
                error_body(&body)["error"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            },
        )
    };

    // Match: the token arrives with the certificate it is bound to.
    assert_eq!(
        code(curl_path(
            &m,
            "/bound/x",
            Some((&cert, &key)),
            &[&bearer(&bound)]
        )),
        (200, String::new())
    );
    assert_eq!(
        code(curl_path(
            &m,
            "/api",
            Some((&cert, &key)),
            &[&bearer(&bound)]
        )),
        (200, String::new())
    );
    // A stolen bound token is useless with another certificate, or with none.
    for client in [Some((thief.as_path(), thief_key.as_path())), None] {
        assert_eq!(
            code(curl_path(&m, "/api", client, &[&bearer(&bound)])),
            (401, "token_certificate_mismatch".to_string())
        );
    }
    // Unbound tokens: fine on ordinary routes (with or without a certificate), refused where
    // the route takes bound tokens only.
    let plain = idp.good_token();
    assert_eq!(code(curl_path(&m, "/api", None, &[&bearer(&plain)])).0, 200);
    assert_eq!(
        code(curl_path(
            &m,
            "/bound/x",
            Some((&cert, &key)),
            &[&bearer(&plain)]
        )),
        (401, "token_not_bound".to_string())
    );
    // A binding the gateway cannot check (DPoP's `jkt`) is not silently dropped.
    let dpop = idp.token(claims(
        serde_json::json!({ "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" }),
    ));
    assert_eq!(
        code(curl_path(
            &m,
            "/api",
            Some((&cert, &key)),
            &[&bearer(&dpop)]
        )),
        (401, "token_binding_unsupported".to_string())
    );
    let malformed = idp.token(claims(serde_json::json!({ "x5t#S256": "c2hvcnQ" })));
    assert_eq!(
        code(curl_path(
            &m,
            "/api",
            Some((&cert, &key)),
            &[&bearer(&malformed)]
        )),
        (401, "token_invalid_claim".to_string())
    );
}

#[test]
fn upstream_mtls_presents_the_pool_client_certificate() {
    // The origin is a Portcullis whose listener requires client certificates.
    let origin = start_with("required", "", &|o| pass_through(o));
    let (cert, key, _) = issue(
        &origin,
        "edge-gateway",
        &Leaf {
            cn: "edge-gateway",
            ..Leaf::default()
        },
    );
    let pool = |client: &str| {
        format!(
            "upstreams:\n  secure:\n    backends: [\"{}\"]\n    retries: 0\n    tls:\n      sni: localhost\n      ca_file: {}\n{client}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: secure\n    auth: public\n",
            origin.gw.addr,
            origin.server_ca.display()
        )
    };
    let front = Gateway::start(&pool(&format!(
        "      client_certificate: {}\n      client_key: {}\n",
        cert.display(),
        key.display()
    )));
    // The origin's mTLS listener checks that the Host names the server name the front gateway
    // connected for (X9), so the request is addressed to that name.
    let resp = client()
        .get(front.url("/through"))
        .header("Host", "localhost")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header("x-client-cert-subject"), Some("CN=edge-gateway"));

    let bare = Gateway::start(&pool(""));
    let resp = client()
        .get(bare.url("/through"))
        .header("Host", "localhost")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 502);
}

#[test]
fn x9_a_host_other_than_the_tls_server_name_is_misdirected() {
    let m = start_with("optional", "", &|o| pass_through(o));
    let (cert, key, _) = issue(&m, "vhost", &Leaf::default());
    // Connected (SNI) for `localhost`, addressed to another virtual host.
    let (status, body) = curl_path(&m, "/", Some((&cert, &key)), &["Host: admin.internal"]);
    assert_eq!(status, 421, "{body}");
    assert_eq!(error_body(&body)["error"], "misdirected_request");
    assert!(m.echo.received().is_empty());
    // The name it connected for, with or without the port, in any case.
    let port = m.gw.addr.port();
    assert_eq!(
        curl_path(
            &m,
            "/",
            Some((&cert, &key)),
            &[&format!("Host: LOCALHOST:{port}")]
        )
        .0,
        200
    );
    assert_eq!(curl_path(&m, "/", None, &["Host: localhost"]).0, 200);
    // One host as routing sees it: a trailing dot names the same host.
    assert_eq!(curl_path(&m, "/", None, &["Host: localhost."]).0, 200);
}

#[test]
fn x11_a_fifty_certificate_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::new(dir.path(), "root");
    // root -> i1 -> ... -> i49 -> leaf, all sent by the client.
    let mut chain: Vec<Ca> = Vec::new();
    for i in 1..50 {
        let next = chain
            .last()
            .unwrap_or(&root)
            .intermediate(dir.path(), &format!("i{i}"));
        chain.push(next);
    }
    let issuing = chain.last().unwrap();
    let (cert, key, _) = issuing.issue(dir.path(), "deepest", &Leaf::default());
    let bundle = dir.path().join("deepest-chain.crt");
    let mut pem = std::fs::read(&cert).unwrap();
    for ca in chain.iter().rev() {
        pem.extend(ca.cert.to_pem().unwrap());
    }
    std::fs::write(&bundle, pem).unwrap();
    let m = start_in(dir, root, "required", "", &|o| pass_through(o));
    assert_eq!(curl_path(&m, "/", Some((&bundle, &key)), &[]).0, 0);
    // The gateway stays responsive for well-formed clients afterwards.
    let (direct, direct_key, _) = issue(&m, "direct", &Leaf::default());
    assert_eq!(curl_path(&m, "/", Some((&direct, &direct_key)), &[]).0, 200);
}
