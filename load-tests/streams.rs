//! Origins and load generators for the load test's streaming rows (`run.sh`, `STREAMS=1`):
//! WebSocket message round trips and gRPC unary calls, the traffic wrk cannot make.
//!
//!   streams ws-origin ADDR                       a WebSocket server that echoes every message
//!   streams grpc-origin ADDR                     an h2c server that answers every call with its
//!                                                own message and `grpc-status: 0` in trailers
//!   streams ws-load URL CONNECTIONS SECONDS      round trips of a 64-byte text message, each
//!                                                connection waiting for its echo before the next
//!   streams grpc-load URL CONNECTIONS STREAMS SECONDS
//!                                                unary calls over h2c: per connection, STREAMS
//!                                                calls in flight, each a 64-byte message
//!
//! A load generator prints one JSON object: `requests` (completed round trips or calls with
//! the right answer), `errors` (wrong answers and failed calls), `seconds`, `avg_ms` and
//! `p99_ms`. The origins stand in for an application: what is measured is the proxy between
//! them and the load generator, for Portcullis and nginx alike.

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| "missing argument (see load-tests/streams.rs)".into())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match arg(0)? {
        "ws-origin" => runtime.block_on(ws_origin(arg(1)?.parse()?)),
        "grpc-origin" => runtime.block_on(grpc_origin(arg(1)?.parse()?)),
        "ws-load" => {
            let (url, conns, secs) = (arg(1)?.to_string(), arg(2)?.parse()?, arg(3)?.parse()?);
            let report = runtime.block_on(ws_load(url, conns, Duration::from_secs(secs)))?;
            println!("{}", report.json());
            Ok(())
        }
        "grpc-load" => {
            let (url, conns, streams, secs) = (
                arg(1)?.to_string(),
                arg(2)?.parse()?,
                arg(3)?.parse()?,
                arg(4)?.parse()?,
            );
            let report =
                runtime.block_on(grpc_load(url, conns, streams, Duration::from_secs(secs)))?;
            println!("{}", report.json());
            Ok(())
        }
        other => Err(format!("unknown command {other}").into()),
    }
}

async fn ws_origin(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// One gRPC message: the uncompressed flag, the length, the bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

async fn grpc_origin(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(stream).await else {
                return;
            };
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                tokio::spawn(async move {
                    let mut body = request.into_body();
                    let mut received = BytesMut::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        received.extend_from_slice(&chunk);
                    }
                    let response = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap_or_default();
                    let Ok(mut send) = respond.send_response(response, false) else {
                        return;
                    };
                    // The call's own message back: the request body is one framed message.
                    let _ = send.send_data(received.freeze(), false);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let _ = send.send_trailers(trailers);
                });
            }
        });
    }
}

/// What a load generator saw.
struct Report {
    latencies_us: Vec<u64>,
    errors: u64,
    seconds: f64,
}

impl Report {
    fn json(mut self) -> String {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let avg = if n == 0 {
            0.0
        } else {
            self.latencies_us.iter().sum::<u64>() as f64 / n as f64 / 1000.0
        };
        let p99 = if n == 0 {
            0.0
        } else {
            self.latencies_us[(n * 99 / 100).min(n - 1)] as f64 / 1000.0
        };
        format!(
            "{{\"requests\": {n}, \"errors\": {}, \"seconds\": {:.3}, \"avg_ms\": {avg:.3}, \"p99_ms\": {p99:.3}}}",
            self.errors, self.seconds
        )
    }

    fn merge(reports: Vec<(Vec<u64>, u64)>, seconds: f64) -> Self {
        let mut out = Self {
            latencies_us: Vec::new(),
            errors: 0,
            seconds,
        };
        for (latencies, errors) in reports {
            out.latencies_us.extend(latencies);
            out.errors += errors;
        }
        out
    }
}

async fn ws_load(url: String, conns: usize, length: Duration) -> Result<Report> {
    let message = "x".repeat(64);
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (url, message) = (url.clone(), message.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                return (latencies, 1);
            };
            while Instant::now() < deadline {
                let sent = Instant::now();
                if ws.send(Message::text(message.clone())).await.is_err() {
                    errors += 1;
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Text(back))) if back.as_str() == message => {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            (latencies, errors)
        }));
    }
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await?);
    }
    Ok(Report::merge(reports, started.elapsed().as_secs_f64()))
}

async fn grpc_load(url: String, conns: usize, streams: usize, length: Duration) -> Result<Report> {
    let uri: http::Uri = url.parse()?;
    let addr = format!(
        "{}:{}",
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80)
    );
    let body = grpc_frame(&[b'x'; 64]);
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let tcp = TcpStream::connect(&addr).await?;
        tcp.set_nodelay(true)?;
        let (client, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(connection);
        for _ in 0..streams {
            let (mut client, uri, body) = (client.clone(), uri.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match unary_call(&mut client, &uri, body.clone()).await {
                        Ok(true) => latencies.push(sent.elapsed().as_micros() as u64),
                        Ok(false) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (latencies, errors)
            }));
        }
    }
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await?);
    }
    Ok(Report::merge(reports, started.elapsed().as_secs_f64()))
}

/// One unary call; whether it answered 200, the message sent and `grpc-status: 0`.
async fn unary_call(
    client: &mut h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    body: Bytes,
) -> Result<bool> {
    let request = http::Request::post(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let ready = client.clone().ready().await?;
    *client = ready;
    let (response, mut send) = client.send_request(request, false)?;
    send.send_data(body.clone(), true)?;
    let response = response.await?;
    let ok = response.status() == 200;
    let mut received = response.into_body();
    let mut message = BytesMut::new();
    while let Some(chunk) = received.data().await {
        let chunk = chunk?;
        let _ = received.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let trailers = received.trailers().await?;
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.as_bytes() == b"0");
    Ok(ok && status == Some(true) && message.as_ref() == body.as_ref())
}
