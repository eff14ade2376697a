//! The origins behind the gateway: `portcullis echo` processes that log what they receive
//! and report what reached them (`Echoed`), one that accepts connections and never answers,
//! and the `upstreams:`/`routes:` YAML that puts them behind a catch-all route.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::process::{free_port, kill, still_running, wait_for_port, BIN};

/// A `portcullis echo` origin, logging every request it receives.
pub struct Echo {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Echo {
    pub fn start() -> Self {
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            if let Some(e) = Self::try_start_on(addr) {
                return e;
            }
        }
        panic!("could not start an echo origin");
    }

    fn try_start_on(addr: SocketAddr) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("echo.log");
        let mut e = Self::spawn(addr, &log)?;
        e._dir = Some(dir);
        Some(e)
    }

    fn spawn(addr: SocketAddr, log: &Path) -> Option<Self> {
        let mut child = Command::new(BIN)
            .args(["echo", "--listen", &addr.to_string(), "--log"])
            .arg(log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn portcullis echo");
        // A port taken by another test answers too: make sure it is this process listening.
        if wait_for_port(addr, Duration::from_secs(10)) && still_running(&mut child) {
            Some(Self {
                child: Some(child),
                addr,
                log: log.to_path_buf(),
                _dir: None,
            })
        } else {
            kill(&mut child);
            None
        }
    }

    /// Stop the origin (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Start it again on the same address.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(mut e) = Self::spawn(self.addr, &self.log) {
                self.child = e.child.take();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart the echo origin on {}", self.addr);
    }
}

impl Echo {
    /// `(method, path)` of every request this origin received, in order.
    /// Every request the origin logged (`portcullis echo --log`), as it described it.
    pub fn logged(&self) -> Vec<Echoed> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn received(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["method"].as_str().unwrap_or("").to_string(),
                    v["path"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An origin that accepts connections and reads requests but never answers.
pub struct StalledOrigin {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl StalledOrigin {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for StalledOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What `portcullis echo` reports.
pub use portcullis::gateway::echo::Echo as Echoed;

/// The hex SHA-256 of `data`, as `Echoed::body_sha256` reports a body.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Upstreams and routes for one echo origin behind a catch-all route.
pub fn pass_through(origin: SocketAddr) -> String {
    format!(
        "upstreams:\n  echo:\n    backends: [\"{origin}\"]\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: echo\n    auth: public\n"
    )
}

pub fn addrs(origins: &[Echo]) -> Vec<SocketAddr> {
    origins.iter().map(|e| e.addr).collect()
}

/// Upstreams and routes for a pool named `pool` of these origins behind a catch-all route;
/// `pool_extra` adds keys to the pool (indented four spaces).
pub fn pool_of(origins: &[SocketAddr], pool_extra: &str) -> String {
    let list = origins
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "upstreams:\n  pool:\n    backends: [{list}]\n{pool_extra}routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: pool\n    auth: public\n"
    )
}
