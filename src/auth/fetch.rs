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
/// (`discovery_invalid` otherwise, or when the document is not JSON or lacks it). A failure
/// is logged for `provider` as what happened: the document unreachable, late, answered with
/// an error status, too large, or read but naming no usable address.
pub async fn discovered(
    client: &reqwest::Client,
    provider: &str,
    doc_uri: &str,
    member: &str,
    max: usize,
) -> Result<String, &'static str> {
    let failed = |outcome: &'static str, what: &str| {
        tracing::error!(%provider, document = %doc_uri, "OIDC discovery failed: {what}");
        outcome
    };
    let resp = match client
        .get(doc_uri)
        .header("accept", "application/json")
        .send()
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            return Err(match transport(&e) {
                "timeout" => failed("timeout", "the discovery document did not arrive in time"),
                other => failed(other, "the provider is unreachable"),
            })
        }
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(failed(
            "bad_status",
            &format!(
                "the discovery document's address answered {}",
                status.as_u16()
            ),
        ));
    }
    let body = match read_bounded(resp, max).await {
        Ok(body) => body,
        Err("too_large") => {
            return Err(failed(
                "too_large",
                &format!("the discovery document is larger than {max} bytes"),
            ))
        }
        Err(other) => {
            return Err(failed(
                other,
                "the provider stopped sending the discovery document",
            ))
        }
    };
    let Ok(doc) = super::strict_json::from_slice(&body) else {
        return Err(failed(
            "discovery_invalid",
            "the discovery document is not a JSON object",
        ));
    };
    match doc.get(member).and_then(Value::as_str) {
        Some(uri) if allowed_uri(uri) => Ok(uri.to_string()),
        Some(_) => Err(failed(
            "discovery_invalid",
            &format!("the discovery document's {member} is neither https nor http on loopback"),
        )),
        None => Err(failed(
            "discovery_invalid",
            &format!("the discovery document names no {member}"),
        )),
    }
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
