//! The token revocation list: tokens that verified but must be refused anyway.
//!
//! Three kinds of entries ([`Entry`]): a revoked `jti` (kept until the token's own expiry), a
//! subject whose tokens issued at or before an instant are all revoked ("log out everywhere",
//! kept until removed), and one opaque token named by the SHA-256 of its bytes (kept until its
//! expiry). Adding a key that is already present keeps the later instant.
//!
//! The list lives in memory as three hash maps behind one `RwLock`, with two atomic counters
//! beside it: [`Revocations::is_revoked`], called on every authenticated request, returns after
//! one atomic load while the list is empty, and otherwise takes the read lock for at most three
//! hash lookups, allocating nothing. A jti or token entry counts while `now <= expires_at` (a
//! caller that accepts tokens some leeway past `exp` should add that leeway to `expires_at`); a
//! subject entry revokes a token whose `iat <= before`, and any token without `iat`.
//!
//! Changes go through [`Revocations::add`] and [`Revocations::remove`], which persist first and
//! apply locally only once persisted, one change at a time per instance:
//! - `Memory`: nothing to persist.
//! - `File`: the whole list is written as JSON to a temporary file in the same directory,
//!   fsynced and renamed over the old one (mode 0600), so a crash leaves the old or the new list.
//! - `Redis`: one hash per kind (`{prefix}revoked:jti`, `{prefix}revoked:subject`,
//!   `{prefix}revoked:token`, field → Unix seconds) shared by the whole fleet. A Lua script
//!   merges the field and publishes the change on `{prefix}revocations` atomically, so a gateway
//!   that loaded the hashes after subscribing misses nothing. [`Revocations::sync_loop`] keeps
//!   each gateway's copy current: it subscribes, replaces the local list with Redis's, applies
//!   each published change, and reloads after every reconnect, after a message it cannot parse,
//!   and every `resync` interval. Redis is the truth: a reload drops what Redis does not hold,
//!   so that Redis should persist its data (a Redis restarted empty empties every list).
//!
//! Callbacks registered with [`Revocations::on_revoke`] run, outside every lock, for each entry
//! that becomes effective locally (a new key or a later instant), wherever the change came from.

use crate::unix_now;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::watch;

/// The longest jti or subject accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One revocation. In JSON: `{"kind":"jti","jti":"…","expires_at":N}`, `{"kind":"subject",
/// "subject":"…","before":N}`, `{"kind":"token","sha256":"<64 hex digits>","expires_at":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    /// Tokens carrying this `jti`, until `expires_at` (Unix seconds, inclusive).
    Jti { jti: String, expires_at: u64 },
    /// Tokens of this subject with `iat <= before`, or without `iat`; until removed.
    Subject { subject: String, before: u64 },
    /// The token whose bytes hash to `sha256` (see [`token_sha256`]), until `expires_at`.
    Token {
        #[serde(with = "hex32")]
        sha256: [u8; 32],
        expires_at: u64,
    },
}

/// What [`Revocations::is_revoked`] needs to know about a verified token.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub jti: Option<&'a str>,
    /// `sub`; an empty string when the token has none (no subject entry can match it).
    pub subject: &'a str,
    pub issued_at: Option<u64>,
    /// Only needed while [`Revocations::has_token_entries`] is true.
    pub token_sha256: Option<&'a [u8; 32]>,
    /// Unix seconds.
    pub now: u64,
}

/// Where the list is kept.
#[derive(Debug, Clone)]
pub enum Backend {
    Memory,
    File(PathBuf),
    /// `url` as `redis://host:port/db`; every Redis call is bounded by `timeout`.
    Redis {
        url: String,
        key_prefix: String,
        timeout: Duration,
    },
}

/// The SHA-256 of a token's bytes, as [`Entry::Token`] and [`Check::token_sha256`] expect.
pub fn token_sha256(token: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Jti,
    Subject,
    Token,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Add,
    Remove,
}

/// A change published on the channel; `value` is the jti, the subject or the token's hex hash.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    op: Op,
    kind: Kind,
    value: String,
    #[serde(default)]
    t: u64,
}

impl Entry {
    fn kind(&self) -> Kind {
        match self {
            Entry::Jti { .. } => Kind::Jti,
            Entry::Subject { .. } => Kind::Subject,
            Entry::Token { .. } => Kind::Token,
        }
    }

    /// The key as stored in Redis and in the state file.
    fn key(&self) -> String {
        match self {
            Entry::Jti { jti, .. } => jti.clone(),
            Entry::Subject { subject, .. } => subject.clone(),
            Entry::Token { sha256, .. } => hex::encode(sha256),
        }
    }

    /// `expires_at` or `before`.
    fn instant(&self) -> u64 {
        match self {
            Entry::Jti { expires_at, .. } | Entry::Token { expires_at, .. } => *expires_at,
            Entry::Subject { before, .. } => *before,
        }
    }

    fn from_parts(kind: Kind, key: &str, t: u64) -> Result<Entry, String> {
        let e = match kind {
            Kind::Jti => Entry::Jti {
                jti: key.to_string(),
                expires_at: t,
            },
            Kind::Subject => Entry::Subject {
                subject: key.to_string(),
                before: t,
            },
            Kind::Token => Entry::Token {
                sha256: parse_hex32(key).ok_or("token: sha256 must be 64 hex digits")?,
                expires_at: t,
            },
        };
        e.validate()?;
        Ok(e)
    }

