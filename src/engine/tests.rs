//! The engine in-process, without a socket: the request checks that come before routing, the
//! route and path refusals, and the forwarding plan of an allowed request. Each row is what a
//! user would see: the status and stable code, or what would be forwarded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::app::App;
use crate::config;

const BASE: &str = "listeners: [{address: 127.0.0.1:8080}]\nadmin: {address: 127.0.0.1:9901}\nupstreams: {echo: {backends: [127.0.0.1:9000]}}\n";

fn engine(rest: &str) -> Engine {
    let config = config::parse(&format!("{BASE}{rest}")).unwrap();
    App::build(config)
        .map_err(|p| p.to_string())
        .unwrap()
        .engine
}

fn public() -> Engine {
    engine(
        "trusted_proxies: [10.0.0.0/8]\nroutes:\n  - {name: orders, match: {path_prefix: /orders, methods: [GET, POST]}, upstream: echo, auth: public}\n",
    )
}

/// A request as a client would send it: target, then `Name: value` headers.
struct Req<'a> {
    method: http::Method,
    target: &'a [u8],
    authority: Option<&'a str>,
    headers: http::HeaderMap,
    peer: &'a str,
    sni: Option<&'a str>,
}

fn req<'a>(target: &'a str, headers: &[(&str, &str)]) -> Req<'a> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    Req {
        method: http::Method::GET,
        target: target.as_bytes(),
        authority: None,
        headers: map,
        peer: "192.0.2.1",
        sni: None,
    }
}

fn decide(engine: &Engine, r: &Req<'_>) -> Result<Forward, Box<Denial>> {
    let mut facts = RequestFacts::new(
        &r.method,
        r.target,
        &r.headers,
        Some(r.peer.parse().unwrap()),
        crate::unix_now(),
    );
    facts.authority = r.authority;
    facts.sni = r.sni;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(engine.decide(&facts, &mut Trace::default())) {
        Decision::Forward(f) => Ok(f),
        Decision::Refuse(r) => Err(Box::new(r.denial)),
        Decision::NeedsBody => panic!("no route here verifies signatures"),
        Decision::Preflight(p) => panic!("no route here has CORS: {p:?}"),
    }
}

fn refused(engine: &Engine, r: &Req<'_>) -> (u16, &'static str) {
    match decide(engine, r) {
        Ok(f) => panic!("forwarded: {f:?}"),
        Err(d) => (d.status, d.code),
    }
}

#[test]
fn a_request_that_is_not_one_request_is_refused_before_routing() {
    let e = public();
    let two_hosts = req("/orders", &[("host", "a.example"), ("host", "b.example")]);
    assert_eq!(refused(&e, &two_hosts), (400, "ambiguous_host"));

    let mut other_authority = req("/orders", &[("host", "a.example")]);
    other_authority.authority = Some("b.example");
    assert_eq!(refused(&e, &other_authority), (400, "ambiguous_host"));
    // The same authority in another case is the same host.
    let mut same = req("/orders", &[("host", "A.example")]);
    same.authority = Some("a.EXAMPLE");
    assert!(decide(&e, &same).is_ok());

    let framing = req(
        "/orders",
        &[("host", "a"), ("connection", "close, Content-Length")],
    );
    assert_eq!(refused(&e, &framing), (400, "invalid_connection_header"));
    let gateway_header = req("/orders", &[("host", "a"), ("connection", "x-request-id")]);
    assert_eq!(
        refused(&e, &gateway_header),
        (400, "invalid_connection_header")
    );

    let mut not_text = req("/orders", &[("host", "a")]);
    not_text.target = b"/orders/\xff";
    assert_eq!(refused(&e, &not_text), (400, "bad_request"));
}

#[test]
fn x9_on_a_tls_listener_the_host_must_name_the_server_the_client_connected_for() {
    let e = public();
    let mut other = req("/orders", &[("host", "admin.internal")]);
    other.sni = Some("api.example.com");
    assert_eq!(refused(&e, &other), (421, "misdirected_request"));
    for host in ["api.example.com", "API.example.com:8443"] {
        let mut same = req("/orders", &[("host", host)]);
        same.sni = Some("api.example.com");
        assert!(decide(&e, &same).is_ok(), "{host}");
    }
}

#[test]
fn unknown_paths_and_methods_get_404_and_405_with_allow() {
    let e = public();
    assert_eq!(refused(&e, &req("/nowhere", &[])), (404, "route_not_found"));
    let mut delete = req("/orders/7", &[]);
    delete.method = http::Method::DELETE;
    let d = decide(&e, &delete).unwrap_err();
    assert_eq!((d.status, d.code), (405, "method_not_allowed"));
    let headers: Vec<_> = d.headers().collect();
    assert_eq!(headers, [("allow", "GET, POST".to_string())]);
    // A path that is not canonical-able is refused with its own code.
    assert_eq!(refused(&e, &req("/orders/%2e%2e/%2e%2e/etc", &[])).0, 400);
}

#[test]
fn the_plan_forwards_the_canonical_path_and_the_trusted_client() {
    let e = public();
    let mut via_proxy = req(
        "/orders/a/../b?x=1",
        &[("host", "a"), ("x-forwarded-for", "203.0.113.9, 10.1.1.1")],
    );
    via_proxy.peer = "10.0.0.5";
    let f = decide(&e, &via_proxy).unwrap();
    assert_eq!(f.route.name, "orders");
    assert_eq!(f.target.as_deref(), Some("/orders/b?x=1"));
    assert_eq!(f.client_ip, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(
        f.forwarded_for.as_deref(),
        Some("203.0.113.9, 10.1.1.1, 10.0.0.5")
    );
    // A direct client cannot claim an address.
    let direct = req("/orders", &[("x-forwarded-for", "203.0.113.9")]);
    let f = decide(&e, &direct).unwrap();
    assert_eq!(f.target, None, "already canonical: forwarded as sent");
    assert_eq!(f.client_ip, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(f.forwarded_for.as_deref(), Some("192.0.2.1"));
}
