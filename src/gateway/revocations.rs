//! `/admin/revocations` on the admin listener: add (`POST`), list (`GET`) and remove
//! (`DELETE`) entries of the revocation list, behind the admin bearer token.
//!
//! A body names one entry: `{"jti": "...", "expires_at": 1767225600}` (kept until the token's
//! own `exp`; default `revocation.default_ttl` from now), `{"subject": "...", "before":
//! 1767225600}` (every token of the subject issued at or before that second; default now), or
//! `{"token": "..."}` (one opaque token, kept by SHA-256 only). A token is never echoed or
//! logged; the answer and the list show the first 16 hex digits of its SHA-256.

use crate::auth::revocation::{Entry, Revocations};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The revocation list as its admin API sees it: the list, and the settings it is
/// administered with.
#[derive(Clone)]
pub struct RevocationApi {
    pub list: Arc<Revocations>,
    /// Shared by a fleet through Redis.
    pub shared: bool,
    /// The admin API's bearer token; `None`: the API is closed.
    pub token: Option<Arc<[u8]>>,
    /// Kept for `jti` and token entries posted without `expires_at`.
    pub default_ttl: Duration,
}

/// Largest accepted body.
const MAX_BODY: usize = 16 * 1024;

/// What a request body may hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    jti: Option<String>,
    subject: Option<String>,
    token: Option<String>,
    expires_at: Option<u64>,
    before: Option<u64>,
}

/// The answer: status and JSON body.
pub type Answer = (StatusCode, Value);

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    (status, json!({"error": code, "message": message.into()}))
}

/// Whether `authorization` carries the admin token (compared in constant time, by digest).
pub fn authorized(spec: &RevocationApi, authorization: Option<&[u8]>) -> bool {
    use sha2::Digest;
    let Some(want) = &spec.token else {
        return false;
    };
    let Some(given) = authorization.and_then(|v| {
        v.strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "))
    }) else {
        return false;
    };
    let a: [u8; 32] = sha2::Sha256::digest(given).into();
    let b: [u8; 32] = sha2::Sha256::digest(want).into();
    crate::auth::crypto::constant_time_eq(&a, &b)
}

fn short_hash(sha: &[u8; 32]) -> String {
    hex::encode(&sha[..8])
}

/// An entry as the API shows it.
pub fn describe(e: &Entry) -> Value {
    match e {
        Entry::Jti { jti, expires_at } => {
            json!({"kind": "jti", "jti": jti, "expires_at": expires_at})
        }
        Entry::Subject { subject, before } => {
            json!({"kind": "subject", "subject": subject, "before": before})
        }
        Entry::Token { sha256, expires_at } => {
            json!({"kind": "token", "token_sha256_prefix": short_hash(sha256), "expires_at": expires_at})
        }
    }
}

/// The entry a body names (for `DELETE`, the times are not needed).
fn entry(spec: &RevocationApi, body: &[u8], now: u64, adding: bool) -> Result<Entry, Answer> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "invalid_revocation", m);
    let value = crate::auth::strict_json::from_slice(body)
        .map_err(|e| bad(format!("The body is not JSON: {e}")))?;
    let b: Body = serde_json::from_value(value).map_err(|e| {
        bad(format!(
            "Expected {{\"jti\"|\"subject\"|\"token\": ..., \"expires_at\"|\"before\": ...}}: {e}"
        ))
    })?;
    let named = [b.jti.is_some(), b.subject.is_some(), b.token.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if named != 1 {
        return Err(bad(
            "Name exactly one of `jti`, `subject` or `token`.".into()
        ));
    }
    let default_until = now + spec.default_ttl.as_secs();
    if b.subject.is_some() && b.expires_at.is_some() {
        return Err(bad(
            "A subject entry takes `before`, not `expires_at`.".into()
        ));
    }
    if b.subject.is_none() && b.before.is_some() {
        return Err(bad(
            "`before` belongs to a subject entry; a jti or token entry takes `expires_at`.".into(),
        ));
    }
    if adding && b.expires_at.is_some_and(|e| e <= now) {
        return Err(bad(
            "`expires_at` is in the past: that token is already refused as expired.".into(),
        ));
    }
    let e = if let Some(jti) = b.jti {
        Entry::Jti {
            jti,
            expires_at: b.expires_at.unwrap_or(default_until),
        }
    } else if let Some(subject) = b.subject {
        Entry::Subject {
            subject,
            before: b.before.unwrap_or(now),
        }
    } else {
        let token = b.token.unwrap_or_default();
        if token.is_empty() {
            return Err(bad("`token` is empty.".into()));
        }
        Entry::Token {
            sha256: crate::auth::revocation::token_sha256(token.as_bytes()),
            expires_at: b.expires_at.unwrap_or(default_until),
        }
    };
    e.validate().map_err(|m| bad(format!("{m}.")))?;
    Ok(e)
}

/// Answer one request to `/admin/revocations`.
pub async fn handle(
    spec: Option<&RevocationApi>,
    method: &http::Method,
    authorization: Option<&[u8]>,
    body: Option<&[u8]>,
    now: u64,
) -> Answer {
    let Some(spec) = spec else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "No revocation list is configured (see `revocation` in the configuration).",
        );
    };
    if spec.token.is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "admin_api_disabled",
            "The revocation API is closed: set `revocation.admin_token_file`.",
        );
    }
    if !authorized(spec, authorization) {
        return error(
            StatusCode::UNAUTHORIZED,
            "admin_unauthorized",
            "The admin bearer token is missing or wrong.",
        );
    }
    let list = &spec.list;
    match *method {
        http::Method::GET | http::Method::HEAD => {
            let (mut jti, mut subjects, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
            for e in list.list(now) {
                match e {
                    Entry::Jti { .. } => &mut jti,
                    Entry::Subject { .. } => &mut subjects,
                    Entry::Token { .. } => &mut tokens,
                }
                .push(describe(&e));
            }
            (
                StatusCode::OK,
                json!({"jti": jti, "subjects": subjects, "tokens": tokens}),
            )
        }
        http::Method::POST | http::Method::DELETE => {
            let adding = *method == http::Method::POST;
            let Some(body) = body else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_revocation",
                    "A JSON body is required.",
                );
            };
            if body.len() > MAX_BODY {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("The body is larger than {MAX_BODY} bytes."),
                );
            }
            let e = match entry(spec, body, now, adding) {
                Ok(e) => e,
                Err(answer) => return answer,
            };
            let result = if adding {
                list.add(e.clone()).await.map(|()| true)
            } else {
                list.remove(&e).await
            };
            match result {
                Ok(changed) => {
                    let shown = describe(&e);
                    tracing::info!(
                        action = if adding { "revoked" } else { "unrevoked" },
                        entry = %shown,
                        "revocation list changed"
                    );
                    if adding {
                        (StatusCode::CREATED, json!({"revoked": shown}))
                    } else {
                        (StatusCode::OK, json!({"removed": changed, "entry": shown}))
                    }
                }
                Err(message) => {
                    tracing::error!(%message, "the revocation list could not be changed");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "revocation_unavailable",
                        format!("The revocation list could not be changed: {message}"),
                    )
                }
            }
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Use GET, POST or DELETE.",
        ),
    }
}
