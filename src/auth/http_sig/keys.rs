//! The signing-keys file: one shared secret per key id, each bound to a consumer, parsed
//! strictly (every problem reported with its path, never a secret) and hot-reloaded whole.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_yaml::{Mapping, Value};

use crate::auth::{parse_time, valid_name, Identity};

/// Shortest accepted shared secret (RFC 9421 §3.3.3 asks for a strong key; 256 bits).
const MIN_SECRET: usize = 32;
/// Largest signing-keys file read; a larger one is certainly a mistake.
const MAX_KEYS_FILE: u64 = 1024 * 1024;

/// A secret as the keys file writes it: `base64:<standard base64>` of at least
/// [`MIN_SECRET`] bytes. The problem never includes the value.
pub fn decode_secret(text: &str) -> Result<Vec<u8>, &'static str> {
    let Some(encoded) = text.trim().strip_prefix("base64:") else {
        return Err("must be \"base64:\" followed by standard base64");
    };
    match STANDARD.decode(encoded) {
        Ok(bytes) if bytes.len() >= MIN_SECRET => Ok(bytes),
        Ok(_) => Err("must decode to at least 32 bytes"),
        Err(_) => Err("is not valid standard base64 (with padding)"),
    }
}

/// A key id: 1..=128 of `[A-Za-z0-9._:-]`.
pub(super) fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// One signing key. `Debug` is by hand: the secret is never printed.
pub(super) struct SigningKey {
    pub(super) id: String,
    pub(super) secret: Vec<u8>,
    pub(super) identity: Arc<Identity>,
    /// Informational only (not a not-before): keys are often rolled out ahead of use.
    created: u64,
    expires: Option<u64>,
    disabled: bool,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("consumer", &self.identity.subject)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("disabled", &self.disabled)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Signing keys by id.
#[derive(Default)]
pub struct SigningKeyring {
    by_id: HashMap<String, SigningKey>,
}

impl fmt::Debug for SigningKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.by_id.keys().collect();
        ids.sort();
        f.debug_struct("SigningKeyring").field("ids", &ids).finish()
    }
}

const KEY_FIELDS: [&str; 9] = [
    "id", "consumer", "tenant", "scopes", "tier", "secret", "created", "expires", "disabled",
];

impl SigningKeyring {
    /// Parse a signing-keys file. Every problem is reported with its path (`keys[2].secret: ...`);
    /// no problem text ever contains a secret. `tiers` says whether a tier name is known.
    pub fn parse(text: &str, tiers: &dyn Fn(&str) -> bool) -> Result<SigningKeyring, Vec<String>> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| vec![yaml_problem(&e)])?;
        let entries = top_level_keys(&doc)?;
        let mut problems = Vec::new();
        let mut by_id: HashMap<String, SigningKey> = HashMap::new();
        let mut first_index: HashMap<String, usize> = HashMap::new();
        for (i, value) in entries.iter().enumerate() {
            let (id, entry) = parse_entry(i, value, tiers, &mut problems);
            let Some(id) = id else { continue };
            if let Some(j) = first_index.get(&id) {
                problems.push(format!("keys[{i}].id: duplicate of keys[{j}].id"));
                continue;
            }
            first_index.insert(id.clone(), i);
            if let Some(entry) = entry {
                by_id.insert(id, entry);
            }
        }
        if problems.is_empty() {
            Ok(SigningKeyring { by_id })
        } else {
            Err(problems)
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The secret of key `id` (for `portcullis sign` with the gateway's own file).
    pub fn secret(&self, id: &str) -> Option<&[u8]> {
        self.by_id.get(id).map(|k| k.secret.as_slice())
    }

    /// The key if it exists, is not disabled and has not expired (`expires` is the first second
    /// it is refused).
    pub(super) fn active(&self, id: &str, now: u64) -> Option<&SigningKey> {
        self.by_id
            .get(id)
            .filter(|k| !k.disabled && k.expires.is_none_or(|e| now < e))
    }
}

/// A YAML syntax problem, by location only: the parser's message could quote file content.
fn yaml_problem(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => format!("not valid YAML (line {}, column {})", l.line(), l.column()),
        None => "not valid YAML".to_string(),
    }
}

