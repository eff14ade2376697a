//! The Redis rate-limit backend against a real `redis-server`: one budget shared by two
//! limiters (two gateway instances), bounded errors while Redis is down, recovery after; and
//! for each of the three Redis users (limiter, nonce store, revocation list), that the first
//! call after an outage reaches Redis, here in the library and, for the limiter, in real
//! gateways (the nonce store's and the revocation list's gateway tests are in `signing.rs`
//! and `revocations.rs`).

use crate::support::*;
use portcullis::ratelimit::redis_backend::RedisLimiter;
use portcullis::ratelimit::{Limit, LimitKey};
use std::time::{Duration, Instant};

fn limit(requests: u64) -> Limit {
    Limit::new(
        "shared",
        LimitKey::Consumer,
        requests,
        Duration::from_secs(60),
        requests,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn two_instances_share_one_budget_in_redis() {
    let redis = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let a = RedisLimiter::connect(&redis.url(), Duration::from_millis(200))
            .await
            .unwrap();
        let b = RedisLimiter::connect(&redis.url(), Duration::from_millis(200))
            .await
            .unwrap();
        let l = limit(5);
        let mut allowed = 0;
        let mut last = None;
        for i in 0..8 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            let v = limiter.check(&l, b"acme").await.unwrap();
            if v.allowed {
                allowed += 1;
            }
            last = Some(v);
        }
        assert_eq!(allowed, 5, "one budget for both instances");
        let last = last.unwrap();
        assert!(!last.allowed);
        // 60 s / 5 = 12 s until the next request frees up.
        assert!((11..=12).contains(&last.reset_secs), "{last:?}");
        // Another caller has its own budget.
        assert!(a.check(&l, b"other").await.unwrap().allowed);
    });
}

#[test]
fn redis_down_is_a_fast_error_and_redis_back_works_again() {
    let mut redis = RedisServer::start();
    let rt = runtime();
    let limiter = rt
        .block_on(RedisLimiter::connect(
            &redis.url(),
            Duration::from_millis(100),
        ))
        .unwrap();
    let l = limit(100);
    assert!(rt.block_on(limiter.check(&l, b"k")).unwrap().allowed);
    redis.stop();
    let started = Instant::now();
    assert!(rt.block_on(limiter.check(&l, b"k")).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "bounded by the timeout, not hanging: {:?}",
        started.elapsed()
    );
    redis.restart();
    let mut ok = false;
    for _ in 0..50 {
        if rt
            .block_on(limiter.check(&l, b"k"))
            .is_ok_and(|v| v.allowed)
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the connection manager reconnects");
}

fn redis_gateway(redis: &RedisServer, echo: &Echo, on_error: &str) -> Gateway {
    redis_gateway_with_timeout(redis, echo, on_error, "50ms")
}

fn redis_gateway_with_timeout(
    redis: &RedisServer,
    echo: &Echo,
    on_error: &str,
    timeout: &str,
) -> Gateway {
    Gateway::start(&format!(
        r#"rate_limits:
  backend: redis
  redis: {{ url: "{url}", timeout: {timeout}, on_error: {on_error} }}
upstreams:
  echo:
    backends: ["{origin}"]
routes:
  - name: search
    match: {{ path_prefix: / }}
    upstream: echo
    auth: public
    rate_limit: {{ key: client_address, requests: 4, per: minute }}
"#,
        url = redis.url(),
        origin = echo.addr
    ))
}

fn status(gw: &Gateway) -> u16 {
    client().get(gw.url("/q")).send().unwrap().status().as_u16()
}

#[test]
fn two_gateways_share_a_limit_and_counters_survive_a_restart() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let a = redis_gateway(&redis, &echo, "fail_closed");
    let b = redis_gateway(&redis, &echo, "fail_closed");
    let seq = [
        status(&a),
        status(&b),
        status(&a),
        status(&b),
        status(&a),
        status(&b),
    ];
    assert_eq!(
        seq,
        [200, 200, 200, 200, 429, 429],
        "one budget of 4 for both"
    );
    drop(a);
    drop(b);
    // A fresh instance finds the same counters in Redis.
    let c = redis_gateway(&redis, &echo, "fail_closed");
    assert_eq!(status(&c), 429);
    assert!(c
        .metrics()
        .contains("portcullis_redis_duration_seconds_count"));
}

#[test]
fn with_redis_down_fail_closed_answers_503_and_fail_open_limits_locally() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let closed = redis_gateway(&redis, &echo, "fail_closed");
    let open = redis_gateway(&redis, &echo, "fail_open");
    assert_eq!(status(&closed), 200);
    redis.stop();
    let resp = client().get(closed.url("/q")).send().unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        error_body(&resp.text().unwrap())["error"],
        "rate_limit_unavailable"
    );
    // fail_open: the local limiter takes over, with the same limit, per instance.
    let seq: Vec<u16> = (0..5).map(|_| status(&open)).collect();
    assert_eq!(seq, [200, 200, 200, 200, 429]);
    assert!(open.metric("portcullis_redis_errors_total").unwrap_or(0.0) >= 5.0);
    // Redis back: decisions go through it again.
    redis.restart();
    assert!(
        closed.eventually(std::time::Duration::from_secs(10), || status(&closed)
            == 200)
    );
}

