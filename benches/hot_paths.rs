//! Micro-benchmarks of what every request pays for before it is proxied: route lookup,
//! request-id handling and header hygiene. `make bench` runs them; compare runs with
//! criterion's saved baselines, not against fixed numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Method;
use pingora::http::RequestHeader;
use portcullis::config;
use portcullis::routing::RouteTable;

fn route_table(n: usize) -> RouteTable {
    let mut yaml = String::from(
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:9000]}}\nroutes:\n",
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{name: r{i}, match: {{path_prefix: /service-{i}/v1}}, upstream: a, auth: public}}\n"
        ));
    }
    yaml.push_str("  - {name: all, match: {path_prefix: /}, upstream: a, auth: public}\n");
    let cfg = config::parse(&yaml).expect("bench config");
    RouteTable::new(cfg.routes)
}

fn routing(c: &mut Criterion) {
    for n in [10, 100] {
        let table = route_table(n);
        let last = format!("/service-{}/v1/items/42", n - 1);
        c.bench_function(&format!("route lookup, {n} routes, last match"), |b| {
            b.iter(|| {
                black_box(table.find(
                    black_box(Some("api.example.com")),
                    black_box(&last),
                    &Method::GET,
                ))
            })
        });
    }
}

fn request_id(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-request-id", "0f3c2a9e-trace.42".parse().unwrap());
    c.bench_function("request id kept", |b| {
        b.iter(|| black_box(portcullis::request_id::from_headers(black_box(&headers))))
    });
    let empty = http::HeaderMap::new();
    c.bench_function("request id generated", |b| {
        b.iter(|| black_box(portcullis::request_id::from_headers(black_box(&empty))))
    });
}

