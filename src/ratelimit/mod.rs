//! Rate limits: N requests per window with a burst, decided exactly with GCRA (the generic
//! cell rate algorithm, a token bucket kept as one timestamp per key).
//!
//! A limit of `requests` per `window` with `burst` B lets B requests through at once and then
//! one every `window / requests`; with the default burst (= `requests`) that is "N per window":
//! the N+1th request within a window is refused, and after a full window of quiet the whole
//! budget is back. State per key is the theoretical arrival time (TAT) of the next request.
//!
//! The local backend keeps TATs in a bounded moka cache shared by all worker threads; keys
//! idle for longer than their window are evicted (their bucket is full again by then anyway).

pub mod limits;
pub mod redis_backend;

pub use limits::{FailedAuthSettings, LimitSettings, Limits, OnError, RedisSettings};

use crate::policy::RateHeaders;
use http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a limit is counted per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The API-key consumer (`X-Client-ID`); callers without one are counted per address.
    Consumer,
    /// The API key itself.
    ApiKey,
    /// The JWT subject.
    Subject,
    Tenant,
    ClientAddress,
    /// The value of a request header (lower-case name).
    Header(http::HeaderName),
}

impl LimitKey {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Consumer => "consumer",
            Self::ApiKey => "api_key",
            Self::Subject => "subject",
            Self::Tenant => "tenant",
            Self::ClientAddress => "client_address",
            Self::Header(_) => "header",
        }
    }
}

/// A compiled limit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Shown to callers: the route, tier or `global`.
    pub name: String,
    pub key: LimitKey,
    pub requests: u64,
    pub window: Duration,
    pub burst: u64,
    /// `RateLimit-Policy`, the same on every response under this limit: built once here
    /// rather than formatted per request.
    policy: HeaderValue,
}

impl Limit {
    pub fn new(
        name: impl Into<String>,
        key: LimitKey,
        requests: u64,
        window: Duration,
        burst: u64,
    ) -> Self {
        let mut limit = Self {
            name: name.into(),
            key,
            requests,
            window,
            burst,
            policy: HeaderValue::from_static(""),
        };
        limit.policy = limit.build_policy_header();
        limit
    }

