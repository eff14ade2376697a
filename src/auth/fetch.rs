//! Reading a provider's endpoints (JWKS, OIDC discovery, introspection) with bounds: one
//! vocabulary of failures, which is also the `outcome` label of their metrics.

use serde_json::Value;

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
        .filter(|u| super::jwks::allowed_uri(u))
        .map(str::to_string)
        .ok_or("discovery_invalid")
}
