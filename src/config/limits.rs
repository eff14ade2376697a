//! `rate_limits` and routes' `rate_limit`, checked and compiled into `ratelimit`'s
//! settings (the counters themselves are built by the composition root).

use super::check::Check;
use super::file::{
    LimitSection, OnRedisError, Per, RateLimitBackend, RateLimitsSection, RouteSection,
};
use super::valid_name;
use crate::ratelimit::{
    FailedAuthSettings, Limit, LimitKey, LimitSettings, OnError, RedisSettings,
};
use crate::routing::Route;
use http::HeaderName;
use std::time::Duration;

/// Every limit: the `rate_limits` section (tiers, failed auth, global), then each route's
/// `rate_limit` (set on the compiled route of that name), then where they are counted.
pub(super) fn compile(
    section: Option<&RateLimitsSection>,
    route_sections: &[RouteSection],
    routes: &mut [Route],
    c: &mut Check<'_>,
) -> LimitSettings {
    let mut limits = rate_limits(section, &mut c.at("rate_limits"));
    for (i, r) in route_sections.iter().enumerate() {
        let (Some(l), Some(spec)) = (&r.rate_limit, routes.iter_mut().find(|s| s.name == r.name))
        else {
            continue;
        };
        let mut route = c.index("routes", i);
        if let Some(limit) = compile_limit(&r.name, l, None, &mut route.at("rate_limit")) {
            spec.rate_limit = Some(limits.limits.len());
            limits.limits.push(limit);
        }
    }
    backend(&mut limits, section, &mut c.at("rate_limits"));
    limits
}

/// One limit; `None` (with problems reported) when it is wrong.
fn compile_limit(
    name: &str,
    s: &LimitSection,
    forced_key: Option<LimitKey>,
    c: &mut Check<'_>,
) -> Option<Limit> {
    let most = 1_000_000_000;
    c.range("requests", s.requests, 1..=most, "between 1 and 1000000000");
    let burst = s.burst.unwrap_or(s.requests);
    c.range("burst", burst, 1..=most, "between 1 and 1000000000");
    let key = match (forced_key, s.key.as_deref()) {
        (Some(k), None) => Some(k),
        (Some(_), Some(_)) => {
            c.problem("key", "a tier is always counted per consumer");
            None
        }
        (None, None) | (None, Some("client_address")) => Some(LimitKey::ClientAddress),
        (None, Some("consumer")) => Some(LimitKey::Consumer),
        (None, Some("api_key")) => Some(LimitKey::ApiKey),
        (None, Some("subject")) => Some(LimitKey::Subject),
        (None, Some("tenant")) => Some(LimitKey::Tenant),
        (None, Some(other)) => match other
            .strip_prefix("header:")
            .and_then(|h| HeaderName::from_bytes(h.trim().as_bytes()).ok())
        {
            Some(h) => Some(LimitKey::Header(h)),
            None => {
                c.problem(
                    "key",
                    format!("\"{other}\": use consumer, api_key, subject, tenant, client_address or header:NAME"),
                );
                None
            }
        },
    };
    let window = window_of(s.per);
    match (c.ok(), key) {
        (true, Some(key)) => Some(Limit::new(name, key, s.requests, window, burst)),
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

/// The `rate_limits` section (tiers, failed auth and global); `c` stands at it.
fn rate_limits(section: Option<&RateLimitsSection>, c: &mut Check<'_>) -> LimitSettings {
    let mut out = LimitSettings {
        max_keys: section.and_then(|s| s.max_keys).unwrap_or(100_000),
        ..LimitSettings::default()
    };
    let Some(s) = section else {
        return out;
    };
    for (name, t) in &s.tiers {
        let mut tiers = c.at("tiers");
        if !valid_name(name) {
            // The name is shown in RateLimit headers and matched against consumers' `tier`.
            tiers.problem(
                name,
                "tier names use only letters, digits, `-` and `_`, and are not empty",
            );
            continue;
        }
        if let Some(l) = compile_limit(name, t, Some(LimitKey::Consumer), &mut tiers.at(name)) {
            out.tiers.insert(name.clone(), out.limits.len());
            out.limits.push(l);
        }
    }
    if let Some(f) = &s.failed_auth {
        let mut c = c.at("failed_auth");
        c.range(
            "failures",
            f.failures,
            1..=1_000_000,
            "between 1 and 1000000",
        );
        let day = Duration::from_secs(86_400);
        c.range(
            "block",
            f.block,
            Duration::from_secs(1)..=day,
            "between 1s and 24h",
        );
        if c.ok() {
            out.failed_auth = Some(FailedAuthSettings {
                failures: f.failures,
                window: window_of(f.per),
                block: f.block,
            });
        }
    }
    if let Some(g) = &s.global {
        if let Some(l) = compile_limit("global", g, None, &mut c.at("global")) {
            out.global = Some(out.limits.len());
            out.limits.push(l);
        }
    }
    out
}

/// Where the limits are counted: in-process, or in Redis when `backend: redis`.
fn backend(limits: &mut LimitSettings, section: Option<&RateLimitsSection>, c: &mut Check<'_>) {
    let redis_wanted = section.is_some_and(|s| matches!(s.backend, Some(RateLimitBackend::Redis)));
    match (redis_wanted, section.and_then(|s| s.redis.as_ref())) {
        (true, None) => c.problem("redis", "`backend: redis` needs `redis: { url: ... }`"),
        (false, Some(_)) => c.problem("redis", "set `backend: redis` to use it (or remove it)"),
        (true, Some(r)) => {
            let timeout = r.timeout.unwrap_or(Duration::from_millis(20));
            let range = Duration::from_millis(1)..=Duration::from_secs(1);
            c.range("redis.timeout", timeout, range, "between 1ms and 1s");
            limits.redis = Some(RedisSettings {
                url: r.url.clone(),
                timeout,
                on_error: match r.on_error.unwrap_or(OnRedisError::FailOpen) {
                    OnRedisError::FailOpen => OnError::FailOpen,
                    OnRedisError::FailClosed => OnError::FailClosed,
                },
            });
        }
        (false, None) => {}
    }
}
