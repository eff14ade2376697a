//! API keys: the key format, how keys are stored (digests only), and the keyring built from a
//! consumers file.
//!
//! A key looks like `ptc_live_7q2m9x4k1c_<43 base64url characters>`: a recognisable prefix, the
//! environment (`live` or `test`), a key id, and a 256-bit secret. Files hold only
//! `sha256:<hex>` of the whole key, or `hmac-sha256:<hex>` with a server-side pepper, so a leaked
//! consumers file gives no usable key. A presented key is looked up by its digest (one hash
//! map probe) and the stored digest is then compared in constant time.

use super::crypto;
use super::{parse_time, valid_name, AuthError, Identity};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const PREFIX: &str = "ptc";
/// Bytes of randomness in a key's secret (256 bits).
const SECRET_BYTES: usize = 32;
/// Length of a key id in characters.
const ID_LEN: usize = 10;
const ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }
}

/// The parts of a well-formed key.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub environment: Environment,
    pub id: &'a str,
}

/// The environment and id of a key, if it has the right shape.
pub fn parse(key: &str) -> Option<KeyParts<'_>> {
    let mut parts = key.splitn(4, '_');
    let (Some(PREFIX), Some(env), Some(id), Some(secret)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let environment = match env {
        "live" => Environment::Live,
        "test" => Environment::Test,
        _ => return None,
    };
    let id_ok = (4..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(KeyParts { environment, id })
}

/// A new key (`ptc_<env>_<id>_<secret>`) and its id, from the operating system's CSPRNG.
pub fn generate(environment: Environment) -> Result<(String, String), String> {
    let mut random = [0u8; SECRET_BYTES + ID_LEN];
    openssl::rand::rand_bytes(&mut random).map_err(|e| format!("no randomness: {e}"))?;
    let (secret, id_bytes) = random.split_at(SECRET_BYTES);
    let id: String = id_bytes
        .iter()
        .map(|b| char::from(ID_ALPHABET[usize::from(*b) % ID_ALPHABET.len()]))
        .collect();
    let key = format!(
        "{PREFIX}_{}_{id}_{}",
        environment.as_str(),
        URL_SAFE_NO_PAD.encode(secret)
    );
    Ok((key, id))
}

/// How keys are digested: plain SHA-256, or HMAC-SHA256 with a secret pepper.
#[derive(Clone, Default)]
pub struct Hasher {
    pepper: Option<Vec<u8>>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("peppered", &self.pepper.is_some())
            .finish()
    }
}

impl Hasher {
    pub fn new(pepper: Option<Vec<u8>>) -> Self {
        Self { pepper }
    }

    /// Plain SHA-256 without a pepper file; HMAC-SHA256 with the pepper read from it (at
    /// least 32 bytes).
    pub fn from_pepper_file(path: Option<&std::path::Path>) -> Result<Self, String> {
        let pepper = path.map(super::read_secret_file).transpose()?;
        if pepper.as_ref().is_some_and(|p| p.len() < 32) {
            return Err("the pepper must be at least 32 bytes".into());
        }
        Ok(Self::new(pepper))
    }

    fn label(&self) -> &'static str {
        if self.pepper.is_some() {
            "hmac-sha256"
        } else {
            "sha256"
        }
    }

    pub fn digest(&self, key: &str) -> [u8; 32] {
        match &self.pepper {
            None => Sha256::digest(key.as_bytes()).into(),
            Some(pepper) => crypto::hmac_sha256(pepper, key.as_bytes()),
        }
    }

    /// `sha256:<hex>` or `hmac-sha256:<hex>`, as written in a consumers file.
    pub fn stored_form(&self, key: &str) -> String {
        format!("{}:{}", self.label(), hex::encode(self.digest(key)))
    }

    /// The digest in a consumers-file entry, checking it was made the way this hasher makes
    /// them (a `sha256:` entry cannot match keys on a peppered gateway, and vice versa).
    fn parse_stored(&self, s: &str) -> Result<[u8; 32], String> {
        let (label, hex_digest) = s
            .split_once(':')
            .ok_or("expected `sha256:<64 hex digits>`")?;
        if label != self.label() {
            return Err(format!(
                "a `{label}` digest, but this gateway stores `{}` digests{}",
                self.label(),
                if self.pepper.is_some() {
                    " (a pepper is configured)"
                } else {
                    ""
                }
            ));
        }
        let bytes = hex::decode(hex_digest).map_err(|_| "the digest is not hex")?;
        bytes
            .try_into()
            .map_err(|_| "the digest must be 64 hex digits".to_string())
    }
}

