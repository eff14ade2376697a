//! The shared backend: the same GCRA as the local limiter, run atomically inside Redis by one
//! Lua script per decision, on Redis's own clock (`TIME`), so every gateway instance of a fleet
//! counts against one budget and counters survive gateway restarts.
//!
//! The connection is made on first use (in a worker's runtime) and remade after a failure;
//! the first decision after Redis comes back reaches it (`redis_conn`). What a failure means
//! (`fail_open` / `fail_closed`) is the engine's decision.

use super::{Limit, LimitVerdict};
use crate::redis_conn::LazyConnection;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// GCRA with microsecond timestamps. ARGV: interval, tau (= interval * (burst - 1)), burst.
/// Returns {allowed, remaining, microseconds until reset (allowed) or until a retry passes}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tau + interval then
  return {0, 0, tat - now - tau}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
local used = math.ceil((new_tat - now) / interval)
return {1, burst - used, new_tat - now}
"#;

pub struct RedisLimiter {
    redis: LazyConnection,
    script: redis::Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("timeout", &self.redis.timeout)
            .finish_non_exhaustive()
    }
}

/// The Redis key of one limit's counter for one caller: stable across instances (so a fleet
/// shares it) and bounded in length whatever the caller sent.
pub fn redis_key(limit: &Limit, value: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(limit.name.as_bytes());
    h.update([0]);
    h.update(limit.key.label().as_bytes());
    h.update([0]);
    h.update(value);
    format!("ptc:rl:{}", hex::encode(&h.finalize()[..16]))
}

impl RedisLimiter {
    /// A limiter for `url` (`redis://host:port/db`); every call is bounded by `timeout`.
    /// Nothing is connected yet.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            redis: LazyConnection::new(url, timeout)?,
            script: redis::Script::new(GCRA),
        })
    }

    /// `new`, then connect now (a `PING`).
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, String> {
        let l = Self::new(url, timeout)?;
        let ping = redis::cmd("PING");
        l.redis
            .run(|mut c| {
                let ping = &ping;
                async move { ping.query_async::<String>(&mut c).await }
            })
            .await?;
        Ok(l)
    }

    /// Check and count one request; an error when Redis did not answer in time. A second
    /// try after a broken connection may count the request twice, never less.
    pub async fn check(&self, limit: &Limit, value: &[u8]) -> Result<LimitVerdict, String> {
        let interval_us = (limit.window.as_micros() / u128::from(limit.requests.max(1))).max(1);
        let tau_us = interval_us * u128::from(limit.burst.saturating_sub(1));
        let mut invocation = self.script.key(redis_key(limit, value));
        invocation
            .arg(interval_us.to_string())
            .arg(tau_us.to_string())
            .arg(limit.burst);
        let (allowed, remaining, wait_us) = self
            .redis
            .run(|mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async::<(i64, i64, i64)>(&mut c).await }
            })
            .await?;
        Ok(LimitVerdict {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            reset_secs: (wait_us.max(0) as u64).div_ceil(1_000_000).max(1),
        })
    }
}