/// The `keys` list of the top-level mapping (which has no other field).
fn top_level_keys(doc: &Value) -> Result<&[Value], Vec<String>> {
    let Value::Mapping(top) = doc else {
        return Err(vec!["expected a mapping with a `keys` list".to_string()]);
    };
    let mut problems = Vec::new();
    for name in top.keys() {
        if name.as_str() != Some("keys") {
            problems.push(format!(
                "unknown top-level field {}",
                field_label(name.as_str())
            ));
        }
    }
    let list = match top.get("keys") {
        Some(Value::Sequence(list)) => Some(list.as_slice()),
        Some(_) => {
            problems.push("keys: must be a list".to_string());
            None
        }
        None => {
            problems.push("keys: missing".to_string());
            None
        }
    };
    match list {
        Some(list) if problems.is_empty() => Ok(list),
        _ => Err(problems),
    }
}

/// Name an unknown field only when it looks like a field name (never a pasted secret).
fn field_label(name: Option<&str>) -> String {
    match name {
        Some(n)
            if !n.is_empty()
                && n.len() <= 32
                && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            format!("`{n}`")
        }
        _ => "(name not shown)".to_string(),
    }
}

/// Parse `keys[i]`, pushing its problems. Returns its id (if readable, for duplicate detection)
/// and the entry (only when it has no problem at all).
fn parse_entry(
    i: usize,
    value: &Value,
    tiers: &dyn Fn(&str) -> bool,
    problems: &mut Vec<String>,
) -> (Option<String>, Option<SigningKey>) {
    let path = format!("keys[{i}]");
    let Value::Mapping(map) = value else {
        problems.push(format!("{path}: must be a mapping"));
        return (None, None);
    };
    let before = problems.len();
    for name in map.keys() {
        if !name.as_str().is_some_and(|n| KEY_FIELDS.contains(&n)) {
            problems.push(format!(
                "{path}: unknown field {}",
                field_label(name.as_str())
            ));
        }
    }
    let mut f = Fields {
        map,
        path: &path,
        problems,
    };
    let id = f.checked(
        "id",
        true,
        valid_key_id,
        "must be 1 to 128 of A-Z a-z 0-9 . _ : -",
    );
    let consumer = f.checked(
        "consumer",
        true,
        valid_name,
        "must be 1 to 128 of A-Z a-z 0-9 - _ . : @",
    );
    let tenant = f.checked(
        "tenant",
        false,
        valid_name,
        "must be 1 to 128 of A-Z a-z 0-9 - _ . : @",
    );
    let scopes = f.scopes();
    let tier = f.checked(
        "tier",
        false,
        |t| valid_name(t) && tiers(t),
        "is not a known tier",
    );
    let secret = f.secret();
    let created = f.time("created", true);
    let expires = f.time("expires", false);
    let disabled = f.flag("disabled");
    if let (Some(c), Some(e)) = (created, expires) {
        if e <= c {
            f.problem("expires", "must be after created");
        }
    }
    let (Some(id_val), Some(consumer), Some(secret), Some(created), true) = (
        id.clone(),
        consumer,
        secret,
        created,
        problems.len() == before,
    ) else {
        return (id, None);
    };
    let identity = Identity {
        method: "hmac",
        provider: "hmac".to_string(),
        subject: consumer.clone(),
        client_id: Some(consumer),
        tenant,
        scopes,
        tier,
        key_id: Some(id_val.clone()),
        ..Identity::default()
    };
    let entry = SigningKey {
        id: id_val,
        secret,
        identity: Arc::new(identity),
        created,
        expires,
        disabled,
    };
    (id, Some(entry))
}

/// Field readers for one `keys[i]` mapping; each records its own problems.
struct Fields<'a> {
    map: &'a Mapping,
    path: &'a str,
    problems: &'a mut Vec<String>,
}

