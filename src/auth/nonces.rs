//! Where the nonces of verified signed requests are remembered, so each is accepted once
//! within the signature window: in this process, or in Redis so that a replay to another
//! gateway of the fleet fails too (catalogue M1, M14).
//!
//! Fail closed: a store that is full of live nonces, down or slow answers `Unavailable` and
//! the request is refused with 503; a nonce is never forgotten early to make room.

use super::http_sig::NonceCache;
use sha2::{Digest, Sha256};

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
        conn: Box<crate::redis_conn::LazyConnection>,
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
                        tracing::warn!(error = %e, "signed request refused: the nonce store did not answer");
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

/// `SET <prefix>nonce:<sha256(key_id NUL nonce)> 1 NX EXAT until`: set means fresh.
async fn redis_record(
    conn: &crate::redis_conn::LazyConnection,
    prefix: &str,
    key_id: &str,
    nonce: &str,
    until: u64,
) -> Result<bool, String> {
    let mut h = Sha256::new();
    h.update(key_id.as_bytes());
    h.update([0]);
    h.update(nonce.as_bytes());
    let key = format!("{prefix}nonce:{}", hex::encode(h.finalize()));
    let mut c = conn.get().await?;
    let set: Option<String> = tokio::time::timeout(
        conn.timeout,
        redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EXAT")
            .arg(until.max(1))
            .query_async(&mut c),
    )
    .await
    .map_err(|_| "redis: timed out".to_string())?
    .map_err(|e| format!("redis: {e}"))?;
    Ok(set.is_some())
}
