//! The Redis store: one hash per kind (`{prefix}revoked:jti`, `:subject`, `:token`, field ->
//! Unix seconds) shared by the fleet, changed only by Lua scripts that also publish the change
//! on `{prefix}revocations`, atomically.

use super::state::State;
use super::{Entry, Kind, Message, Op};
use crate::redis_conn::LazyConnection;
use std::collections::HashMap;
use std::time::Duration;

/// The Redis side: a lazily made connection for commands (every command through
/// `LazyConnection::run`), the names, the scripts.
pub(super) struct RedisStore {
    pub(super) redis: LazyConnection,
    /// Bounds the subscription's calls (commands are bounded by `redis`).
    timeout: Duration,
    /// The hashes of jti, subject and token entries, in that order.
    hashes: [String; 3],
    pub(super) channel: String,
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
    pub(super) fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            redis: LazyConnection::new(url, timeout)?,
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

    /// Runs `call` (of the subscription's connection) within the timeout.
    pub(super) async fn bounded<T>(
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
    pub(super) async fn add(&self, e: &Entry) -> Result<Entry, String> {
        let message = Self::message(Op::Add, e)?;
        let mut call = self.merge.key(self.hash(e.kind()));
        call.arg(e.key())
            .arg(e.instant())
            .arg(&self.channel)
            .arg(message);
        let stored: String = self
            .redis
            .run(|mut c| {
                let call = &call;
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        let t = stored
            .parse::<u64>()
            .map_err(|_| "redis: stored instant is not a number".to_string())?;
        Entry::from_parts(e.kind(), &e.key(), t.max(e.instant()))
    }

    /// Deletes `e`'s key from its hash and publishes that; whether it was there.
    pub(super) async fn remove(&self, e: &Entry) -> Result<bool, String> {
        let message = Self::message(Op::Remove, e)?;
        let mut call = self.delete.key(self.hash(e.kind()));
        call.arg(e.key()).arg(&self.channel).arg(message);
        let n: i64 = self
            .redis
            .run(|mut c| {
                let call = &call;
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(n > 0)
    }

    /// The whole list as Redis holds it; fields already expired are deleted from Redis.
    pub(super) async fn load(&self, now: u64) -> Result<State, String> {
        type Hash = HashMap<Vec<u8>, Vec<u8>>;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for h in &self.hashes {
            pipe.hgetall(h);
        }
        let (jti, subjects, tokens): (Hash, Hash, Hash) = self
            .redis
            .run(|mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
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
                let pruned = self.redis.run(|mut c| {
                    let call = &call;
                    async move { call.invoke_async::<i64>(&mut c).await }
                });
                if let Err(e) = pruned.await {
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
