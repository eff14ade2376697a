//! Rate limits with the local backend, end to end: exact budgets, the 429 contract with
//! `Retry-After` and the RateLimit headers, windows that reset, per-consumer counting and
//! tiers that override a route's limit.

use crate::support::*;
use std::time::Duration;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: serde_json::Value,
}

fn get(gw: &Gateway, path: &str, key: Option<&str>) -> Answer {
    let mut req = client().get(gw.url(path));
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn header(a: &Answer, name: &str) -> Option<String> {
    a.headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn the_n_plus_first_request_gets_429_with_retry_after_and_ratelimit_headers() {
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        r#"upstreams:
  echo:
    backends: ["{}"]
routes:
  - name: search
    match: {{ path_prefix: /search }}
    upstream: echo
    auth: public
    rate_limit: {{ key: client_address, requests: 3, per: minute }}
  - name: free
    match: {{ path_prefix: /free }}
    upstream: echo
    auth: public
"#,
        echo.addr
    ));
    for remaining in [2, 1, 0] {
        let a = get(&gw, "/search?q=1", None);
        assert_eq!(a.status, 200);
        assert_eq!(
            header(&a, "ratelimit-policy").as_deref(),
            Some("\"search\";q=3;w=60")
        );
        let state = header(&a, "ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"search\";r={remaining};t=")),
            "{state}"
        );
    }
    let a = get(&gw, "/search?q=1", None);
    assert_eq!(a.status, 429);
    assert_eq!(a.body["error"], "rate_limited");
    assert_eq!(
        a.body["message"],
        "Rate limit \"search\" exceeded: 3 per minute. Retry after 20 s."
    );
    // One request frees up every 60 / 3 = 20 s.
    assert_eq!(header(&a, "retry-after").as_deref(), Some("20"));
    assert_eq!(
        header(&a, "ratelimit").as_deref(),
        Some("\"search\";r=0;t=20")
    );
    assert_eq!(
        echo.received().len(),
        3,
        "the refused request never reached the origin"
    );
    // Other routes are not limited.
    let free = get(&gw, "/free", None);
    assert_eq!(free.status, 200);
    assert!(free.headers.get("ratelimit").is_none());
    assert!(gw
        .metrics()
        .contains(r#"portcullis_rate_limited_total{key="client_address",route="search"} 1"#));
}

#[test]
fn the_window_resets() {
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: burst\n    match: {{ path_prefix: / }}\n    upstream: echo\n    auth: public\n    rate_limit: {{ requests: 4, per: second }}\n",
        echo.addr
    ));
    // Concurrent requests, so that the whole burst lands well within one window even on a
    // busy machine; each quarter second of refill adds at most one more.
    let burst = |n: usize| {
        let url = gw.url("/x");
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    fresh_client().get(url).send().unwrap().status().as_u16()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<u16>>()
    };
    let first = burst(10);
    let ok = first.iter().filter(|s| **s == 200).count();
    assert!((4..=6).contains(&ok), "{first:?}");
    assert!(first.iter().all(|s| *s == 200 || *s == 429), "{first:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let again = burst(4);
    assert_eq!(
        again,
        [200, 200, 200, 200],
        "a whole window later the budget is back"
    );
}

#[test]
fn each_consumer_has_its_own_budget_and_a_tier_overrides_the_route_limit() {
    let dir = tempfile::tempdir().unwrap();
    let consumers = dir.path().join("consumers.yaml");
    let plain = new_api_key(&consumers, "plain", &[]);
    let other = new_api_key(&consumers, "other", &[]);
    let gold = new_api_key(&consumers, "goldco", &[]);
    Conf::read(&consumers)
        .set("consumers[goldco].tier", "gold")
        .write(&consumers);
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        r#"api_keys:
  consumers_file: {file}
rate_limits:
  tiers:
    gold: {{ requests: 5, per: minute }}
upstreams:
  echo:
    backends: ["{origin}"]
routes:
  - name: orders
    match: {{ path_prefix: /orders }}
    upstream: echo
    auth: {{ api_key: true }}
    rate_limit: {{ key: consumer, requests: 2, per: minute }}
"#,
        file = consumers.display(),
        origin = echo.addr
    ));
    let allowed = |key: &str| {
        (0..7)
            .filter(|_| get(&gw, "/orders/1", Some(key)).status == 200)
            .count()
    };
    assert_eq!(allowed(&plain), 2);
    assert_eq!(allowed(&other), 2, "another consumer, another budget");
    assert_eq!(
        allowed(&gold),
        5,
        "the gold tier replaces the route's 2 per minute"
    );
    let a = get(&gw, "/orders/1", Some(&gold));
    assert_eq!(a.status, 429);
    assert_eq!(
        header(&a, "ratelimit-policy").as_deref(),
        Some("\"gold\";q=5;w=60")
    );
    assert!(a.body["message"].as_str().unwrap().contains("\"gold\""));
}