fn header_hygiene(c: &mut Criterion) {
    let mut base = RequestHeader::build("GET", b"/api/items", None).unwrap();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "bench"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        base.append_header(k, v).unwrap();
    }
    let namespace = portcullis::forward::IdentityNamespace::default();
    let peer: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    c.bench_function(
        "strip hop-by-hop + identity namespace + set forwarded",
        |b| {
            b.iter_batched(
                || base.clone(),
                |mut req| {
                    portcullis::forward::strip_hop_by_hop(&mut req);
                    namespace.strip(&mut req);
                    let xff =
                        portcullis::policy::networks::ForwardedChain::read(peer, &req.headers, &[])
                            .header();
                    portcullis::forward::set_forwarded(
                        &mut req,
                        Some(xff),
                        Some(peer),
                        false,
                        Some(http::HeaderValue::from_static("api.example.com")),
                    )
                    .unwrap();
                    req
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
}

/// JWT verification per algorithm, cold (signature and claims every time) and cached (the
/// same token again: a SHA-256 and a cache lookup).
fn jwt(c: &mut Criterion) {
    use futures::executor::block_on;
    use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
    use openssl::pkey::PKey;
    use portcullis::auth::jwt::{KeySet, ProviderRules};
    use portcullis::auth::provider::{KeySource, Provider, TokenCache};

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let ed = PKey::generate_ed25519().unwrap();
    let secret = b"bench-hs256-secret-0123456789abcdef".to_vec();
    let cases: Vec<(Algorithm, EncodingKey, KeySet)> = vec![
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&rsa.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            {
                let mut k = KeySet::default();
                k.add_pem(
                    None,
                    AlgorithmFamily::Rsa,
                    &rsa.public_key_to_pem().unwrap(),
                )
                .unwrap();
                k
            },
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&ec.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            {
                let mut k = KeySet::default();
                k.add_pem(None, AlgorithmFamily::Ec, &ec.public_key_to_pem().unwrap())
                    .unwrap();
                k
            },
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&ed.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            {
                let mut k = KeySet::default();
                k.add_pem(None, AlgorithmFamily::Ed, &ed.public_key_to_pem().unwrap())
                    .unwrap();
                k
            },
        ),
        (Algorithm::HS256, EncodingKey::from_secret(&secret), {
            let mut k = KeySet::default();
            k.add_hmac_secret(None, &secret).unwrap();
            k
        }),
    ];
    for (alg, signing, keys) in cases {
        let claims = serde_json::json!({
            "iss": "https://issuer.bench.local", "aud": "bench-api", "sub": "bench-user",
            "iat": now, "exp": now + 3600, "scope": "read write",
        });
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &signing).unwrap();
        let provider = |capacity| Provider {
            name: "bench".into(),
            rules: ProviderRules {
                issuer: "https://issuer.bench.local".into(),
                audiences: vec!["bench-api".into()],
                algorithms: vec![alg],
                leeway_secs: 30,
                max_token_age_secs: None,
                require_exp: true,
                typ: None,
                max_token_bytes: 8192,
                key_only: false,
            },
            keys: KeySource::Static(std::sync::Arc::new(keys.clone())),
            claims: portcullis::auth::ClaimMap::default(),
            cache: TokenCache::new(capacity, 300),
            series: portcullis::metrics::ProviderSeries::new("bench"),
            introspection: None,
        };
        let cold = provider(0);
        c.bench_function(&format!("jwt {alg:?} verify, no cache"), |b| {
            b.iter(|| block_on(cold.authenticate(black_box(&token), now)).unwrap())
        });
        let cached = provider(1000);
        block_on(cached.authenticate(&token, now)).unwrap();
        c.bench_function(&format!("jwt {alg:?} cached"), |b| {
            b.iter(|| block_on(cached.authenticate(black_box(&token), now)).unwrap())
        });
    }
}

/// The whole decision for a JWT-protected route, as the proxy makes it per request:
/// canonical path, route lookup, client address, the (cached) token, a role requirement.
fn decision(c: &mut Criterion) {
    use futures::executor::block_on;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use portcullis::app::App;
    use portcullis::engine::{Decision, RequestFacts};
    let dir = tempfile::tempdir().unwrap();
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let pem = dir.path().join("idp.pem");
    std::fs::write(&pem, key.public_key_to_pem().unwrap()).unwrap();
    let yaml = format!(
        "listeners: [{{address: 127.0.0.1:8080}}]\nidentity_providers: {{corp: {{issuer: https://i, audiences: [api], algorithms: [RS256], keys: {{pem_file: {}}}, claims: {{roles: roles}}}}}}\nupstreams: {{a: {{backends: [127.0.0.1:9000]}}}}\nroutes:\n  - {{name: health, match: {{path: /health}}, upstream: a, auth: public}}\n  - {{name: orders, match: {{path_prefix: /api/orders}}, upstream: a, auth: {{jwt: corp, roles: [admin, user]}}}}\n",
        pem.display()
    );
    let cfg = config::parse(&yaml).expect("bench config");
    let app = App::build(cfg).expect("bench app");
    let engine = &app.engine;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signing =
        jsonwebtoken::EncodingKey::from_rsa_pem(&key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let claims = serde_json::json!({
        "iss": "https://i", "aud": "api", "sub": "bench-user", "iat": now, "exp": now + 3600,
        "roles": ["user"],
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &signing,
    )
    .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "api.example.com".parse().unwrap());
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let method = Method::GET;
    let facts = RequestFacts::new(
        &method,
        b"/api/orders/42",
        &headers,
        Some("127.0.0.1".parse().unwrap()),
        now,
    );
    let first = block_on(engine.decide(&facts, &mut Default::default()));
    assert!(matches!(first, Decision::Forward(_)), "{first:?}");
    c.bench_function("decide: JWT route, cached token, role check", |b| {
        b.iter(|| {
            black_box(block_on(
                engine.decide(black_box(&facts), &mut Default::default()),
            ))
        })
    });
}

/// The whole upstream request of a public route, as `upstream_request_filter` writes it:
/// hop-by-hop and namespace headers out, `X-Forwarded-*`, `X-Real-IP` and `X-Request-ID` in.
/// wrk's request (one header) and a browser-like one (eight).
fn upstream_request(c: &mut Criterion) {
    use futures::executor::block_on;
    use portcullis::app::App;
    use portcullis::engine::{Decision, RequestFacts};
    let yaml = "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {backends: [127.0.0.1:9000]}}\nroutes:\n  - {name: all, match: {path_prefix: /}, upstream: a, auth: public}\n";
    let app = App::build(config::parse(yaml).expect("bench config")).expect("bench app");
    let browser: &[(&str, &str)] = &[
        ("Host", "api.example.com"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
        ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("Accept-Language", "en-GB,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Cookie", "session=0123456789abcdef"),
        ("Cache-Control", "no-cache"),
    ];
    for (name, headers) in [("wrk", &browser[..1]), ("browser", browser)] {
        let mut req = RequestHeader::build("GET", b"/api/items?page=2", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        let facts = RequestFacts::new(
            &req.method,
            req.raw_path(),
            &req.headers,
            Some("203.0.113.7".parse().unwrap()),
            1_900_000_000,
        );
        let Decision::Forward(plan) = block_on(app.engine.decide(&facts, &mut Default::default()))
        else {
            panic!("the public route forwards");
        };
        let id = portcullis::request_id::from_headers(&req.headers);
        c.bench_function(
            &format!("upstream request, public route, {name} headers"),
            |b| {
                b.iter_batched(
                    || req.clone(),
                    |mut up| {
                        portcullis::forward::prepare(
                            &mut up,
                            &plan,
                            &app.forward,
                            &id,
                            1_900_000_000,
                        )
                        .unwrap();
                        up
                    },
                    criterion::BatchSize::SmallInput,
                )
            },
        );
    }
}

/// One request counted against a local rate limit (the key exists: the common case).
fn rate_limit(c: &mut Criterion) {
    use portcullis::ratelimit::{KeyValue, Limit, LimitKey, LocalLimiter};
    let limiter = LocalLimiter::new(100_000, std::time::Duration::from_secs(3600));
    let limit = Limit::new(
        "bench",
        LimitKey::Consumer,
        1_000_000_000,
        std::time::Duration::from_secs(3600),
        1_000_000_000,
    );
    let key = KeyValue::Named("consumer", b"bench-consumer");
    c.bench_function("rate limit check, local, existing key", |b| {
        b.iter(|| black_box(limiter.check(0, &limit, black_box(&key))))
    });
    c.bench_function("rate limit headers (policy + state)", |b| {
        let v = limiter.check(0, &limit, &key);
        b.iter(|| black_box(limit.headers(&v)))
    });
}

/// Verifying an RFC 9421 signature over a 1 KiB body (parse, base, HMAC, Content-Digest),
/// and M13: a wrong signature sharing 31 leading bytes with the right one costs the same as
/// one sharing none (compare the two lines of the report).
fn hmac_signature(c: &mut Criterion) {
    use base64::Engine;
    use portcullis::auth::http_sig::{self, SignatureRules, SignedRequest, SigningKeyring};
    let secret = [7u8; 32];
    let keys = SigningKeyring::parse(
        &format!(
            "keys:\n- id: bench\n  consumer: bench\n  secret: \"base64:{}\"\n  created: 2026-01-01\n",
            base64::engine::general_purpose::STANDARD.encode(secret)
        ),
        &|_| true,
    )
    .unwrap();
    let body = vec![b'x'; 1024];
    let empty = http::HeaderMap::new();
    let now = 1_900_000_000;
    let unsigned = SignedRequest {
        method: "POST",
        scheme: "https",
        authority: "api.example.com",
        path: "/webhooks/orders",
        query: Some("source=shop"),
        headers: &empty,
        body: &body,
    };
    let rules = SignatureRules::default();
    let signed = http_sig::sign(
        &unsigned,
        "bench",
        &secret,
        &rules.components,
        now,
        "bench-nonce-0001",
        "sig1",
    )
    .unwrap();
    let mut headers = http::HeaderMap::new();
    for (k, v) in &signed {
        headers.insert(*k, v.parse().unwrap());
    }
    let request = SignedRequest {
        headers: &headers,
        ..unsigned
    };
    assert!(http_sig::verify(&request, &keys, &rules, now).is_ok());
    c.bench_function("hmac: verify a signed 1 KiB POST", |b| {
        b.iter(|| black_box(http_sig::verify(black_box(&request), &keys, &rules, now)))
    });
    let right = signed
        .iter()
        .find(|(k, _)| *k == "signature")
        .map(|(_, v)| v.clone())
        .unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(right.trim_start_matches("sig1=:").trim_end_matches(':'))
        .unwrap();
    for (label, flip) in [("0 leading bytes", 0), ("31 leading bytes", 31)] {
        let mut wrong = raw.clone();
        wrong[flip] ^= 1;
        let mut h = headers.clone();
        h.insert(
            "signature",
            format!(
                "sig1=:{}:",
                base64::engine::general_purpose::STANDARD.encode(&wrong)
            )
            .parse()
            .unwrap(),
        );
        let bad = SignedRequest {
            headers: &h,
            ..unsigned
        };
        assert!(http_sig::verify(&bad, &keys, &rules, now).is_err());
        c.bench_function(&format!("hmac: m13 wrong signature sharing {label}"), |b| {
            b.iter(|| black_box(http_sig::verify(black_box(&bad), &keys, &rules, now)))
        });
    }
}

/// The seed's Rego policy (conf/rego/authz.rego) deciding an admin request: the input
/// document built and the rule evaluated on the thread's engine; and the same request again,
/// from the memo.
fn rego(c: &mut Criterion) {
    use portcullis::auth::Identity;
    use portcullis::policy::rego::{RegoFacts, RegoPolicy};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/rego");
    let source = std::fs::read_to_string(dir.join("authz.rego")).unwrap();
    let data =
        serde_json::from_str(&std::fs::read_to_string(dir.join("data.json")).unwrap()).unwrap();
    let policy = RegoPolicy::new(
        "authz.rego",
        source,
        Some(data),
        "data.gateway.authz.allow",
        vec![],
        vec![],
        "api",
    )
    .unwrap();
    let id = Identity {
        method: "jwt",
        subject: "alice".into(),
        roles: vec!["admin".into()],
        ..Identity::default()
    };
    let headers = http::HeaderMap::new();
    let facts = RegoFacts {
        method: "GET",
        path: "/admin/users",
        query: None,
        headers: &headers,
        client_ip: None,
        tls: true,
        now: 1_800_000_000,
        identity: Some(&id),
    };
    c.bench_function("rego: seed policy, admin path allowed", |b| {
        b.iter(|| black_box(policy.decide_on(policy.input(black_box(&facts)))))
    });
    // What the gateway calls: the same request again within its second is remembered.
    c.bench_function(
        "rego: seed policy, admin path allowed, the same request within its second",
        |b| b.iter(|| black_box(policy.decide(black_box(&facts)))),
    );
}

criterion_group!(
    benches,
    rego,
    hmac_signature,
    routing,
    request_id,
    header_hygiene,
    upstream_request,
    jwt,
    decision,
    rate_limit
);
criterion_main!(benches);
