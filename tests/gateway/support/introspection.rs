//! A test OAuth 2.0 token introspection server (RFC 7662), with OIDC discovery, on loopback.
//! Tokens are activated and deactivated by the test; answers can be replaced by garbage, slowed
//! down, or the whole server taken down (connections refused) and brought back on the same
//! port. Counts the requests it receives and records what the last one looked like.
//! Thread per connection, `Connection: close`; stopped when dropped.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

pub const INTROSPECTION_PATH: &str = "/introspect";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// What the last introspection request (`POST /introspect`) looked like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `"client_secret_basic"`, `"client_secret_post"`, `"none"` (no credentials, or a
    /// `client_id` without a secret in the form), `"multiple"` (Basic *and* a form secret:
    /// answered 400 `invalid_request`, RFC 6749 §2.3), or `"other"` (a non-Basic
    /// `Authorization` scheme, e.g. Bearer: answered 401).
    pub auth: &'static str,
    /// The client id presented (decoded), by whichever method.
    pub client_id: Option<String>,
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
    /// The request's `Content-Type` header, as sent.
    pub content_type: Option<String>,
}

struct State {
    /// Active tokens and the JSON object answered for each.
    tokens: HashMap<String, Value>,
    overridden: Option<(u16, String, String)>,
    delay: Duration,
    discovery: Option<String>,
    last: Option<Seen>,
    calls_for: HashMap<String, usize>,
}

struct Shared {
    client_id: String,
    client_secret: String,
    state: Mutex<State>,
    calls: AtomicUsize,
    discovery_calls: AtomicUsize,
    /// `None` while down.
    listener: Mutex<Option<TcpListener>>,
    stop: AtomicBool,
}

