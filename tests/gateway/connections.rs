//! The client connection's lifecycle: how long an idle keep-alive connection is kept, and
//! how many requests one connection carries. Raw sockets, real time (short timeouts set in
//! the configuration).

use crate::support::*;
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
    get(&mut c, "/two");
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
        "server:\n  keepalive_timeout: 0s\n  max_requests_per_connection: 0\nlisteners: [{address: 127.0.0.1:1}]\nadmin: {address: 127.0.0.1:2}\nupstreams: {a: {backends: [127.0.0.1:9]}}\nroutes: [{name: r, match: {path_prefix: /}, upstream: a, auth: public}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.keepalive_timeout: between 1s and 1h"),
        "{err}"
    );
    assert!(
        err.contains("server.max_requests_per_connection: between 1 and 1000000"),
        "{err}"
    );
}
