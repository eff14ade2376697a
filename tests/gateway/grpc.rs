//! gRPC through the gateway, with grpcio on both ends (`support::grpc`): unary and streaming
//! calls over cleartext HTTP/2 (a client by prior knowledge to an `h2c` listener, the gateway
//! to an `h2c` upstream) and over TLS (ALPN `h2` on both sides), with metadata, the verified
//! identity instead of the client's, trailers and the backend's own status intact; and the
//! gateway's refusals read by the client as gRPC statuses, per method.

use crate::support::grpc::{grpc_calls, metadata, GrpcOrigin};
use crate::support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// A gateway with provider `corp`: a cleartext listener taking h2c (`gw.addr`) and a TLS
/// listener (returned with its certificate); `upstreams` and `routes` as given.
fn grpc_gateway(
    idp: &SigningIdp,
    upstreams: &str,
    routes: &str,
) -> (Gateway, SocketAddr, std::path::PathBuf) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path(), "edge");
    let tls_port = free_port();
    let gw = Gateway::start_with(
        &format!(
            "  - address: 127.0.0.1:{h2c}\n    h2c: true\n  - address: 127.0.0.1:{tls_port}\n    tls:\n      certificate: {cert}\n      key: {key}\n",
            h2c = free_port(),
            cert = cert.display(),
            key = key.display()
        ),
        "",
        &format!(
            "{provider}upstreams:\n{upstreams}routes:\n{routes}",
            provider = idp.provider_yaml("corp")
        ),
    );
    let kept = gw.dir.path().join("edge.crt");
    std::fs::copy(&cert, &kept).unwrap();
    (gw, SocketAddr::from(([127, 0, 0, 1], tls_port)), kept)
}

fn bearer(token: &str) -> Value {
    json!(["authorization", format!("Bearer {token}")])
}

/// Every kind of call, with a token and a forged identity, and what each must answer.
fn every_kind_of_call(token: &str) -> Value {
    let messages: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    json!([
        { "method": "/echo.Echo/Unary", "kind": "unary", "request": "hello",
          "metadata": [bearer(token), ["x-user-id", "mallory"], ["x-trace", "t-1"]] },
        { "method": "/echo.Echo/Fail", "kind": "unary", "metadata": [bearer(token)] },
        { "method": "/echo.Echo/Count", "kind": "server_stream", "request": "200",
          "metadata": [bearer(token)] },
        { "method": "/echo.Echo/Join", "kind": "client_stream", "request": messages,
          "metadata": [bearer(token)] },
        { "method": "/echo.Echo/Shout", "kind": "bidi", "request": messages,
          "metadata": [bearer(token)] },
    ])
}

fn assert_every_kind_of_call(seen: &[Value]) {
    let [unary, fail, count, join, shout] = seen else {
        panic!("five results: {seen:?}");
    };
    assert_eq!(unary["code"], "OK", "{unary}");
    let echoed: Value = serde_json::from_str(unary["responses"][0].as_str().unwrap()).unwrap();
    assert_eq!(echoed["request"], "hello");
    let received = &echoed["metadata"];
    assert_eq!(metadata(received, "x-user-id"), ["alice"], "{received}");
    assert_eq!(metadata(received, "x-auth-method"), ["jwt"]);
    assert_eq!(metadata(received, "x-trace"), ["t-1"]);
    assert!(metadata(received, "authorization").is_empty(), "{received}");
    // The backend's initial metadata and trailers reach the client, with the request id.
    assert_eq!(
        metadata(&unary["initial_metadata"], "echo-initial"),
        ["yes"]
    );
    assert_eq!(
        metadata(&unary["initial_metadata"], "x-request-id").len(),
        1
    );
    assert_eq!(
        metadata(&unary["trailing_metadata"], "echo-trailer"),
        ["kept"]
    );
    // The backend's own status and trailers, not the gateway's.
    assert_eq!(fail["code"], "NOT_FOUND", "{fail}");
    assert_eq!(fail["details"], "no such thing");
    assert_eq!(
        metadata(&fail["trailing_metadata"], "echo-reason"),
        ["missing"]
    );
    let counted: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(count["code"], "OK", "{count}");
    assert_eq!(count["responses"], json!(counted));
    let messages: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(join["code"], "OK", "{join}");
    assert_eq!(join["responses"], json!([messages.join(",")]));
    let shouted: Vec<String> = messages.iter().map(|m| m.to_uppercase()).collect();
    assert_eq!(shout["code"], "OK", "{shout}");
    assert_eq!(shout["responses"], json!(shouted));
}

