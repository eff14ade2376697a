//! A real Redis for the distributed rate-limit, revocation and nonce tests: Debian's
//! `redis-server` on a free loopback port, stopped and restarted on the same port at will.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{free_port, kill, wait_for_port};

/// How long an outage test keeps Redis down after its last failed call before restarting
/// it: longer than a connection's reconnect attempts take, so that the last of them has
/// failed, as in a real outage, and left its error behind.
pub const OUTAGE: Duration = Duration::from_secs(1);

/// Debian's `redis-server` on a free loopback port, without persistence; stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Start (again) on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (make test installs it)");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        assert!(
            wait_for_port(addr, Duration::from_secs(10)),
            "redis-server did not start"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
