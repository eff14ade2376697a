//! The gateway under test: the real binary started on fresh loopback ports with a generated
//! configuration (`config_text` around a test's own sections), waited on until ready, read
//! through its admin listener (metrics, pid) and its access log, and killed when dropped.
//! Also `eventually`, the polling every test that waits on the gateway uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::client;
use super::process::{free_port, kill, still_running, wait_for_port, BIN};

/// The gateway under test.
pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// The parts of a configuration every test shares, around a test's `upstreams:` and
/// `routes:` sections.
pub fn config_text(dir: &Path, listeners: &str, admin: SocketAddr, body: &str) -> String {
    config_text_with_server(dir, listeners, admin, "", body)
}

/// Like `config_text`, with `server` (indented YAML lines) added to the `server:` section.
pub fn config_text_with_server(
    dir: &Path,
    listeners: &str,
    admin: SocketAddr,
    server: &str,
    body: &str,
) -> String {
    format!(
        "server:\n  threads: 2\n  pid_file: {dir}/portcullis.pid\n  upgrade_sock: {dir}/upgrade.sock\n  grace_period: 1s\n  graceful_shutdown_timeout: 2s\n{server}listeners:\n{listeners}admin:\n  address: {admin}\naccess_log:\n  enabled: true\n  path: {dir}/access.log\n{body}",
        dir = dir.display()
    )
}

impl Gateway {
    /// Start the gateway with `body` (YAML holding `upstreams:` and `routes:`), and wait
    /// until it is ready.
    pub fn start(body: &str) -> Self {
        Self::start_with_listeners("", body)
    }

    /// Like `start`, with the given YAML list items as listeners (the first is `addr`);
    /// empty for one plain listener on a fresh port.
    pub fn start_with_listeners(listeners: &str, body: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), listeners, "", body)
    }

    /// Like `start`, with `server` (indented YAML lines, e.g. `"  keepalive_timeout: 1s\n"`)
    /// added to the `server:` section.
    pub fn start_with_server(server: &str, body: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), "", server, body)
    }

    /// Like `start`, with both the listeners and the `server` lines given.
    pub fn start_with(listeners: &str, server: &str, body: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), listeners, server, body)
    }

    fn start_in(dir: tempfile::TempDir, listeners: &str, server: &str, body: &str) -> Self {
        for _ in 0..5 {
            let listeners_yaml = if listeners.is_empty() {
                format!("  - address: 127.0.0.1:{}\n", free_port())
            } else {
                listeners.to_string()
            };
            let listen: SocketAddr = listeners_yaml
                .split_once("address: ")
                .and_then(|(_, rest)| rest.lines().next())
                .and_then(|a| a.trim().parse().ok())
                .expect("a listener address");
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let config_path = dir.path().join("portcullis.yaml");
            std::fs::write(
                &config_path,
                config_text_with_server(dir.path(), &listeners_yaml, admin, server, body),
            )
            .unwrap();
            let mut child = spawn_gateway(&config_path, &[], dir.path());
            if wait_for_port(listen, Duration::from_secs(20))
                && wait_for_port(admin, Duration::from_secs(5))
                && still_running(&mut child)
            {
                let mut gw = Self {
                    child: Some(child),
                    addr: listen,
                    admin,
                    dir,
                    config_path,
                };
                gw.wait_ready();
                // Pingora exits when a listener cannot bind; a port that another test took
                // would still have answered above, so the admin listener must be this
                // process's own.
                let pid = gw.child.as_ref().map(Child::id);
                if gw.child.as_mut().is_some_and(still_running) && gw.admin_pid() == pid {
                    return gw;
                }
                let _ = gw.take_child();
                let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().unwrap());
                drop(gw);
                return Self::start_in(dir, listeners, server, body);
            }
            kill(&mut child);
        }
        panic!("the gateway did not start; config:\n{body}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The pid of the process answering on the admin address.
    pub fn admin_pid(&self) -> Option<u32> {
        let v: serde_json::Value = client()
            .get(self.admin_url("/health/live"))
            .send()
            .ok()?
            .json()
            .ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }

    pub fn wait_ready(&self) {
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = c.get(self.admin_url("/health/ready")).send() {
                if r.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway never became ready");
    }

    pub fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The value of one series, e.g. `portcullis_backend_healthy{backend="..",upstream="echo"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// `portcullis explain --json` of `method path` with `headers` on this gateway's file.
    pub fn explain(&self, headers: &[&str], method: &str, path: &str) -> serde_json::Value {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "explain",
            "-c",
            self.config_path.to_str().unwrap(),
            "--json",
        ]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd.args([method, path]).output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("explain printed no JSON ({e}): {out:?}"))
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// Wait for `cond` to hold, polling; false on timeout.
    pub fn eventually(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        eventually(timeout, &mut cond)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

pub fn eventually(timeout: Duration, cond: &mut dyn FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn spawn_gateway(config: &Path, extra: &[&str], dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.stderr"))
        .unwrap();
    Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(config)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn portcullis")
}
