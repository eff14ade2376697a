//! Decisions of an OPA server, for teams that run OPA already: a route's `auth.opa` names a
//! server of the top-level `opa`, which the gateway asks as Kong's and APISIX's OPA plugins
//! do, through OPA's Data API: `POST <url>` with `{"input": <the input document>}` (the same
//! document an in-process Rego policy gets, see `rego`), and OPA answers `{"result": <value>}`
//! (`{}` when the document is undefined). The value decides as an in-process rule's does.
//!
//! - **Fail closed.** No usable answer (a timeout, a refused connection, a status other than
//!   OPA's own, a body that is not OPA's shape) is `503 policy_unavailable` with
//!   `Retry-After`, never an allow. Such failures count toward a circuit breaker, as for
//!   introspection: at most `max_concurrent` calls are in flight, and after `failures` failed
//!   calls in a row the server is not called for `open_for`, then one probe decides.
//! - **An evaluation error is not an outage.** OPA answers an error of the policy on this
//!   input with its error document (`{"code": "internal_error", "message": ...}`, HTTP 500 or
//!   400): that request gets `500 policy_error`, and the breaker is not moved, so no client
//!   can open it for everyone with an input the policy trips on.
//! - **Cache** (off unless `cache` is set): a decision (allow, deny or undefined) is kept for
//!   `ttl`, keyed by SHA-256 of the input document without its `time`, so one request
//!   repeated within the TTL is asked once. A policy that reads `input.time` finer than the
//!   TTL should not be cached. Concurrent requests with the same uncached input share one
//!   call (moka's `try_get_with`). Failures are never cached.

use super::rego::Input;
use crate::auth::breaker::GuardedCalls;
use crate::auth::fetch;
use crate::metrics::metrics;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest answer read from the server.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The Data API address of the document that decides, e.g.
    /// `http://127.0.0.1:8181/v1/data/gateway/authz`.
    pub url: String,
    pub timeout: Duration,
    /// Request headers the input document carries (lower-case; never `Authorization`).
    pub headers: Vec<http::HeaderName>,
    /// Headers an allowing result may add to the upstream request (all in the identity
    /// namespace).
    pub result_headers: Vec<http::HeaderName>,
    /// Keep decisions this long, at most this many; `None`: ask every time.
    pub cache: Option<(Duration, u64)>,
    pub max_concurrent: usize,
    /// Of those, at most this many for one client address.
    pub max_per_client: usize,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
}

/// A route's `auth.opa`: its server, and the route's name for the input document.
#[derive(Debug, Clone)]
pub struct OpaRule {
    pub server: Arc<OpaServer>,
    pub route: String,
}

/// What the server said about one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The document's value; `None` when it is undefined.
    Decided(Option<Json>),
    /// The server could not evaluate the policy on this input (its error document).
    PolicyError(String),
    /// No usable answer: 503, retry after this many seconds.
    Unavailable { retry_after: u64 },
}

pub struct OpaServer {
    pub name: String,
    pub settings: Settings,
    client: reqwest::Client,
    calls: GuardedCalls,
    cache: Option<moka::future::Cache<[u8; 32], Option<Json>>>,
}

