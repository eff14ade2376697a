//! Where the nonces of verified signed requests are remembered, so each is accepted once
//! within the signature window: in this process, or in Redis so that a replay to another
//! gateway of the fleet fails too (catalogue M1, M14).
//!
//! Fail closed: a store that is full of live nonces, down or slow answers `Unavailable` and
//! the request is refused with 503; a nonce is never forgotten early to make room.

use crate::redis_conn::LazyConnection;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// What the store says about a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceVerdict {
    /// First sighting; now remembered until the signature could no longer be accepted.
    Fresh,
    Replayed,
    /// Full, down or slow: the request cannot be told apart from a replay.
    Unavailable,
}

pub enum NonceStore {
    Memory(NonceCache),
    Redis {
        conn: Box<LazyConnection>,
        prefix: String,
    },
}

impl std::fmt::Debug for NonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(c) => write!(f, "NonceStore::Memory({} nonces)", c.len()),
            Self::Redis { prefix, .. } => write!(f, "NonceStore::Redis({prefix})"),
        }
    }
}

impl NonceStore {
    /// Record `nonce` of key `key_id` until `until` (unix seconds).
    pub async fn record(&self, key_id: &str, nonce: &str, until: u64, now: u64) -> NonceVerdict {
        let m = crate::metrics::metrics();
        let verdict = match self {
            Self::Memory(cache) => match cache.check_and_record(key_id, nonce, until, now) {
                Ok(true) => NonceVerdict::Fresh,
                Ok(false) => NonceVerdict::Replayed,
                Err(()) => {
                    m.signature_nonces.with_label_values(&["store_full"]).inc();
                    tracing::error!("signed requests refused: the in-process nonce store is full of live nonces (raise request_signing.nonces.max_entries)");
                    return NonceVerdict::Unavailable;
                }
            },
            Self::Redis { conn, prefix } => {
                match redis_record(conn, prefix, key_id, nonce, until).await {
                    Ok(true) => NonceVerdict::Fresh,
                    Ok(false) => NonceVerdict::Replayed,
                    Err(e) => {
                        m.signature_nonces.with_label_values(&["store_error"]).inc();
                        tracing::warn!(error = %e, "signed request refused: the nonce store is unavailable");
                        return NonceVerdict::Unavailable;
                    }
                }
            }
        };
        let label = if verdict == NonceVerdict::Fresh {
            "fresh"
        } else {
            "replayed"
        };
        m.signature_nonces.with_label_values(&[label]).inc();
        verdict
    }
}

/// KEYS[1] the nonce's key; ARGV this call's own mark, the expiry (Unix seconds). Sets the key
/// to the mark when absent; 1 (fresh) when this call set it, now or on a first try whose
/// answer a broken connection lost, 0 (replayed) when another request did.
const RECORD: &str = r#"
local seen = redis.call('GET', KEYS[1])
if not seen then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
  return 1
end
if seen == ARGV[1] then return 1 end
return 0
"#;

/// Records `<prefix>nonce:<sha256(key_id NUL nonce)>` until `until`: true when fresh.
async fn redis_record(
    conn: &LazyConnection,
    prefix: &str,
    key_id: &str,
    nonce: &str,
    until: u64,
) -> Result<bool, String> {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    let script = SCRIPT.get_or_init(|| redis::Script::new(RECORD));
    let mut h = Sha256::new();
    h.update(key_id.as_bytes());
    h.update([0]);
    h.update(nonce.as_bytes());
    let key = format!("{prefix}nonce:{}", hex::encode(h.finalize()));
    // Tells this request's own write apart from another's, should the call be sent twice.
    let mark = format!("{:032x}", fastrand::u128(..));
    let mut invocation = script.key(&key);
    invocation.arg(&mark).arg(until.max(1));
    let fresh: i64 = conn
        .run(|mut c| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut c).await }
        })
        .await?;
    Ok(fresh == 1)
}

// ---------------------------------------------------------------------------------------------
// In-process store
// ---------------------------------------------------------------------------------------------

const SHARDS: usize = 16;
/// Sweep the shard being written every this many inserts.
const SWEEP_EVERY: u64 = 1024;

/// 16-byte prefix of SHA-256(`key_id \0 nonce`): fixed size whatever the nonce length, and
/// collisions are out of reach (2^-64 at 2^32 entries).
type NonceKey = [u8; 16];

/// In-process replay store: remembers `(key id, nonce)` until a given time.
///
/// Sharded by the first byte of the hashed key so worker threads rarely contend. Capacity is
/// global (`max_entries`); when full, the writer's shard is swept, then (at most once per second)
/// every shard. A live entry is never dropped to make room: a full cache fails closed.
pub struct NonceCache {
    shards: Vec<Mutex<HashMap<NonceKey, u64>>>,
    max_entries: usize,
    len: AtomicUsize,
    inserts: AtomicU64,
    /// `now + 1` of the last full sweep (0 = never), to bound sweeping under a flood.
    last_full_sweep: AtomicU64,
}

