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
    RouteTable::new(&cfg.routes)
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
    c.bench_function("strip hop-by-hop + set forwarded", |b| {
        b.iter_batched(
            || base.clone(),
            |mut req| {
                portcullis::identity::strip_hop_by_hop(&mut req);
                portcullis::identity::set_forwarded(
                    &mut req,
                    Some("127.0.0.1"),
                    false,
                    Some("api.example.com"),
                )
                .unwrap();
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, routing, request_id, header_hygiene);
criterion_main!(benches);
