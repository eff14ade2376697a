//! OAuth2 token introspection (RFC 7662): opaque tokens are valid only when the provider's
//! authorization server says so. The gateway asks once per token and remembers the answer.
//!
//! - **Cache** (moka, shared by every worker): keyed by SHA-256 of the token; an active answer
//!   lives until min(`cache.ttl`, the token's `exp`), an inactive one for `cache.inactive_ttl`.
//!   Concurrent requests with the same uncached token share one call (moka's `try_get_with`
//!   runs one initialiser per key; the others wait for it and count as single-flight joins).
//!   Failures are never cached. A revoked token may stay valid for at most the TTL — unless it
//!   is revoked at the gateway too (`crate::auth::revocation`), which evicts it at once.
//! - **Strict answers**: `active` must be the boolean `true`. A missing or non-boolean
//!   `active`, a non-JSON or non-200 answer, or a refusal of the gateway's own client
//!   credentials is a dependency failure (503), never a 401 — except a 400 whose OAuth error
//!   is about the token (`unsupported_token_type`, `invalid_token`, `invalid_grant`): the
//!   server has answered, the token is not active (401, cached for `inactive_ttl`, and no
//!   count toward the breaker, so junk tokens cannot open it for everyone). An `exp` in the past means
//!   inactive; `iss` and `aud` are compared with the provider's when present; the claims map
//!   to the identity exactly as a JWT's do.
//! - **Protecting the auth server**: at most `max_concurrent` calls are in flight (a request
//!   waits at most `timeout` for a free slot, then gets 503 without a call: `busy`), every
//!   call is bounded by `timeout`, and a circuit breaker opens after `failures`
//!   consecutive failures: for `open_for` requests that would need a call fail fast with 503
//!   and `Retry-After`; then one probe is let through and its outcome closes or reopens it.

use super::breaker::{Admit, Breaker};
use super::claims::{numeric_date, ClaimMap};
use super::{AuthError, Identity};
use crate::metrics::metrics;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest introspection answer read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How the gateway authenticates itself to the introspection endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the form-urlencoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// Where the endpoint is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Fixed(String),
    /// The `introspection_endpoint` of this OIDC discovery document, read on first use and
    /// again after a failed call.
    Discovery(String),
}

#[derive(Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub client_id: String,
    pub client_secret: String,
    pub client_auth: ClientAuth,
    /// Sent as `token_type_hint` (default `access_token`).
    pub token_type_hint: Option<String>,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub cache_capacity: u64,
    pub cache_ttl: Duration,
    pub inactive_ttl: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    /// Also ask about JWTs that verified locally (catches their revocation).
    pub introspect_jwts: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_auth", &self.client_auth)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A verdict on the token (inactive, wrong audience, ...): 401.
    Token(AuthError),
    /// The introspection service cannot answer: 503 with `Retry-After`.
    Unavailable {
        retry_after: u64,
        circuit_open: bool,
    },
}

/// What the cache holds for one token.
#[derive(Clone)]
enum Answer {
    Active(Arc<Identity>),
    /// Inactive, or refused on its claims (issuer, audience, shape): the same answer until
    /// the entry expires.
    Refused(AuthError),
}

#[derive(Clone)]
struct Cached {
    answer: Answer,
    /// Unix second from which the entry must not be used.
    until: u64,
    ttl: Duration,
}

struct CachedExpiry;

impl moka::Expiry<[u8; 32], Cached> for CachedExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A failed call, as every request waiting on it sees it.
#[derive(Debug, Clone, Copy)]
struct CallFailure {
    retry_after: u64,
    circuit_open: bool,
}

/// Per-provider metric handles, resolved once.
#[derive(Debug, Clone)]
struct Series {
    hit: prometheus::IntCounter,
    miss: prometheus::IntCounter,
    joins: prometheus::IntCounter,
    duration: prometheus::Histogram,
    breaker: prometheus::IntGauge,
}