impl fmt::Debug for NonceCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceCache")
            .field("len", &self.len())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl NonceCache {
    /// A cache holding at most `max_entries` (at least 1) live nonces.
    pub fn new(max_entries: usize) -> Self {
        NonceCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_entries: max_entries.max(1),
            len: AtomicUsize::new(0),
            inserts: AtomicU64::new(0),
            last_full_sweep: AtomicU64::new(0),
        }
    }

    /// `Ok(true)` = first sighting (now recorded until `until`, exclusive); `Ok(false)` = already
    /// seen and still remembered. `Err(())` when the cache is full of unexpired entries: the
    /// caller answers 503 (fail closed). The `()` error is the integration contract.
    #[allow(clippy::result_unit_err)]
    pub fn check_and_record(
        &self,
        key_id: &str,
        nonce: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, ()> {
        let key = nonce_key(key_id, nonce);
        let shard = self.shard(&key);
        {
            let mut map = lock(shard);
            match self.try_record(&mut map, key, until, now) {
                Some(first) => return Ok(first),
                None => self.sweep(&mut map, now),
            }
            if let Some(first) = self.try_record(&mut map, key, until, now) {
                return Ok(first);
            }
        }
        // Still full: sweep every shard, at most once per second (holding one lock at a time).
        if self
            .last_full_sweep
            .swap(now.saturating_add(1), Ordering::Relaxed)
            != now.saturating_add(1)
        {
            for other in &self.shards {
                self.sweep(&mut lock(other), now);
            }
        }
        let mut map = lock(shard);
        // Re-check: another thread may have recorded the same nonce meanwhile.
        self.try_record(&mut map, key, until, now).ok_or(())
    }

    /// Live entries (and expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &NonceKey) -> &Mutex<HashMap<NonceKey, u64>> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// `Some(false)` if live, `Some(true)` if recorded now, `None` if there is no room.
    fn try_record(
        &self,
        map: &mut HashMap<NonceKey, u64>,
        key: NonceKey,
        until: u64,
        now: u64,
    ) -> Option<bool> {
        if let Some(&live_until) = map.get(&key) {
            if live_until > now {
                return Some(false);
            }
            map.remove(&key);
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        if until <= now {
            return Some(true); // Nothing to remember.
        }
        if !self.reserve() {
            return None;
        }
        map.insert(key, until);
        if self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(map, now);
        }
        Some(true)
    }

    /// Take one slot of the global capacity, if any is left.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_entries).then_some(n + 1)
            })
            .is_ok()
    }

    /// Drop the expired entries of one shard.
    fn sweep(&self, map: &mut HashMap<NonceKey, u64>, now: u64) {
        let before = map.len();
        map.retain(|_, until| *until > now);
        self.len.fetch_sub(before - map.len(), Ordering::Relaxed);
    }
}

fn nonce_key(key_id: &str, nonce: &str) -> NonceKey {
    let mut h = Sha256::new();
    h.update(key_id.as_bytes());
    h.update([0u8]);
    h.update(nonce.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Lock, recovering from poisoning: the map stays consistent (each operation is one call).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const NOW: u64 = 1_800_000_000;
    const NONCE: &str = "n0nce-0123456789";

    #[test]
    fn nonce_cache_basics() {
        let c = NonceCache::new(100);
        assert_eq!(c.check_and_record("k1", NONCE, 200, 100), Ok(true));
        assert_eq!(c.check_and_record("k1", NONCE, 200, 150), Ok(false));
        assert_eq!(c.check_and_record("k2", NONCE, 200, 150), Ok(true));
        assert_eq!(c.check_and_record("k1", NONCE, 200, 199), Ok(false));
        // `until` has passed: forgotten, accepted (and recorded) again.
        assert_eq!(c.check_and_record("k1", NONCE, 500, 200), Ok(true));
        assert_eq!(c.check_and_record("k1", NONCE, 500, 201), Ok(false));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn nonce_cache_full_fails_closed_then_sweeps() {
        let c = NonceCache::new(4);
        for i in 0..4 {
            assert_eq!(
                c.check_and_record("k1", &format!("nonce-{i:04}"), 100, 50),
                Ok(true)
            );
        }
        assert_eq!(c.check_and_record("k1", "nonce-new", 100, 50), Err(()));
        assert_eq!(c.check_and_record("k1", "nonce-0000", 100, 60), Ok(false));
        assert_eq!(c.len(), 4);
        // All expired at 100: a full cache sweeps and accepts.
        assert_eq!(c.check_and_record("k1", "nonce-new", 400, 100), Ok(true));
        assert_eq!(c.len(), 1);
        assert_eq!(c.check_and_record("k1", "nonce-0001", 400, 100), Ok(true));
    }

    #[test]
    fn nonce_cache_concurrent_single_winner() {
        let cache = NonceCache::new(10_000);
        for round in 0..200 {
            let nonce = format!("nonce-round-{round}");
            let barrier = std::sync::Barrier::new(4);
            let wins = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        barrier.wait();
                        if cache.check_and_record("k1", &nonce, NOW + 10, NOW) == Ok(true) {
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
            });
            assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
        }
    }

    #[test]
    fn nonce_cache_survives_poisoning() {
        let cache = Arc::new(NonceCache::new(100));
        let key = nonce_key("k1", NONCE);
        let poisoner = Arc::clone(&cache);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.shard(&key).lock();
            panic!("poison the shard");
        })
        .join();
        assert!(cache.shard(&key).is_poisoned());
        assert_eq!(cache.check_and_record("k1", NONCE, 200, 100), Ok(true));
        assert_eq!(cache.check_and_record("k1", NONCE, 200, 100), Ok(false));
    }
}
