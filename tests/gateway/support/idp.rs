//! Identity providers for the JWT tests: `TestIdp` serves a JWKS (and OIDC discovery) over
//! HTTP and can rotate keys, fail or answer slowly; `SigningIdp` signs RS256 tokens with a key
//! the gateway reads from a PEM file, and writes its `identity_providers:` section;
//! `corp_gateway` starts a gateway with it as provider `corp`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::pkey::PKey;
use openssl::rsa::Rsa;

use serde_json::json;

use super::conf::{identity_providers, Conf};
use super::gateway::Gateway;
use super::origins::Echo;

/// A test identity provider: serves a JWKS over HTTP on loopback, and can rotate keys, fail,
/// or answer slowly. Counts the JWKS requests it receives.
pub struct TestIdp {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<IdpState>>,
    pub fetches: Arc<AtomicUsize>,
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
        let state = Arc::new(Mutex::new(IdpState {
            jwks,
            status: 200,
            delay: Duration::ZERO,
            discovery: None,
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
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
        let doc = json!({
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl SigningIdp {
    pub fn new() -> Self {
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
        self.token(json!({
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
        self.token(json!({
            "iss": SIGNING_ISS, "aud": SIGNING_AUD, "sub": sub, "iat": now(), "exp": now() + 300,
            "realm_access": {"roles": roles},
            "scope": scopes.join(" "),
            "permissions": permissions,
        }))
    }

    /// This IdP as a provider (issuer, audience, RS256 with its key as `k1`, and where the
    /// roles, permissions and tenant are in its tokens), for a test to change or to name.
    pub fn provider(&self) -> Conf {
        Conf::from(json!({
            "issuer": SIGNING_ISS,
            "audiences": [SIGNING_AUD],
            "algorithms": ["RS256"],
            "keys": { "pem_file": self.public_pem, "kid": "k1" },
            "claims": {
                "roles": "realm_access.roles",
                "permissions": "permissions",
                "tenant": "tid",
            },
        }))
    }

    /// The `identity_providers:` section for this IdP as provider `name`.
    pub fn provider_yaml(&self, name: &str) -> String {
        identity_providers([(name, self.provider())])
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
