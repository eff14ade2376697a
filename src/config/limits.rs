//! `rate_limits` and routes' `rate_limit`, checked and compiled into `ratelimit`'s
//! settings (the counters themselves are built by the composition root).

use super::file::{LimitSection, OnRedisError, Per, RateLimitBackend, RateLimitsSection};
use crate::ratelimit::{
    FailedAuthSettings, Limit, LimitKey, LimitSettings, OnError, RedisSettings,
};
use std::time::Duration;

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
) -> LimitSettings {
    let mut out = LimitSettings {
        max_keys: section.and_then(|s| s.max_keys).unwrap_or(100_000),
        ..LimitSettings::default()
    };
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
            out.failed_auth = Some(FailedAuthSettings {
                failures: f.failures,
                window: window_of(f.per),
                block: f.block,
            });
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

/// Where the limits are counted: in-process, or in Redis when `backend: redis`.
pub fn backend(
    limits: &mut LimitSettings,
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
