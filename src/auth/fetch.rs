//! Reading a provider's endpoints (JWKS, OIDC discovery, introspection): which addresses the
//! gateway may fetch at all, bounded reads, and one vocabulary of failures, which is also the
//! `outcome` label of their metrics.

use serde_json::Value;

/// An address the gateway may fetch from (keys, discovery, introspection): https, or plain
/// http to a loopback address.
pub fn allowed_uri(uri: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(uri) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// `timeout` or `unreachable`.
pub fn transport(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else {
        "unreachable"
    }
}

/// The body of `resp`, at most `max` bytes (`too_large` beyond, announced or not).
pub async fn read_bounded(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, &'static str> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err("too_large");
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Err("too_large");
        }
    }
    Ok(body)
}

/// An address named by an OIDC discovery document (`jwks_uri`, `introspection_endpoint`):
/// fetched from `doc_uri`, and usable only when https or http to loopback
/// (`discovery_invalid` otherwise, or when the document is not JSON or lacks it).
pub async fn discovered(
    client: &reqwest::Client,
    doc_uri: &str,
    member: &str,
    max: usize,
) -> Result<String, &'static str> {
    let resp = client
        .get(doc_uri)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| transport(&e))?;
    if !resp.status().is_success() {
        return Err("bad_status");
    }
    let body = read_bounded(resp, max).await?;
    let doc = super::strict_json::from_slice(&body).map_err(|_| "discovery_invalid")?;
    doc.get(member)
        .and_then(Value::as_str)
        .filter(|u| allowed_uri(u))
        .map(str::to_string)
        .ok_or("discovery_invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_only_from_https_or_loopback_http() {
        assert!(allowed_uri("https://idp.example.com/jwks"));
        assert!(allowed_uri("http://127.0.0.1:8080/jwks"));
        assert!(allowed_uri("http://[::1]/jwks"));
        assert!(allowed_uri("http://localhost/jwks"));
        assert!(!allowed_uri("http://idp.example.com/jwks"));
        assert!(!allowed_uri("http://169.254.169.254/latest"));
        assert!(!allowed_uri("file:///etc/passwd"));
        assert!(!allowed_uri("not a url"));
    }
}
