//! HMAC-signed requests (RFC 9421 `hmac-sha256`, RFC 9530 `Content-Digest`): valid
//! signatures, each tampered component, coverage, the `created` window, nonces (in process
//! and shared through Redis), the signed body limit, reloading keys and `portcullis sign`.

use crate::support::*;
use base64::Engine;
use portcullis::auth::http_sig::{self, SignedRequest};
use std::time::Duration;

const KEY_ID: &str = "acme-webhooks-2026";

fn secret() -> Vec<u8> {
    (0u8..48)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect()
}

fn keys_yaml(extra: &str) -> String {
    format!(
        "keys:\n- id: {KEY_ID}\n  consumer: acme-billing\n  tenant: acme\n  scopes: [\"orders:write\"]\n  secret: \"base64:{}\"\n  created: 2026-11-01\n{extra}",
        base64::engine::general_purpose::STANDARD.encode(secret())
    )
}

struct Signed {
    gw: Gateway,
    echo: Echo,
    dir: tempfile::TempDir,
}

/// A gateway with `request_signing` (plus `signing_extra` lines under it) in front of an echo
/// origin: `/webhooks` takes signed requests, `/open` is public.
fn start(signing_extra: &str) -> Signed {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signing-keys.yaml"), keys_yaml("")).unwrap();
    let echo = Echo::start();
    let gw = start_for(&dir, &echo, signing_extra);
    Signed { gw, echo, dir }
}

fn start_for(dir: &tempfile::TempDir, echo: &Echo, signing_extra: &str) -> Gateway {
    start_for_with_server(dir, echo, signing_extra, "")
}

fn start_for_with_server(
    dir: &tempfile::TempDir,
    echo: &Echo,
    signing_extra: &str,
    server: &str,
) -> Gateway {
    Gateway::start_with_server(server, &format!(
        "request_signing:\n  keys_file: {}\n{signing_extra}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: webhooks\n    match: {{ path_prefix: /webhooks }}\n    upstream: echo\n    auth: {{ hmac: true }}\n  - name: listed\n    match: {{ path_prefix: /listed }}\n    upstream: echo\n    auth: {{ any: [{{ hmac: true }}] }}\n  - name: open\n    match: {{ path_prefix: /open }}\n    upstream: echo\n    auth: public\n",
        dir.path().join("signing-keys.yaml").display(),
        echo.addr
    ))
}

/// The signature headers for a request to `gw`, signed at `created`.
fn sign_at(
    gw: &Gateway,
    method: &str,
    target: &str,
    body: &[u8],
    components: &[&str],
    created: u64,
) -> Vec<(&'static str, String)> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let authority = gw.addr.to_string();
    let headers = http::HeaderMap::new();
    let components: Vec<String> = components.iter().map(|c| c.to_string()).collect();
    let req = SignedRequest {
        method,
        scheme: "http",
        authority: &authority,
        path,
        query,
        headers: &headers,
        body,
    };
    let nonce = http_sig::new_nonce().unwrap();
    http_sig::sign(
        &req,
        KEY_ID,
        &secret(),
        &components,
        created,
        &nonce,
        "sig1",
    )
    .unwrap()
}

const DEFAULT: &[&str] = &["@method", "@authority", "@path", "@query", "content-digest"];

fn sign(gw: &Gateway, method: &str, target: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    sign_at(gw, method, target, body, DEFAULT, now())
}

fn send(
    gw: &Gateway,
    method: &str,
    target: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> reqwest::blocking::Response {
    let mut req = client().request(method.parse().unwrap(), gw.url(target));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if !body.is_empty() {
        req = req.body(body.to_vec());
    }
    req.send().unwrap()
}

fn refused(resp: reqwest::blocking::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], code, "{v}");
}

