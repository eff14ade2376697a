//! `rate_limits` and routes' `rate_limit`, checked and compiled.

use super::file::{LimitSection, OnRedisError, Per, RateLimitBackend, RateLimitsSection};
use crate::ratelimit::redis_backend::RedisLimiter;
use crate::ratelimit::{FailedAuthGuard, Limit, LimitKey, LocalLimiter};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Every limit of a configuration, the tiers and the global limit by index, and the
/// backend that counts them.
#[derive(Debug, Default, Clone)]
pub struct RateLimits {
    pub limits: Vec<Limit>,
    pub tiers: BTreeMap<String, usize>,
    pub global: Option<usize>,
    pub limiter: Option<Arc<LocalLimiter>>,
    pub failed_auth: Option<Arc<FailedAuthGuard>>,
    /// The shared backend, when `backend: redis`; the local limiter stays as its fallback.
    pub redis: Option<Arc<RedisLimiter>>,
    pub on_redis_error: Option<OnRedisError>,
}

impl RateLimits {
    pub fn tier_names(&self) -> Vec<String> {
        self.tiers.keys().cloned().collect()
    }
}

/// One limit; `None` (with problems reported) when it is wrong.
pub fn compile_limit(
    name: &str,
    s: &LimitSection,
    at: &str,
    forced_key: Option<LimitKey>,
    problem: &mut impl FnMut(String, String),
) -> Option<Limit> {
    let mut ok = true;
    if s.requests == 0 || s.requests > 1_000_000_000 {
        problem(format!("{at}.requests"), "between 1 and 1000000000".into());
        ok = false;
    }
    let burst = s.burst.unwrap_or(s.requests);
    if burst == 0 || burst > 1_000_000_000 {
        problem(format!("{at}.burst"), "between 1 and 1000000000".into());
        ok = false;
    }
    let key = match (forced_key, s.key.as_deref()) {
        (Some(k), None) => Some(k),
        (Some(_), Some(_)) => {
            problem(
                format!("{at}.key"),
                "a tier is always counted per consumer".into(),
            );
            None
        }
        (None, None) | (None, Some("client_address")) => Some(LimitKey::ClientAddress),
        (None, Some("consumer")) => Some(LimitKey::Consumer),
        (None, Some("api_key")) => Some(LimitKey::ApiKey),
        (None, Some("subject")) => Some(LimitKey::Subject),
        (None, Some("tenant")) => Some(LimitKey::Tenant),
        (None, Some(other)) => match other
            .strip_prefix("header:")
            .and_then(|h| http::HeaderName::from_bytes(h.trim().as_bytes()).ok())
        {
            Some(h) => Some(LimitKey::Header(h)),
            None => {
                problem(
                    format!("{at}.key"),
                    format!("\"{other}\": use consumer, api_key, subject, tenant, client_address or header:NAME"),
                );
                None
            }
        },
    };
    let window = window_of(s.per);
    match (ok, key) {
        (true, Some(key)) => Some(Limit {
            name: name.to_string(),
            key,
            requests: s.requests,
            window,
            burst,
        }),
        _ => None,
    }
}

fn window_of(per: Per) -> Duration {
    Duration::from_secs(match per {
        Per::Second => 1,
        Per::Minute => 60,
        Per::Hour => 3600,
    })
}

/// The `rate_limits` section (tiers and global); route limits are added by the caller.
pub fn compile(
    section: Option<&RateLimitsSection>,
    problem: &mut impl FnMut(String, String),
) -> RateLimits {
    let mut out = RateLimits::default();
    let Some(s) = section else {
        return out;
    };
    for (name, t) in &s.tiers {
        if let Some(l) = compile_limit(
            name,
            t,
            &format!("rate_limits.tiers.{name}"),
            Some(LimitKey::Consumer),
            problem,
        ) {
            out.tiers.insert(name.clone(), out.limits.len());
            out.limits.push(l);
        }
    }
    if let Some(f) = &s.failed_auth {
        let mut ok = true;
        if f.failures == 0 || f.failures > 1_000_000 {
            problem(
                "rate_limits.failed_auth.failures".into(),
                "between 1 and 1000000".into(),
            );
            ok = false;
        }
        if f.block < Duration::from_secs(1) || f.block > Duration::from_secs(86_400) {
            problem(
                "rate_limits.failed_auth.block".into(),
                "between 1s and 24h".into(),
            );
            ok = false;
        }
        if ok {
            out.failed_auth = Some(Arc::new(FailedAuthGuard::new(
                f.failures,
                window_of(f.per),
                f.block,
                s.max_keys.unwrap_or(100_000),
            )));
        }
    }
    if let Some(g) = &s.global {
        if let Some(l) = compile_limit("global", g, "rate_limits.global", None, problem) {
            out.global = Some(out.limits.len());
            out.limits.push(l);
        }
    }
    out
}

/// Start the backend once every limit is known.
pub fn start_backend(
    limits: &mut RateLimits,
    section: Option<&RateLimitsSection>,
    problem: &mut impl FnMut(String, String),
) {
    let redis_wanted = section.is_some_and(|s| matches!(s.backend, Some(RateLimitBackend::Redis)));
    match (redis_wanted, section.and_then(|s| s.redis.as_ref())) {
        (true, None) => problem(
            "rate_limits.redis".into(),
            "`backend: redis` needs `redis: { url: ... }`".into(),
        ),
        (false, Some(_)) => problem(
            "rate_limits.redis".into(),
            "set `backend: redis` to use it (or remove it)".into(),
        ),
        (true, Some(r)) => {
            let timeout = r.timeout.unwrap_or(Duration::from_millis(20));
            if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(1) {
                problem(
                    "rate_limits.redis.timeout".into(),
                    "between 1ms and 1s".into(),
                );
            }
            match RedisLimiter::new(&r.url, timeout) {
                Ok(l) => {
                    limits.redis = Some(Arc::new(l));
                    limits.on_redis_error = Some(r.on_error.unwrap_or(OnRedisError::FailOpen));
                }
                Err(e) => problem("rate_limits.redis.url".into(), e),
            }
        }
        (false, None) => {}
    }
    if limits.limits.is_empty() {
        return;
    }
    let longest = limits
        .limits
        .iter()
        .map(|l| l.window)
        .max()
        .unwrap_or(Duration::from_secs(1));
    let capacity = section.and_then(|s| s.max_keys).unwrap_or(100_000);
    limits.limiter = Some(Arc::new(LocalLimiter::new(capacity, longest)));
}