// ------------------------------------------------------------------ consumers file

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumersFile {
    #[serde(default)]
    consumers: Vec<ConsumerSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerSection {
    name: String,
    tenant: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// A rate-limit tier named in the main configuration.
    tier: Option<String>,
    #[serde(default)]
    keys: Vec<KeySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySection {
    id: String,
    hash: String,
    created: String,
    expires: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// A consumer: who a key belongs to.
#[derive(Debug)]
pub struct Consumer {
    pub name: String,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    pub tier: Option<String>,
}

/// One stored key.
#[derive(Debug)]
pub struct ConsumerKey {
    pub id: String,
    pub consumer: Arc<Consumer>,
    pub created: String,
    pub expires: Option<String>,
    expires_at: Option<u64>,
    pub disabled: bool,
    digest: [u8; 32],
    /// Unix seconds of the last accepted use; 0 = never (since start or reload).
    last_used: AtomicU64,
    /// What the gateway tells the backend, built once.
    identity: Arc<Identity>,
}

impl ConsumerKey {
    pub fn last_used(&self) -> Option<u64> {
        Some(self.last_used.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
}

/// Every consumer and key of one consumers file, indexed by key digest.
#[derive(Debug, Default)]
pub struct ConsumerKeys {
    by_digest: HashMap<[u8; 32], Arc<ConsumerKey>>,
    pub consumers: Vec<Arc<Consumer>>,
    /// Keys in file order (for the admin listing).
    pub keys: Vec<Arc<ConsumerKey>>,
}

impl ConsumerKeys {
    /// Build a keyring from a consumers file's text. Every problem is reported, each with
    /// the path of its key; a file with any problem is refused as a whole.
    pub fn parse(
        text: &str,
        hasher: &Hasher,
        tiers: &dyn Fn(&str) -> bool,
    ) -> Result<ConsumerKeys, Vec<String>> {
        let file: ConsumersFile = serde_yaml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let mut ring = ConsumerKeys::default();
        let mut names = std::collections::HashSet::new();
        let mut ids = BTreeMap::new();
        for (i, c) in file.consumers.iter().enumerate() {
            let at = format!("consumers[{i}]");
            if !valid_name(&c.name) {
                problems.push(format!(
                    "{at}.name: letters, digits and - _ . : @ only, at most 128"
                ));
            } else if !names.insert(c.name.clone()) {
                problems.push(format!("{at}.name: \"{}\" is listed twice", c.name));
            }
            if let Some(t) = &c.tenant {
                if !valid_name(t) {
                    problems.push(format!(
                        "{at}.tenant: letters, digits and - _ . : @ only, at most 128"
                    ));
                }
            }
            for (j, s) in c.scopes.iter().enumerate() {
                if !valid_name(s) {
                    problems.push(format!(
                        "{at}.scopes[{j}]: letters, digits and - _ . : @ only, at most 128"
                    ));
                }
            }
            if let Some(t) = &c.tier {
                if !tiers(t) {
                    problems.push(format!(
                        "{at}.tier: \"{t}\" is not a tier of the main configuration"
                    ));
                }
            }
            let consumer = Arc::new(Consumer {
                name: c.name.clone(),
                tenant: c.tenant.clone(),
                scopes: c.scopes.clone(),
                tier: c.tier.clone(),
            });
            let identity = Arc::new(Identity {
                method: "api_key",
                provider: "consumers".into(),
                subject: String::new(),
                scopes: c.scopes.clone(),
                tenant: c.tenant.clone(),
                client_id: Some(c.name.clone()),
                tier: c.tier.clone(),
                ..Identity::default()
            });
            for (j, k) in c.keys.iter().enumerate() {
                let at = format!("{at}.keys[{j}]");
                if !(4..=32).contains(&k.id.len())
                    || !k
                        .id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    problems.push(format!(
                        "{at}.id: 4-32 lower-case letters and digits, as in the key"
                    ));
                }
                if let Some(other) = ids.insert(k.id.clone(), at.clone()) {
                    problems.push(format!("{at}.id: \"{}\" is also {other}", k.id));
                }
                let digest = match hasher.parse_stored(&k.hash) {
                    Ok(d) => d,
                    Err(e) => {
                        problems.push(format!("{at}.hash: {e}"));
                        continue;
                    }
                };
                if let Err(e) = parse_time(&k.created) {
                    problems.push(format!("{at}.created: {e}"));
                }
                let expires_at = match k.expires.as_deref().map(parse_time) {
                    Some(Err(e)) => {
                        problems.push(format!("{at}.expires: {e}"));
                        None
                    }
                    Some(Ok(t)) => Some(t),
                    None => None,
                };
                let entry = Arc::new(ConsumerKey {
                    id: k.id.clone(),
                    consumer: consumer.clone(),
                    created: k.created.clone(),
                    expires: k.expires.clone(),
                    expires_at,
                    disabled: k.disabled,
                    digest,
                    last_used: AtomicU64::new(0),
                    identity: Arc::new(Identity {
                        key_id: Some(k.id.clone()),
                        ..(*identity).clone()
                    }),
                });
                if ring.by_digest.insert(digest, entry.clone()).is_some() {
                    problems.push(format!("{at}.hash: the same key is listed twice"));
                }
                ring.keys.push(entry);
            }
            ring.consumers.push(consumer);
        }
        if problems.is_empty() {
            Ok(ring)
        } else {
            Err(problems)
        }
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The identity for a presented key, or why it is refused. `environment` is the one
    /// this gateway accepts.
    pub fn authenticate(
        &self,
        presented: &str,
        hasher: &Hasher,
        environment: Environment,
        now: u64,
    ) -> Result<Arc<Identity>, AuthError> {
        let Some(parts) = parse(presented) else {
            // Not even shaped like a key: as unknown as any other, without a hint.
            return Err(AuthError::ApiKeyUnknown);
        };
        if parts.environment != environment {
            return Err(AuthError::ApiKeyWrongEnvironment(environment));
        }
        let digest = hasher.digest(presented);
        let entry = self
            .by_digest
            .get(&digest)
            .filter(|e| crypto::constant_time_eq(&e.digest, &digest))
            .ok_or(AuthError::ApiKeyUnknown)?;
        if entry.disabled {
            return Err(AuthError::ApiKeyDisabled);
        }
        if entry.expires_at.is_some_and(|t| now >= t) {
            return Err(AuthError::ApiKeyExpired);
        }
        // A relaxed store a request: cheap, and exact enough for "when was it last used".
        if entry.last_used.load(Ordering::Relaxed) != now {
            entry.last_used.store(now, Ordering::Relaxed);
        }
        Ok(entry.identity.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(key: &str, extra: &str) -> ConsumerKeys {
        let hasher = Hasher::default();
        let parts = parse(key).unwrap();
        let yaml = format!(
            "consumers:\n  - name: acme\n    tenant: acme-corp\n    scopes: [invoices:read]\n    keys:\n      - id: {}\n        hash: {}\n        created: 2026-11-01\n{extra}",
            parts.id,
            hasher.stored_form(key)
        );
        ConsumerKeys::parse(&yaml, &hasher, &|_| true).unwrap()
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_are_unique() {
        let (a, id) = generate(Environment::Live).unwrap();
        let (b, _) = generate(Environment::Live).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("ptc_live_"));
        let parts = parse(&a).unwrap();
        assert_eq!(
            (parts.environment, parts.id),
            (Environment::Live, id.as_str())
        );
        let (t, _) = generate(Environment::Test).unwrap();
        assert_eq!(parse(&t).unwrap().environment, Environment::Test);
        for bad in [
            "",
            "ptc_live_abcd",
            "ptc_prod_abcdefghij_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ptc_live_ABCDEFGHIJ_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ptc_live_abcdefghij_AAAA",
            "xyz_live_abcdefghij_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ptc_live_abcdefghij_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_found_by_digest_and_refused_precisely() {
        let (key, _) = generate(Environment::Live).unwrap();
        let ring = ring_with(&key, "");
        let h = Hasher::default();
        let id = ring
            .authenticate(&key, &h, Environment::Live, 1_800_000_000)
            .unwrap();
        assert_eq!(id.method, "api_key");
        assert_eq!(id.client_id.as_deref(), Some("acme"));
        assert_eq!(id.tenant.as_deref(), Some("acme-corp"));
        assert_eq!(id.scopes, ["invoices:read"]);
        assert_eq!(id.key_id.as_deref(), parse(&key).map(|p| p.id));
        assert!(ring.keys[0].last_used().is_some());

        let (other, _) = generate(Environment::Live).unwrap();
        assert_eq!(
            ring.authenticate(&other, &h, Environment::Live, 0)
                .unwrap_err(),
            AuthError::ApiKeyUnknown
        );
        assert_eq!(
            ring.authenticate("not-a-key", &h, Environment::Live, 0)
                .unwrap_err(),
            AuthError::ApiKeyUnknown
        );
        assert_eq!(
            ring.authenticate(&key, &h, Environment::Test, 0)
                .unwrap_err(),
            AuthError::ApiKeyWrongEnvironment(Environment::Test)
        );
        let expired = ring_with(&key, "        expires: 2027-01-01\n");
        let jan_2027 = 1_798_761_600;
        assert!(expired
            .authenticate(&key, &h, Environment::Live, jan_2027 - 1)
            .is_ok());
        assert_eq!(
            expired
                .authenticate(&key, &h, Environment::Live, jan_2027)
                .unwrap_err(),
            AuthError::ApiKeyExpired
        );
        let disabled = ring_with(&key, "        disabled: true\n");
        assert_eq!(
            disabled
                .authenticate(&key, &h, Environment::Live, 0)
                .unwrap_err(),
            AuthError::ApiKeyDisabled
        );
    }

    #[test]
    fn a_peppered_gateway_needs_peppered_digests() {
        let (key, id) = generate(Environment::Live).unwrap();
        let peppered = Hasher::new(Some(b"server-side pepper, 32 bytes long!".to_vec()));
        assert!(peppered.stored_form(&key).starts_with("hmac-sha256:"));
        let plain_yaml = format!(
            "consumers:\n  - name: a\n    keys:\n      - {{id: {id}, hash: \"{}\", created: 2026-11-01}}\n",
            Hasher::default().stored_form(&key)
        );
        let problems = ConsumerKeys::parse(&plain_yaml, &peppered, &|_| true).unwrap_err();
        assert!(problems[0].contains("a `sha256` digest, but this gateway stores `hmac-sha256`"));
    }

    #[test]
    fn a_bad_file_is_refused_with_every_problem() {
        let yaml = "consumers:\n  - name: a b\n    tier: platinum\n    keys:\n      - {id: K1, hash: 'sha256:zz', created: yesterday}\n      - {id: k2, hash: 'md5:00', created: 2026-01-01, expires: soon}\n  - name: c\n    keys:\n      - {id: k2, hash: 'sha256:00', created: 2026-01-01}\n";
        let problems = ConsumerKeys::parse(yaml, &Hasher::default(), &|t| t == "gold").unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "consumers[0].name:",
            "consumers[0].tier: \"platinum\" is not a tier",
            "consumers[0].keys[0].id:",
            "consumers[0].keys[0].hash: the digest is not hex",
            "consumers[0].keys[1].hash: a `md5` digest",
            "consumers[1].keys[0].id: \"k2\" is also consumers[0].keys[1]",
            "consumers[1].keys[0].hash: the digest must be 64 hex digits",
        ] {
            assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
        }
        assert!(ConsumerKeys::parse(
            "consumers: [{name: a, pasword: x}]",
            &Hasher::default(),
            &|_| true
        )
        .unwrap_err()[0]
            .contains("unknown field `pasword`"));
    }
}

// ------------------------------------------------------------------ runtime

/// Where keys are read from a request, and the keyring in force (swapped whole on reload).
pub struct ApiKeys {
    pub path: std::path::PathBuf,
    pub environment: Environment,
    /// Header names a key may come in (default `X-API-Key`).
    pub headers: Vec<http::HeaderName>,
    /// Query parameter a key may come in; `None` (the default) ignores the query string.
    pub query_param: Option<String>,
    pub hasher: Hasher,
    /// Rate-limit tier names a consumer may name.
    tiers: Vec<String>,
    /// `portcullis_auth_decisions_total{provider="api_key",result="allow"}`, resolved once.
    pub allowed: prometheus::IntCounter,
    ring: std::sync::RwLock<Arc<ConsumerKeys>>,
    /// Size and modification time of the file last loaded, to notice changes.
    stamp: std::sync::Mutex<Option<(u64, std::time::SystemTime)>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("path", &self.path)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl crate::reload::Reloadable for ApiKeys {
    fn what(&self) -> &'static str {
        "consumers file"
    }

    fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn stamp(&self) -> &std::sync::Mutex<Option<(u64, std::time::SystemTime)>> {
        &self.stamp
    }

    fn read_and_swap(&self) -> Result<usize, Vec<String>> {
        let ring = Self::read(&self.path, &self.hasher, &self.tiers)?;
        let n = ring.len();
        match self.ring.write() {
            Ok(mut r) => *r = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(n)
    }

    fn record(&self, outcome: Result<usize, ()>) {
        let m = crate::metrics::metrics();
        match outcome {
            Ok(n) => {
                m.consumer_reloads.with_label_values(&["success"]).inc();
                m.api_keys.set(n as i64);
            }
            Err(()) => m.consumer_reloads.with_label_values(&["invalid"]).inc(),
        }
    }
}

/// A key as found in a request.
pub enum Presented<'a> {
    Missing,
    /// More than one key (two headers, or a header and the query): which one counts?
    Ambiguous,
    Key(std::borrow::Cow<'a, str>),
}

impl ApiKeys {
    /// Load the consumers file; every problem is reported.
    pub fn load(
        path: std::path::PathBuf,
        environment: Environment,
        headers: Vec<http::HeaderName>,
        query_param: Option<String>,
        hasher: Hasher,
        tiers: Vec<String>,
    ) -> Result<Self, Vec<String>> {
        let stamp = crate::reload::file_stamp(&path);
        let ring = Self::read(&path, &hasher, &tiers)?;
        Ok(Self {
            path,
            environment,
            headers,
            query_param,
            hasher,
            tiers,
            allowed: crate::metrics::metrics()
                .auth_decisions
                .with_label_values(&["api_key", "allow", "ok"]),
            ring: std::sync::RwLock::new(Arc::new(ring)),
            stamp: std::sync::Mutex::new(stamp),
        })
    }

    fn read(
        path: &std::path::Path,
        hasher: &Hasher,
        tiers: &[String],
    ) -> Result<ConsumerKeys, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        ConsumerKeys::parse(&text, hasher, &|t| tiers.iter().any(|n| n == t))
    }

    pub fn current(&self) -> Arc<ConsumerKeys> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The key a request carries, from the configured headers (and the query parameter when
    /// one is configured).
    pub fn presented<'a>(
        &self,
        headers: &'a http::HeaderMap,
        query: Option<&'a str>,
    ) -> Presented<'a> {
        let mut found: Option<std::borrow::Cow<'a, str>> = None;
        let mut count = 0;
        for name in &self.headers {
            for v in headers.get_all(name) {
                count += 1;
                found = v
                    .to_str()
                    .ok()
                    .map(|s| std::borrow::Cow::Borrowed(s.trim()));
            }
        }
        if let (Some(param), Some(q)) = (&self.query_param, query) {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                if k == param.as_str() {
                    count += 1;
                    found = Some(std::borrow::Cow::Owned(v.into_owned()));
                }
            }
        }
        match (count, found) {
            (0, _) => Presented::Missing,
            (1, Some(k)) => Presented::Key(k),
            (1, None) => Presented::Key(std::borrow::Cow::Borrowed("")),
            _ => Presented::Ambiguous,
        }
    }

    pub fn authenticate(&self, presented: &str, now: u64) -> Result<Arc<Identity>, AuthError> {
        self.current()
            .authenticate(presented, &self.hasher, self.environment, now)
    }
}

/// `query` without every `name=...` pair, or `None` when it has none.
pub fn query_without(query: &str, name: &str) -> Option<String> {
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            let decoded = url::form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            let drop = decoded == name;
            removed |= drop;
            !drop
        })
        .collect();
    removed.then(|| kept.join("&"))
}

#[cfg(test)]
mod query_tests {
    use super::query_without;

    #[test]
    fn the_key_parameter_is_removed_from_the_query_and_nothing_else() {
        assert_eq!(
            query_without("api_key=x&page=2", "api_key").as_deref(),
            Some("page=2")
        );
        assert_eq!(
            query_without("a=1&api%5Fkey=x&api_key=y", "api_key").as_deref(),
            Some("a=1")
        );
        assert_eq!(query_without("api_key=x", "api_key").as_deref(), Some(""));
        assert_eq!(query_without("page=2&api_keys=1", "api_key"), None);
    }
}
