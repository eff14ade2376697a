//! `portcullis stdio`: the JSON-lines decision protocol, a front end to the same engine as
//! the proxy. One message per line, `{"src": .., "dest": .., "body": {..}}`; each reply swaps
//! `src` and `dest`, carries `in_reply_to` = the request's `msg_id`, and is flushed at once.
//!
//! - `init` with `jwt_public_key` (a PEM public key or certificate, a JWK or JWKS, or else an
//!   HMAC secret of at least 32 bytes) sets the one identity provider; `iss` and `aud` are not
//!   compared then (the key is all there is to trust), tokens need `exp`, no leeway.
//!   `portcullis stdio -c FILE` takes providers, routes and policies from a configuration
//!   instead.
//! - `api_request` (`method`, `path`, `headers`, optional `required_permission`) gets an
//!   `api_response` with `status`, and `service` + `user_context` when allowed or `error`
//!   when not. `path` may be absolute-form (`http://host/p`), and `sni` names the TLS
//!   server name of an mTLS listener; the request checks are the proxy's. Without a configuration, `/api/<name>/...` is served by `<name>-service`.
//! - A line that is not a message is reported on stderr; a message of an unknown type or with
//!   bad fields gets an `error` reply. Neither stops the stream.

use crate::app::App;
use crate::auth::jwt::{KeySet, ProviderRules};
use crate::auth::provider::{KeySource, Provider, TokenCache};
use crate::auth::ClaimMap;
use crate::engine::{Decision, RequestFacts};
use crate::policy::{evaluate, Credential, Denial, Facts, Policy, Trace};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::{json, Map, Value};
use std::io::{BufRead, Write};
use std::sync::Arc;

/// Where decisions come from: a composed configuration, or the key `init` gave (if any yet).
pub enum Source {
    Config(Box<App>),
    Key(Option<Box<Provider>>),
}

/// A source from a composed configuration, with remote keys fetched once before the first
/// line.
pub fn source_from_app(app: App) -> std::io::Result<Source> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(app.fetch_keys());
    Ok(Source::Config(Box::new(app)))
}

/// Serve the protocol on stdin/stdout until stdin ends.
pub fn run(source: Source) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut session = Session::new(source);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match rt.block_on(session.handle(&line)) {
            Ok(reply) => {
                serde_json::to_writer(&mut out, &reply)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Err(why) => eprintln!("stdio: ignored a line: {why}"),
        }
    }
    Ok(())
}

pub struct Session {
    source: Source,
}

impl Session {
    pub fn new(source: Source) -> Self {
        Self { source }
    }

    /// The reply to one line, or why the line has none.
    pub async fn handle(&mut self, line: &str) -> Result<Value, String> {
        let msg: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let body = msg
            .get("body")
            .and_then(Value::as_object)
            .ok_or("no `body` object")?;
        let Some(msg_id) = body.get("msg_id").filter(|v| v.is_u64() || v.is_i64()) else {
            return Err("no `msg_id` to reply to".into());
        };
        let reply_body = match body.get("type").and_then(Value::as_str) {
            Some("init") => self.init(body),
            Some("api_request") => self.api_request(body).await,
            Some(other) => Err((10, format!("unknown message type \"{}\"", short(other)))),
            None => Err((12, "no `type`".into())),
        };
        let mut reply = match reply_body {
            Ok(b) => b,
            Err((code, text)) => json!({"type": "error", "code": code, "text": text}),
        };
        // Exactly the protocol's fields: a reply names the message it answers, and carries no
        // id of its own.
        if let Some(r) = reply.as_object_mut() {
            r.insert("in_reply_to".into(), msg_id.clone());
        }
        Ok(json!({
            "src": msg.get("dest").cloned().unwrap_or(Value::Null),
            "dest": msg.get("src").cloned().unwrap_or(Value::Null),
            "body": reply,
        }))
    }

    fn init(&mut self, body: &Map<String, Value>) -> Result<Value, (u32, String)> {
        if let Some(key) = body.get("jwt_public_key") {
            let Some(key) = key.as_str() else {
                return Err((12, "`jwt_public_key` must be a string".into()));
            };
            let provider = provider_from_key(key).map_err(|e| (12, e))?;
            match &mut self.source {
                Source::Key(p) => *p = Some(Box::new(provider)),
                Source::Config { .. } => {
                    return Err((
                        12,
                        "started with a configuration; its providers are used".into(),
                    ))
                }
            }
        }
        Ok(json!({"type": "init_ok"}))
    }

