//! A configured identity provider: what it accepts, where its keys come from (static, a
//! remote JWKS, or none when its tokens are only introspected), how its claims map to an
//! identity, and the cache of tokens it has already verified.

use super::claims::ClaimMap;
use super::introspection::Introspector;
use super::jwks::RemoteKeys;
use super::jwt::{header_kid, verify, KeySet, ProviderRules};
use super::{AuthError, Identity};
use std::sync::Arc;

/// A configured identity provider: what it accepts, its keys, how its claims map to an
/// identity, and a cache of tokens it has already verified.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub rules: ProviderRules,
    pub keys: KeySource,
    pub claims: ClaimMap,
    pub cache: TokenCache,
    pub series: crate::metrics::ProviderSeries,
    /// The provider's introspection endpoint (RFC 7662), when it has one.
    pub introspection: Option<Arc<Introspector>>,
}

impl Provider {
    /// Seconds a client should wait when this provider's keys are unavailable.
    pub fn retry_after_secs(&self) -> u64 {
        match &self.keys {
            KeySource::Static(_) | KeySource::None => 1,
            KeySource::Remote(r) => r.retry_after_secs(),
        }
    }

    /// Verify `token` at `now` and build the caller's identity from it, or take it from
    /// the cache when this exact token was verified before and has not expired.
    pub async fn authenticate(&self, token: &str, now: u64) -> Result<Arc<Identity>, AuthError> {
        if token.len() > self.rules.max_token_bytes {
            return Err(AuthError::TokenTooLarge);
        }
        // Fail closed before anything else: with the keys past max_stale, not even tokens
        // verified earlier are accepted.
        if let KeySource::Remote(r) = &self.keys {
            if !r.ready() {
                return Err(AuthError::KeysUnavailable);
            }
        }
        let key = self.cache.key(token);
        if let Some(hit) = self.cache.get(&key, now) {
            self.series.cache_hit.inc();
            return Ok(hit);
        }
        let keys = match &self.keys {
            KeySource::Static(k) => k.clone(),
            KeySource::Remote(r) => r.current().map_err(|_| AuthError::KeysUnavailable)?,
            KeySource::None => return Err(AuthError::UnknownKey),
        };
        let started = std::time::Instant::now();
        let mut verified = verify(token, &self.rules, &keys, now);
        if let (Err(AuthError::UnknownKey), KeySource::Remote(remote)) = (&verified, &self.keys) {
            // Maybe the provider rotated keys: one refetch, shared and rate-limited.
            let kid = header_kid(token);
            if let Some(fresh) = remote.refetch_for_unknown_kid(kid.as_deref()).await {
                verified = verify(token, &self.rules, &fresh, now);
                if matches!(verified, Err(AuthError::UnknownKey)) {
                    remote.remember_unknown_kid(kid.as_deref());
                }
            }
        }
        self.series
            .verify_duration
            .observe(started.elapsed().as_secs_f64());
        let verified = verified?;
        let mut identity = self.claims.identity(&verified.claims)?;
        identity.provider = self.name.clone();
        identity.expires_at = verified.expires_at;
        let identity = Arc::new(identity);
        if self.cache.enabled() {
            self.series.cache_miss.inc();
            self.cache.insert(key, identity.clone(), now);
        }
        Ok(identity)
    }
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Loaded with the configuration (PEM, JWKS file, HMAC secret).
    Static(Arc<KeySet>),
    /// Fetched from `jwks_uri` and kept current in the background.
    Remote(Arc<RemoteKeys>),
    /// None: the provider's tokens are only introspected.
    None,
}

impl KeySource {
    /// Keys usable now (0 while a remote set is not loaded or too stale).
    pub fn len(&self) -> usize {
        match self {
            Self::Static(k) => k.len(),
            Self::Remote(r) => r.current().map_or(0, |k| k.len()),
            Self::None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Verified identities by SHA-256 of the token. Bounded; an entry lives no longer than the
/// configured TTL and never past the token's own `exp`. Failures are never cached.
#[derive(Clone)]
pub struct TokenCache {
    inner: Option<moka::sync::Cache<[u8; 32], CachedIdentity>>,
    ttl_secs: u64,
}

#[derive(Clone)]
pub struct CachedIdentity {
    identity: Arc<Identity>,
    /// Unix second after which the entry must not be used.
    valid_until: u64,
    ttl: std::time::Duration,
}

struct EntryExpiry;

impl moka::Expiry<[u8; 32], CachedIdentity> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &CachedIdentity,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(value.ttl)
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("enabled", &self.enabled())
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl TokenCache {
    /// `capacity` 0 turns caching off.
    pub fn new(capacity: u64, ttl_secs: u64) -> Self {
        let inner = (capacity > 0 && ttl_secs > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(EntryExpiry)
                .support_invalidation_closures()
                .build()
        });
        Self { inner, ttl_secs }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn key(&self, token: &str) -> [u8; 32] {
        if self.inner.is_none() {
            return [0; 32];
        }
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn get(&self, key: &[u8; 32], now: u64) -> Option<Arc<Identity>> {
        let entry = self.inner.as_ref()?.get(key)?;
        // moka's clock and the token's clock differ; the token's wins.
        (now <= entry.valid_until).then_some(entry.identity)
    }

    fn insert(&self, key: [u8; 32], identity: Arc<Identity>, now: u64) {
        let Some(cache) = &self.inner else { return };
        let valid_until = identity
            .expires_at
            .map_or(now + self.ttl_secs, |exp| exp.min(now + self.ttl_secs));
        if valid_until <= now {
            return;
        }
        let ttl = std::time::Duration::from_secs(valid_until - now);
        cache.insert(
            key,
            CachedIdentity {
                identity,
                valid_until,
                ttl,
            },
        );
    }

    /// Forget the identities matching `pred` (a revocation).
    pub fn evict_if(&self, pred: impl Fn(&[u8; 32], &Identity) -> bool + Send + Sync + 'static) {
        if let Some(c) = &self.inner {
            if let Err(e) = c.invalidate_entries_if(move |k, v| pred(k, &v.identity)) {
                tracing::warn!("token cache eviction failed: {e}");
            }
        }
    }

    /// Forget everything (the provider's keys changed).
    pub fn invalidate_all(&self) {
        if let Some(c) = &self.inner {
            c.invalidate_all();
        }
    }

    /// Entries in the cache (approximate; for metrics and tests).
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
