//! An OPA server for the OPA mode's tests: `tests/opa/opa_data_api.py` serves OPA's Data API
//! over the policies it is given, evaluated by rego-cpp (PyPI's `regopy`, which `make
//! test-deps` installs into `tests/opa/.pylib`), another Rego interpreter than the regorus
//! the gateway embeds. It records every decision request it gets (`asked`) and can be made
//! slow or made to fail (`control`). Stopped by pid on drop; it also exits when its stdin
//! (held here) closes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{kill, spawn_with_ready_line};

const PYTHON: &str = "/usr/bin/python3";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opa")
}

pub struct OpaServer {
    pub addr: SocketAddr,
    policies: Vec<PathBuf>,
    data: Option<PathBuf>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl OpaServer {
    /// Serving `policies` (and `data`) on an ephemeral port.
    pub fn start(policies: &[&Path], data: Option<&Path>) -> Self {
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            policies: policies.iter().map(|p| p.to_path_buf()).collect(),
            data: data.map(Path::to_path_buf),
            child: None,
            stdin: None,
        };
        server.run();
        server
    }

    /// `http://ADDR/v1/data/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/v1/data/{path}", self.addr)
    }

    fn run(&mut self) {
        let pylib = dir().join(".pylib");
        assert!(
            pylib.join("regopy").exists(),
            "{} is missing: `make test-deps` installs regopy there",
            pylib.display()
        );
        let mut cmd = Command::new(PYTHON);
        cmd.arg(dir().join("opa_data_api.py"))
            .env("PYTHONPATH", &pylib)
            .arg("--port")
            .arg(self.addr.port().to_string());
        for p in &self.policies {
            cmd.arg("--policy").arg(p);
        }
        if let Some(d) = &self.data {
            cmd.arg("--data").arg(d);
        }
        cmd.stderr(Stdio::inherit());
        let (child, stdin, line) = spawn_with_ready_line(&mut cmd, Duration::from_secs(15));
        let line = line.expect("the OPA stand-in says it listens");
        let ready: Value = serde_json::from_str(&line).unwrap();
        self.addr.set_port(ready["port"].as_u64().unwrap() as u16);
        self.child = Some(child);
        self.stdin = stdin;
    }

    /// Stop it (the port is free until `restart`).
    pub fn stop(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Every decision request so far: `[{"path", "headers", "body"}]`.
    pub fn asked(&self) -> Vec<Value> {
        reqwest::blocking::get(format!("http://{}/_asked", self.addr))
            .unwrap()
            .json()
            .unwrap()
    }

    /// Wait `delay_ms` before each answer; answer `status` (0: decide) with an empty body.
    pub fn control(&self, delay_ms: u64, status: u16) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("http://{}/_control", self.addr))
            .json(&json!({"delay_ms": delay_ms, "status": status}))
            .send()
            .unwrap();
        assert!(resp.status().is_success());
    }
}

impl Drop for OpaServer {
    fn drop(&mut self) {
        self.stop();
    }
}