impl std::fmt::Debug for OpaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaServer")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OpaServer {
    pub fn new(name: &str, settings: Settings) -> Result<Self, String> {
        let client = crate::auth::http_client(settings.timeout, settings.max_concurrent)?;
        let calls = GuardedCalls::new(
            format!("OPA server \"{name}\""),
            settings.timeout,
            (settings.max_concurrent, settings.max_per_client),
            (settings.breaker_failures, settings.breaker_open_for),
            metrics().opa_breaker.with_label_values(&[name]),
        );
        let cache = settings.cache.map(|(ttl, capacity)| {
            moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Ok(Self {
            name: name.to_string(),
            client,
            calls,
            cache,
            settings,
        })
    }

    /// The server's decision on `input` (a request of `client`), from the cache when it
    /// holds one.
    pub async fn decide(&self, input: &Input, client: Option<IpAddr>) -> Answer {
        let Some(cache) = &self.cache else {
            return self.ask(input, client).await;
        };
        let asked = AtomicBool::new(false);
        let found = cache
            .try_get_with(cache_key(input), async {
                asked.store(true, Ordering::Relaxed);
                match self.ask(input, client).await {
                    Answer::Decided(value) => Ok(value),
                    failed => Err(failed),
                }
            })
            .await;
        match found {
            Ok(value) => {
                // Not asked by this request: the cache's, or a concurrent request's, answer.
                if !asked.load(Ordering::Relaxed) {
                    self.count("cached");
                }
                Answer::Decided(value)
            }
            // Counted once, by the request whose call failed.
            Err(failed) => (*failed).clone(),
        }
    }

    /// One call, guarded by the breaker, a slot and the timeout.
    async fn ask(&self, input: &Input, client: Option<IpAddr>) -> Answer {
        // A decision or OPA's error on this input: either way the server answered.
        let answer = match self.calls.call(client, self.call(input)).await {
            Ok(answer) => answer,
            Err(failed) => {
                self.count(failed.outcome);
                return Answer::Unavailable {
                    retry_after: failed.retry_after,
                };
            }
        };
        match &answer {
            Answer::PolicyError(e) => {
                self.count("policy_error");
                tracing::error!(server = %self.name, error = %e, "the OPA server could not evaluate its policy on a request; refused");
            }
            _ => self.count("decided"),
        }
        answer
    }

    async fn call(&self, input: &Input) -> Result<Answer, &'static str> {
        // `{"input": ...}` written around the document, which is not copied for it.
        let mut body = b"{\"input\":".to_vec();
        serde_json::to_writer(&mut body, input).map_err(|_| "invalid_request")?;
        body.push(b'}');
        let resp = self
            .client
            .post(&self.settings.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let why = fetch::transport(&e);
                tracing::warn!(server = %self.name, "the OPA server {}", match why {
                    "timeout" => "did not answer in time",
                    _ => "is unreachable",
                });
                why
            })?;
        let status = resp.status().as_u16();
        let body = fetch::read_bounded(resp, MAX_RESPONSE_BYTES).await?;
        let doc: Option<serde_json::Map<String, Json>> = serde_json::from_slice(&body).ok();
        match (status, doc) {
            (200, Some(mut doc)) => Ok(Answer::Decided(doc.remove("result"))),
            // OPA's error document: the policy failed on this input, the server did not.
            (400 | 500, Some(doc)) if doc.get("code").is_some_and(Json::is_string) => {
                let text = |k: &str| doc.get(k).and_then(Json::as_str).unwrap_or_default();
                Ok(Answer::PolicyError(format!(
                    "{}: {}",
                    text("code"),
                    text("message")
                )))
            }
            (200, None) => {
                tracing::error!(server = %self.name, "the OPA server's answer is not a JSON object; requests it decides get 503");
                Err("invalid_response")
            }
            (status, _) => {
                tracing::error!(server = %self.name, status, "the OPA server answered with an error status; requests it decides get 503");
                Err("error_status")
            }
        }
    }

    fn count(&self, outcome: &str) {
        metrics()
            .opa_calls
            .with_label_values(&[self.name.as_str(), outcome])
            .inc();
    }
}

/// SHA-256 of the input document's members other than `time`, in their (sorted) order.
fn cache_key(input: &Input) -> [u8; 32] {
    let mut h = Sha256::new();
    let json = |v: &Input| serde_json::to_string(v).unwrap_or_default();
    match input {
        Input::Object(members) => {
            let time = Input::from("time");
            for (name, value) in members.iter().filter(|(name, _)| **name != time) {
                // Both JSON-encoded: a name and a value can never run into each other.
                h.update(json(name));
                h.update(b":");
                h.update(json(value));
                h.update(b",");
            }
        }
        other => h.update(json(other)),
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cache_key_ignores_the_time_and_nothing_else() {
        let cache_key = |v: Json| super::cache_key(&Input::from(v));
        let a = json!({"method": "GET", "path": "/a", "time": {"unix": 1}});
        let later = json!({"method": "GET", "path": "/a", "time": {"unix": 2}});
        let other = json!({"method": "GET", "path": "/b", "time": {"unix": 1}});
        assert_eq!(cache_key(a.clone()), cache_key(later));
        assert_ne!(cache_key(a), cache_key(other));
        // A member's value cannot pose as the next member's name.
        let x = json!({"a": "b\",\"c\":\"d"});
        let y = json!({"a": "b", "c": "d"});
        assert_ne!(cache_key(x), cache_key(y));
    }
}