pub struct Introspector {
    pub provider: String,
    issuer: String,
    audiences: Vec<String>,
    claims: ClaimMap,
    pub settings: Settings,
    client: reqwest::Client,
    discovered: Mutex<Option<String>>,
    cache: moka::future::Cache<[u8; 32], Cached>,
    slots: tokio::sync::Semaphore,
    breaker: Breaker,
    series: Series,
    /// The log has said once that a verified JWT came back inactive (see `confirm_jwt`).
    told_inactive_jwt: AtomicBool,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("provider", &self.provider)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    pub fn new(
        provider: &str,
        issuer: &str,
        audiences: Vec<String>,
        claims: ClaimMap,
        settings: Settings,
    ) -> Result<Self, String> {
        let client = super::http_client(settings.timeout, settings.max_concurrent)?;
        let m = metrics();
        let series = Series {
            hit: m.introspection_cache.with_label_values(&[provider, "hit"]),
            miss: m.introspection_cache.with_label_values(&[provider, "miss"]),
            joins: m.introspection_joins.with_label_values(&[provider]),
            duration: m.introspection_duration.with_label_values(&[provider]),
            breaker: m.introspection_breaker.with_label_values(&[provider]),
        };
        series.breaker.set(0);
        Ok(Self {
            provider: provider.to_string(),
            issuer: issuer.to_string(),
            audiences,
            claims,
            client,
            discovered: Mutex::new(None),
            cache: moka::future::Cache::builder()
                .max_capacity(settings.cache_capacity)
                .expire_after(CachedExpiry)
                .support_invalidation_closures()
                .build(),
            slots: tokio::sync::Semaphore::new(settings.max_concurrent),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_open_for),
            settings,
            series,
            told_inactive_jwt: AtomicBool::new(false),
        })
    }

    /// `introspect_jwts`: asks about a JWT that verified under the provider's keys. Inactive
    /// means revoked — or a server that cannot introspect JWTs and says so with `active:
    /// false` instead of `400 unsupported_token_type` (panva's oidc-provider, for one, answers
    /// every JWT it issued so); the log says that once, so an operator whose every JWT is
    /// refused knows which setting to change.
    pub async fn confirm_jwt(&self, token: &str, now: u64) -> Result<(), Refusal> {
        let answer = self.introspect(token, now).await;
        if matches!(answer, Err(Refusal::Token(AuthError::TokenInactive)))
            && !self.told_inactive_jwt.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(provider = %self.provider, "the introspection endpoint answered active: false for a JWT that verified under this provider's keys: it was revoked, or the server cannot introspect JWTs; if every JWT of this provider is refused, set introspect_jwts: false");
        }
        answer.map(|_| ())
    }

    /// Whether `token` is active, and who it belongs to: from the cache, or by asking the
    /// authorization server (one call per token however many requests carry it at once).
    pub async fn introspect(&self, token: &str, now: u64) -> Result<Arc<Identity>, Refusal> {
        // The same digest names the token on the revocation list.
        let key = super::revocation::token_sha256(token.as_bytes());
        if let Some(hit) = self.cache.get(&key).await {
            if now < hit.until {
                self.series.hit.inc();
                return answer(hit.answer);
            }
            // moka's clock and the token's differ; the token's wins.
            self.cache.invalidate(&key).await;
        }
        let ran = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .cache
            .try_get_with(key, async {
                ran.store(true, std::sync::atomic::Ordering::Relaxed);
                self.call(token, now).await
            })
            .await;
        if ran.load(std::sync::atomic::Ordering::Relaxed) {
            self.series.miss.inc();
        } else {
            self.series.joins.inc();
        }
        match result {
            Ok(cached) => answer(cached.answer),
            Err(f) => Err(Refusal::Unavailable {
                retry_after: f.retry_after,
                circuit_open: f.circuit_open,
            }),
        }
    }

    /// Forget cached answers matching `pred` (a revocation).
    pub fn evict_if(&self, pred: impl Fn(&[u8; 32], &Identity) -> bool + Send + Sync + 'static) {
        let r = self
            .cache
            .invalidate_entries_if(move |k, v| match &v.answer {
                Answer::Active(id) => pred(k, id),
                Answer::Refused(_) => false,
            });
        if let Err(e) = r {
            tracing::warn!(provider = %self.provider, "introspection cache eviction failed: {e}");
        }
    }

    /// Entries cached (approximate; for tests and metrics).
    pub async fn cached(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    async fn call(&self, token: &str, now: u64) -> Result<Cached, CallFailure> {
        let probe = match self.breaker.admit() {
            Admit::Closed => false,
            Admit::Probe => true,
            Admit::Open(wait) => {
                count(&self.provider, "circuit_open");
                return Err(CallFailure {
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                    circuit_open: true,
                });
            }
        };
        // A free slot, waited for at most `timeout`: a request that cannot get one is `busy`
        // (the gateway's own limit) and never reaches the server. Then the call itself gets
        // the whole `timeout`, so no call is started with only a sliver of time left.
        let Ok(Ok(_slot)) = tokio::time::timeout(self.settings.timeout, self.slots.acquire()).await
        else {
            return Err(self.failed("busy", probe));
        };
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.settings.timeout, self.ask(token)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(provider = %self.provider, timeout = ?self.settings.timeout, "introspection did not answer within its timeout");
                Err("timeout")
            }
        };
        self.series
            .duration
            .observe(started.elapsed().as_secs_f64());
        let body = match outcome {
            Ok(Asked::Answer(body)) => body,
            Ok(Asked::TokenRefused(error)) => {
                // The server answered about the token (RFC 6749 §5.2 shape, e.g. a server
                // that cannot introspect JWTs says `unsupported_token_type`): not active. Not
                // an outage, so it neither fails the call nor counts toward the breaker.
                if self.settings.introspect_jwts
                    && error == "unsupported_token_type"
                    && token.split('.').count() == 3
                {
                    tracing::warn!(provider = %self.provider, "the introspection endpoint cannot introspect JWTs (it answered 400 unsupported_token_type): with introspect_jwts: true every JWT of this provider is refused; set introspect_jwts: false");
                } else {
                    tracing::info!(provider = %self.provider, status = 400, %error, "the introspection endpoint answered 400 {error}: the token is not active");
                }
                if self.breaker.success() {
                    self.series.breaker.set(0);
                }
                count(&self.provider, "inactive");
                let ttl = self.settings.inactive_ttl.as_secs().max(1);
                return Ok(Cached {
                    answer: Answer::Refused(AuthError::TokenInactive),
                    until: now + ttl,
                    ttl: Duration::from_secs(ttl),
                });
            }
            Err(outcome) => {
                // The provider may have moved its endpoint: read the discovery document again
                // on the next call (the breaker bounds how often that is).
                if let Ok(mut d) = self.discovered.lock() {
                    *d = None;
                }
                return Err(self.failed(outcome, probe));
            }
        };
        match self.judge(&body, now) {
            Ok(cached) => {
                if self.breaker.success() {
                    self.series.breaker.set(0);
                    tracing::info!(provider = %self.provider, "introspection is answering again; circuit closed");
                }
                count(
                    &self.provider,
                    match cached.answer {
                        Answer::Active(_) => "active",
                        Answer::Refused(AuthError::TokenInactive) => "inactive",
                        Answer::Refused(_) => "refused",
                    },
                );
                Ok(cached)
            }
            Err(why) => {
                tracing::error!(provider = %self.provider, "the introspection endpoint's answer is not valid ({why}); requests needing introspection get 503");
                Err(self.failed("invalid_response", probe))
            }
        }
    }

    fn failed(&self, outcome: &'static str, probe: bool) -> CallFailure {
        count(&self.provider, outcome);
        let mut circuit_open = false;
        // No free slot in time is our own limit, not a failure of the server (unless this
        // was the probe).
        if (outcome != "busy" || probe) && self.breaker.failure() {
            self.series.breaker.set(1);
            circuit_open = true;
            tracing::error!(
                provider = %self.provider,
                failures = self.settings.breaker_failures,
                open_for = ?self.settings.breaker_open_for,
                "introspection keeps failing; circuit open"
            );
        }
        let retry_after = if circuit_open {
            self.settings.breaker_open_for.as_secs_f64().ceil().max(1.0) as u64
        } else {
            1
        };
        CallFailure {
            retry_after,
            circuit_open,
        }
    }

    async fn endpoint(&self) -> Result<String, &'static str> {
        let doc_uri = match &self.settings.endpoint {
            Endpoint::Fixed(uri) => return Ok(uri.clone()),
            Endpoint::Discovery(doc) => doc,
        };
        if let Some(uri) = self.discovered.lock().ok().and_then(|d| d.clone()) {
            return Ok(uri);
        }
        let uri = super::fetch::discovered(
            &self.client,
            &self.provider,
            doc_uri,
            "introspection_endpoint",
            MAX_RESPONSE_BYTES,
        )
        .await?;
        if let Ok(mut d) = self.discovered.lock() {
            *d = Some(uri.clone());
        }
        Ok(uri)
    }

    /// One POST to the endpoint: the body of a 200 answer, or a refusal of the token itself.
    async fn ask(&self, token: &str) -> Result<Asked, &'static str> {
        let uri = self.endpoint().await?;
        let s = &self.settings;
        let post_credentials = s.client_auth == ClientAuth::Post;
        // The serializer is not `Send`: built and finished before any await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token);
            if let Some(hint) = &s.token_type_hint {
                form.append_pair("token_type_hint", hint);
            }
            if post_credentials {
                form.append_pair("client_id", &s.client_id);
                form.append_pair("client_secret", &s.client_secret);
            }
            form.finish()
        };
        let mut req = self
            .client
            .post(&uri)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded");
        if !post_credentials {
            use base64::Engine;
            let enc = |v: &str| -> String {
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
            };
            let pair = format!("{}:{}", enc(&s.client_id), enc(&s.client_secret));
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            req = req.header("authorization", value);
        }
        let resp = req.body(body).send().await.map_err(|e| {
            let why = super::fetch::transport(&e);
            let what = match why {
                "timeout" => "did not answer in time",
                _ => "is unreachable",
            };
            tracing::warn!(provider = %self.provider, "the introspection endpoint {what}");
            why
        })?;
        let status = resp.status().as_u16();
        match status {
            200 => super::fetch::read_bounded(resp, MAX_RESPONSE_BYTES)
                .await
                .map(Asked::Answer),
            400 => {
                let body = super::fetch::read_bounded(resp, MAX_RESPONSE_BYTES).await?;
                match token_error(&body) {
                    Some(error) => Ok(Asked::TokenRefused(error)),
                    None => {
                        tracing::error!(provider = %self.provider, status, "the introspection endpoint answered 400 without an error about the token");
                        Err("bad_status")
                    }
                }
            }
            401 | 403 => {
                tracing::error!(
                    provider = %self.provider,
                    status,
                    client_id = %s.client_id,
                    "the introspection endpoint refused the gateway's client credentials; check client_id and the client secret"
                );
                Err("unauthorized")
            }
            _ => {
                tracing::error!(provider = %self.provider, status, "the introspection endpoint answered with an error status");
                Err("bad_status")
            }
        }
    }

    /// The verdict of an answer; `Err` when the answer itself is not acceptable.
    fn judge(&self, body: &[u8], now: u64) -> Result<Cached, &'static str> {
        let Ok(Value::Object(fields)) = super::strict_json::from_slice(body) else {
            return Err("not a JSON object");
        };
        let active = match fields.get("active") {
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("`active` is not a boolean"),
            None => return Err("no `active` member"),
        };
        let time =
            |name| numeric_date(&fields, name).map_err(|_| "a time member is not a NumericDate");
        let exp = time("exp")?;
        let inactive_until = now + self.settings.inactive_ttl.as_secs().max(1);
        let refused = |e: AuthError| {
            let until = match (e, exp) {
                // Refused on its claims: no longer than the token lives either.
                (AuthError::WrongIssuer | AuthError::WrongAudience, Some(exp)) if exp > now => {
                    exp.min(inactive_until)
                }
                _ => inactive_until,
            };
            Cached {
                answer: Answer::Refused(e),
                until,
                ttl: Duration::from_secs(until.saturating_sub(now).max(1)),
            }
        };
        if !active || exp.is_some_and(|e| e <= now) {
            return Ok(refused(AuthError::TokenInactive));
        }
        if time("nbf")?.is_some_and(|nbf| nbf > now) {
            return Ok(refused(AuthError::TokenInactive));
        }
        match fields.get("iss") {
            None => {}
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(_) => return Ok(refused(AuthError::WrongIssuer)),
        }
        let aud_ok = match fields.get("aud") {
            None => true,
            Some(Value::String(a)) => self.audiences.iter().any(|w| w == a),
            Some(Value::Array(list)) => list
                .iter()
                .any(|a| self.audiences.iter().any(|w| a.as_str() == Some(w))),
            Some(_) => false,
        };
        if !aud_ok {
            return Ok(refused(AuthError::WrongAudience));
        }
        let mut identity = match self.claims.identity(&fields) {
            Ok(id) => id,
            Err(e) => return Ok(refused(e)),
        };
        identity.method = "introspection";
        identity.provider = self.provider.clone();
        identity.expires_at = exp;
        let until = exp.map_or(now + self.settings.cache_ttl.as_secs(), |exp| {
            exp.min(now + self.settings.cache_ttl.as_secs())
        });
        Ok(Cached {
            answer: Answer::Active(Arc::new(identity)),
            until,
            ttl: Duration::from_secs(until.saturating_sub(now).max(1)),
        })
    }
}

