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