const ECHO_ROUTE: &str = "  - { name: echo, match: { path_prefix: /echo.Echo/ }, upstream: grpc, auth: { jwt: corp } }\n";

#[test]
fn grpc_calls_pass_through_over_h2c_with_metadata_trailers_and_streams() {
    let (idp, origin) = (SigningIdp::new(), GrpcOrigin::start(None));
    let (gw, _, _) = grpc_gateway(
        &idp,
        &format!(
            "  grpc:\n    backends: [\"{}\"]\n    protocol: h2c\n",
            origin.addr
        ),
        ECHO_ROUTE,
    );
    let seen = grpc_calls(gw.addr, None, every_kind_of_call(&idp.good_token()));
    assert_every_kind_of_call(&seen);
    let metrics = gw.metrics();
    assert!(
        metrics.contains(r#"portcullis_open_connections{listener=""#)
            && metrics.contains(r#"protocol="h2c"}"#),
        "the client's connection is counted as h2c"
    );
    assert_eq!(
        gw.metric(r#"portcullis_requests_total{method="POST",route="echo",status_class="2xx"}"#),
        Some(5.0)
    );
}

#[test]
fn grpc_calls_pass_through_over_tls_to_a_tls_backend() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path(), "backend");
    let idp = SigningIdp::new();
    let origin = GrpcOrigin::start(Some((&cert, &key)));
    let (_gw, tls_addr, edge_ca) = grpc_gateway(
        &idp,
        &format!(
            "  grpc:\n    backends: [\"{}\"]\n    protocol: h2\n    tls: {{ sni: localhost, ca_file: {} }}\n",
            origin.addr,
            cert.display()
        ),
        ECHO_ROUTE,
    );
    let seen = grpc_calls(
        tls_addr,
        Some(&edge_ca),
        every_kind_of_call(&idp.good_token()),
    );
    assert_every_kind_of_call(&seen);
}

#[test]
fn refusals_reach_a_grpc_client_as_grpc_statuses_per_method() {
    let (idp, origin) = (SigningIdp::new(), GrpcOrigin::start(None));
    let routes = format!(
        "  - {{ name: fail, match: {{ path: /echo.Echo/Fail }}, upstream: grpc, auth: {{ jwt: corp, roles: [admin] }} }}\n  - {{ name: count, match: {{ path: /echo.Echo/Count }}, upstream: grpc, auth: {{ jwt: corp }}, rate_limit: {{ requests: 1, per: minute }} }}\n  - {{ name: down, match: {{ path_prefix: /down.Down/ }}, upstream: closed, auth: public }}\n{ECHO_ROUTE}"
    );
    let (gw, tls_addr, edge_ca) = grpc_gateway(
        &idp,
        &format!(
            "  grpc:\n    backends: [\"{}\"]\n    protocol: h2c\n  closed:\n    backends: [\"127.0.0.1:{}\"]\n    protocol: h2c\n    retries: 0\n",
            origin.addr,
            free_port()
        ),
        &routes,
    );
    let user = idp.token_for("bob", &["user"], &[], &[]);
    let calls = json!([
        { "method": "/echo.Echo/Unary", "kind": "unary", "request": "x" },
        { "method": "/echo.Echo/Unary", "kind": "unary", "metadata": [["authorization", "Bearer not.a.token"]] },
        { "method": "/echo.Echo/Fail", "kind": "unary", "metadata": [bearer(&user)] },
        { "method": "/echo.Echo/Count", "kind": "server_stream", "request": "1", "metadata": [bearer(&user)] },
        { "method": "/echo.Echo/Count", "kind": "server_stream", "request": "1", "metadata": [bearer(&user)] },
        { "method": "/nothing.Here/Method", "kind": "unary" },
        { "method": "/down.Down/Call", "kind": "bidi", "request": ["a"] },
    ]);
    let expected = [
        ("UNAUTHENTICATED", "token_missing: "),
        ("UNAUTHENTICATED", "token_malformed: "),
        ("PERMISSION_DENIED", "insufficient_role: "),
        ("OK", ""),
        ("RESOURCE_EXHAUSTED", "rate_limited: "),
        ("UNIMPLEMENTED", "route_not_found: "),
        ("UNAVAILABLE", "upstream_unreachable: "),
    ];
    for (target, ca) in [(gw.addr, None), (tls_addr, Some(edge_ca.as_path()))] {
        let seen = grpc_calls(target, ca, calls.clone());
        assert_eq!(seen.len(), expected.len());
        for (i, (result, (code, details))) in seen.iter().zip(expected).enumerate() {
            // The rate limit allows one call a minute, over both listeners.
            let (code, details) = match (i, ca) {
                (3, Some(_)) => ("RESOURCE_EXHAUSTED", "rate_limited: "),
                _ => (code, details),
            };
            assert_eq!(result["code"], code, "call {i}: {result}");
            assert!(
                result["details"].as_str().unwrap().starts_with(details),
                "call {i}: {result}"
            );
            if code != "OK" {
                // The request id and the refusal's own headers travel as trailing metadata.
                assert_eq!(
                    metadata(&result["trailing_metadata"], "x-request-id").len(),
                    1,
                    "{result}"
                );
            }
        }
        let challenge = metadata(&seen[0]["trailing_metadata"], "www-authenticate");
        assert_eq!(challenge.len(), 1, "{}", seen[0]);
        assert!(challenge[0].starts_with("Bearer"));
        assert_eq!(
            metadata(&seen[4]["trailing_metadata"], "retry-after").len(),
            1,
            "{}",
            seen[4]
        );
    }
    // Counted and logged by what was refused, though the client got HTTP 200 each time. The
    // access log is written after each response, by its own writer: wait for every line.
    assert!(
        gw.eventually(Duration::from_secs(5), || gw.access_log().lines().count()
            >= 2 * expected.len())
    );
    let log = gw.access_log();
    let statuses: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    for status in [401, 403, 429, 404, 502] {
        assert!(statuses.contains(&status), "{status} in {statuses:?}");
    }
    assert_eq!(
        gw.metric(r#"portcullis_requests_total{method="POST",route="fail",status_class="4xx"}"#),
        Some(2.0)
    );
}

#[test]
fn a_listener_without_h2c_does_not_take_prior_knowledge_http2() {
    let (idp, origin) = (SigningIdp::new(), GrpcOrigin::start(None));
    let gw = Gateway::start(&format!(
        "{provider}upstreams:\n  grpc:\n    backends: [\"{}\"]\n    protocol: h2c\nroutes:\n{ECHO_ROUTE}",
        origin.addr,
        provider = idp.provider_yaml("corp")
    ));
    let seen = grpc_calls(
        gw.addr,
        None,
        json!([{ "method": "/echo.Echo/Unary", "kind": "unary", "metadata": [bearer(&idp.good_token())] }]),
    );
    assert_eq!(seen[0]["code"], "UNAVAILABLE", "{}", seen[0]);
    assert!(!gw.access_log().contains("/echo.Echo/Unary"));
}

#[test]
fn a_client_stream_is_held_to_the_body_timeout_between_messages_not_to_a_pace() {
    let (idp, origin) = (SigningIdp::new(), GrpcOrigin::start(None));
    let gw = Gateway::start_with(
        &format!("  - address: 127.0.0.1:{}\n    h2c: true\n", free_port()),
        // A pace of 1 MB/s after 1 s: any stream slower than that would be cut at once.
        "  request_body_timeout: 1s\n  request_body_min_rate: 1000000\n",
        &format!(
            "{provider}upstreams:\n  grpc:\n    backends: [\"{}\"]\n    protocol: h2c\nroutes:\n{ECHO_ROUTE}",
            origin.addr,
            provider = idp.provider_yaml("corp")
        ),
    );
    let token = idp.good_token();
    let seen = grpc_calls(
        gw.addr,
        None,
        json!([
            // Five small messages 0.4 s apart: 1.6 s, far below the pace, each read in time.
            { "method": "/echo.Echo/Join", "kind": "client_stream", "request": ["a", "b", "c", "d", "e"],
              "pause": 0.4, "metadata": [bearer(&token)] },
            // A pause longer than the timeout between two messages.
            { "method": "/echo.Echo/Join", "kind": "client_stream", "request": ["a", "b"],
              "pause": 2.5, "metadata": [bearer(&token)] },
        ]),
    );
    assert_eq!(seen[0]["code"], "OK", "{}", seen[0]);
    assert_eq!(seen[0]["responses"], json!(["a,b,c,d,e"]));
    assert_eq!(seen[1]["code"], "DEADLINE_EXCEEDED", "{}", seen[1]);
    assert!(
        seen[1]["details"]
            .as_str()
            .unwrap()
            .starts_with("body_timeout: "),
        "{}",
        seen[1]
    );
}

#[test]
fn the_grpc_example_configuration_serves_its_routes_on_both_listeners() {
    let (idp, origin) = (SigningIdp::new(), GrpcOrigin::start(None));
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let text = std::fs::read_to_string(conf.join("grpc.yaml")).unwrap();
    let file: Value = serde_yaml::from_str(&text).unwrap();
    // conf/grpc.yaml's own listeners, on free ports and with its key paths made absolute.
    let (h2c, tls) = (&file["listeners"][0], &file["listeners"][1]["tls"]);
    let tls_port = free_port();
    let listeners = format!(
        "  - address: 127.0.0.1:{h2c_port}\n    h2c: {}\n  - address: 127.0.0.1:{tls_port}\n    tls:\n      certificate: {}\n      key: {}\n",
        h2c["h2c"],
        conf.join(tls["certificate"].as_str().unwrap()).display(),
        conf.join(tls["key"].as_str().unwrap()).display(),
        h2c_port = free_port(),
    );
    let body = Conf::parse(&text)
        .remove("listeners")
        .remove("identity_providers")
        .set(
            "upstreams.orders.backends",
            json!([origin.addr.to_string()]),
        );
    let gw = Gateway::start_with(
        &listeners,
        "",
        &format!("{}{}", idp.provider_yaml("corp"), body.yaml()),
    );
    let admin = idp.good_token();
    let user = idp.token_for("bob", &["user"], &[], &[]);
    let calls = json!([
        { "method": "/orders.v1.Orders/Unary", "kind": "unary", "request": "list",
          "metadata": [bearer(&user), ["x-user-id", "mallory"]] },
        { "method": "/orders.v1.Orders/Cancel", "kind": "unary", "request": "7", "metadata": [bearer(&user)] },
        { "method": "/orders.v1.Orders/Cancel", "kind": "unary", "request": "7", "metadata": [bearer(&admin)] },
        { "method": "/orders.v1.Orders/Count", "kind": "server_stream", "request": "3", "metadata": [bearer(&user)] },
    ]);
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let ca = conf.join("keys/demo-server.crt");
    for (target, ca) in [(gw.addr, None), (tls, Some(ca.as_path()))] {
        let seen = grpc_calls(target, ca, calls.clone());
        assert_eq!(seen[0]["code"], "OK", "{}", seen[0]);
        let echoed: Value =
            serde_json::from_str(seen[0]["responses"][0].as_str().unwrap()).unwrap();
        assert_eq!(metadata(&echoed["metadata"], "x-user-id"), ["bob"]);
        // The method with a policy of its own.
        assert_eq!(seen[1]["code"], "PERMISSION_DENIED", "{}", seen[1]);
        assert!(seen[1]["details"]
            .as_str()
            .unwrap()
            .starts_with("insufficient_role: "));
        assert_eq!(seen[2]["code"], "OK", "{}", seen[2]);
        assert_eq!(seen[3]["responses"], json!(["0", "1", "2"]), "{}", seen[3]);
    }
}

#[test]
fn an_http_health_check_of_an_h2c_pool_speaks_http2() {
    // grpcio answers a GET over HTTP/2 (200, and a grpc-status of its own) and drops one over
    // HTTP/1.1: checked in HTTP/1.1, the backend would be out of rotation.
    let (idp, origin) = (SigningIdp::new(), GrpcOrigin::start(None));
    let (gw, _, _) = grpc_gateway(
        &idp,
        &format!(
            "  grpc:\n    backends: [\"{}\"]\n    protocol: h2c\n    health_check: {{ type: http, path: /, interval: 100ms }}\n",
            origin.addr
        ),
        ECHO_ROUTE,
    );
    let healthy = format!(
        r#"portcullis_backend_healthy{{backend="{}",upstream="grpc"}}"#,
        origin.addr
    );
    assert!(
        gw.eventually(std::time::Duration::from_secs(5), || gw.metric(&healthy)
            == Some(1.0))
    );
    // Still healthy after several rounds of checks, and serving.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(gw.metric(&healthy), Some(1.0));
    let seen = grpc_calls(
        gw.addr,
        None,
        json!([{ "method": "/echo.Echo/Unary", "kind": "unary", "metadata": [bearer(&idp.good_token())] }]),
    );
    assert_eq!(seen[0]["code"], "OK", "{}", seen[0]);
}
