//! The limits of a configuration, running: which limits apply to a request (the global one,
//! the route's, or the caller's tier instead), what each is counted per, and the counting,
//! in-process or in Redis. `LimitSettings` is what the configuration compiles to;
//! `Limits::start` (called by the composition root) builds the counters from it.

use super::redis_backend::RedisLimiter;
use super::{FailedAuthGuard, KeyValue, Limit, LimitKey, LimitVerdict, LocalLimiter};
use crate::auth::Identity;
use crate::metrics::metrics;
use crate::policy::{Denial, RateHeaders, Trace};
use crate::routing::Route;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to do when the shared store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Count in the local limiter, per instance, until Redis is back.
    #[default]
    FailOpen,
    /// Refuse with 503.
    FailClosed,
}

/// The failed-authentication guard: `failures` per `window` from one address, then blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAuthSettings {
    pub failures: u64,
    pub window: Duration,
    pub block: Duration,
}

/// A Redis server shared by a fleet of gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub timeout: Duration,
    pub on_error: OnError,
}

/// Every limit of a configuration (routes index into `limits`), the tiers and the global
/// limit by index, the guard, and where they are counted.
#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    pub limits: Vec<Limit>,
    pub tiers: BTreeMap<String, usize>,
    pub global: Option<usize>,
    pub failed_auth: Option<FailedAuthSettings>,
    /// Keys each in-process counter keeps at most.
    pub max_keys: u64,
    /// `backend: redis`; the local limiter stays as its fallback.
    pub redis: Option<RedisSettings>,
}

impl LimitSettings {
    pub fn tier_names(&self) -> Vec<String> {
        self.tiers.keys().cloned().collect()
    }
}

/// The limits with their counters.
#[derive(Debug, Default)]
pub struct Limits {
    limits: Vec<Limit>,
    tiers: BTreeMap<String, usize>,
    global: Option<usize>,
    /// In-process counters; `None` when no limit is configured.
    pub limiter: Option<Arc<LocalLimiter>>,
    pub failed_auth: Option<Arc<FailedAuthGuard>>,
    redis: Option<(Arc<RedisLimiter>, OnError)>,
}

impl Limits {
    /// Build the counters. The error names the setting at fault (`url`: the Redis URL).
    pub fn start(s: LimitSettings) -> Result<Self, String> {
        let redis = match &s.redis {
            None => None,
            Some(r) => Some((Arc::new(RedisLimiter::new(&r.url, r.timeout)?), r.on_error)),
        };
        let failed_auth = s.failed_auth.map(|f| {
            Arc::new(FailedAuthGuard::new(
                f.failures, f.window, f.block, s.max_keys,
            ))
        });
        let limiter = s
            .limits
            .iter()
            .map(|l| l.window)
            .max()
            .map(|longest| Arc::new(LocalLimiter::new(s.max_keys, longest)));
        Ok(Self {
            limits: s.limits,
            tiers: s.tiers,
            global: s.global,
            limiter,
            failed_auth,
            redis,
        })
    }

    /// The route's own limit (`routes[].rate_limit`), for summaries.
    pub fn route_limit(&self, route: &Route) -> Option<&Limit> {
        route.rate_limit.and_then(|i| self.limits.get(i))
    }

    /// The limit every request counts against first, when there is one.
    pub fn global_limit(&self) -> Option<&Limit> {
        self.global.and_then(|i| self.limits.get(i))
    }

