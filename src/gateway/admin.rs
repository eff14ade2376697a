//! The admin listener: `/metrics`, `/health/live`, `/health/ready`, and the public keys of the
//! gateway's identity assertions at `/.well-known/jwks.json`. It is a separate service
//! on its own address (default `127.0.0.1:9901`) and is never reachable through the public
//! listeners.
//!
//! Readiness means this instance can take traffic: every upstream pool with a health check has
//! finished its first round (until then Pingora treats every backend as healthy), and every
//! identity provider that fetches its keys has usable ones. A pool with
//! no healthy backend does not make the gateway unready; that would take down every other
//! route too. The body shows each pool's healthy count.

use crate::upstream::Pool;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

pub struct AdminApp {
    pub pools: Vec<Arc<Pool>>,
    /// The gateway's identity-assertion keys (public parts), served at
    /// `/.well-known/jwks.json`; built once.
    pub assertion_jwks: Vec<u8>,
    /// Consumers and their keys for `/admin/consumers` (never a digest).
    pub api_keys: Option<Arc<crate::auth::api_key::ApiKeys>>,
    /// For the tracked-keys gauge.
    pub limiter: Option<Arc<crate::ratelimit::LocalLimiter>>,
    pub remote_keys: Vec<Arc<crate::auth::jwks::RemoteKeys>>,
    /// The revocation list and its admin token, when configured.
    pub revocation: Option<super::revocations::RevocationApi>,
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = resp.body().len().to_string().parse() {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(&value).unwrap_or_default(),
    )
}

impl AdminApp {
    /// Consumers and their keys with last use, so unused keys can be found and revoked.
    /// Digests are never shown.
    fn consumers(&self) -> Response<Vec<u8>> {
        let Some(keys) = &self.api_keys else {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": "No consumers file is configured."}),
            );
        };
        let ring = keys.current();
        let consumers: Vec<serde_json::Value> = ring
            .consumers
            .iter()
            .map(|c| {
                let keys: Vec<serde_json::Value> = ring
                    .keys
                    .iter()
                    .filter(|k| Arc::ptr_eq(&k.consumer, c))
                    .map(|k| {
                        json!({
                            "id": k.id,
                            "created": k.created,
                            "expires": k.expires,
                            "disabled": k.disabled,
                            "last_used": k.last_used().map(|t| {
                                humantime::format_rfc3339_seconds(
                                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
                                )
                                .to_string()
                            }),
                        })
                    })
                    .collect();
                json!({
                    "name": c.name,
                    "tenant": c.tenant,
                    "scopes": c.scopes,
                    "tier": c.tier,
                    "keys": keys,
                })
            })
            .collect();
        json_response(
            StatusCode::OK,
            json!({"environment": keys.environment.as_str(), "consumers": consumers}),
        )
    }

    fn ready(&self) -> Response<Vec<u8>> {
        let mut upstreams = serde_json::Map::new();
        let mut ready = true;
        for pool in &self.pools {
            let health = pool.health();
            let checked = pool.first_check_done();
            ready &= checked;
            upstreams.insert(
                pool.name.clone(),
                json!({
                    "backends": health.len(),
                    "healthy": health.iter().filter(|(_, h)| *h).count(),
                    "first_check_done": checked,
                }),
            );
        }
        let mut providers = serde_json::Map::new();
        for r in &self.remote_keys {
            let usable = r.ready();
            ready &= usable;
            providers.insert(r.provider.clone(), json!({ "keys_usable": usable }));
        }
        let mut revocations = serde_json::Value::Null;
        if let Some(r) = &self.revocation {
            // A fleet's shared list must have been loaded: a gateway that never saw it would
            // accept revoked tokens.
            let loaded = r.list.loaded();
            ready &= loaded;
            revocations = json!({ "loaded": loaded, "shared": r.shared });
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(
            status,
            json!({
                "status": if ready { "ready" } else { "not_ready" },
                "upstreams": upstreams,
                "identity_providers": providers,
                "revocations": revocations,
            }),
        )
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path() == "/admin/revocations" {
            let method = req.method.clone();
            let authorization = req
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            let body = if method == http::Method::POST || method == http::Method::DELETE {
                read_body(session).await
            } else {
                Ok(None)
            };
            let (status, value) = match body {
                Ok(body) => {
                    super::revocations::handle(
                        self.revocation.as_ref(),
                        &method,
                        authorization.as_deref(),
                        body.as_deref(),
                        crate::unix_now(),
                    )
                    .await
                }
                Err(()) => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "body_too_large", "message": "The body is too large or could not be read."}),
                ),
            };
            return json_response(status, value);
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "message": "The admin listener answers GET only."}),
            );
        }
        match req.uri.path() {
            "/metrics" => {
                if let Some(l) = &self.limiter {
                    crate::metrics::metrics()
                        .rate_limit_keys
                        .set(l.tracked() as i64);
                }
                if let Some(r) = &self.revocation {
                    let (jti, subjects, tokens) = r.list.counts(crate::unix_now());
                    let g = &crate::metrics::metrics().revocations_active;
                    g.with_label_values(&["jti"]).set(jti as i64);
                    g.with_label_values(&["subject"]).set(subjects as i64);
                    g.with_label_values(&["token"]).set(tokens as i64);
                }
                // Ages are read at scrape time, so they grow between refreshes as they should.
                for r in &self.remote_keys {
                    if let Some(age) = r.age_secs() {
                        crate::metrics::metrics()
                            .jwks_age
                            .with_label_values(&[r.provider.as_str()])
                            .set(age);
                    }
                }
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    crate::metrics::render(),
                )
            }
            // The pid tells which process answers (a graceful upgrade hands the address over).
            "/health/live" => json_response(
                StatusCode::OK,
                json!({"status": "live", "pid": std::process::id()}),
            ),
            "/admin/consumers" => self.consumers(),
            "/.well-known/jwks.json" => respond(
                StatusCode::OK,
                "application/jwk-set+json",
                self.assertion_jwks.clone(),
            ),
            "/health/ready" => self.ready(),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": "Try /metrics, /health/live, /health/ready, /admin/consumers, /admin/revocations or /.well-known/jwks.json."}),
            ),
        }
    }
}

/// The request body, up to 16 KiB plus one chunk (the handler refuses anything larger).
async fn read_body(session: &mut ServerSession) -> Result<Option<Vec<u8>>, ()> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > 16 * 1024 {
                    return Err(());
                }
            }
            Ok(None) => break,
            Err(_) => return Err(()),
        }
    }
    Ok((!body.is_empty()).then_some(body))
}

/// One JWKS with the assertion keys of every pool (a key shared by pools appears once).
pub fn assertion_jwks(pools: &[Arc<Pool>]) -> Vec<u8> {
    let mut keys: Vec<serde_json::Value> = Vec::new();
    for a in pools.iter().filter_map(|p| p.assertion.as_deref()) {
        if let Some(list) = a.signer.jwks().get("keys").and_then(|k| k.as_array()) {
            for k in list {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
    }
    serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default()
}