#[test]
fn m1_m16_a_signed_request_is_accepted_once_with_the_gateways_identity_and_a_replay_is_refused() {
    let s = start("");
    let body = br#"{"order":42,"total":"99.00"}"#;
    let mut headers = sign(&s.gw, "POST", "/webhooks/orders?source=shop", body);
    // M16: identity headers a signer adds are still the gateway's to set.
    headers.push(("X-User-ID", "admin".into()));
    headers.push(("X-Client-ID", "root".into()));
    let resp = send(
        &s.gw,
        "POST",
        "/webhooks/orders?source=shop",
        body,
        &headers,
    );
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.header_all("x-client-id"), ["acme-billing"]);
    assert_eq!(r.header_all("x-user-id"), ["acme-billing"]);
    assert_eq!(r.header("x-tenant-id"), Some("acme"));
    assert_eq!(r.header("x-auth-method"), Some("hmac"));
    // The backend gets exactly the bytes whose digest was signed.
    assert_eq!(r.body_length, body.len());
    assert_eq!(r.body_sha256, sha256_hex(body));

    // The same request again, byte for byte, one second later.
    std::thread::sleep(Duration::from_secs(1));
    let before = s.echo.received().len();
    refused(
        send(
            &s.gw,
            "POST",
            "/webhooks/orders?source=shop",
            body,
            &headers,
        ),
        401,
        "signature_replayed",
    );
    assert_eq!(
        s.echo.received().len(),
        before,
        "a replay reached the origin"
    );
    assert_eq!(
        s.gw.metric("portcullis_signature_nonces_total{result=\"replayed\"}"),
        Some(1.0)
    );

    // Inside `any`, the body is read and verified the same way.
    let headers = sign(&s.gw, "POST", "/listed", body);
    let resp = send(&s.gw, "POST", "/listed", body, &headers);
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.body_sha256, sha256_hex(body));
    refused(
        send(&s.gw, "POST", "/listed", body, &[]),
        401,
        "signature_missing",
    );
}