    async fn api_request(&self, body: &Map<String, Value>) -> Result<Value, (u32, String)> {
        let method = body
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .ok_or((12, "`method` must be an HTTP method".to_string()))?;
        let url = body
            .get("path")
            .and_then(Value::as_str)
            .ok_or((12, "`path` must be a string".to_string()))?;
        // An absolute-form `path` names its authority, as a proxy client's request line does.
        let (authority, target) =
            super::explain::split_url(url).map_err(|e| (12, format!("`path`: {e}")))?;
        let mut headers = http::HeaderMap::new();
        if let Some(h) = body.get("headers") {
            let h = h
                .as_object()
                .ok_or((12, "`headers` must be an object".to_string()))?;
            for (name, value) in h {
                let values: Vec<&str> = match value {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => return Err((12, format!("header {} must be a string", short(name)))),
                };
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| (12, format!("{} is not a header name", short(name))))?;
                for v in values {
                    let v = http::HeaderValue::from_str(v)
                        .map_err(|_| (12, format!("header {name} has an invalid value")))?;
                    headers.append(name.clone(), v);
                }
            }
        }
        let extra_permission = match body.get("required_permission") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.as_str()),
            Some(_) => return Err((12, "`required_permission` must be a string".into())),
        };
        let sni = match body.get("sni") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err((12, "`sni` must be a string".into())),
        };
        let now = crate::unix_now();
        let mut preflight = false;
        let (service, identity, denial) = match &self.source {
            Source::Config(app) => {
                let mut facts = RequestFacts::new(&method, target.as_bytes(), &headers, None, now);
                facts.authority = authority;
                facts.sni = sni;
                facts.https = sni.is_some();
                facts.extra_permission = extra_permission;
                // The protocol carries no body: a signed request is checked as bodiless.
                facts.body = Some(b"");
                match app.engine.decide(&facts, &mut Trace::default()).await {
                    Decision::Forward(f) => (
                        app.upstream_name(f.route.upstream).map(str::to_string),
                        f.identity,
                        None,
                    ),
                    Decision::Refuse(r) => (
                        r.route
                            .and_then(|route| app.upstream_name(route.upstream))
                            .map(str::to_string),
                        r.identity,
                        Some(r.denial),
                    ),
                    Decision::NeedsBody => (None, None, Some(Denial::internal())),
                    Decision::Preflight(p) => {
                        preflight = true;
                        (
                            app.upstream_name(p.route.upstream).map(str::to_string),
                            None,
                            None,
                        )
                    }
                }
            }
            Source::Key(provider) => {
                let path = target.split_once('?').map_or(target, |(p, _)| p);
                key_decision(
                    provider.as_deref(),
                    &method,
                    path,
                    &headers,
                    now,
                    extra_permission,
                )
                .await
            }
        };
        let mut reply = json!({"type": "api_response"});
        match denial {
            Some(d) => {
                reply["status"] = json!(d.status);
                reply["error"] = json!(protocol_message(&d));
            }
            // The gateway answers an allowed CORS preflight itself; nothing is forwarded.
            None if preflight => {
                reply["status"] = json!(204);
                reply["service"] = json!(service);
                reply["preflight"] = json!(true);
            }
            None => {
                reply["status"] = json!(200);
                reply["service"] = json!(service);
                if let Some(id) = identity {
                    let role = id
                        .extra
                        .iter()
                        .find(|(n, _)| n.as_str() == ROLE_HEADER)
                        .map(|(_, v)| v.clone())
                        .or_else(|| id.roles.first().cloned());
                    reply["user_context"] = json!({
                        "user_id": id.subject,
                        "role": role,
                        "permissions": id.permissions,
                    });
                }
            }
        }
        Ok(reply)
    }
}

/// Where the token's single `role` claim lands in the identity.
const ROLE_HEADER: &str = "x-user-role";

/// Without a configuration: `/api/<name>/...` is `<name>-service`, and needs a valid token
/// from the `init` key (plus the request's `required_permission`).
async fn key_decision(
    provider: Option<&Provider>,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
    now: u64,
    extra_permission: Option<&str>,
) -> (
    Option<String>,
    Option<Arc<crate::auth::Identity>>,
    Option<Denial>,
) {
    let canonical = match crate::routing::canon::canonical_path(path) {
        Ok(p) => p,
        Err(e) => return (None, None, Some(Denial::new(400, e.code(), e.message()))),
    };
    let mut segments = canonical.split('/').skip(1);
    let service = match (segments.next(), segments.next()) {
        (Some("api"), Some(name)) if !name.is_empty() => format!("{name}-service"),
        _ => {
            return (None, None, Some(Denial::route_not_found()));
        }
    };
    let facts = Facts {
        method,
        headers,
        query: None,
        client_ip: None,
        now,
        extra_permission,
        client_cert: None,
        host: None,
        path: &canonical,
        raw_path: path,
        https: false,
        body: None,
    };
    let Some(provider) = provider else {
        // Before `init` no key is known, so no token can be valid.
        let d = match crate::policy::bearer_present(headers) {
            false => Denial::new(401, "token_missing", "A bearer token is required."),
            true => Denial::new(
                401,
                "token_unknown_key",
                "No key to verify tokens with yet.",
            ),
        };
        return (Some(service), None, Some(d));
    };
    let policy = Policy {
        credential: Credential::Jwt(0),
        ..Policy::public()
    };
    let auth = crate::policy::Authenticators {
        providers: std::slice::from_ref(provider),
        api_keys: None,
        revocations: None,
        client_certs: None,
        bound_tokens: false,
        signing: None,
        forward_auth: &[],
    };
    let verdict = evaluate(&policy, &auth, &facts, &mut Trace::default()).await;
    (Some(service), verdict.identity, verdict.denial)
}