    /// Time between two requests at the steady rate, in nanoseconds.
    fn interval_ns(&self) -> u64 {
        (self.window.as_nanos() / u128::from(self.requests.max(1))).max(1) as u64
    }

    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-09): a quota of `q` requests
    /// per window of `w` seconds that a client can rely on. Under GCRA that is the burst, and
    /// the time the burst takes to refill at the steady rate: `30 per minute, burst 10` is
    /// `q=10;w=20` (10 every 20 s is the same 30 a minute), where `q=10;w=60` would undersell
    /// it and `q=30;w=60` promise a burst that is refused. The window is rounded up to whole
    /// seconds, so the advertised rate never exceeds the real one; with the default burst
    /// (= `requests`) it is the configured window.
    pub fn policy_header(&self) -> &HeaderValue {
        &self.policy
    }

    fn build_policy_header(&self) -> HeaderValue {
        let refill_ns = u128::from(self.interval_ns()) * u128::from(self.burst);
        let window = refill_ns.div_ceil(1_000_000_000).max(1);
        let value = format!("{};q={};w={}", self.quoted_name(), self.burst, window);
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The name as a structured-field string. Configured names are letters, digits, `-` and
    /// `_` (checked when the configuration loads); anything else a library caller passes
    /// becomes `_`, so the value is always a valid header and string.
    fn quoted_name(&self) -> String {
        let mut out = String::with_capacity(self.name.len() + 2);
        out.push('"');
        out.extend(self.name.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        }));
        out.push('"');
        out
    }

    /// Both headers for a verdict under this limit.
    pub fn headers(&self, verdict: &LimitVerdict) -> RateHeaders {
        RateHeaders {
            policy: self.policy.clone(),
            state: verdict.header(self),
        }
    }

    pub fn describe(&self) -> String {
        let per = match self.window.as_secs() {
            1 => "second".to_string(),
            60 => "minute".to_string(),
            3600 => "hour".to_string(),
            s => format!("{s} s"),
        };
        format!("{} per {per}", self.requests)
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitVerdict {
    pub allowed: bool,
    /// Requests still allowed right now.
    pub remaining: u64,
    /// Seconds until the budget is whole again (allowed) or until a retry can pass (refused).
    pub reset_secs: u64,
}

impl LimitVerdict {
    /// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-09): remaining and reset. Written
    /// per request, so with `itoa` into one buffer rather than through `fmt`.
    pub fn header(&self, limit: &Limit) -> HeaderValue {
        // The policy value begins with the same quoted name: `"name";q=…`.
        let policy = limit.policy.as_bytes();
        let name = &policy[..policy
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(policy.len())];
        let mut digits = itoa::Buffer::new();
        let mut out = Vec::with_capacity(name.len() + 48);
        out.extend_from_slice(name);
        out.extend_from_slice(b";r=");
        out.extend_from_slice(digits.format(self.remaining).as_bytes());
        out.extend_from_slice(b";t=");
        out.extend_from_slice(digits.format(self.reset_secs).as_bytes());
        HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// GCRA on one key's TAT (nanoseconds on the limiter's clock). Pure: the caller stores the
/// returned TAT when the request is allowed.
pub fn gcra(limit: &Limit, tat: u64, now: u64) -> (LimitVerdict, u64) {
    let t = limit.interval_ns();
    let tau = t.saturating_mul(limit.burst.saturating_sub(1));
    let tat = tat.max(now);
    let new_tat = tat.saturating_add(t);
    // Allowed when the request would not put the bucket past its depth.
    if new_tat - now > tau.saturating_add(t) {
        let wait = tat - now - tau;
        return (
            LimitVerdict {
                allowed: false,
                remaining: 0,
                reset_secs: ceil_secs(wait).max(1),
            },
            tat,
        );
    }
    let used = (new_tat - now).div_ceil(t);
    (
        LimitVerdict {
            allowed: true,
            remaining: limit.burst.saturating_sub(used),
            reset_secs: ceil_secs(new_tat - now),
        },
        new_tat,
    )
}

/// The value a request is counted under, without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyValue<'a> {
    /// A consumer, key id, subject, tenant or header value, tagged by its kind.
    Named(&'static str, &'a [u8]),
    Address(std::net::IpAddr),
    Unknown,
}

/// The in-process backend: one TAT per key, shared by all worker threads, bounded. Keys are
/// kept as a keyed 64-bit hash (SipHash with a per-process random key) of the limit and the
/// key's value: no allocation per request, and a collision, which would make two callers share
/// one budget, is as unlikely as guessing the process's hash key.
pub struct LocalLimiter {
    start: std::time::Instant,
    hasher: std::collections::hash_map::RandomState,
    tats: moka::sync::Cache<u64, Arc<AtomicU64>>,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("keys", &self.tats.entry_count())
            .finish()
    }
}

impl LocalLimiter {
    /// `idle`: how long a key with no requests is kept (the longest window).
    pub fn new(capacity: u64, idle: Duration) -> Self {
        Self {
            start: std::time::Instant::now(),
            hasher: std::collections::hash_map::RandomState::new(),
            tats: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle.max(Duration::from_secs(1)))
                .build(),
        }
    }

    fn now_ns(&self) -> u64 {
        // Offset by a day so that a fresh key's TAT of 0 is always in the past.
        self.start.elapsed().as_nanos() as u64 + 86_400_000_000_000
    }

    /// Check and count one request for `key` under limit number `id`.
    pub fn check(
        &self,
        id: usize,
        limit: &Limit,
        key: &(impl std::hash::Hash + ?Sized),
    ) -> LimitVerdict {
        use std::hash::BuildHasher;
        let slot = self.hasher.hash_one((id, key));
        let cell = self.tats.get_with(slot, || Arc::new(AtomicU64::new(0)));
        let now = self.now_ns();
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let (verdict, tat) = gcra(limit, current, now);
            if !verdict.allowed {
                return verdict;
            }
            match cell.compare_exchange_weak(current, tat, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return verdict,
                Err(seen) => current = seen,
            }
        }
    }

    /// Keys tracked now (approximate).
    pub fn tracked(&self) -> u64 {
        self.tats.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u64, secs: u64, burst: u64) -> Limit {
        Limit::new(
            "t",
            LimitKey::ClientAddress,
            requests,
            Duration::from_secs(secs),
            burst,
        )
    }

    const S: u64 = 1_000_000_000;

    /// Run `n` requests at time `at` (ns); how many were allowed, and the state after.
    fn burst_at(l: &Limit, tat: &mut u64, at: u64, n: u64) -> (u64, Vec<LimitVerdict>) {
        let mut allowed = 0;
        let mut verdicts = Vec::new();
        for _ in 0..n {
            let (v, t) = gcra(l, *tat, at);
            if v.allowed {
                *tat = t;
                allowed += 1;
            }
            verdicts.push(v);
        }
        (allowed, verdicts)
    }

    #[test]
    fn the_n_plus_first_request_in_a_window_is_refused() {
        let l = limit(5, 60, 5);
        let mut tat = 0;
        let (allowed, v) = burst_at(&l, &mut tat, 1000 * S, 7);
        assert_eq!(allowed, 5);
        let remaining: Vec<u64> = v.iter().map(|v| v.remaining).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0, 0, 0]);
        // The 6th: one request frees up after 60/5 = 12 s.
        assert!(!v[5].allowed);
        assert_eq!(v[5].reset_secs, 12);
        // Just before, still refused; at 12 s one passes, and only one.
        assert_eq!(burst_at(&l, &mut tat, 1000 * S + 12 * S - 1, 1).0, 0);
        assert_eq!(burst_at(&l, &mut tat, 1012 * S, 3).0, 1);
        // After a full quiet window the whole budget is back.
        assert_eq!(burst_at(&l, &mut tat, 1100 * S, 9).0, 5);
    }

    #[test]
    fn burst_is_the_depth_and_the_rate_is_requests_per_window() {
        let l = limit(10, 1, 2);
        let mut tat = 0;
        assert_eq!(burst_at(&l, &mut tat, 50 * S, 5).0, 2);
        // 100 ms later one more (10 per second).
        assert_eq!(burst_at(&l, &mut tat, 50 * S + S / 10, 5).0, 1);
        // Over one second at a steady 10/s, all pass.
        let mut passed = 0;
        for i in 1..=10 {
            passed += burst_at(&l, &mut tat, 51 * S + i * S / 10, 1).0;
        }
        assert_eq!(passed, 10);
    }

    #[test]
    fn the_local_limiter_counts_per_key_across_threads() {
        let limiter = Arc::new(LocalLimiter::new(1000, Duration::from_secs(60)));
        let l = Arc::new(limit(100, 60, 100));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (limiter, l) = (limiter.clone(), l.clone());
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| limiter.check(0, &l, "k").allowed)
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(
            total, 100,
            "exactly the limit, however the threads interleave"
        );
        assert!(limiter.check(0, &l, "other").allowed);
        assert!(
            limiter.check(1, &l, "k").allowed,
            "another limit, another count"
        );
    }

    #[test]
    fn headers_follow_the_draft() {
        let l = limit(100, 60, 100);
        assert_eq!(l.policy_header(), "\"t\";q=100;w=60");
        // A burst smaller than the quota: the burst, and the time it takes to refill.
        assert_eq!(limit(30, 60, 10).policy_header(), "\"t\";q=10;w=20");
        // Rounded up, never promising more than the steady rate: 3 every 25.71 s -> 26 s.
        assert_eq!(limit(7, 60, 3).policy_header(), "\"t\";q=3;w=26");
        let v = LimitVerdict {
            allowed: true,
            remaining: 7,
            reset_secs: 3,
        };
        assert_eq!(v.header(&l), "\"t\";r=7;t=3");
        assert_eq!(l.describe(), "100 per minute");
        let big = LimitVerdict {
            allowed: true,
            remaining: u64::MAX,
            reset_secs: 1_000_000_007,
        };
        assert_eq!(
            limit(7, 60, 3).headers(&big).state,
            "\"t\";r=18446744073709551615;t=1000000007"
        );
    }

    #[test]
    fn a_name_that_is_not_a_header_token_is_shown_with_underscores() {
        let l = Limit::new(
            "gold \"tier\"\u{e9}",
            LimitKey::Consumer,
            5,
            Duration::from_secs(1),
            5,
        );
        assert_eq!(l.policy_header(), "\"gold__tier__\";q=5;w=1");
        let v = LimitVerdict {
            allowed: false,
            remaining: 0,
            reset_secs: 1,
        };
        assert_eq!(l.headers(&v).state, "\"gold__tier__\";r=0;t=1");
    }
}