impl Fields<'_> {
    fn problem(&mut self, field: &str, what: &str) {
        self.problems.push(format!("{}.{field}: {what}", self.path));
    }

    /// A string field; `None` (with a problem when required or mistyped) otherwise.
    fn text(&mut self, field: &str, required: bool) -> Option<String> {
        match self.map.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(field, "must be a string");
                None
            }
            None if required => {
                self.problem(field, "missing");
                None
            }
            None => None,
        }
    }

    /// A string field that must satisfy `ok` (else `what` is reported; the value is not echoed).
    fn checked(
        &mut self,
        field: &str,
        required: bool,
        ok: impl Fn(&str) -> bool,
        what: &str,
    ) -> Option<String> {
        let value = self.text(field, required)?;
        if ok(&value) {
            Some(value)
        } else {
            self.problem(field, what);
            None
        }
    }

    /// Optional list of OAuth-style scope tokens.
    fn scopes(&mut self) -> Vec<String> {
        let Some(value) = self.map.get("scopes") else {
            return Vec::new();
        };
        let Value::Sequence(items) = value else {
            self.problem("scopes", "must be a list of strings");
            return Vec::new();
        };
        let mut scopes = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if valid_scope(s) => scopes.push(s.to_string()),
                _ => self.problem(
                    &format!("scopes[{j}]"),
                    "must be 1 to 128 printable characters without spaces, quotes or backslashes",
                ),
            }
        }
        scopes
    }

    /// `secret: "base64:<standard base64>"` of at least [`MIN_SECRET`] bytes. Problems never
    /// include the value.
    fn secret(&mut self) -> Option<Vec<u8>> {
        let text = self.text("secret", true)?;
        match decode_secret(&text) {
            Ok(bytes) => Some(bytes),
            Err(problem) => {
                self.problem("secret", problem);
                None
            }
        }
    }

    /// A date or RFC 3339 time as unix seconds.
    fn time(&mut self, field: &str, required: bool) -> Option<u64> {
        let text = self.text(field, required)?;
        match parse_time(&text) {
            Ok(t) => Some(t),
            Err(_) => {
                self.problem(field, "must be YYYY-MM-DD or RFC 3339 in UTC");
                None
            }
        }
    }

    /// An optional boolean, `false` when absent.
    fn flag(&mut self, field: &str) -> bool {
        match self.map.get(field) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problem(field, "must be true or false");
                false
            }
        }
    }
}

/// RFC 6749 scope-token characters, at most 128.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// The signing keys in force, hot-reloaded from `path`.
pub struct SigningKeys {
    pub path: PathBuf,
    tiers: Vec<String>,
    current: RwLock<Arc<SigningKeyring>>,
    stamp: Mutex<Option<(u64, SystemTime)>>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("path", &self.path)
            .field("keys", &self.current().len())
            .finish()
    }
}

impl SigningKeys {
    /// Read and parse the file; any problem refuses the whole file.
    pub fn load(path: PathBuf, tiers: Vec<String>) -> Result<Self, Vec<String>> {
        let stamp = crate::reload::file_stamp(&path);
        let keyring = read_keyring(&path, &tiers)?;
        Ok(SigningKeys {
            path,
            tiers,
            current: RwLock::new(Arc::new(keyring)),
            stamp: Mutex::new(stamp),
        })
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<SigningKeyring> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl crate::reload::Reloadable for SigningKeys {
    fn what(&self) -> &'static str {
        "signing keys file"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(&self) -> &Mutex<Option<(u64, SystemTime)>> {
        &self.stamp
    }

    /// A file with any problem is refused whole and the keys in force stay.
    fn read_and_swap(&self) -> Result<usize, Vec<String>> {
        let keyring = read_keyring(&self.path, &self.tiers)?;
        let count = keyring.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
        Ok(count)
    }

    fn record(&self, outcome: Result<usize, ()>) {
        let m = crate::metrics::metrics();
        match outcome {
            Ok(n) => {
                m.signing_key_reloads.with_label_values(&["success"]).inc();
                m.signing_keys.set(n as i64);
            }
            Err(()) => m.signing_key_reloads.with_label_values(&["invalid"]).inc(),
        }
    }
}

/// Read (at most [`MAX_KEYS_FILE`] bytes) and parse the keys file.
fn read_keyring(path: &Path, tiers: &[String]) -> Result<SigningKeyring, Vec<String>> {
    let io_problem = |e: std::io::Error| vec![format!("{}: cannot read: {e}", path.display())];
    let file = std::fs::File::open(path).map_err(io_problem)?;
    let mut text = String::new();
    file.take(MAX_KEYS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io_problem)?;
    if text.len() as u64 > MAX_KEYS_FILE {
        return Err(vec![format!(
            "{}: larger than {MAX_KEYS_FILE} bytes",
            path.display()
        )]);
    }
    SigningKeyring::parse(&text, &|t: &str| tiers.iter().any(|x| x == t))
}