/// A gateway's timeout in these tests: the first call after an outage must reconnect and
/// decide within it, with room for a machine busy running the rest of the suite.
const OUTAGE_TIMEOUT: &str = "200ms";

#[test]
fn r11_after_a_redis_outage_the_first_fail_closed_decision_reaches_redis() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let gw = redis_gateway_with_timeout(&redis, &echo, "fail_closed", OUTAGE_TIMEOUT);
    assert_eq!(status(&gw), 200);
    redis.stop();
    for _ in 0..2 {
        let resp = client().get(gw.url("/q")).send().unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            error_body(&resp.text().unwrap())["error"],
            "rate_limit_unavailable"
        );
    }
    std::thread::sleep(OUTAGE);
    redis.restart();
    std::thread::sleep(Duration::from_millis(1500));
    // The very first request decides in Redis (restarted empty: a fresh budget of 4).
    let seq: Vec<u16> = (0..5).map(|_| status(&gw)).collect();
    assert_eq!(
        seq,
        [200, 200, 200, 200, 429],
        "the first call after the outage"
    );
    assert_eq!(
        echo.received().len(),
        5,
        "one before the outage, four after it"
    );
}

#[test]
fn r11_two_fail_open_gateways_let_exactly_n_through_a_shared_limit_after_an_outage() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let a = redis_gateway_with_timeout(&redis, &echo, "fail_open", OUTAGE_TIMEOUT);
    let b = redis_gateway_with_timeout(&redis, &echo, "fail_open", OUTAGE_TIMEOUT);
    assert_eq!((status(&a), status(&b)), (200, 200));
    redis.stop();
    // fail_open: each counts locally meanwhile, and has room left there.
    assert_eq!((status(&a), status(&b)), (200, 200));
    let errors = |gw: &Gateway| gw.metric("portcullis_redis_errors_total").unwrap_or(0.0);
    assert!(errors(&a) >= 1.0 && errors(&b) >= 1.0);
    let errors_before = (errors(&a), errors(&b));
    std::thread::sleep(OUTAGE);
    redis.restart();
    std::thread::sleep(Duration::from_secs(6));
    // Redis came back empty: one budget of 4 for the pair, and not one request more, so
    // neither gateway's first decision may fall back to its local count.
    let seq: Vec<u16> = (0..4).flat_map(|_| [status(&a), status(&b)]).collect();
    assert_eq!(seq, [200, 200, 200, 200, 429, 429, 429, 429]);
    assert_eq!(
        (errors(&a), errors(&b)),
        errors_before,
        "no decision after the outage failed over to the local limiter"
    );
}

/// Stop Redis, see `op` fail, start it again, let the connection sit idle, and expect the
/// very first call after that to reach Redis (no old connection error left behind).
fn first_call_after_an_outage_reaches_redis(
    redis: &mut RedisServer,
    rt: &tokio::runtime::Runtime,
    what: &str,
    op: &mut dyn FnMut(&tokio::runtime::Runtime, u32) -> Result<(), String>,
) {
    op(rt, 0).unwrap_or_else(|e| panic!("{what}, before the outage: {e}"));
    redis.stop();
    assert!(op(rt, 1).is_err(), "{what}: Redis is down");
    redis.restart();
    std::thread::sleep(Duration::from_millis(1500));
    op(rt, 2).unwrap_or_else(|e| panic!("{what}, first call after the outage: {e}"));
}

#[test]
fn each_redis_store_reaches_redis_on_its_first_call_after_an_outage() {
    use portcullis::auth::nonces::{NonceStore, NonceVerdict};
    use portcullis::auth::revocation::{Backend, Entry, Revocations};
    use portcullis::redis_conn::LazyConnection;
    let mut redis = RedisServer::start();
    let rt = runtime();
    // The rate limiter's default timeout: a reconnect must fit in it.
    let timeout = Duration::from_millis(20);

    let limiter = RedisLimiter::new(&redis.url(), timeout).unwrap();
    let l = limit(1000);
    first_call_after_an_outage_reaches_redis(&mut redis, &rt, "rate limit", &mut |rt, _| {
        rt.block_on(limiter.check(&l, b"k")).map(|_| ())
    });

    let nonces = NonceStore::Redis {
        conn: Box::new(LazyConnection::new(&redis.url(), timeout).unwrap()),
        prefix: "t:".into(),
    };
    let now = now();
    first_call_after_an_outage_reaches_redis(&mut redis, &rt, "nonce store", &mut |rt, i| match rt
        .block_on(nonces.record("k1", &format!("nonce-{i}"), now + 60, now))
    {
        NonceVerdict::Fresh => Ok(()),
        other => Err(format!("{other:?}")),
    });

    let list = Revocations::new(
        Backend::Redis {
            url: redis.url(),
            key_prefix: "t:".into(),
            timeout,
        },
        100,
    )
    .unwrap();
    first_call_after_an_outage_reaches_redis(&mut redis, &rt, "revocation list", &mut |rt, i| {
        rt.block_on(list.add(Entry::Jti {
            jti: format!("jti-{i}"),
            expires_at: now + 60,
        }))
    });
}