#[test]
fn a_global_limit_counts_every_route() {
    let echo = Echo::start();
    let gw = Gateway::start(&format!(
        "rate_limits:\n  global: {{ key: \"header:X-Tenant-Hint\", requests: 3, per: hour }}\nupstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: a\n    match: {{ path_prefix: /a }}\n    upstream: echo\n    auth: public\n  - name: b\n    match: {{ path_prefix: /b }}\n    upstream: echo\n    auth: public\n",
        echo.addr
    ));
    let send = |path: &str, hint: &str| {
        client()
            .get(gw.url(path))
            .header("X-Tenant-Hint", hint)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let seq: Vec<u16> = ["/a", "/b", "/a", "/b"]
        .iter()
        .map(|p| send(p, "t1"))
        .collect();
    assert_eq!(seq, [200, 200, 200, 429]);
    assert_eq!(send("/a", "t2"), 200, "counted per header value");
}

#[test]
fn failed_authentications_block_the_address_whatever_it_sends_next() {
    let idp = SigningIdp::new();
    let echo = Echo::start();
    let gw = corp_gateway(
        &idp,
        &echo,
        "",
        r#"  - name: orders
    match: { path_prefix: /orders }
    upstream: echo
    auth: { jwt: corp }
  - name: open
    match: { path_prefix: /open }
    upstream: echo
    auth: public
rate_limits:
  failed_auth: { failures: 3, per: minute, block: 2s }
"#,
    );
    let with_token = |t: &str| {
        let r = client()
            .get(gw.url("/orders/1"))
            .header("Authorization", format!("Bearer {t}"))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = r.json().unwrap_or_default();
        (
            status,
            body["error"].as_str().unwrap_or("").to_string(),
            retry,
        )
    };
    let good = idp.good_token();
    assert_eq!(with_token(&good).0, 200);
    for _ in 0..4 {
        assert_eq!(with_token("junk.junk.junk").0, 401);
    }
    // Blocked now: even a valid token gets 429, with how long to wait.
    let (status, code, retry) = with_token(&good);
    assert_eq!((status, code.as_str()), (429, "auth_throttled"));
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Public routes stay open to the address.
    assert_eq!(get(&gw, "/open/x", None).status, 200);
    assert!(gw
        .metrics()
        .contains(r#"portcullis_auth_throttled_total{event="blocked"} 1"#));
    // When the block ends, a valid token works again.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(with_token(&good).0, 200);
}

#[test]
fn a_limit_keyed_on_a_claim_header_counts_the_verified_claim_not_the_clients_header() {
    let idp = SigningIdp::new();
    let echo = Echo::start();
    let provider = identity_providers([(
        "corp",
        idp.provider()
            .set("claims.headers.X-User-Department", "dept"),
    )]);
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{}\"]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: echo\n    auth: {{ jwt: corp }}\n    rate_limit: {{ key: \"header:X-User-Department\", requests: 2, per: hour }}\n",
        echo.addr
    ));
    let token = |dept: &str| {
        idp.token(serde_json::json!({
            "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "u", "exp": now() + 300, "dept": dept
        }))
    };
    let send = |t: &str, forged: &str| {
        client()
            .get(gw.url("/x"))
            .header("Authorization", format!("Bearer {t}"))
            .header("X-User-Department", forged)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let sales = token("sales");
    // A client rotating the header it sends cannot escape its claim's budget.
    let seq = [send(&sales, "a"), send(&sales, "b"), send(&sales, "c")];
    assert_eq!(seq, [200, 200, 429]);
    assert_eq!(
        send(&token("ops"), "a"),
        200,
        "another claim value, another budget"
    );
}

#[test]
fn a_client_that_follows_ratelimit_policy_is_never_refused_even_with_a_small_burst() {
    let echo = Echo::start();
    // 60 a minute with a burst of 2: one request frees up every second.
    let gw = Gateway::start(&format!(
        r#"upstreams:
  echo:
    backends: ["{}"]
routes:
  - name: feed
    match: {{ path_prefix: /feed }}
    upstream: echo
    auth: public
    rate_limit: {{ key: client_address, requests: 60, per: minute, burst: 2 }}
"#,
        echo.addr
    ));
    let first = get(&gw, "/feed", None);
    assert_eq!(first.status, 200);
    let policy = header(&first, "ratelimit-policy").unwrap();
    assert_eq!(
        policy, "\"feed\";q=2;w=2",
        "the burst, and the time it takes to refill"
    );
    // Read the policy as a client would: q requests per w seconds.
    let field = |name: &str| -> u64 {
        policy
            .split(';')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let (q, w) = (field("q"), field("w"));
    std::thread::sleep(Duration::from_secs(w));
    for window in 0..3 {
        for i in 0..q {
            let a = get(&gw, "/feed", None);
            assert_eq!(a.status, 200, "window {window}, request {i}: {:?}", a.body);
        }
        std::thread::sleep(Duration::from_secs(w));
    }
    // The quota is what the burst allows, no more: one beyond it at once is refused.
    for _ in 0..q {
        assert_eq!(get(&gw, "/feed", None).status, 200);
    }
    assert_eq!(get(&gw, "/feed", None).status, 429);
}