    /// A jti or subject is 1 to `MAX_KEY_LEN` bytes without control characters.
    pub fn validate(&self) -> Result<(), String> {
        let (what, s) = match self {
            Entry::Jti { jti, .. } => ("jti", jti),
            Entry::Subject { subject, .. } => ("subject", subject),
            Entry::Token { .. } => return Ok(()),
        };
        if s.is_empty() {
            Err(format!("{what} is empty"))
        } else if s.len() > MAX_KEY_LEN {
            Err(format!("{what} is longer than {MAX_KEY_LEN} bytes"))
        } else if s.chars().any(char::is_control) {
            Err(format!("{what} contains a control character"))
        } else {
            Ok(())
        }
    }

    /// Whether the entry still counts at `now`.
    fn live(&self, now: u64) -> bool {
        matches!(self, Entry::Subject { .. }) || self.instant() >= now
    }

    /// What a log line may say about the entry: its kind and a short hash of its key.
    fn log_id(&self) -> String {
        let h = match self {
            Entry::Token { sha256, .. } => *sha256,
            _ => token_sha256(self.key().as_bytes()),
        };
        format!("{:?}:{}", self.kind(), hex::encode(&h[..4]))
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

mod hex32 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        parse_hex32(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
struct State {
    jti: HashMap<String, u64>,
    subjects: HashMap<String, u64>,
    tokens: HashMap<[u8; 32], u64>,
}

/// Stores `v` under `k` unless an equal or later instant is there; whether anything changed.
fn raise<K: Hash + Eq>(map: &mut HashMap<K, u64>, k: K, v: u64) -> bool {
    match map.entry(k) {
        Slot::Occupied(mut o) if *o.get() < v => {
            o.insert(v);
            true
        }
        Slot::Occupied(_) => false,
        Slot::Vacant(slot) => {
            slot.insert(v);
            true
        }
    }
}

impl State {
    fn len(&self) -> usize {
        self.jti.len() + self.subjects.len() + self.tokens.len()
    }

    fn revokes(&self, c: &Check<'_>) -> bool {
        if let Some(jti) = c.jti {
            if self.jti.get(jti).is_some_and(|&exp| c.now <= exp) {
                return true;
            }
        }
        if let Some(&before) = self.subjects.get(c.subject) {
            if c.issued_at.is_none_or(|iat| iat <= before) {
                return true;
            }
        }
        match c.token_sha256 {
            Some(h) => self.tokens.get(h).is_some_and(|&exp| c.now <= exp),
            None => false,
        }
    }

    /// Merges `e`; the entry when that changed the list (a new key or a later instant).
    fn merge(&mut self, e: &Entry) -> Option<Entry> {
        let changed = match e {
            Entry::Jti { jti, expires_at } => raise(&mut self.jti, jti.clone(), *expires_at),
            Entry::Subject { subject, before } => {
                raise(&mut self.subjects, subject.clone(), *before)
            }
            Entry::Token { sha256, expires_at } => raise(&mut self.tokens, *sha256, *expires_at),
        };
        changed.then(|| e.clone())
    }

    fn remove(&mut self, e: &Entry) -> bool {
        match e {
            Entry::Jti { jti, .. } => self.jti.remove(jti).is_some(),
            Entry::Subject { subject, .. } => self.subjects.remove(subject).is_some(),
            Entry::Token { sha256, .. } => self.tokens.remove(sha256).is_some(),
        }
    }

    /// The instant stored under `e`'s key.
    fn get(&self, e: &Entry) -> Option<u64> {
        match e {
            Entry::Jti { jti, .. } => self.jti.get(jti).copied(),
            Entry::Subject { subject, .. } => self.subjects.get(subject).copied(),
            Entry::Token { sha256, .. } => self.tokens.get(sha256).copied(),
        }
    }

    fn prune(&mut self, now: u64) {
        self.jti.retain(|_, exp| *exp >= now);
        self.tokens.retain(|_, exp| *exp >= now);
    }

    fn counts(&self, now: u64) -> (usize, usize, usize) {
        let jti = self.jti.values().filter(|&&e| e >= now).count();
        let tokens = self.tokens.values().filter(|&&e| e >= now).count();
        (jti, self.subjects.len(), tokens)
    }

    /// Every entry, expired or not, in no particular order.
    fn all(&self) -> impl Iterator<Item = Entry> + '_ {
        let jti = self.jti.iter().map(|(k, &t)| (Kind::Jti, k.clone(), t));
        let subjects = self
            .subjects
            .iter()
            .map(|(k, &t)| (Kind::Subject, k.clone(), t));
        let tokens = self
            .tokens
            .iter()
            .map(|(k, &t)| (Kind::Token, hex::encode(k), t));
        let all = jti.chain(subjects).chain(tokens);
        all.filter_map(|(kind, k, t)| Entry::from_parts(kind, &k, t).ok())
    }

    /// The current entries: jti, then subject, then token entries, each sorted by key.
    fn entries(&self, now: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = self.all().filter(|e| e.live(now)).collect();
        out.sort_by_cached_key(|e| (e.kind(), e.key()));
        out
    }

    /// Entries of `self` that `old` lacks or holds with an earlier instant.
    fn gained_since(&self, old: &State) -> Vec<Entry> {
        let gained = |e: &Entry| old.get(e).is_none_or(|t| t < e.instant());
        self.all().filter(gained).collect()
    }
}

/// The state file: `{"version":1,"jti":{…},"subjects":{…},"tokens":{"<hex>":N}}`.
#[derive(Default, Serialize, Deserialize)]
struct FileState {
    version: u32,
    #[serde(default)]
    jti: BTreeMap<String, u64>,
    #[serde(default)]
    subjects: BTreeMap<String, u64>,
    #[serde(default)]
    tokens: BTreeMap<String, u64>,
}

fn load_file(path: &Path, now: u64) -> Result<State, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => {
            return Err(format!(
                "revocation list {}: cannot read: {e}",
                path.display()
            ))
        }
    };
    let corrupt = |why: String| format!("revocation list {}: corrupt: {why}", path.display());
    let file: FileState = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != 1 {
        return Err(corrupt(format!("unsupported version {}", file.version)));
    }
    let mut state = State::default();
    let all = [
        (Kind::Jti, &file.jti),
        (Kind::Subject, &file.subjects),
        (Kind::Token, &file.tokens),
    ];
    for (kind, map) in all {
        for (k, &t) in map {
            let e = Entry::from_parts(kind, k, t).map_err(corrupt)?;
            state.merge(&e);
        }
    }
    state.prune(now);
    Ok(state)
}

