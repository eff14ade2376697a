//! The black-box harness every integration test uses: the real `portcullis` binary on
//! ephemeral loopback ports with a generated configuration, real origins (`portcullis echo`
//! processes), and origins that misbehave on purpose (a closed port, one that never answers).
//! Everything started here is stopped when its handle is dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod introspection;
pub mod pki;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Still running a moment after it seemed ready (a process that lost a port race exits).
fn still_running(child: &mut Child) -> bool {
    std::thread::sleep(Duration::from_millis(50));
    matches!(child.try_wait(), Ok(None))
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

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
    format!(
        "server:\n  threads: 2\n  pid_file: {dir}/portcullis.pid\n  upgrade_sock: {dir}/upgrade.sock\n  grace_period: 1s\n  graceful_shutdown_timeout: 2s\nlisteners:\n{listeners}admin:\n  address: {admin}\naccess_log:\n  enabled: true\n  path: {dir}/access.log\n{body}",
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
        Self::start_in(tempfile::tempdir().unwrap(), listeners, body)
    }

    fn start_in(dir: tempfile::TempDir, listeners: &str, body: &str) -> Self {
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
                config_text(dir.path(), &listeners_yaml, admin, body),
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
                return Self::start_in(dir, listeners, body);
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

/// An HTTP client that never uses a proxy from the environment and does not retry.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A client that opens a new connection for every request.
pub fn fresh_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// What `portcullis echo` reports.
pub use portcullis::echo::Echo as Echoed;

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

/// The body of a raw HTTP/1.1 response with Content-Length.
pub fn raw_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The JSON error body the gateway writes, checked for shape.
pub fn error_body(text: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    for key in ["error", "message", "request_id"] {
        assert!(
            v[key].as_str().is_some_and(|s| !s.is_empty()),
            "error body lacks `{key}`: {text}"
        );
    }
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A self-signed certificate for `localhost` and `127.0.0.1` (its own CA), written as PEM
/// files into `dir`: returns (certificate path, key path).
pub fn self_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509NameBuilder, X509};

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject
        .append_entry_by_nid(Nid::COMMONNAME, "localhost")
        .unwrap();
    let subject = subject.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(&subject).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
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

/// Status codes of every response in a raw HTTP/1.1 exchange.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// `curl` over HTTPS trusting `ca`; returns (status, body), the status prefixed by the HTTP
/// version when `with_version`.
pub fn curl_https(url: &str, ca: &std::path::Path, extra: &[&str]) -> (u16, String) {
    let (code, body) = curl_https_raw(url, ca, extra, "%{http_code}");
    (code.parse().unwrap_or(0), body)
}

pub fn curl_https_raw(
    url: &str,
    ca: &std::path::Path,
    extra: &[&str],
    w: &str,
) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-w",
            &format!("\n{w}"),
        ])
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed by `make test`");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().to_string(), body.to_string())
}

/// Assert a 401 with a Bearer challenge and the error code `code`; the challenge.
pub fn unauthorized(resp: reqwest::blocking::Response, code: &str) -> String {
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with(r#"Bearer realm="portcullis""#),
        "{challenge}"
    );
    let v = error_body(&resp.text().unwrap());
    assert_eq!(v["error"], code);
    challenge
}

/// A test identity provider: serves a JWKS over HTTP on loopback, and can rotate keys, fail,
/// or answer slowly. Counts the JWKS requests it receives.
pub struct TestIdp {
    pub addr: SocketAddr,
    pub state: Arc<std::sync::Mutex<IdpState>>,
    pub fetches: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
}

pub struct IdpState {
    pub jwks: String,
    pub status: u16,
    pub delay: Duration,
    /// Served at `/.well-known/openid-configuration` when set.
    pub discovery: Option<String>,
}