/// The protocol's error texts.
fn protocol_message(d: &Denial) -> String {
    match (d.status, d.code) {
        (401, "token_expired") => "Token expired".into(),
        (401, "token_missing") => "Missing token".into(),
        (401, _) => "Invalid or expired token".into(),
        _ => d.message.to_string(),
    }
}

/// A provider trusting exactly this key.
pub fn provider_from_key(key: &str) -> Result<Provider, String> {
    let (keys, algorithms) = key_set(key.trim())?;
    let rules = ProviderRules {
        issuer: "stdio".into(),
        audiences: vec!["stdio".into()],
        algorithms,
        leeway_secs: 0,
        max_token_age_secs: None,
        require_exp: true,
        typ: None,
        max_token_bytes: crate::auth::jwt::DEFAULT_MAX_TOKEN_BYTES,
        key_only: true,
    };
    rules.check()?;
    let role = http::HeaderName::from_static(ROLE_HEADER);
    Ok(Provider {
        name: "stdio".into(),
        rules,
        keys: KeySource::Static(Arc::new(keys)),
        claims: ClaimMap {
            subject_fallback: vec!["user_id".into()],
            roles: Some("roles".into()),
            permissions: Some("permissions".into()),
            headers: vec![(role, "role".into())],
            ..ClaimMap::default()
        },
        cache: TokenCache::new(0, 0),
        series: crate::metrics::ProviderSeries::new("stdio"),
        introspection: None,
    })
}

fn family_algorithms(family: AlgorithmFamily, ec_p384: bool) -> Vec<Algorithm> {
    use Algorithm::*;
    match family {
        AlgorithmFamily::Rsa => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmFamily::Ec if ec_p384 => vec![ES384],
        AlgorithmFamily::Ec => vec![ES256],
        AlgorithmFamily::Ed => vec![EdDSA],
        AlgorithmFamily::Hmac => vec![HS256, HS384, HS512],
    }
}

fn key_set(key: &str) -> Result<(KeySet, Vec<Algorithm>), String> {
    if key.starts_with("-----BEGIN") {
        let (family, p384) = pem_family(key.as_bytes())?;
        let mut keys = KeySet::default();
        keys.add_pem(None, family, key.as_bytes())?;
        return Ok((keys, family_algorithms(family, p384)));
    }
    if key.starts_with('{') {
        let doc: Value = serde_json::from_str(key).map_err(|e| format!("not a JWK: {e}"))?;
        let jwks = if doc.get("keys").is_some() {
            doc
        } else {
            json!({ "keys": [doc] })
        };
        let (keys, _warnings) = KeySet::from_jwks(jwks.to_string().as_bytes())?;
        if keys.is_empty() {
            return Err("the JWK(S) holds no usable public key".into());
        }
        let mut algorithms = Vec::new();
        for k in jwks["keys"].as_array().into_iter().flatten() {
            let family = match (k["kty"].as_str(), k["crv"].as_str()) {
                (Some("RSA"), _) => (AlgorithmFamily::Rsa, false),
                (Some("EC"), Some("P-384")) => (AlgorithmFamily::Ec, true),
                (Some("EC"), _) => (AlgorithmFamily::Ec, false),
                (Some("OKP"), _) => (AlgorithmFamily::Ed, false),
                _ => continue,
            };
            for a in family_algorithms(family.0, family.1) {
                if !algorithms.contains(&a) {
                    algorithms.push(a);
                }
            }
        }
        return Ok((keys, algorithms));
    }
    let mut keys = KeySet::default();
    keys.add_hmac_secret(None, key.as_bytes())?;
    Ok((keys, family_algorithms(AlgorithmFamily::Hmac, false)))
}

/// The key type of a PEM public key or certificate, and whether an EC key is P-384.
fn pem_family(pem: &[u8]) -> Result<(AlgorithmFamily, bool), String> {
    use openssl::pkey::{Id, PKey};
    let key = match PKey::public_key_from_pem(pem) {
        Ok(k) => k,
        Err(_) => openssl::x509::X509::from_pem(pem)
            .and_then(|c| c.public_key())
            .or_else(|_| openssl::rsa::Rsa::public_key_from_pem_pkcs1(pem).and_then(PKey::from_rsa))
            .map_err(|_| "not a PEM public key or certificate".to_string())?,
    };
    match key.id() {
        Id::RSA => Ok((AlgorithmFamily::Rsa, false)),
        Id::EC => {
            let p384 = key
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .is_some_and(|n| n == openssl::nid::Nid::SECP384R1);
            Ok((AlgorithmFamily::Ec, p384))
        }
        Id::ED25519 => Ok((AlgorithmFamily::Ed, false)),
        _ => Err("only RSA, EC (P-256, P-384) and Ed25519 keys are accepted".into()),
    }
}

/// Client-supplied text for a message: escaped and cut short.
fn short(s: &str) -> String {
    crate::auth::claims::printable(&s.chars().take(64).collect::<String>())
}