/// The state file's bytes: the current entries, in key order.
fn encode_file(state: &State, now: u64) -> Result<Vec<u8>, String> {
    let mut file = FileState {
        version: 1,
        ..FileState::default()
    };
    for e in state.entries(now) {
        let map = match e.kind() {
            Kind::Jti => &mut file.jti,
            Kind::Subject => &mut file.subjects,
            Kind::Token => &mut file.tokens,
        };
        map.insert(e.key(), e.instant());
    }
    let mut bytes = serde_json::to_vec(&file).map_err(|e| format!("revocation list: {e}"))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Serial numbers of temporary files, so that two writers in one process never share one.
static TMP_SERIAL: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` by a file holding `bytes` (mode 0600): written to a temporary file in the
/// same directory, fsynced, renamed over `path`; the directory is fsynced where possible.
/// Blocking; run it off the async workers.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| {
        format!("revocation list {}: cannot write: {e}", path.display())
    };
    let name = path.file_name().ok_or_else(|| fail(&"not a file name"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let serial = TMP_SERIAL.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let tmp = dir.join(format!(".{}.{pid}.{serial}.tmp", name.to_string_lossy()));
    let written = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| fail(&e))
}

/// [`encode_file`] then [`write_atomic`] on the blocking pool.
async fn save_file(path: &Path, state: &State, now: u64) -> Result<(), String> {
    let bytes = encode_file(state, now)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| format!("revocation list: writer failed: {e}"))?
}

/// The Redis side: a lazily made connection manager for commands, the names, the scripts.
struct RedisStore {
    redis: crate::redis_conn::LazyConnection,
    timeout: Duration,
    /// The hashes of jti, subject and token entries, in that order.
    hashes: [String; 3],
    channel: String,
    merge: redis::Script,
    delete: redis::Script,
    prune: redis::Script,
}

/// KEYS[1] hash; ARGV field, instant, channel, message. Keeps the later instant and publishes
/// the message only when it changed the hash; returns the instant now stored.
const MERGE: &str = r#"
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local cur = tonumber(raw)
if cur and cur >= tonumber(ARGV[2]) then return raw end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return ARGV[2]
"#;

/// KEYS[1] hash; ARGV field, channel, message. Publishes only when a field was deleted.
const DELETE: &str = r#"
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n > 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return n
"#;

/// KEYS[1] hash; ARGV now, fields. Deletes the fields whose instant is still before now, so
/// that an entry extended meanwhile by another gateway survives.
const PRUNE: &str = r#"
local now = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local t = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if t and t < now then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return n
"#;

impl RedisStore {
    fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            redis: crate::redis_conn::LazyConnection::new(url, timeout)?,
            timeout,
            hashes: ["jti", "subject", "token"].map(|k| format!("{prefix}revoked:{k}")),
            channel: format!("{prefix}revocations"),
            merge: redis::Script::new(MERGE),
            delete: redis::Script::new(DELETE),
            prune: redis::Script::new(PRUNE),
        })
    }

    fn hash(&self, kind: Kind) -> &str {
        match kind {
            Kind::Jti => &self.hashes[0],
            Kind::Subject => &self.hashes[1],
            Kind::Token => &self.hashes[2],
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        self.redis.get().await
    }

    /// Runs `call` within the timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "redis: timed out".to_string())?
            .map_err(|e| format!("redis: {e}"))
    }

    fn message(op: Op, e: &Entry) -> Result<String, String> {
        let m = Message {
            op,
            kind: e.kind(),
            value: e.key(),
            t: e.instant(),
        };
        serde_json::to_string(&m).map_err(|e| format!("revocation message: {e}"))
    }

    /// Merges `e` into its hash and publishes it; the entry as Redis now holds it.
    async fn add(&self, e: &Entry) -> Result<Entry, String> {
        let message = Self::message(Op::Add, e)?;
        let mut conn = self.connection().await?;
        let mut call = self.merge.key(self.hash(e.kind()));
        call.arg(e.key())
            .arg(e.instant())
            .arg(&self.channel)
            .arg(message);
        let stored: String = self.bounded(call.invoke_async(&mut conn)).await?;
        let t = stored
            .parse::<u64>()
            .map_err(|_| "redis: stored instant is not a number".to_string())?;
        Entry::from_parts(e.kind(), &e.key(), t.max(e.instant()))
    }

    /// Deletes `e`'s key from its hash and publishes that; whether it was there.
    async fn remove(&self, e: &Entry) -> Result<bool, String> {
        let message = Self::message(Op::Remove, e)?;
        let mut conn = self.connection().await?;
        let mut call = self.delete.key(self.hash(e.kind()));
        call.arg(e.key()).arg(&self.channel).arg(message);
        let n: i64 = self.bounded(call.invoke_async(&mut conn)).await?;
        Ok(n > 0)
    }

    /// The whole list as Redis holds it; fields already expired are deleted from Redis.
    async fn load(&self, now: u64) -> Result<State, String> {
        type Hash = HashMap<Vec<u8>, Vec<u8>>;
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for h in &self.hashes {
            pipe.hgetall(h);
        }
        let (jti, subjects, tokens): (Hash, Hash, Hash) =
            self.bounded(pipe.query_async(&mut conn)).await?;
        let mut state = State::default();
        let mut skipped = 0usize;
        for (kind, map) in [
            (Kind::Jti, jti),
            (Kind::Subject, subjects),
            (Kind::Token, tokens),
        ] {
            let mut expired = Vec::new();
            for (field, value) in map {
                let t = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                let parsed = std::str::from_utf8(&field).ok().zip(t);
                match parsed.and_then(|(f, t)| Entry::from_parts(kind, f, t).ok()) {
                    Some(e) if kind != Kind::Subject && e.instant() < now => expired.push(field),
                    Some(e) => {
                        state.merge(&e);
                    }
                    None => skipped += 1,
                }
            }
            if !expired.is_empty() {
                let mut call = self.prune.key(self.hash(kind));
                call.arg(now).arg(expired);
                if let Err(e) = self.bounded(call.invoke_async::<i64>(&mut conn)).await {
                    tracing::warn!(error = %e, "revocations: cannot prune expired entries");
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "revocations: ignored malformed fields in the Redis hashes"
            );
        }
        Ok(state)
    }
}

enum Store {
    Memory,
    File(PathBuf),
    Redis(Box<RedisStore>),
}

type Callback = Arc<dyn Fn(&Entry) + Send + Sync>;

/// How one Redis session of [`Revocations::sync_loop`] ended.
enum Ended {
    Shutdown,
    Failed { error: String, synced: bool },
}

/// The revocation list of one gateway; share it behind an `Arc`.
pub struct Revocations {
    state: RwLock<State>,
    /// `state.len()` and `state.tokens.len()`, readable without the lock.
    total: AtomicUsize,
    tokens: AtomicUsize,
    max_entries: usize,
    store: Store,
    /// Serialises `add` and `remove`, so the persisted list is the one applied.
    writer: tokio::sync::Mutex<()>,
    callbacks: RwLock<Vec<Callback>>,
    loaded: AtomicBool,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("entries", &self.total.load(Ordering::Relaxed))
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

/// Sleeps for `d`; true when `shutdown` changed meanwhile.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

impl Revocations {
    /// A list kept in `backend`, refusing to grow past `max_entries` current entries. A `File`
    /// is loaded now (missing: an empty list; unreadable or corrupt: an error naming it); a
    /// `Redis` list is empty until [`Revocations::sync_loop`] loads it, and nothing is
    /// connected yet.
    pub fn new(backend: Backend, max_entries: usize) -> Result<Self, String> {
        let (store, state) = match backend {
            Backend::Memory => (Store::Memory, State::default()),
            Backend::File(path) => {
                let state = load_file(&path, unix_now())?;
                (Store::File(path), state)
            }
            Backend::Redis {
                url,
                key_prefix,
                timeout,
            } => (
                Store::Redis(Box::new(RedisStore::new(&url, &key_prefix, timeout)?)),
                State::default(),
            ),
        };
        if state.len() > max_entries {
            tracing::warn!(
                entries = state.len(),
                max_entries,
                "revocations: loaded list exceeds max_entries"
            );
        }
        let r = Self {
            total: AtomicUsize::new(0),
            tokens: AtomicUsize::new(0),
            loaded: AtomicBool::new(!matches!(store, Store::Redis(_))),
            state: RwLock::new(State::default()),
            max_entries,
            store,
            writer: tokio::sync::Mutex::new(()),
            callbacks: RwLock::new(Vec::new()),
        };
        r.replace(state);
        Ok(r)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_counts(&self, s: &State) {
        self.tokens.store(s.tokens.len(), Ordering::Release);
        self.total.store(s.len(), Ordering::Release);
    }

    /// Applies `f` to the state under the write lock, refreshing the counters.
    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.write();
        let out = f(&mut s);
        self.publish_counts(&s);
        out
    }

    /// Replaces the whole state; the entries it gained.
    fn replace(&self, next: State) -> Vec<Entry> {
        self.mutate(|s| {
            let gained = next.gained_since(s);
            *s = next;
            gained
        })
    }

    fn fire(&self, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        let callbacks: Vec<Callback> = self
            .callbacks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for e in entries {
            for f in &callbacks {
                f(e);
            }
        }
    }

    /// Whether the verified token described by `c` is revoked. Lock-free while the list is
    /// empty; otherwise a read lock and up to three hash lookups, without allocating.
    pub fn is_revoked(&self, c: &Check<'_>) -> bool {
        if self.total.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.read().revokes(c)
    }

    /// Whether any token entries exist, i.e. whether [`Check::token_sha256`] is worth computing.
    pub fn has_token_entries(&self) -> bool {
        self.tokens.load(Ordering::Acquire) > 0
    }

    /// Validates, persists, then applies `e` (merged with an entry of the same key, keeping the
    /// later instant). Refused when it is invalid, already expired, a new key while the list
    /// holds `max_entries` current entries, or when persisting failed (then nothing changes).
    pub async fn add(&self, e: Entry) -> Result<(), String> {
        self.add_at(e, unix_now()).await
    }

    async fn add_at(&self, e: Entry, now: u64) -> Result<(), String> {
        e.validate()?;
        if e.kind() != Kind::Subject && e.instant() < now {
            return Err(format!(
                "{:?} entry already expired (expires_at {} < now {now})",
                e.kind(),
                e.instant()
            ));
        }
        let _writer = self.writer.lock().await;
        {
            let s = self.read();
            let (j, su, t) = s.counts(now);
            if s.get(&e).is_none() && j + su + t >= self.max_entries {
                return Err(format!(
                    "revocation list is full (max_entries {})",
                    self.max_entries
                ));
            }
        }
        let changed = match &self.store {
            Store::Memory => self.mutate(|s| {
                s.prune(now);
                s.merge(&e)
            }),
            Store::File(path) => {
                let mut next = self.read().clone();
                next.prune(now);
                let changed = next.merge(&e);
                if changed.is_some() {
                    save_file(path, &next, now).await?;
                    self.replace(next);
                }
                changed
            }
            Store::Redis(r) => {
                let stored = r.add(&e).await?;
                self.mutate(|s| s.merge(&stored))
            }
        };
        if let Some(c) = changed {
            tracing::info!(entry = %c.log_id(), "revocations: entry added");
            self.fire(&[c]);
        }
        Ok(())
    }

    /// Removes the entry with `e`'s key (its instant is ignored), persisting first like `add`;
    /// `Ok(false)` when there was none.
    pub async fn remove(&self, e: &Entry) -> Result<bool, String> {
        e.validate()?;
        let now = unix_now();
        let _writer = self.writer.lock().await;
        match &self.store {
            Store::Memory => Ok(self.mutate(|s| s.remove(e))),
            Store::File(path) => {
                let mut next = self.read().clone();
                next.prune(now);
                if !next.remove(e) {
                    return Ok(false);
                }
                save_file(path, &next, now).await?;
                self.replace(next);
                Ok(true)
            }
            Store::Redis(r) => {
                let removed = r.remove(e).await?;
                self.mutate(|s| s.remove(e));
                Ok(removed)
            }
        }
    }

    /// The current entries: jti, then subject, then token entries, each sorted by key.
    pub fn list(&self, now: u64) -> Vec<Entry> {
        self.read().entries(now)
    }

    /// Current (jti, subject, token) entry counts.
    pub fn counts(&self, now: u64) -> (usize, usize, usize) {
        self.read().counts(now)
    }

    /// Runs `f` for every entry that becomes effective locally, whichever way it came.
    pub fn on_revoke(&self, f: Box<dyn Fn(&Entry) + Send + Sync>) {
        self.callbacks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::from(f));
    }

    /// True once the list has been loaded: at once for `Memory` and `File`, after the first
    /// successful load from Redis otherwise.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Keeps the list current until `shutdown` changes (or its sender is dropped). With Redis:
    /// subscribe, load the whole list, apply each published change; reconnect with backoff
    /// (200 ms doubling to 5 s) and reload after every reconnect, after an unparsable message
    /// and every `resync`. With the other backends: drop expired entries from memory every
    /// `resync`.
    pub async fn sync_loop(&self, resync: Duration, mut shutdown: watch::Receiver<bool>) {
        let resync = resync.max(Duration::from_millis(100));
        let Store::Redis(r) = &self.store else {
            loop {
                if sleep_or_shutdown(resync, &mut shutdown).await {
                    return;
                }
                self.mutate(|s| s.prune(unix_now()));
            }
        };
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.redis_session(r, resync, &mut shutdown).await {
                Ended::Shutdown => return,
                Ended::Failed { error, synced } => {
                    if synced {
                        backoff = MIN_BACKOFF;
                    }
                    let retry_ms = backoff.as_millis() as u64;
                    tracing::warn!(%error, retry_ms, "revocations: Redis sync interrupted");
                }
            }
            if sleep_or_shutdown(backoff, &mut shutdown).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Replaces the local list with Redis's.
    async fn reload(&self, r: &RedisStore) -> Result<(), String> {
        let state = r.load(unix_now()).await?;
        let gained = self.replace(state);
        self.loaded.store(true, Ordering::Release);
        self.fire(&gained);
        Ok(())
    }

    /// Applies one published change; false when it cannot be understood.
    fn apply_message(&self, payload: &[u8]) -> bool {
        let Ok(m) = serde_json::from_slice::<Message>(payload) else {
            return false;
        };
        let Ok(e) = Entry::from_parts(m.kind, &m.value, m.t) else {
            return false;
        };
        match m.op {
            Op::Add => {
                if let Some(c) = self.mutate(|s| s.merge(&e)) {
                    self.fire(&[c]);
                }
            }
            Op::Remove => {
                self.mutate(|s| s.remove(&e));
            }
        }
        true
    }

    /// One connection's worth of syncing: subscribe first, then load, so that no change
    /// committed after the load's snapshot can be missed.
    async fn redis_session(
        &self,
        r: &RedisStore,
        resync: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let failed = |error: String, synced: bool| Ended::Failed { error, synced };
        let subscribe = async {
            let mut pubsub = r.redis.client.get_async_pubsub().await?;
            pubsub.subscribe(&r.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match r.bounded(subscribe).await {
            Ok(p) => p,
            Err(e) => return failed(e, false),
        };
        let (mut sink, mut stream) = pubsub.split();
        // After an outage the command connection fails once more before remaking itself.
        if self.reload(r).await.is_err() {
            if let Err(e) = self.reload(r).await {
                return failed(e, false);
            }
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ended::Shutdown,
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return failed("pub/sub connection closed".into(), true);
                    };
                    if !self.apply_message(msg.get_payload_bytes()) {
                        tracing::warn!("revocations: unparsable message on the channel; reloading");
                        if let Err(e) = self.reload(r).await {
                            return failed(e, true);
                        }
                    }
                }
                _ = tick.tick() => {
                    // A half-open subscription would go unnoticed without traffic: ping it.
                    if let Err(e) = r.bounded(sink.ping::<redis::Value>()).await {
                        return failed(e, true);
                    }
                    if let Err(e) = self.reload(r).await {
                        return failed(e, true);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::AtomicUsize;
    use tokio::task::JoinHandle;

    const NOW: u64 = 1_700_000_000;

    fn jti(j: &str, exp: u64) -> Entry {
        Entry::Jti {
            jti: j.into(),
            expires_at: exp,
        }
    }
    fn subject(s: &str, before: u64) -> Entry {
        Entry::Subject {
            subject: s.into(),
            before,
        }
    }
    fn token(t: &str, exp: u64) -> Entry {
        Entry::Token {
            sha256: token_sha256(t.as_bytes()),
            expires_at: exp,
        }
    }
    fn check<'a>(jti: Option<&'a str>, sub: &'a str, iat: Option<u64>, now: u64) -> Check<'a> {
        Check {
            jti,
            subject: sub,
            issued_at: iat,
            token_sha256: None,
            now,
        }
    }
    fn memory(max: usize) -> Revocations {
        Revocations::new(Backend::Memory, max).unwrap()
    }
    fn counter(r: &Revocations) -> Arc<AtomicUsize> {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        r.on_revoke(Box::new(move |_| {
            m.fetch_add(1, Ordering::SeqCst);
        }));
        n
    }

    #[tokio::test]
    async fn jti_entries_count_until_expiry_and_keep_the_later_expiry() {
        let r = memory(10);
        assert!(!r.is_revoked(&check(Some("a"), "alice", Some(NOW), NOW)));
        r.add_at(jti("a", NOW + 10), NOW).await.unwrap();
        r.add_at(jti("a", NOW + 5), NOW).await.unwrap();
        assert!(r.is_revoked(&check(Some("a"), "alice", Some(NOW), NOW + 10)));
        assert!(!r.is_revoked(&check(Some("a"), "alice", Some(NOW), NOW + 11)));
        assert!(!r.is_revoked(&check(Some("b"), "alice", Some(NOW), NOW)));
        assert!(!r.is_revoked(&check(None, "alice", Some(NOW), NOW)));
        r.add_at(jti("a", NOW + 20), NOW).await.unwrap();
        assert_eq!(r.list(NOW), vec![jti("a", NOW + 20)]);
        assert_eq!(r.list(NOW + 21), vec![]);
        assert_eq!(r.counts(NOW + 21), (0, 0, 0));
        // Expired entries are pruned by the next add, and cannot be added at all.
        r.add_at(jti("b", NOW + 100), NOW + 50).await.unwrap();
        assert_eq!(r.read().jti.len(), 1);
        assert!(r.add_at(jti("c", NOW - 1), NOW).await.is_err());
        assert!(r.remove(&jti("b", 0)).await.unwrap());
        assert!(!r.remove(&jti("b", 0)).await.unwrap());
        assert!(!r.is_revoked(&check(Some("b"), "alice", Some(NOW), NOW + 60)));
    }

    #[tokio::test]
    async fn subject_entries_revoke_up_to_before_and_tokens_without_iat() {
        let r = memory(10);
        r.add_at(subject("alice", NOW), NOW).await.unwrap();
        r.add_at(subject("alice", NOW - 100), NOW).await.unwrap();
        assert!(r.is_revoked(&check(None, "alice", Some(NOW), NOW)));
        assert!(!r.is_revoked(&check(None, "alice", Some(NOW + 1), NOW)));
        assert!(r.is_revoked(&check(None, "alice", None, NOW)));
        assert!(!r.is_revoked(&check(None, "bob", None, NOW)));
        r.add_at(subject("alice", NOW + 1), NOW).await.unwrap();
        assert!(r.is_revoked(&check(None, "alice", Some(NOW + 1), u64::MAX)));
        assert_eq!(r.counts(u64::MAX), (0, 1, 0));
        assert!(r.remove(&subject("alice", 0)).await.unwrap());
        assert!(!r.is_revoked(&check(None, "alice", None, NOW)));
    }

    #[tokio::test]
    async fn token_entries_and_has_token_entries() {
        let r = memory(10);
        assert!(!r.has_token_entries());
        r.add_at(token("opaque-1", NOW + 5), NOW).await.unwrap();
        assert!(r.has_token_entries());
        let h = token_sha256(b"opaque-1");
        let other = token_sha256(b"opaque-2");
        let mut c = check(None, "", None, NOW + 5);
        c.token_sha256 = Some(&h);
        assert!(r.is_revoked(&c));
        c.now = NOW + 6;
        assert!(!r.is_revoked(&c));
        c.now = NOW;
        c.token_sha256 = Some(&other);
        assert!(!r.is_revoked(&c));
        let json = serde_json::to_string(&token("opaque-1", 7)).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"kind":"token","sha256":"{}","expires_at":7}}"#,
                hex::encode(h)
            )
        );
        assert_eq!(
            serde_json::from_str::<Entry>(&json).unwrap(),
            token("opaque-1", 7)
        );
        assert!(r.remove(&token("opaque-1", 0)).await.unwrap());
        assert!(!r.has_token_entries());
    }

    #[tokio::test]
    async fn list_is_sorted_by_kind_then_key() {
        let r = memory(10);
        for e in [
            token("t", NOW),
            subject("s2", 1),
            jti("b", NOW),
            subject("s1", 2),
            jti("a", NOW),
        ] {
            r.add_at(e, NOW).await.unwrap();
        }
        let listed = r.list(NOW);
        let expected = vec![
            jti("a", NOW),
            jti("b", NOW),
            subject("s1", 2),
            subject("s2", 1),
            token("t", NOW),
        ];
        assert_eq!(listed, expected);
        assert_eq!(r.counts(NOW), (2, 2, 1));
    }

    #[tokio::test]
    async fn max_entries_refuses_new_keys_only() {
        let r = memory(2);
        r.add_at(jti("a", NOW + 1), NOW).await.unwrap();
        r.add_at(subject("s", NOW), NOW).await.unwrap();
        let err = r.add_at(jti("b", NOW + 1), NOW).await.unwrap_err();
        assert!(err.contains("max_entries"), "{err}");
        r.add_at(jti("a", NOW + 9), NOW).await.unwrap();
        // Once "a" expired there is room again.
        r.add_at(jti("b", NOW + 20), NOW + 10).await.unwrap();
        assert_eq!(r.counts(NOW + 10), (1, 1, 0));
    }

    #[tokio::test]
    async fn invalid_keys_are_refused() {
        let r = memory(10);
        for bad in [
            jti("", NOW),
            jti("a\nb", NOW),
            subject("x\u{7f}", 1),
            subject(&"s".repeat(1025), 1),
        ] {
            assert!(r.add_at(bad, NOW).await.is_err());
        }
        r.add_at(subject(&"s".repeat(1024), 1), NOW).await.unwrap();
        r.add_at(jti("ünïcödé jti", NOW), NOW).await.unwrap();
        assert_eq!(r.counts(NOW), (1, 1, 0));
    }

    #[tokio::test]
    async fn callback_runs_once_per_effective_add() {
        let r = memory(10);
        let n = counter(&r);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        r.on_revoke(Box::new(move |e| s.lock().unwrap().push(e.clone())));
        r.add_at(jti("a", NOW + 10), NOW).await.unwrap();
        r.add_at(jti("a", NOW + 10), NOW).await.unwrap();
        r.add_at(jti("a", NOW + 5), NOW).await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        r.add_at(subject("alice", 5), NOW).await.unwrap();
        r.add_at(subject("alice", 6), NOW).await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 3);
        assert_eq!(seen.lock().unwrap().last(), Some(&subject("alice", 6)));
    }

    #[tokio::test]
    async fn file_backend_persists_prunes_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.json");
        let r = Revocations::new(Backend::File(path.clone()), 10).unwrap();
        assert!(r.list(0).is_empty());
        let future = unix_now() + 3600;
        r.add(jti("a", future)).await.unwrap();
        r.add(subject("alice", 5)).await.unwrap();
        r.add(token("t", future)).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Revocations::new(Backend::File(path.clone()), 10).unwrap();
        assert_eq!(again.list(0), r.list(0));
        assert!(again.remove(&jti("a", 0)).await.unwrap());
        let third = Revocations::new(Backend::File(path.clone()), 10).unwrap();
        assert_eq!(third.counts(0), (0, 1, 1));
        // Expired entries in the file are dropped on load and on the next save.
        let hex = hex::encode(token_sha256(b"old"));
        let text = format!(
            r#"{{"version":1,"jti":{{"old":1000,"new":{future}}},"tokens":{{"{hex}":1000}}}}"#
        );
        std::fs::write(&path, text).unwrap();
        let loaded = Revocations::new(Backend::File(path.clone()), 10).unwrap();
        assert_eq!(loaded.list(0), vec![jti("new", future)]);
        loaded.add(subject("bob", 1)).await.unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(!saved.contains("old") && !saved.contains(&hex), "{saved}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.json");
        for text in [
            "{not json",
            r#"{"version":2}"#,
            r#"{"version":1,"tokens":{"zz":1}}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Revocations::new(Backend::File(path.clone()), 10).unwrap_err();
            assert!(
                err.contains(&path.display().to_string()) && err.contains("corrupt"),
                "{err}"
            );
        }
    }

    // --- against a real redis-server ---

    struct RedisServer {
        port: u16,
        child: Option<Child>,
    }

    impl RedisServer {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut s = RedisServer { port, child: None };
            s.spawn();
            s
        }

        fn spawn(&mut self) {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            self.child = Some(child);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn stop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        fn gateway(&self) -> Arc<Revocations> {
            let backend = Backend::Redis {
                url: self.url(),
                key_prefix: "test:".into(),
                timeout: Duration::from_millis(500),
            };
            Arc::new(Revocations::new(backend, 100).unwrap())
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Starts `r`'s sync loop; it stops when the returned sender is dropped or sent to.
    fn run(r: &Arc<Revocations>, resync: Duration) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let r = r.clone();
        (
            tx,
            tokio::spawn(async move { r.sync_loop(resync, rx).await }),
        )
    }

    /// Polls `f` every 10 ms until it holds or `limit` passes; how long it took.
    async fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                start.elapsed() < limit,
                "condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    fn revoked(r: &Revocations, j: &str) -> bool {
        r.is_revoked(&check(Some(j), "x", Some(0), unix_now()))
    }

    async fn hset(conn: &mut redis::aio::MultiplexedConnection, hash: &str, f: &str, v: u64) {
        let () = redis::cmd("HSET")
            .arg(hash)
            .arg(f)
            .arg(v)
            .query_async(conn)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_propagates_between_gateways() {
        let test = async {
            let server = RedisServer::start();
            let (a, b) = (server.gateway(), server.gateway());
            assert!(!a.loaded());
            let (stop_a, sync_a) = run(&a, Duration::from_secs(30));
            let _b = run(&b, Duration::from_secs(30));
            within(Duration::from_secs(5), || a.loaded() && b.loaded()).await;
            let fired = counter(&b);
            let future = unix_now() + 3600;

            a.add(jti("j1", future)).await.unwrap();
            assert!(revoked(&a, "j1"));
            within(Duration::from_secs(1), || revoked(&b, "j1")).await;
            a.add(subject("alice", 10)).await.unwrap();
            a.add(token("opaque", future)).await.unwrap();
            within(Duration::from_secs(1), || b.counts(0) == (1, 1, 1)).await;
            assert!(b.has_token_entries());
            // Callbacks run just after the entry is applied: wait for them, then for strays.
            within(Duration::from_secs(1), || fired.load(Ordering::SeqCst) == 3).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(fired.load(Ordering::SeqCst), 3);

            // The layout other tools may rely on.
            let client = redis::Client::open(server.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let exp: u64 = redis::cmd("HGET")
                .arg("test:revoked:jti")
                .arg("j1")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(exp, future);

            // Merging keeps the later instant, across gateways too.
            b.add(jti("j2", future + 100)).await.unwrap();
            a.add(jti("j2", future)).await.unwrap();
            assert!(a.list(0).contains(&jti("j2", future + 100)));

            assert!(b.remove(&jti("j1", 0)).await.unwrap());
            assert!(!b.remove(&jti("j1", 0)).await.unwrap());
            within(Duration::from_secs(1), || !revoked(&a, "j1")).await;

            // Entries written behind the gateways' backs, then an unparsable message: a reload.
            hset(&mut conn, "test:revoked:jti", "sneaky", future).await;
            hset(&mut conn, "test:revoked:jti", "stale", 1000).await;
            let _: i64 = redis::cmd("PUBLISH")
                .arg("test:revocations")
                .arg("garbage")
                .query_async(&mut conn)
                .await
                .unwrap();
            within(Duration::from_secs(1), || revoked(&b, "sneaky")).await;

            // A gateway started later loads the list, and prunes expired fields.
            let c = server.gateway();
            let _c = run(&c, Duration::from_millis(300));
            within(Duration::from_secs(5), || c.loaded()).await;
            assert_eq!(c.list(unix_now()), a.list(unix_now()));
            assert_eq!(c.counts(unix_now()), (2, 1, 1));
            let stale: bool = redis::cmd("HEXISTS")
                .arg("test:revoked:jti")
                .arg("stale")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!stale);
            // Its periodic resync catches what no message announced.
            hset(&mut conn, "test:revoked:subject", "quiet", 1).await;
            within(Duration::from_secs(2), || c.counts(0).1 == 2).await;

            stop_a.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(2), sync_a)
                .await
                .unwrap()
                .unwrap();
        };
        tokio::time::timeout(Duration::from_secs(30), test)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_outage_refuses_adds_and_sync_recovers() {
        let test = async {
            let mut server = RedisServer::start();
            let (a, b) = (server.gateway(), server.gateway());
            let _a = run(&a, Duration::from_millis(500));
            let _b = run(&b, Duration::from_millis(500));
            within(Duration::from_secs(5), || a.loaded() && b.loaded()).await;
            let future = unix_now() + 3600;
            a.add(jti("before", future)).await.unwrap();
            within(Duration::from_secs(1), || revoked(&b, "before")).await;

            server.stop();
            let started = std::time::Instant::now();
            assert!(a.add(jti("down", future)).await.is_err());
            assert!(started.elapsed() < Duration::from_secs(3));
            assert!(!revoked(&a, "down"));
            assert!(a.remove(&jti("before", 0)).await.is_err());
            assert!(revoked(&a, "before") && revoked(&b, "before"));
            // Long enough for b's reconnect attempts to fail and back off a few times.
            tokio::time::sleep(Duration::from_millis(1500)).await;

            // Restarted empty (no persistence); a reconnects on its next command...
            server.spawn();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while let Err(e) = a.add(jti("after", future)).await {
                assert!(std::time::Instant::now() < deadline, "no reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // ...and b reloads after resubscribing: Redis's (empty) list replaced b's.
            within(Duration::from_secs(10), || {
                revoked(&b, "after") && !revoked(&b, "before")
            })
            .await;
            a.add(jti("later", future)).await.unwrap();
            within(Duration::from_secs(1), || revoked(&b, "later")).await;
        };
        tokio::time::timeout(Duration::from_secs(40), test)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn local_sync_loop_prunes_and_stops() {
        let r = Arc::new(memory(10));
        r.add_at(jti("old", NOW + 10), NOW).await.unwrap();
        assert_eq!(r.read().jti.len(), 1);
        let (stop, task) = run(&r, Duration::from_millis(100));
        within(Duration::from_secs(2), || r.read().jti.is_empty()).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }
}
