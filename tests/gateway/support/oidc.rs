//! A real, certified OpenID Provider for the tests that check the gateway against what such a
//! server actually does, not against the harness's own stand-ins (`idp`, `introspection`):
//! panva's `oidc-provider` (pinned in `tests/oidc-provider/package-lock.json`, installed by
//! `make test-deps`), run by the machine's `node` from `tests/oidc-provider/server.js` on an
//! ephemeral loopback port.
//!
//! It issues client_credentials access tokens for resource indicators (JWTs for some, opaque
//! tokens for another), introspects and revokes them, publishes its keys at its discovery
//! document's `jwks_uri`, and rotates its signing key on request. Stopped by pid on drop; it
//! also exits by itself when its stdin (held here) closes.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::time::Duration;

use serde_json::{json, Value};

use super::client::client;
use super::conf::Conf;
use super::process::{kill, spawn_with_ready_line};

/// The service that gets tokens for itself (client_credentials, `client_secret_basic`) and
/// revokes them; registered in server.js.
pub const SERVICE_CLIENT: (&str, &str) = ("orders-service", "orders-service-secret");
/// The gateway's own client at the provider, allowed to introspect (a protected resource).
pub const GATEWAY_CLIENT: (&str, &str) = ("portcullis", "portcullis-introspection-secret");

/// Resource indicators server.js knows (RFC 8707), and what their tokens are.
/// JWT access tokens for `api://orders`, valid 5 minutes.
pub const ORDERS_JWT: &str = "api://orders";
/// JWT access tokens with audience `api://orders` that expire after one second.
pub const ORDERS_BRIEF_JWT: &str = "api://orders/brief";
/// JWT access tokens for another API (`aud: api://billing`).
pub const BILLING_JWT: &str = "api://billing";
/// Opaque access tokens with audience `api://orders`, for introspection.
pub const ORDERS_OPAQUE: &str = "api://orders/opaque";
/// The audience of the orders API's tokens, JWT or opaque.
pub const ORDERS_AUDIENCE: &str = "api://orders";

/// How long the provider may take to start (Node, the library, an RSA key).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `node tests/oidc-provider/server.js`, until dropped.
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, as the provider names itself in tokens and discovery.
    pub issuer: String,
    child: Option<Child>,
    /// Held open: the provider exits when it closes.
    _stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
}

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider")
}

impl OidcProvider {
    pub fn start() -> Self {
        let package = package_dir();
        assert!(
            package.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed in {}: run `make test-deps` (npm ci there)",
            package.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("provider.stderr")).unwrap();
        let (child, stdin, ready) = spawn_with_ready_line(
            Command::new("node")
                .arg(package.join("server.js"))
                .current_dir(&package)
                .stderr(stderr),
            START_TIMEOUT,
        );
        let mut provider = Self {
            issuer: String::new(),
            child: Some(child),
            _stdin: stdin,
            dir,
        };
        let line = ready.unwrap_or_else(|e| {
            panic!(
                "the OpenID Provider did not say it was ready ({e}); its stderr:\n{}",
                provider.stderr()
            )
        });
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not the ready line ({e}): {line}"));
        provider.issuer = ready["issuer"].as_str().unwrap().to_string();
        provider
    }

    /// What the provider wrote on stderr (its warnings), for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.stderr")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// A client_credentials access token for `resource`, with `scope` (space-separated) when
    /// given, as the token endpoint answers it (`access_token`, `expires_in`, ...).
    pub fn token_response(&self, resource: &str, scope: Option<&str>) -> Value {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let resp = client()
            .post(self.url("/token"))
            .basic_auth(SERVICE_CLIENT.0, Some(SERVICE_CLIENT.1))
            .form(&form)
            .send()
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().unwrap();
        assert_eq!(status, 200, "token endpoint: {body}");
        body
    }

    /// A client_credentials access token for `resource` with the scope `orders:read`.
    pub fn token(&self, resource: &str) -> String {
        let body = self.token_response(resource, Some("orders:read"));
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Revoke `token` at the revocation endpoint (RFC 7009), as the client it was issued to.
    pub fn revoke(&self, token: &str) {
        let resp = client()
            .post(self.url("/token/revocation"))
            .basic_auth(SERVICE_CLIENT.0, Some(SERVICE_CLIENT.1))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "revocation: {}", resp.text().unwrap());
    }

    /// What the introspection endpoint answers about `token` when the gateway's client asks.
    pub fn introspect(&self, token: &str) -> (u16, Value) {
        let resp = client()
            .post(self.url("/token/introspection"))
            .basic_auth(GATEWAY_CLIENT.0, Some(GATEWAY_CLIENT.1))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json().unwrap())
    }

    /// Make a new signing key the current signer (the old ones stay published); its `kid`.
    pub fn rotate(&self) -> String {
        let resp = client()
            .post(self.url("/test-admin/rotate"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().unwrap();
        body["kid"].as_str().unwrap().to_string()
    }

    /// The `kid`s the provider publishes in its JWKS, newest first.
    pub fn published_kids(&self) -> Vec<String> {
        let jwks: Value = client()
            .get(self.url("/jwks"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    /// Requests the provider served at its introspection endpoint (whoever sent them).
    pub fn introspection_calls(&self) -> u64 {
        self.counts()["introspection"].as_u64().unwrap()
    }

    /// Requests the provider served at its JWKS endpoint.
    pub fn jwks_fetches(&self) -> u64 {
        self.counts()["jwks"].as_u64().unwrap()
    }

    fn counts(&self) -> Value {
        client()
            .get(self.url("/test-admin/counts"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// The gateway's provider for this OpenID Provider, configured by its issuer only: the
    /// JWKS and the introspection endpoint are found through discovery, the gateway
    /// introspects as `GATEWAY_CLIENT` (its secret in a file beside the provider's log), and
    /// answers are cached for one second. Its JWTs name their client in `client_id` (RFC 9068
    /// §2.2); the gateway reads that member of introspection answers by itself.
    pub fn provider(&self) -> Conf {
        let secret_file = self.dir.path().join("gateway-client-secret");
        std::fs::write(&secret_file, format!("{}\n", GATEWAY_CLIENT.1)).unwrap();
        Conf::from(json!({
            "issuer": self.issuer,
            "audiences": [ORDERS_AUDIENCE],
            "algorithms": ["RS256"],
            "keys": { "oidc_discovery": true },
            "claims": { "client_id": "client_id" },
            "introspection": {
                "discovery": true,
                "client_id": GATEWAY_CLIENT.0,
                "client_secret_file": secret_file,
                "cache": { "ttl": "1s", "inactive_ttl": "1s" },
            },
        }))
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}
