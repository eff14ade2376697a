//! The client side of a test: HTTP clients that ignore proxies in the environment, `curl` for
//! HTTPS with a test CA, and the checks on what the gateway answers when it refuses (the
//! JSON error body, a 401's Bearer challenge).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// An HTTP client that never uses a proxy from the environment and does not retry.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A client that opens a new connection for every request.
pub fn fresh_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// `curl` over HTTPS trusting `ca`; returns (status, body).
pub fn curl_https(url: &str, ca: &Path, extra: &[&str]) -> (u16, String) {
    let (code, body) = curl_https_raw(url, ca, extra, "%{http_code}");
    (code.parse().unwrap_or(0), body)
}

/// Like `curl_https`, with what curl writes after the body chosen by the `-w` format `w`
/// (e.g. `%{http_version} %{http_code}`); returns (that text, body).
pub fn curl_https_raw(url: &str, ca: &Path, extra: &[&str], w: &str) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-w",
            &format!("\n{w}"),
        ])
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed by `make test`");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().to_string(), body.to_string())
}

/// The JSON error body the gateway writes, checked for shape.
pub fn error_body(text: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    for key in ["error", "message", "request_id"] {
        assert!(
            v[key].as_str().is_some_and(|s| !s.is_empty()),
            "error body lacks `{key}`: {text}"
        );
    }
    v
}

/// Assert a 401 with a Bearer challenge and the error code `code`; the challenge.
pub fn unauthorized(resp: reqwest::blocking::Response, code: &str) -> String {
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with(r#"Bearer realm="portcullis""#),
        "{challenge}"
    );
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], code);
    challenge
}