pub struct TestIntrospection {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl TestIntrospection {
    /// Listens on 127.0.0.1:0; accepts the client `client_id` / `client_secret`.
    pub fn start(client_id: &str, client_secret: &str) -> Self {
        let listener = listen("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            state: Mutex::new(State {
                tokens: HashMap::new(),
                overridden: None,
                delay: Duration::ZERO,
                discovery: None,
                last: None,
                calls_for: HashMap::new(),
            }),
            calls: AtomicUsize::new(0),
            discovery_calls: AtomicUsize::new(0),
            listener: Mutex::new(Some(listener)),
            stop: AtomicBool::new(false),
        });
        // The acceptor only hands connections over, draining the kernel's listen backlog (128)
        // while another thread spawns their threads; the spawner ends with the acceptor.
        let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
        let sh = shared.clone();
        std::thread::spawn(move || {
            while !sh.stop.load(Ordering::Relaxed) {
                let accepted = match &*sh.listener.lock().unwrap() {
                    Some(l) => l.accept().ok(),
                    None => None,
                };
                match accepted {
                    Some((conn, _)) => drop(tx.send(conn)),
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            for conn in rx {
                let sh = sh.clone();
                // Out of threads: drop the connection rather than the server.
                let _ = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || serve(conn, &sh));
            }
        });
        Self { addr, shared }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}{INTROSPECTION_PATH}", self.addr)
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// Make `token` active: answered with `fields` (a JSON object) plus `"active": true`, or
    /// exactly `fields` when it holds an `active` key already.
    pub fn activate(&self, token: &str, fields: Value) {
        let Value::Object(mut map) = fields else {
            panic!("activate: fields must be a JSON object, got {fields}");
        };
        map.entry("active").or_insert(Value::Bool(true));
        self.state()
            .tokens
            .insert(token.to_string(), Value::Object(map));
    }

    /// `token` is answered `{"active": false}` from now on.
    pub fn deactivate(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// Answer every introspection request (whatever its credentials) with this status,
    /// content type and raw body; `None` restores normal answers.
    pub fn set_override(&self, o: Option<(u16, String, String)>) {
        self.state().overridden = o;
    }

    /// Sleep this long before answering each introspection request (not discovery).
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Down: close the listening socket (new connections are refused; requests already
    /// accepted are still answered). Up: listen again on the same port.
    pub fn set_down(&self, down: bool) {
        let mut slot = self.shared.listener.lock().unwrap();
        if down {
            *slot = None;
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.is_none() {
            match listen(&self.addr.to_string()) {
                Ok(l) => *slot = Some(l),
                Err(e) if Instant::now() > deadline => panic!("relisten on {}: {e}", self.addr),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `POST /introspect` requests received, whatever their credentials or outcome.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// `POST /introspect` requests whose form carried `token`.
    pub fn calls_for(&self, token: &str) -> usize {
        self.state().calls_for.get(token).copied().unwrap_or(0)
    }

    pub fn last_request(&self) -> Option<Seen> {
        self.state().last.clone()
    }

    /// Serve `/.well-known/openid-configuration`: `issuer`, `introspection_endpoint`, and
    /// `jwks_uri` when given. Until then that path is a 404.
    pub fn enable_discovery(&self, jwks_uri: Option<&str>) {
        let mut doc = json!({"issuer": self.issuer(), "introspection_endpoint": self.endpoint()});
        if let Some(uri) = jwks_uri {
            doc["jwks_uri"] = json!(uri);
        }
        self.state().discovery = Some(doc.to_string());
    }

    /// Requests for the discovery document (any method, enabled or not).
    pub fn discovery_calls(&self) -> usize {
        self.shared.discovery_calls.load(Ordering::SeqCst)
    }
}

impl Drop for TestIntrospection {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        *self.shared.listener.lock().unwrap() = None;
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Why the body could not be read as framed (answered with this status).
    bad_body: Option<u16>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        let mut it = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        it.next().map(|(_, v)| v.as_str())
    }
}

/// Headers, then exactly `Content-Length` bytes of body, however the reads split them.
fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = [0u8; 4096];
    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if raw.len() > 64 * 1024 {
            return None;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let method = start.next()?.to_string();
    let target = start.next()?;
    let path = target.split('?').next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut req = Request {
        method,
        path,
        headers,
        body: raw[head_end + 4..].to_vec(),
        bad_body: None,
    };
    let mut lengths = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let len = match (lengths.next(), lengths.next()) {
        (None, _) => Ok(0),
        (Some((_, l)), None) => l.parse::<usize>().map_err(|_| 400),
        _ => Err(400),
    };
    // Only Content-Length framing is supported.
    let len = if req.header("transfer-encoding").is_some() {
        Err(411)
    } else {
        len
    };
    let len = match len {
        Ok(len) => len,
        Err(status) => {
            req.bad_body = Some(status);
            return Some(req);
        }
    };
    let expect = req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if expect && req.body.len() < len {
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    while req.body.len() < len {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.body.extend_from_slice(&buf[..n]),
        }
    }
    req.body.truncate(len);
    Some(req)
}

fn serve(mut conn: TcpStream, sh: &Shared) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(req) = read_request(&mut conn) else {
        return;
    };
    let (status, content_type, body, extra) = match req.path.as_str() {
        INTROSPECTION_PATH if req.method == "POST" => introspect(sh, &req),
        INTROSPECTION_PATH => json_answer(405, "{}".into(), "Allow: POST\r\n"),
        DISCOVERY_PATH => {
            sh.discovery_calls.fetch_add(1, Ordering::SeqCst);
            match (&sh.state.lock().unwrap().discovery, req.method.as_str()) {
                (Some(doc), "GET") => json_answer(200, doc.clone(), ""),
                (Some(_), _) => json_answer(405, "{}".into(), "Allow: GET\r\n"),
                (None, _) => json_answer(404, "{}".into(), ""),
            }
        }
        _ => json_answer(404, "{}".into(), ""),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
    let _ = conn.flush();
}

/// Status, content type, body, extra header lines.
type Answer = (u16, String, String, &'static str);

fn json_answer(status: u16, body: String, extra: &'static str) -> Answer {
    (status, "application/json".into(), body, extra)
}

fn error(status: u16, code: &str) -> Answer {
    let basic = "WWW-Authenticate: Basic realm=\"introspection\"\r\n";
    let extra = if status == 401 { basic } else { "" };
    json_answer(status, json!({ "error": code }).to_string(), extra)
}

/// RFC 7662 §2: client authentication (RFC 6749 §2.3.1), then the token's state.
fn introspect(sh: &Shared, req: &Request) -> Answer {
    sh.calls.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    let mut repeated = false;
    let mut field = |k: &str| {
        let mut vs = form.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone());
        let v = vs.next();
        repeated |= vs.next().is_some(); // RFC 6749 §3.2: parameters MUST NOT repeat
        v
    };
    let (token, hint) = (field("token"), field("token_type_hint"));
    let (form_id, form_secret) = (field("client_id"), field("client_secret"));
    let authorization = req.header("authorization");
    // (method, presented id, credentials valid). A form `client_id` next to Basic
    // credentials is tolerated if it names the same client; a form secret too is two methods.
    let (auth, client_id, valid) = match (authorization, &form_id, &form_secret) {
        (Some(_), _, Some(_)) => ("multiple", form_id.clone(), false),
        (Some(h), _, None) => match basic_credentials(h) {
            Some(Some((id, secret))) => {
                let same = form_id.as_ref().is_none_or(|f| *f == id);
                let ok = same && id == sh.client_id && secret == sh.client_secret;
                ("client_secret_basic", Some(id), ok)
            }
            Some(None) => ("client_secret_basic", None, false),
            None => ("other", form_id.clone(), false),
        },
        (None, id, Some(secret)) => {
            let ok = id.as_deref() == Some(sh.client_id.as_str()) && *secret == sh.client_secret;
            ("client_secret_post", id.clone(), ok)
        }
        (None, id, None) => ("none", id.clone(), false),
    };
    let seen = Seen {
        auth,
        client_id,
        token: token.clone(),
        token_type_hint: hint,
        content_type: req.header("content-type").map(str::to_string),
    };
    let (delay, overridden, answer) = {
        let mut s = sh.state.lock().unwrap();
        if let Some(t) = &token {
            *s.calls_for.entry(t.clone()).or_insert(0) += 1;
        }
        s.last = Some(seen);
        let answer = token.as_ref().and_then(|t| s.tokens.get(t)).cloned();
        (s.delay, s.overridden.clone(), answer)
    };
    std::thread::sleep(delay);
    if let Some((status, content_type, body)) = overridden {
        return (status, content_type, body, "");
    }
    if let Some(status) = req.bad_body {
        return error(status, "invalid_request");
    }
    if repeated || auth == "multiple" {
        return error(400, "invalid_request");
    }
    if !valid {
        return error(401, "invalid_client");
    }
    if token.is_none() {
        return error(400, "invalid_request");
    }
    let body = answer.unwrap_or_else(|| json!({"active": false}));
    json_answer(200, body.to_string(), "")
}

/// `None`: not the Basic scheme. `Some(None)`: Basic, but not `base64(id ":" secret)`.
/// Both halves are form-urlencoded before base64 (RFC 6749 §2.3.1), so they are decoded.
fn basic_credentials(header: &str) -> Option<Option<(String, String)>> {
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok();
    let text = decoded.and_then(|d| String::from_utf8(d).ok());
    Some(text.and_then(|t| {
        let (id, secret) = t.split_once(':')?;
        Some((form_decode(id)?, form_decode(secret)?))
    }))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