/// The brute-force guard: a client address with too many failed authentications in a window
/// is refused with 429 for a while, whatever credential it sends next.
pub struct FailedAuthGuard {
    /// `failures` per window, counted per address.
    limit: Limit,
    counter: LocalLimiter,
    /// Blocked addresses, each until its block ends.
    blocked: moka::sync::Cache<std::net::IpAddr, std::time::Instant>,
    pub block: Duration,
}

impl std::fmt::Debug for FailedAuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedAuthGuard")
            .field("limit", &self.limit.describe())
            .field("block", &self.block)
            .finish()
    }
}

impl FailedAuthGuard {
    pub fn new(failures: u64, window: Duration, block: Duration, capacity: u64) -> Self {
        Self {
            limit: Limit::new(
                "failed_auth",
                LimitKey::ClientAddress,
                failures,
                window,
                failures,
            ),
            counter: LocalLimiter::new(capacity, window),
            blocked: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(block.max(Duration::from_secs(1)))
                .build(),
            block,
        }
    }

    /// Seconds left of this address's block, if it is blocked.
    pub fn blocked_for(&self, ip: std::net::IpAddr) -> Option<u64> {
        let until = self.blocked.get(&ip)?;
        let left = until.checked_duration_since(std::time::Instant::now())?;
        Some(left.as_secs().max(1))
    }

    /// Count a failed authentication; true when this failure starts a block.
    pub fn failed(&self, ip: std::net::IpAddr) -> bool {
        if self.counter.check(0, &self.limit, &ip).allowed {
            return false;
        }
        self.blocked
            .insert(ip, std::time::Instant::now() + self.block);
        true
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn the_n_plus_first_failure_blocks_the_address_for_the_period() {
        let g = FailedAuthGuard::new(3, Duration::from_secs(60), Duration::from_secs(300), 100);
        let ip: std::net::IpAddr = "198.51.100.7".parse().unwrap();
        let other: std::net::IpAddr = "198.51.100.8".parse().unwrap();
        assert!(!g.failed(ip) && !g.failed(ip) && !g.failed(ip));
        assert_eq!(g.blocked_for(ip), None, "three failures are allowed");
        assert!(g.failed(ip), "the fourth starts a block");
        let left = g.blocked_for(ip).unwrap();
        assert!((299..=300).contains(&left), "{left}");
        assert_eq!(g.blocked_for(other), None);
    }
}
