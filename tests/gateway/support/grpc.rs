//! Real gRPC on both sides of the gateway: grpcio (Debian's `python3-grpcio`, gRPC's C-core
//! library, installed by `make test-deps`) as the origin (`tests/grpc/echo_server.py`, service
//! `echo.Echo`) and as the client (`tests/grpc/call.py`, which makes the calls it is given and
//! prints what it saw as JSON). Both run under the system interpreter, which is the one
//! Debian's package installs into. The server is stopped by pid on drop and also exits when
//! its stdin (held here) closes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::process::{kill, spawn_with_ready_line};

/// The interpreter `python3-grpcio` is installed for.
const PYTHON: &str = "/usr/bin/python3";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc")
        .join(name)
}

/// `echo_server.py`, cleartext or with TLS, until dropped.
pub struct GrpcOrigin {
    pub addr: SocketAddr,
    child: Option<Child>,
    _stdin: Option<ChildStdin>,
}

impl GrpcOrigin {
    /// Cleartext HTTP/2 (h2c), or TLS with `cert` and `key` (PEM files) when given.
    pub fn start(tls: Option<(&Path, &Path)>) -> Self {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script("echo_server.py"));
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        cmd.stderr(Stdio::inherit());
        let (child, stdin, line) = spawn_with_ready_line(&mut cmd, Duration::from_secs(15));
        let line = line.expect("the gRPC server says it listens (is python3-grpcio installed?)");
        let ready: Value = serde_json::from_str(&line).unwrap();
        let port = ready["port"].as_u64().unwrap() as u16;
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
            _stdin: stdin,
        }
    }
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

/// Make `calls` (see `call.py`) to `target` with grpcio, over TLS trusting `ca` when given
/// (else cleartext h2c); what the client saw of each, in order.
pub fn grpc_calls(target: SocketAddr, ca: Option<&Path>, calls: Value) -> Vec<Value> {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script("call.py")).arg(target.to_string());
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    let out = cmd
        .arg(calls.to_string())
        .output()
        .expect("python3 runs call.py");
    assert!(
        out.status.success(),
        "call.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The metadata values named `name` in a list of pairs, in order.
pub fn metadata<'a>(pairs: &'a Value, name: &str) -> Vec<&'a str> {
    pairs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == name)
        .map(|p| p[1].as_str().unwrap())
        .collect()
}