#[test]
fn m2_each_tampered_component_is_refused() {
    let s = start("");
    let body = br#"{"id":1}"#;
    let target = "/webhooks/a?id=1";
    // Method, path, query and body each changed after signing.
    let tampered: [(&str, &str, &[u8], &str); 5] = [
        ("DELETE", target, body, "signature_mismatch"),
        ("POST", "/webhooks/b?id=1", body, "signature_mismatch"),
        ("POST", "/webhooks/a?id=2", body, "signature_mismatch"),
        ("POST", "/webhooks/a?id=1&id=2", body, "signature_mismatch"),
        ("POST", target, br#"{"id":2}"#, "signature_digest_mismatch"),
    ];
    for (method, sent_target, sent_body, code) in tampered {
        let headers = sign(&s.gw, "POST", target, body);
        refused(
            send(&s.gw, method, sent_target, sent_body, &headers),
            401,
            code,
        );
    }
    // Host: signed for the gateway's address, sent with another name.
    let mut headers = sign(&s.gw, "POST", target, body);
    headers.push(("Host", format!("evil.example:{}", s.gw.addr.port())));
    refused(
        send(&s.gw, "POST", target, body, &headers),
        401,
        "signature_mismatch",
    );
    // A body with a new, matching Content-Digest still fails: the digest is signed.
    let mut headers = sign(&s.gw, "POST", target, body);
    let other = br#"{"id":3}"#;
    for h in headers.iter_mut().filter(|(k, _)| *k == "content-digest") {
        h.1 = http_sig::content_digest(other);
    }
    refused(
        send(&s.gw, "POST", target, other, &headers),
        401,
        "signature_mismatch",
    );
    assert!(
        s.echo.received().is_empty(),
        "a tampered request reached the origin"
    );
    // The untampered request passes.
    let headers = sign(&s.gw, "POST", target, body);
    assert_eq!(send(&s.gw, "POST", target, body, &headers).status(), 200);
}

#[test]
fn m5_m6_m8_window_edges_and_coverage() {
    let s = start("  window: 60s\n");
    let t = now();
    for (created, expected) in [
        (t - 50, None),
        (t + 50, None),
        (t - 75, Some("signature_expired")),
        (t + 600, Some("signature_created_in_future")),
    ] {
        let headers = sign_at(&s.gw, "GET", "/webhooks/x", b"", DEFAULT, created);
        let resp = send(&s.gw, "GET", "/webhooks/x", b"", &headers);
        match expected {
            None => assert_eq!(resp.status(), 200, "created {created} (now {t})"),
            Some(code) => refused(resp, 401, code),
        }
    }
    // M8: less than the required components, or a body whose digest is not covered.
    let headers = sign_at(
        &s.gw,
        "GET",
        "/webhooks/x",
        b"",
        &["@method", "@authority"],
        t,
    );
    refused(
        send(&s.gw, "GET", "/webhooks/x", b"", &headers),
        401,
        "signature_insufficient_coverage",
    );
    let headers = sign_at(
        &s.gw,
        "POST",
        "/webhooks/x",
        b"{}",
        &["@method", "@authority", "@path", "@query"],
        t,
    );
    refused(
        send(&s.gw, "POST", "/webhooks/x", b"{}", &headers),
        401,
        "signature_insufficient_coverage",
    );
    // No signature, an unknown key, a truncated signature, an algorithm chosen by the client.
    refused(
        send(&s.gw, "GET", "/webhooks/x", b"", &[]),
        401,
        "signature_missing",
    );
    let headers = sign(&s.gw, "GET", "/webhooks/x", b"");
    let with = |name: &str, f: &dyn Fn(&str) -> String| -> Vec<(&str, String)> {
        headers
            .iter()
            .map(|(k, v)| (*k, if *k == name { f(v) } else { v.clone() }))
            .collect()
    };
    let unknown = with("signature-input", &|v| {
        v.replace(KEY_ID, "../../etc/passwd")
    });
    refused(
        send(&s.gw, "GET", "/webhooks/x", b"", &unknown),
        401,
        "signature_unknown_key",
    );
    let truncated = with("signature", &|v| {
        let b64 = v.trim_start_matches("sig1=:").trim_end_matches(':');
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        format!(
            "sig1=:{}:",
            base64::engine::general_purpose::STANDARD.encode(&raw[..16])
        )
    });
    refused(
        send(&s.gw, "GET", "/webhooks/x", b"", &truncated),
        401,
        "signature_malformed",
    );
    let sha1 = with("signature-input", &|v| {
        v.replace("alg=\"hmac-sha256\"", "alg=\"hmac-sha1\"")
    });
    refused(
        send(&s.gw, "GET", "/webhooks/x", b"", &sha1),
        401,
        "signature_algorithm_not_allowed",
    );
}

/// A raw HTTP/1.1 request with a chunked body, signed over the body's bytes.
fn chunked_request(gw: &Gateway, body: &[u8], chunk: usize) -> Vec<u8> {
    let headers = sign(gw, "POST", "/webhooks/upload", body);
    let mut req = format!("POST /webhooks/upload HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n", gw.addr);
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    for part in body.chunks(chunk) {
        out.extend(format!("{:x}\r\n", part.len()).bytes());
        out.extend(part);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    out
}

#[test]
fn m9_m15_the_signed_body_limit_is_exact_and_nothing_partial_is_forwarded() {
    let s = start("");
    let max = http_sig::MAX_SIGNED_BODY;
    let fill = |n: usize| -> Vec<u8> { (0..n).map(|i| b'a' + (i % 26) as u8).collect() };

    // Exactly the limit, with Content-Length and chunked: verified and forwarded whole.
    let body = fill(max);
    let headers = sign(&s.gw, "POST", "/webhooks/upload", &body);
    let resp = send(&s.gw, "POST", "/webhooks/upload", &body, &headers);
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!((r.body_length, r.body_sha256), (max, sha256_hex(&body)));
    let raw = raw_request(s.gw.addr, &chunked_request(&s.gw, &body, 7000));
    assert!(
        raw.starts_with("HTTP/1.1 200"),
        "{}",
        &raw[..raw.len().min(300)]
    );
    let r: Echoed = serde_json::from_str(raw_body(&raw)).unwrap();
    assert_eq!((r.body_length, r.body_sha256), (max, sha256_hex(&body)));
    let forwarded = s.echo.received().len();

    // One byte more: 413 before anything is sent upstream, declared or chunked.
    let body = fill(max + 1);
    let headers = sign(&s.gw, "POST", "/webhooks/upload", &body);
    refused(
        send(&s.gw, "POST", "/webhooks/upload", &body, &headers),
        413,
        "signed_body_too_large",
    );
    let raw = raw_request(s.gw.addr, &chunked_request(&s.gw, &body, 7000));
    assert!(
        raw.starts_with("HTTP/1.1 413"),
        "{}",
        &raw[..raw.len().min(300)]
    );
    assert!(raw.contains("signed_body_too_large"));
    // A failed verification of a body within the limit forwards nothing either.
    let body = fill(1000);
    let mut headers = sign(&s.gw, "POST", "/webhooks/upload", &body);
    headers.retain(|(k, _)| *k != "content-digest");
    headers.push(("content-digest", http_sig::content_digest(b"other")));
    refused(
        send(&s.gw, "POST", "/webhooks/upload", &body, &headers),
        401,
        "signature_mismatch",
    );
    assert_eq!(
        s.echo.received().len(),
        forwarded,
        "a refused body reached the origin"
    );

    // The limit is for signed routes only: a public route takes a bigger body.
    let big = fill(max * 3);
    let resp = send(&s.gw, "POST", "/open/upload", &big, &[]);
    assert_eq!(resp.status(), 200);
    let r: Echoed = resp.json().unwrap();
    assert_eq!(r.body_length, big.len());
}

#[test]
fn m1_a_replay_to_a_second_instance_sharing_redis_is_refused() {
    let redis = RedisServer::start();
    let shared = format!(
        "  nonces:\n    redis: {{ url: \"{}\", timeout: 500ms }}\n",
        redis.url()
    );
    let s = start(&shared);
    let second = start_for(&s.dir, &s.echo, &shared);
    let headers = sign(&s.gw, "GET", "/webhooks/x", b"");
    // Signed for the first gateway's address; the second sees another Host, so sign the
    // replay target's authority the same way a fleet behind one name would: same Host.
    let host = ("Host", s.gw.addr.to_string());
    let mut with_host = headers.clone();
    with_host.push(host.clone());
    assert_eq!(
        send(&s.gw, "GET", "/webhooks/x", b"", &with_host).status(),
        200
    );
    refused(
        send(&second, "GET", "/webhooks/x", b"", &with_host),
        401,
        "signature_replayed",
    );
    // A fresh signature is fine on the second instance.
    let mut fresh = sign(&s.gw, "GET", "/webhooks/x", b"");
    fresh.push(host);
    assert_eq!(
        send(&second, "GET", "/webhooks/x", b"", &fresh).status(),
        200
    );
}

#[test]
fn r11_m1_m14_after_a_redis_outage_the_first_signed_request_reaches_the_shared_nonce_store() {
    let mut redis = RedisServer::start();
    // Room for a reconnect on a machine busy running the rest of the suite.
    let shared = format!(
        "  nonces:\n    redis: {{ url: \"{}\", timeout: 200ms }}\n",
        redis.url()
    );
    let s = start(&shared);
    let second = start_for(&s.dir, &s.echo, &shared);
    // Both gateways answer for one name, so one signature is good at either.
    let signed = || {
        let mut headers = sign(&s.gw, "GET", "/webhooks/x", b"");
        headers.push(("Host", s.gw.addr.to_string()));
        headers
    };
    for gw in [&s.gw, &second] {
        assert_eq!(send(gw, "GET", "/webhooks/x", b"", &signed()).status(), 200);
    }
    redis.stop();
    // M14: down, each gateway fails closed.
    for gw in [&s.gw, &second] {
        let resp = send(gw, "GET", "/webhooks/x", b"", &signed());
        assert_eq!(resp.headers()["retry-after"], "1");
        refused(resp, 503, "nonce_store_unavailable");
    }
    let forwarded = s.echo.received().len();
    std::thread::sleep(OUTAGE);
    redis.restart();
    std::thread::sleep(Duration::from_millis(1500));
    // The first signed request after the outage is recorded in Redis, so its replay to the
    // other gateway, that one's first call, is refused as a replay, not as an outage.
    let headers = signed();
    assert_eq!(
        send(&s.gw, "GET", "/webhooks/x", b"", &headers).status(),
        200
    );
    refused(
        send(&second, "GET", "/webhooks/x", b"", &headers),
        401,
        "signature_replayed",
    );
    assert_eq!(
        s.echo.received().len(),
        forwarded + 1,
        "the replay was not forwarded"
    );
}

#[test]
fn m14_a_nonce_store_that_is_down_fails_closed() {
    let dead = free_port();
    let s = start(&format!(
        "  nonces:\n    redis: {{ url: \"redis://127.0.0.1:{dead}/\", timeout: 100ms }}\n"
    ));
    let headers = sign(&s.gw, "GET", "/webhooks/x", b"");
    let resp = send(&s.gw, "GET", "/webhooks/x", b"", &headers);
    assert_eq!(resp.headers()["retry-after"], "1");
    refused(resp, 503, "nonce_store_unavailable");
    assert!(s.echo.received().is_empty());
}

#[test]
fn the_signing_keys_file_is_reloaded() {
    let s = start("");
    let path = s.dir.path().join("signing-keys.yaml");
    let headers = sign(&s.gw, "GET", "/webhooks/x", b"");
    assert_eq!(
        send(&s.gw, "GET", "/webhooks/x", b"", &headers).status(),
        200
    );
    // Disabled: refused like an unknown key, at once after the reload.
    std::fs::write(&path, keys_yaml("  disabled: true\n")).unwrap();
    assert!(s.gw.eventually(Duration::from_secs(10), || {
        let headers = sign(&s.gw, "GET", "/webhooks/x", b"");
        send(&s.gw, "GET", "/webhooks/x", b"", &headers).status() == 401
    }));
    let headers = sign(&s.gw, "GET", "/webhooks/x", b"");
    refused(
        send(&s.gw, "GET", "/webhooks/x", b"", &headers),
        401,
        "signature_unknown_key",
    );
    // A broken file is refused whole; the keys in force stay.
    std::fs::write(&path, "keys:\n- id: x\n  secret: base64:short\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let headers = sign(&s.gw, "GET", "/webhooks/x", b"");
    refused(
        send(&s.gw, "GET", "/webhooks/x", b"", &headers),
        401,
        "signature_unknown_key",
    );
    assert!(
        s.gw.metric("portcullis_signing_key_reloads_total{result=\"invalid\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// `Name: value` fields as printed by `portcullis sign`.
fn fields<'a>(printed: impl Iterator<Item = &'a str>) -> Vec<(&'a str, String)> {
    printed
        .map(|f| {
            let (k, v) = f.split_once(": ").unwrap();
            (k, v.to_string())
        })
        .collect()
}

#[test]
fn portcullis_sign_makes_requests_the_gateway_accepts() {
    let s = start("");
    let body_file = s.dir.path().join("order.json");
    std::fs::write(&body_file, br#"{"order":7}"#).unwrap();
    let url = format!("http://{}/webhooks/orders?source=cli", s.gw.addr);
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["sign", "--keys-file"])
            .arg(s.dir.path().join("signing-keys.yaml"))
            .args(["--key-id", KEY_ID, "-X", "POST", "--body-file"])
            .arg(&body_file)
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = run(&[]);
    let headers = fields(printed.lines());
    let names: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, ["Content-Digest", "Signature-Input", "Signature"]);
    assert!(!printed.contains(&base64::engine::general_purpose::STANDARD.encode(secret())));
    let resp = send(
        &s.gw,
        "POST",
        "/webhooks/orders?source=cli",
        br#"{"order":7}"#,
        &headers,
    );
    assert_eq!(resp.status(), 200);

    // --count: one line per signature, each with its own nonce.
    let many = run(&["--count", "3"]);
    let lines: Vec<&str> = many.lines().collect();
    assert_eq!(lines.len(), 3);
    let unique: std::collections::HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique.len(), 3);
    for line in lines {
        let headers = fields(line.split('\t'));
        let resp = send(
            &s.gw,
            "POST",
            "/webhooks/orders?source=cli",
            br#"{"order":7}"#,
            &headers,
        );
        assert_eq!(resp.status(), 200);
    }
}

/// A raw GET with the signature headers for `signed_path`, sent to `sent_path` as is.
fn raw_signed_get(s: &Signed, signed_path: &str, sent_path: &str) -> String {
    let headers = sign(&s.gw, "GET", signed_path, b"");
    let mut req = format!(
        "GET {sent_path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        s.gw.addr
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(s.gw.addr, req.as_bytes())
}

#[test]
fn m4_the_signature_covers_the_path_as_sent_and_the_canonical_path_is_forwarded() {
    let s = start("");
    // RFC 9421 §2.2.6: `@path` is the target's path as sent, before any decoding, which is
    // what independent signers sign. The backend still gets the canonical path.
    let raw = raw_signed_get(&s, "/webhooks//a/./b/../c", "/webhooks//a/./b/../c");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let r: Echoed = serde_json::from_str(raw_body(&raw)).unwrap();
    assert_eq!(r.path, "/webhooks/a/c");
    // A signature over another form than the one sent does not match, canonical or not.
    let raw = raw_signed_get(&s, "/webhooks/a/c", "/webhooks//a/./b/../c");
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert!(raw.contains("signature_mismatch"), "{raw}");
    // Percent-encodings are signed as sent (`%7E`, lower-case hex), and forwarded canonical
    // (unreserved characters decoded, hex digits upper-cased).
    for (sent, forwarded) in [
        ("/webhooks/%7Eorders", "/webhooks/~orders"),
        ("/webhooks/caf%c3%a9", "/webhooks/caf%C3%A9"),
        ("/webhooks/%61/%e1%88%b4", "/webhooks/a/%E1%88%B4"),
    ] {
        let raw = raw_signed_get(&s, sent, sent);
        assert!(raw.starts_with("HTTP/1.1 200"), "{sent}: {raw}");
        let r: Echoed = serde_json::from_str(raw_body(&raw)).unwrap();
        assert_eq!(r.path, forwarded, "{sent}");
        let raw = raw_signed_get(&s, forwarded, sent);
        assert!(
            raw.contains("signature_mismatch"),
            "{sent} signed as {forwarded}: {raw}"
        );
    }
    // What the gateway refuses to canonicalise (an encoded slash) is refused before any
    // signature is looked at.
    let raw = raw_signed_get(&s, "/webhooks/a%2Fb", "/webhooks/a%2Fb");
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
}

#[test]
fn a_client_expecting_100_continue_gets_it_before_sending_the_signed_body() {
    use std::io::{Read, Write};
    let s = start("");
    let body = vec![b'x'; 4096];
    let headers = sign(&s.gw, "POST", "/webhooks/upload", &body);
    let mut head = format!(
        "POST /webhooks/upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n",
        s.gw.addr,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = std::net::TcpStream::connect(s.gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    // Nothing of the body is sent until the gateway says to.
    let mut first = [0u8; 25];
    conn.read_exact(&mut first).unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    conn.write_all(&body).unwrap();
    let mut rest = String::new();
    conn.read_to_string(&mut rest).unwrap();
    let final_status = rest.lines().find(|l| {
        l.starts_with("HTTP/1.1 2") || l.starts_with("HTTP/1.1 4") || l.starts_with("HTTP/1.1 5")
    });
    assert_eq!(final_status, Some("HTTP/1.1 200 OK"), "{rest}");
    let r: Echoed = serde_json::from_str(raw_body(&rest)).unwrap();
    assert_eq!(r.body_sha256, sha256_hex(&body));
    // The backend is not asked to send another 100: the body comes with the request.
    assert_eq!(r.header("expect"), None);
}

#[test]
fn a_signed_request_over_http2_is_verified_and_its_body_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signing-keys.yaml"), keys_yaml("")).unwrap();
    let echo = Echo::start();
    let (gw, cert) = crate::tls::tls_gateway(&format!(
        "request_signing:\n  keys_file: {}\nupstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: webhooks\n    match: {{ path_prefix: /webhooks }}\n    upstream: echo\n    auth: {{ hmac: true }}\n",
        dir.path().join("signing-keys.yaml").display(),
        echo.addr
    ));
    let port = gw.addr.port();
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let body_file = dir.path().join("body.bin");
    std::fs::write(&body_file, &body).unwrap();
    // HTTP/2 has no Host header: :authority is what is signed.
    let authority = format!("localhost:{port}");
    let empty = http::HeaderMap::new();
    let req = SignedRequest {
        method: "POST",
        scheme: "https",
        authority: &authority,
        path: "/webhooks/h2",
        query: None,
        headers: &empty,
        body: &body,
    };
    let components: Vec<String> = DEFAULT.iter().map(|c| c.to_string()).collect();
    let nonce = http_sig::new_nonce().unwrap();
    let signed =
        http_sig::sign(&req, KEY_ID, &secret(), &components, now(), &nonce, "sig1").unwrap();
    let mut extra: Vec<String> = vec![
        "--http2".into(),
        "--data-binary".into(),
        format!("@{}", body_file.display()),
    ];
    for (k, v) in &signed {
        extra.push("-H".into());
        extra.push(format!("{k}: {v}"));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (version, text) = curl_https_raw(
        &format!("https://localhost:{port}/webhooks/h2"),
        &cert,
        &extra,
        "%{http_version} %{http_code}",
    );
    assert_eq!(version, "2 200", "{text}");
    let r: Echoed = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (r.body_length, r.body_sha256),
        (body.len(), sha256_hex(&body))
    );
}

#[test]
fn a_signed_body_that_stalls_gets_408_and_nothing_is_forwarded() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signing-keys.yaml"), keys_yaml("")).unwrap();
    let echo = Echo::start();
    // A read of the body may wait `request_body_timeout` (20 s unless set), as for any body.
    let gw = start_for_with_server(&dir, &echo, "", "  request_body_timeout: 1s\n");
    let s = Signed { gw, echo, dir };
    let body = vec![b'x'; 100];
    let headers = sign(&s.gw, "POST", "/webhooks/slow", &body);
    let mut head = format!(
        "POST /webhooks/slow HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
        s.gw.addr,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = std::net::TcpStream::connect(s.gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    // A tenth of the body, then nothing: the gateway gives up after the body timeout.
    conn.write_all(&body[..10]).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(
        s.echo.received().is_empty(),
        "part of a body reached the origin"
    );
}
