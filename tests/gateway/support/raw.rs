//! Raw HTTP/1.1 on a TCP socket, for requests no well-behaved client would send (smuggling,
//! malformed framing, pipelining): send bytes, read what comes back, pick out the statuses and
//! the body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Send raw bytes on a new connection and read the whole answer (the request should say
/// `Connection: close`).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Send raw bytes on one connection and read until the server closes it or stays quiet for
/// `idle`; returns everything received.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], idle: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(idle)).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of a raw HTTP/1.1 response with Content-Length.
pub fn raw_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Status codes of every response in a raw HTTP/1.1 exchange.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// A TLS connection to `addr` (the certificate not checked; SNI `localhost`), offering `alpn`
/// when given, reads timing out after 10 s: for raw bytes over TLS.
pub fn raw_tls_connect(
    addr: SocketAddr,
    alpn: Option<&[u8]>,
) -> openssl::ssl::SslStream<TcpStream> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut tls = SslConnector::builder(SslMethod::tls()).unwrap();
    tls.set_verify(SslVerifyMode::NONE);
    if let Some(protos) = alpn {
        tls.set_alpn_protos(protos).unwrap();
    }
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tls.build().connect("localhost", tcp).unwrap()
}

/// Write each of `writes` in turn, `pause` apart, then read until the server closes the
/// connection, which it must do before the stream's 10 s read timeout; everything received.
pub fn raw_writes_until_closed(
    stream: &mut (impl Read + Write),
    writes: &[&[u8]],
    pause: Duration,
) -> String {
    for (i, bytes) in writes.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        // The server may close after refusing; what it answered is still read below.
        let _ = stream.write_all(bytes);
    }
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "not closed after {took:?}");
    String::from_utf8_lossy(&out).into_owned()
}
