//! WebSocket (RFC 6455) through the gateway, with a real client and a real origin
//! (`tokio-tungstenite` on both ends): the handshake is authenticated like any request and
//! carries the verified identity, never the client's; a refused handshake gets the JSON
//! refusal, never a 101; messages flow both ways intact; and an upgraded connection ends at its
//! route's idle timeout and, busy or not, at its max lifetime.

use crate::support::*;
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// One handshake's request headers, as the origin received them.
type Handshake = Vec<(String, String)>;

/// A WebSocket origin that echoes every message and records each handshake's headers.
struct WsOrigin {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
}

impl WsOrigin {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        // tungstenite's callback type: its error is a whole HTTP response.
                        #[allow(clippy::result_large_err)]
                        let record = |req: &Request, resp: Response| {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                                })
                                .collect();
                            seen.lock().unwrap().push(headers);
                            Ok(resp)
                        };
                        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                        else {
                            return;
                        };
                        while let Some(Ok(msg)) = ws.next().await {
                            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        });
        Self { addr, handshakes }
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A gateway with provider `corp` in front of `origin`: `/ws` takes WebSocket handshakes with
/// `limits` (YAML), `/plain` is the same JWT route without `websocket`, `/off` one with
/// `websocket: false`.
fn ws_gateway(idp: &SigningIdp, origin: &WsOrigin, limits: &str) -> Gateway {
    Gateway::start(&format!(
        "{provider}upstreams:\n  ws:\n    backends: [\"{backend}\"]\n    read_timeout: 30s\nroutes:\n  - {{ name: ws, match: {{ path_prefix: /ws }}, upstream: ws, auth: {{ jwt: corp }}, websocket: {limits} }}\n  - {{ name: plain, match: {{ path_prefix: /plain }}, upstream: ws, auth: {{ jwt: corp }} }}\n  - {{ name: off, match: {{ path_prefix: /off }}, upstream: ws, auth: {{ jwt: corp }}, websocket: false }}\n",
        provider = idp.provider_yaml("corp"),
        backend = origin.addr
    ))
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gateway, path: &str, headers: &[(&str, String)]) -> Result<Client, WsError> {
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// A gateway with `limits` on `/ws`, its origin, and a client connected there with a good
/// token.
struct Opened {
    _idp: SigningIdp,
    origin: WsOrigin,
    gw: Gateway,
    rt: tokio::runtime::Runtime,
    ws: Client,
}

fn open(limits: &str, extra: &[(&str, String)]) -> Opened {
    let (idp, origin) = (SigningIdp::new(), WsOrigin::start());
    let gw = ws_gateway(&idp, &origin, limits);
    let rt = runtime();
    let mut headers = vec![("authorization", format!("Bearer {}", idp.good_token()))];
    headers.extend(extra.iter().cloned());
    let ws = rt
        .block_on(connect(&gw, "/ws/chat", &headers))
        .expect("the handshake passes");
    Opened {
        _idp: idp,
        origin,
        gw,
        rt,
        ws,
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn a_websocket_handshake_is_authenticated_and_messages_flow_both_ways_intact() {
    let Opened {
        origin,
        gw,
        rt,
        mut ws,
        ..
    } = open("true", &[("x-user-id", "mallory".into())]);
    let seen = origin.handshakes();
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "x-user-id"), ["alice"]);
    assert_eq!(header(&seen[0], "x-auth-method"), ["jwt"]);
    assert_eq!(header(&seen[0], "upgrade"), ["websocket"]);
    assert!(header(&seen[0], "authorization").is_empty());
    assert_eq!(
        gw.metric(r#"portcullis_upgraded_connections{route="ws"}"#),
        Some(1.0)
    );

    // Many messages both ways, text and binary, small and large, in order.
    rt.block_on(async {
        let sent: Vec<Message> = (0..400)
            .map(|i| {
                if i % 2 == 0 {
                    Message::text(format!("message {i} {}", "x".repeat(i * 7)))
                } else {
                    Message::binary(
                        (0..(i * 163) % 70_000)
                            .map(|b| (b % 251) as u8)
                            .collect::<Vec<u8>>(),
                    )
                }
            })
            .collect();
        for m in &sent {
            ws.send(m.clone()).await.unwrap();
        }
        for m in &sent {
            let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("an echo")
                .unwrap()
                .unwrap();
            assert_eq!(&back, m);
        }
        ws.close(None).await.unwrap();
    });
    assert!(gw.eventually(Duration::from_secs(5), || {
        gw.metric(r#"portcullis_upgraded_connections{route="ws"}"#) == Some(0.0)
    }));
}

#[test]
fn a_refused_handshake_gets_the_json_refusal_and_never_a_101() {
    let (idp, origin) = (SigningIdp::new(), WsOrigin::start());
    let gw = ws_gateway(&idp, &origin, "true");
    let rt = runtime();
    match rt.block_on(connect(&gw, "/ws", &[])) {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert_eq!(error_body(&body)["error"], "token_missing");
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| "101")),
    }
    let expired = idp.token(serde_json::json!({
        "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "alice", "iat": now() - 600, "exp": now() - 300,
    }));
    match rt.block_on(connect(
        &gw,
        "/ws",
        &[("authorization", format!("Bearer {expired}"))],
    )) {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {:?}", other.map(|_| "101")),
    }
    // A route without `websocket`, or with `websocket: false`, forwards no upgrade: the
    // origin never sees a handshake.
    for path in ["/plain", "/off"] {
        let bearer = format!("Bearer {}", idp.good_token());
        match rt.block_on(connect(&gw, path, &[("authorization", bearer)])) {
            Err(WsError::Http(resp)) => assert_ne!(resp.status(), 101),
            Err(_) => {}
            Ok(_) => panic!("an upgrade went through {path}"),
        }
    }
    assert!(origin.handshakes().is_empty(), "{:?}", origin.handshakes());
}

#[test]
fn d9_an_idle_upgraded_connection_is_closed_at_the_routes_idle_timeout() {
    // Every part that is not named here would be dropped (the gateway stopped) at once.
    let Opened {
        gw: _gw,
        rt,
        mut ws,
        ..
    } = open("{ idle_timeout: 1s }", &[]);
    let opened = Instant::now();
    let ended = rt.block_on(async {
        // The pool's read timeout is 30 s: only the route's idle timeout ends it this soon.
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(m)) if m.is_close() => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
    });
    assert!(ended.is_ok(), "still open after 5 s");
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the idle timeout"
    );
}

#[test]
fn d9_a_busy_upgraded_connection_ends_at_its_max_lifetime() {
    let Opened { gw, rt, mut ws, .. } = open("{ idle_timeout: 30s, max_lifetime: 2s }", &[]);
    let opened = Instant::now();
    let echoed = rt.block_on(async {
        let mut echoed = 0;
        while opened.elapsed() < Duration::from_secs(10) {
            if ws.send(Message::text("ping")).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
                Ok(Some(Ok(m))) if m.is_text() => echoed += 1,
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        echoed
    });
    let lived = opened.elapsed();
    assert!(echoed >= 5, "only {echoed} echoes before the end");
    assert!(
        lived >= Duration::from_secs(2) && lived < Duration::from_secs(6),
        "ended after {lived:?}"
    );
    assert_eq!(
        gw.metric(
            r#"portcullis_upgraded_connections_closed_total{reason="max_lifetime",route="ws"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn a_101_for_a_request_that_asked_for_no_upgrade_is_a_502() {
    // An origin that switches protocols whatever it is asked.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let gw = Gateway::start(&pass_through(addr));
    let resp = client().get(gw.url("/plain")).send().unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"], "bad_gateway");
}
