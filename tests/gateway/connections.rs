//! The client connection's lifecycle: the TLS handshake's and each request head's deadline,
//! head and line sizes, the pace of a request body, how long an idle keep-alive connection is
//! kept, how many requests one connection carries and how many connections a listener holds.
//! Raw sockets (and an OpenSSL client for TLS), real time (short timeouts set in the
//! configuration).

use crate::support::*;
use crate::tls::tls_gateway_with_server;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One response read off the connection: its head, lower-cased, and its body.
fn read_response(r: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "the connection closed before a whole response: {head}"
        );
        head.push_str(&line.to_ascii_lowercase());
        if line == "\r\n" {
            break;
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    (head, body)
}

/// Whether the server closes the connection within `within` (end of stream, nothing more).
fn closed_within(r: &mut BufReader<TcpStream>, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    r.get_ref().set_read_timeout(Some(within)).unwrap();
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => {
            assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
            Some(started.elapsed())
        }
        Err(_) => None,
    }
}

fn connect(gw: &Gateway) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(gw.addr).unwrap())
}

fn get(r: &mut BufReader<TcpStream>, path: &str) {
    r.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start_with_server("  keepalive_timeout: 1s\n", &pass_through(echo.addr));
    let mut c = connect(&gw);
    get(&mut c, "/one");
    let (head, _) = read_response(&mut c);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Within the timeout the connection is reused...
    std::thread::sleep(Duration::from_millis(300));
    // (a client asking to be kept longer does not change the gateway's timeout)
    c.get_mut()
        .write_all(b"GET /two HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=3600\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut c);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // ...and once idle for longer, the gateway closes it (cleanly: nothing is sent).
    let closed = closed_within(&mut c, Duration::from_secs(10));
    let after = closed.expect("the idle connection was still open after 10 s");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert_eq!(echo.received().len(), 2);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_as_soon_as_the_gateway_begins_to_shut_down() {
    let echo = Echo::start();
    let mut gw = Gateway::start(&pass_through(echo.addr));
    let mut c = connect(&gw);
    get(&mut c, "/one");
    let (head, _) = read_response(&mut c);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // SIGTERM starts the 1 s grace period, during which requests in flight finish. An idle
    // connection has none: it is closed (cleanly) at its start, as Pingora closes its own,
    // and not left to the end of the grace period, when the runtime's tasks are dropped.
    let mut child = gw.take_child().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let closed = closed_within(&mut c, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let after = closed.expect("the idle connection stayed open");
    assert!(
        after < Duration::from_millis(700),
        "closed {after:?} after the signal: at the grace period's end, not its start"
    );
    assert_eq!(echo.received().len(), 1);
}

#[test]
fn d5_a_connection_carries_at_most_max_requests_per_connection() {
    let echo = Echo::start();
    let gw = Gateway::start_with_server(
        "  max_requests_per_connection: 2\n",
        &pass_through(echo.addr),
    );
    let mut c = connect(&gw);
    get(&mut c, "/one");
    let (first, _) = read_response(&mut c);
    assert!(!first.contains("connection: close"), "{first}");
    get(&mut c, "/two");
    let (second, _) = read_response(&mut c);
    assert!(second.starts_with("http/1.1 200"), "{second}");
    // The last request it may carry says so, and the connection ends.
    assert!(second.contains("connection: close"), "{second}");
    assert!(closed_within(&mut c, Duration::from_secs(5)).is_some());
    assert_eq!(echo.received().len(), 2);
}

#[test]
fn connection_settings_out_of_range_are_refused_at_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "server:\n  keepalive_timeout: 0s\n  max_requests_per_connection: 0\n  request_header_timeout: 0s\n  tls_handshake_timeout: 2h\n  max_request_head_size: 10\n  request_body_timeout: 0s\nlisteners: [{address: 127.0.0.1:1, max_connections: 0, read_buffer_size: 2000000}]\nadmin: {address: 127.0.0.1:2}\nupstreams: {a: {backends: [127.0.0.1:9]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "server.keepalive_timeout: between 1s and 1h",
        "server.max_requests_per_connection: between 1 and 1000000",
        "server.request_header_timeout: between 1s and 1h",
        "server.tls_handshake_timeout: between 1s and 1h",
        "server.request_body_timeout: between 1s and 1h",
        "server.max_request_head_size: between 1024 and 1048576 bytes",
        "listeners[0].max_connections: between 1 and 1000000",
        "listeners[0].read_buffer_size: between 0 (no buffer) and 1048576 bytes",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// Sends `bytes` one at a time, `every` apart, until the gateway closes the connection or
/// `bytes` run out; on its own thread so that the test can read meanwhile.
fn trickle(conn: &TcpStream, bytes: &'static [u8], every: Duration) -> std::thread::JoinHandle<()> {
    let mut w = conn.try_clone().unwrap();
    std::thread::spawn(move || {
        for b in bytes {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

/// Everything the gateway sends until it closes the connection (at most `within`).
fn answer_within(conn: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    conn.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

fn error_code(answer: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(raw_body(answer)).unwrap_or_default();
    v["error"].as_str().unwrap_or("").to_string()
}

fn closed_metric(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "portcullis_connections_closed_total{{listener=\"{}\",reason=\"{reason}\"}}",
        gw.addr
    ))
    .unwrap_or(0.0)
}

const SLOW: &[u8] = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

#[test]
fn d1_a_request_head_trickled_a_byte_at_a_time_gets_408_at_the_header_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start_with_server(
        "  request_header_timeout: 1s\n  keepalive_timeout: 30s\n",
        &pass_through(echo.addr),
    );
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    // A byte every 100 ms would restart a per-read timeout forever; the deadline is the
    // whole head's.
    let sender = trickle(&conn, SLOW, Duration::from_millis(100));
    let (answer, took) = answer_within(&mut conn, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(error_code(&answer), "request_header_timeout");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );
    sender.join().unwrap();
    assert!(
        echo.received().is_empty(),
        "a partial head reached the origin"
    );
    assert_eq!(closed_metric(&gw, "request_header_timeout"), 1.0);
}

#[test]
fn d1_the_next_head_on_a_kept_alive_connection_has_the_same_deadline() {
    let echo = Echo::start();
    let gw = Gateway::start_with_server(
        "  request_header_timeout: 1s\n  keepalive_timeout: 30s\n",
        &pass_through(echo.addr),
    );
    let mut c = connect(&gw);
    get(&mut c, "/first");
    let (head, _) = read_response(&mut c);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Idle longer than the header timeout between requests is the keep-alive's to judge...
    std::thread::sleep(Duration::from_millis(1500));
    let mut conn = c.into_inner();
    conn.write_all(b"GET /second HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    // ...but once the next head has begun, it has the header timeout to finish.
    let sender = trickle(&conn, SLOW, Duration::from_millis(100));
    let (answer, took) = answer_within(&mut conn, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(error_code(&answer), "request_header_timeout");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    sender.join().unwrap();
    assert_eq!(echo.received().len(), 1);
}

#[test]
fn d2_a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start_with_server("  request_header_timeout: 1s\n", &pass_through(echo.addr));
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    let (answer, took) = answer_within(&mut conn, Duration::from_secs(10));
    // Nothing was asked, so nothing is answered: the connection just ends.
    assert_eq!(answer, "");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert_eq!(closed_metric(&gw, "request_header_timeout"), 1.0);
}

#[test]
fn d3_a_request_head_or_line_over_its_limit_gets_431_and_a_long_target_414() {
    let echo = Echo::start();
    let gw = Gateway::start_with_server(
        "  max_request_head_size: 4096\n  max_request_line_size: 1024\n",
        &pass_through(echo.addr),
    );
    let field = "v".repeat(2000);
    let one_long_field = raw_request(
        gw.addr,
        format!("GET /a HTTP/1.1\r\nHost: a\r\nX-Big: {field}\r\n\r\n").as_bytes(),
    );
    assert!(
        one_long_field.starts_with("HTTP/1.1 431"),
        "{one_long_field}"
    );
    assert_eq!(error_code(&one_long_field), "request_header_too_large");

    let target = raw_request(
        gw.addr,
        format!("GET /{field} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
    );
    assert!(target.starts_with("HTTP/1.1 414"), "{target}");
    assert_eq!(error_code(&target), "uri_too_long");

    let many: String = (0..10)
        .map(|i| format!("X-{i}: {}\r\n", "w".repeat(800)))
        .collect();
    let too_many = raw_request(
        gw.addr,
        format!("GET /a HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    );
    assert!(too_many.starts_with("HTTP/1.1 431"), "{too_many}");
    assert!(
        echo.received().is_empty(),
        "an oversized head reached the origin"
    );

    // Just inside both limits, the request goes through whole.
    let fits: String = (0..3)
        .map(|i| format!("X-{i}: {}\r\n", "w".repeat(1000)))
        .collect();
    let ok = raw_request(
        gw.addr,
        format!("GET /fits HTTP/1.1\r\nHost: a\r\n{fits}\r\n").as_bytes(),
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let seen = &echo.logged()[0];
    assert_eq!(seen.header("x-2").map(str::len), Some(1000));
    assert_eq!(closed_metric(&gw, "line_too_large"), 2.0);
    assert_eq!(closed_metric(&gw, "request_head_too_large"), 1.0);
}

#[test]
fn d3_a_megabyte_header_is_refused_by_default_while_it_is_still_being_sent() {
    let echo = Echo::start();
    let gw = Gateway::start(&pass_through(echo.addr));
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\nX-Big: ")
        .unwrap();
    // 1 MiB more of the same line, sent while the test reads: the answer comes after the
    // default 16 KiB line, not after the megabyte.
    let mut w = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = [b'v'; 16 * 1024];
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (answer, _) = answer_within(&mut conn, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(error_code(&answer), "request_header_too_large");
    sender.join().unwrap();
    assert!(echo.received().is_empty());
}

#[test]
fn d4_an_http2_request_body_that_stalls_gets_408_body_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start_with(
        &format!("  - address: 127.0.0.1:{}\n    h2c: true\n", free_port()),
        "  request_body_timeout: 1s\n",
        &pass_through(echo.addr),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let req = http::Request::post(format!("http://{}/upload", gw.addr))
            .body(())
            .unwrap();
        let (answer, mut body) = client.send_request(req, false).unwrap();
        // The first part of the body, then nothing: the stream stays open.
        body.send_data(bytes::Bytes::from_static(b"ten bytes."), false)
            .unwrap();
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(15), answer)
            .await
            .expect("answered before the client gave up")
            .unwrap();
        let took = started.elapsed();
        assert_eq!(answer.status(), 408);
        let mut received = answer.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = received.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(
            error_body(std::str::from_utf8(&text).unwrap())["error"],
            "body_timeout"
        );
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(4),
            "answered after {took:?}"
        );
        drop(body);
    });
    // The origin never had a whole request to answer.
    assert!(echo.received().is_empty());
}

#[test]
fn d4_a_request_body_trickled_or_stalled_gets_408_body_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start_with_server(
        "  request_body_timeout: 1s\n  request_body_min_rate: 1000\n",
        &pass_through(echo.addr),
    );
    // Ten bytes every 100 ms (100 B/s) keeps each read short but falls behind the pace.
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..100 {
            if w.write_all(&[b'b'; 10]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (answer, took) = answer_within(&mut conn, Duration::from_secs(15));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(error_code(&answer), "body_timeout");
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
    drop(conn);
    sender.join().unwrap();

    // A body that stops: no read waits longer than the body timeout.
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nten bytes.")
        .unwrap();
    let (answer, took) = answer_within(&mut conn, Duration::from_secs(15));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(error_code(&answer), "body_timeout");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");

    // A body at a good pace is proxied whole.
    let ok = raw_request(
        gw.addr,
        format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 50000\r\n\r\n{}",
            "z".repeat(50000)
        )
        .as_bytes(),
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn d6_a_tls_handshake_that_never_finishes_is_dropped_at_the_tls_handshake_timeout() {
    let echo = Echo::start();
    let gw = tls_gateway_with_server("  tls_handshake_timeout: 1s\n", &pass_through(echo.addr)).0;
    // The start of a ClientHello record, and then nothing.
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let (answer, took) = answer_within(&mut conn, Duration::from_secs(10));
    assert_eq!(answer, "");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert_eq!(closed_metric(&gw, "tls_handshake_timeout"), 1.0);
}

#[test]
fn d7_an_h2_connection_that_never_sends_its_preface_is_closed_at_the_header_timeout() {
    let echo = Echo::start();
    let gw = tls_gateway_with_server("  request_header_timeout: 1s\n", &pass_through(echo.addr)).0;
    let mut conn = raw_tls_connect(gw.addr, Some(b"\x02h2"));
    assert_eq!(conn.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    let started = Instant::now();
    // The handshake is done and HTTP/2 agreed; the client never sends its preface.
    let mut buf = [0u8; 64];
    let end = loop {
        match conn.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    let took = started.elapsed();
    // Closed (a clean end, or a reset), never still open at the client's 10 s read timeout.
    assert!(
        end.as_ref()
            .err()
            .is_none_or(|e| e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut),
        "still open after {took:?}: {end:?}"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert_eq!(closed_metric(&gw, "preface_timeout"), 1.0);
}

#[test]
fn d7_an_h2c_connection_that_stops_inside_its_preface_is_closed_at_the_header_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start_with(
        &format!("  - address: 127.0.0.1:{}\n    h2c: true\n", free_port()),
        "  request_header_timeout: 1s\n",
        &pass_through(echo.addr),
    );
    // The preface, and then no SETTINGS frame.
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let (answer, took) = answer_within(&mut conn, Duration::from_secs(10));
    // Taken for HTTP/2 (what came is the server's own SETTINGS frame, type 4), not answered
    // as a malformed HTTP/1.1 request.
    assert_eq!(answer.as_bytes().get(3), Some(&4), "{answer:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert_eq!(closed_metric(&gw, "preface_timeout"), 1.0);
}

#[test]
fn d8_a_listener_over_max_connections_refuses_at_accept_and_counts_what_it_holds() {
    let echo = Echo::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &format!("  - address: 127.0.0.1:{port}\n    max_connections: 3\n"),
        "  request_header_timeout: 30s\n",
        &pass_through(echo.addr),
    );
    let open = format!(
        "portcullis_open_connections{{listener=\"{}\",protocol=\"http/1.1\"}}",
        gw.addr
    );
    let held: Vec<_> = (0..3)
        .map(|_| TcpStream::connect(gw.addr).unwrap())
        .collect();
    assert!(
        gw.eventually(Duration::from_secs(5), || gw.metric(&open) == Some(3.0)),
        "open connections: {:?}",
        gw.metric(&open)
    );
    // The fourth is closed at once, before anything is read from it.
    let mut fourth = TcpStream::connect(gw.addr).unwrap();
    let (answer, took) = answer_within(&mut fourth, Duration::from_secs(10));
    assert_eq!(answer, "");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert_eq!(closed_metric(&gw, "connection_limit"), 1.0);
    // A place freed is a place to take.
    drop(held);
    assert!(gw.eventually(Duration::from_secs(5), || gw.metric(&open) == Some(0.0)));
    let ok = raw_request(
        gw.addr,
        b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn d3_an_http2_header_list_over_the_head_limit_gets_431() {
    let echo = Echo::start();
    let (gw, ca) =
        tls_gateway_with_server("  max_request_head_size: 4096\n", &pass_through(echo.addr));
    let url = format!("https://localhost:{}/h2", gw.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr.port());
    let big = format!("X-Big: {}", "v".repeat(6000));
    // HTTP/2's own answer (the header list is refused before there is a request to proxy).
    let (version_status, body) = curl_https_raw(
        &url,
        &ca,
        &["--http2", "--resolve", &resolve, "-H", &big],
        "%{http_version} %{http_code}",
    );
    assert_eq!(version_status, "2 431", "{body}");
    let small = format!("X-Small: {}", "v".repeat(1000));
    let (version_status, body) = curl_https_raw(
        &url,
        &ca,
        &["--http2", "--resolve", &resolve, "-H", &small],
        "%{http_version} %{http_code}",
    );
    assert_eq!(version_status, "2 200", "{body}");
    assert_eq!(echo.received(), [("GET".to_string(), "/h2".to_string())]);
}
