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
//!
//! Here: the entry model and the [`Revocations`] facade with its sync loop. Beside it: the
//! in-memory maps (`state`), the file store (`file`) and the Redis store (`redis`).

use crate::unix_now;
use futures::StreamExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::watch;

mod file;
// The Redis store; the client crate itself is named `::redis` in this file.
mod redis;
mod state;
#[cfg(test)]
mod tests;

use file::{load_file, save_file};
use redis::RedisStore;
use state::State;

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
            Ok::<_, ::redis::RedisError>(pubsub)
        };
        let pubsub = match r.bounded(subscribe).await {
            Ok(p) => p,
            Err(e) => return failed(e, false),
        };
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = self.reload(r).await {
            return failed(e, false);
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
                    if let Err(e) = r.bounded(sink.ping::<::redis::Value>()).await {
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