    /// Count the request against the global limit and the route's (or the caller's tier's).
    /// `Ok` with the `RateLimit-Policy` and `RateLimit` values of the last limit that applied;
    /// `Err` with the refusal when one is exhausted (or the shared store is down and the
    /// configuration says to fail closed).
    pub async fn check(
        &self,
        route: &Route,
        identity: Option<&Identity>,
        client: Option<IpAddr>,
        headers: &http::HeaderMap,
        trace: &mut Trace,
    ) -> Result<Option<RateHeaders>, Denial> {
        let Some(limiter) = self.limiter.as_deref() else {
            return Ok(None);
        };
        // The caller's tier replaces the route's limit, for that caller.
        let route_limit = route.rate_limit.map(|i| {
            identity
                .and_then(|id| id.tier.as_deref())
                .and_then(|t| self.tiers.get(t).copied())
                .unwrap_or(i)
        });
        let mut shown = None;
        for index in [self.global, route_limit].into_iter().flatten() {
            let Some(limit) = self.limits.get(index) else {
                continue;
            };
            let key = limit_key(&limit.key, identity, client, headers);
            let v = match &self.redis {
                None => limiter.check(index, limit, &key),
                Some((redis, on_error)) => match redis_check(redis, limit, &key).await {
                    Ok(v) => v,
                    Err(e) => {
                        metrics().redis_errors.inc();
                        tracing::warn!(error = %e, "rate limit: Redis did not answer");
                        if *on_error == OnError::FailClosed {
                            let mut d = Denial::new(
                                503,
                                "rate_limit_unavailable",
                                "The rate-limit store is unavailable; try again shortly.",
                            );
                            d.retry_after = Some(1);
                            return Err(d);
                        }
                        // fail_open: count locally, per instance, until Redis is back.
                        limiter.check(index, limit, &key)
                    }
                },
            };
            trace.note(
                || format!("rate limit \"{}\" ({})", limit.name, limit.describe()),
                || {
                    format!(
                        "{} ({} left)",
                        if v.allowed { "within" } else { "exceeded" },
                        v.remaining
                    )
                },
            );
            if !v.allowed {
                metrics()
                    .rate_limited
                    .with_label_values(&[&route.name, limit.key.label()])
                    .inc();
                let mut d = Denial::new(
                    429,
                    "rate_limited",
                    format!(
                        "Rate limit \"{}\" exceeded: {}. Retry after {} s.",
                        limit.name,
                        limit.describe(),
                        v.reset_secs
                    ),
                );
                d.retry_after = Some(v.reset_secs);
                d.rate_headers = Some(limit.headers(&v));
                return Err(d);
            }
            shown = Some(limit.headers(&v));
        }
        Ok(shown)
    }
}

async fn redis_check(
    redis: &RedisLimiter,
    limit: &Limit,
    key: &KeyValue<'_>,
) -> Result<LimitVerdict, String> {
    let owned;
    let value: &[u8] = match key {
        KeyValue::Named(_, v) => v,
        KeyValue::Address(ip) => {
            owned = ip.to_string();
            owned.as_bytes()
        }
        KeyValue::Unknown => b"unknown",
    };
    let started = Instant::now();
    let v = redis.check(limit, value).await;
    metrics()
        .redis_duration
        .observe(started.elapsed().as_secs_f64());
    v
}

/// The value a limit counts under. A caller without the value the limit is keyed on (no
/// consumer on a public route, say) is counted per address instead.
fn limit_key<'a>(
    key: &LimitKey,
    identity: Option<&'a Identity>,
    client: Option<IpAddr>,
    headers: &'a http::HeaderMap,
) -> KeyValue<'a> {
    let named = |kind: &'static str, v: Option<&'a str>| {
        v.filter(|v| !v.is_empty())
            .map(|v| KeyValue::Named(kind, v.as_bytes()))
    };
    let value = match key {
        LimitKey::Consumer => named("consumer", identity.and_then(|i| i.client_id.as_deref())),
        LimitKey::ApiKey => named("api_key", identity.and_then(|i| i.key_id.as_deref())),
        LimitKey::Subject => named("subject", identity.map(|i| i.subject.as_str())),
        LimitKey::Tenant => named("tenant", identity.and_then(|i| i.tenant.as_deref())),
        // A claim mapped to a header (`claims.headers`) is the verified value; otherwise
        // the request's own header.
        LimitKey::Header(h) => identity
            .and_then(|i| i.extra.iter().find(|(n, _)| n == h))
            .map(|(_, v)| KeyValue::Named("header", v.as_bytes()))
            .or_else(|| {
                headers
                    .get(h)
                    .map(|v| KeyValue::Named("header", v.as_bytes()))
            }),
        LimitKey::ClientAddress => None,
    };
    value.unwrap_or(match client {
        Some(ip) => KeyValue::Address(ip),
        None => KeyValue::Unknown,
    })
}