impl TestIdp {
    pub fn start(jwks: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(std::sync::Mutex::new(IdpState {
            jwks,
            status: 200,
            delay: Duration::ZERO,
            discovery: None,
        }));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, count, flag) = (state.clone(), fetches.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (st, count) = (st.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 4096];
                    let mut req = Vec::new();
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let discovery_path = req.starts_with(b"GET /.well-known/openid-configuration ");
                    let (body, status, delay) = {
                        let s = st.lock().unwrap();
                        match (&s.discovery, discovery_path) {
                            (Some(d), true) => (d.clone(), 200, Duration::ZERO),
                            _ => {
                                count.fetch_add(1, Ordering::SeqCst);
                                (s.jwks.clone(), s.status, s.delay)
                            }
                        }
                    };
                    std::thread::sleep(delay);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(body.as_bytes());
                });
            }
        });
        Self {
            addr,
            state,
            fetches,
            stop,
        }
    }

    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// JWKS requests (discovery requests not counted).
    pub fn fetch_count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set_jwks(&self, jwks: String) {
        self.state.lock().unwrap().jwks = jwks;
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve an OIDC discovery document naming this server's JWKS.
    pub fn enable_discovery(&self) {
        let doc = serde_json::json!({
            "issuer": self.issuer(),
            "jwks_uri": self.jwks_uri(),
        });
        self.state.lock().unwrap().discovery = Some(doc.to_string());
    }

    pub fn set_status(&self, status: u16) {
        self.state.lock().unwrap().status = status;
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub const SIGNING_ISS: &str = "https://idp.test";
pub const SIGNING_AUD: &str = "api://orders";

/// An identity provider that signs RS256 tokens with a fresh key whose public half is a PEM
/// file the gateway's provider points at (`kid: k1`).
pub struct SigningIdp {
    pub signing: jsonwebtoken::EncodingKey,
    pub public_pem: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl SigningIdp {
    pub fn new() -> Self {
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        let dir = tempfile::tempdir().unwrap();
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let public_pem = dir.path().join("idp.pem");
        std::fs::write(&public_pem, key.public_key_to_pem().unwrap()).unwrap();
        let signing =
            jsonwebtoken::EncodingKey::from_rsa_pem(&key.private_key_to_pem_pkcs8().unwrap())
                .unwrap();
        Self {
            signing,
            public_pem,
            _dir: dir,
        }
    }

    pub fn token(&self, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }

    pub fn good_token(&self) -> String {
        self.token(serde_json::json!({
            "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": "alice", "iat": now(), "exp": now() + 300,
            "realm_access": {"roles": ["orders-admin", "user"]},
            "scope": "orders:read orders:write",
            "tid": "acme",
        }))
    }

    /// A token for `sub` with these roles, scopes (space-joined) and permissions.
    pub fn token_for(
        &self,
        sub: &str,
        roles: &[&str],
        scopes: &[&str],
        permissions: &[&str],
    ) -> String {
        self.token(serde_json::json!({
            "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": sub, "iat": now(), "exp": now() + 300,
            "realm_access": {"roles": roles},
            "scope": scopes.join(" "),
            "permissions": permissions,
        }))
    }

    /// The `identity_providers:` section for this IdP as provider `name`.
    pub fn provider_yaml(&self, name: &str) -> String {
        format!(
            "identity_providers:\n  {name}:\n    issuer: {SIGNING_ISS}\n    audiences: [{SIGNING_AUD}]\n    algorithms: [RS256]\n    keys:\n      pem_file: {}\n      kid: k1\n    claims:\n      roles: realm_access.roles\n      permissions: permissions\n      tenant: tid\n",
            self.public_pem.display()
        )
    }
}

/// A gateway with `idp` as provider `corp`, one upstream `echo` (plus `upstream_extra` YAML
/// lines under it) and `routes` (YAML list items).
pub fn corp_gateway(idp: &SigningIdp, echo: &Echo, upstream_extra: &str, routes: &str) -> Gateway {
    Gateway::start(&format!(
        "{provider}upstreams:\n  echo:\n    backends: [\"{origin}\"]\n{upstream_extra}routes:\n{routes}",
        provider = idp.provider_yaml("corp"),
        origin = echo.addr
    ))
}

/// `portcullis keys new` for `consumer`, written into the consumers file `file`; the key.
pub fn new_api_key(file: &Path, consumer: &str, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["keys", "new", "--consumer", consumer, "--write"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("ptc_"), "{key}");
    key
}

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