fn answer(a: Answer) -> Result<Arc<Identity>, Refusal> {
    match a {
        Answer::Active(id) => Ok(id),
        Answer::Refused(e) => Err(Refusal::Token(e)),
    }
}

fn count(provider: &str, outcome: &str) {
    metrics()
        .introspection_calls
        .with_label_values(&[provider, outcome])
        .inc();
}

/// What the endpoint said to one call.
enum Asked {
    /// A 200 answer's body, to be judged.
    Answer(Vec<u8>),
    /// A 400 whose OAuth error is about the token (its `error` code).
    TokenRefused(String),
}

/// The `error` of a 400 body in the RFC 6749 §5.2 shape when it is about the token, not the
/// gateway's request or credentials (`invalid_client`, `invalid_request`, ... stay failures:
/// they are the gateway's configuration, not the caller's fault).
fn token_error(body: &[u8]) -> Option<String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice(body) else {
        return None;
    };
    let error = fields.get("error")?.as_str()?;
    matches!(
        error,
        "unsupported_token_type" | "invalid_token" | "invalid_grant"
    )
    .then(|| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_consecutive_failures_and_one_probe_decides() {
        let b = Breaker::new(3, Duration::from_millis(50));
        assert!(matches!(b.admit(), Admit::Closed));
        assert!(!b.failure());
        assert!(!b.failure());
        // A success in between starts the count again.
        assert!(!b.success());
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "the third consecutive failure opens");
        assert!(matches!(b.admit(), Admit::Open(_)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(b.admit(), Admit::Probe));
        // Only one probe at a time.
        assert!(matches!(b.admit(), Admit::Open(_)));
        assert!(b.failure(), "a failed probe reopens");
        assert!(matches!(b.admit(), Admit::Open(_)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(b.admit(), Admit::Probe));
        assert!(b.success(), "a good probe closes");
        assert!(matches!(b.admit(), Admit::Closed));
    }
}
