//! Keys fetched from a provider's `jwks_uri`, kept current in the background and refetched
//! (at most once per cooldown, one fetch at a time) when a token names a `kid` we do not
//! have. When fetching fails the last good keys keep serving for `max_stale`; after that the
//! provider fails closed (503), never open.

use super::jwt::KeySet;
use crate::metrics::metrics;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// The JWKS address, or the OIDC discovery document that names it.
    pub uri: String,
    /// `uri` is `{issuer}/.well-known/openid-configuration`; its `jwks_uri` is fetched.
    pub discovery: bool,
    /// Refresh interval when the server gives no `Cache-Control: max-age`.
    pub refresh: Duration,
    /// `max-age` is honoured within these bounds.
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    /// Least time between two fetches triggered by unknown `kid`s.
    pub cooldown: Duration,
    /// How long the last good keys serve while fetching fails.
    pub max_stale: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
}

struct State {
    keys: Arc<KeySet>,
    /// SHA-256 of the last document, to tell a changed key set from the same one.
    digest: [u8; 32],
    /// When keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch caused by an unknown `kid` was last started: the cooldown counts from
    /// here, so a key rotated right after a scheduled (or the first) fetch is fetched at once.
    kid_fetch_at: Option<Instant>,
    next_refresh: Duration,
    /// With discovery: the `jwks_uri` it gave.
    discovered_uri: Option<String>,
}

/// One provider's remote key set.
pub struct RemoteKeys {
    pub provider: String,
    pub settings: JwksSettings,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
    /// `kid`s (by SHA-256) still unknown after a refetch, each until the next refetch may
    /// happen: a flood of random `kid`s then costs a hash lookup, not a lock or a fetch.
    unknown_kids: moka::sync::Cache<[u8; 32], Instant>,
    client: reqwest::Client,
    /// Called after the key set changed (the token cache drops what it verified).
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("provider", &self.provider)
            .field("uri", &self.settings.uri)
            .finish_non_exhaustive()
    }
}

type Fetched = (KeySet, Vec<String>, Option<Duration>, [u8; 32]);

/// Why no keys can be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl RemoteKeys {
    pub fn new(
        provider: &str,
        settings: JwksSettings,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Self, String> {
        let client = super::http_client(settings.timeout, 1)?;
        let refresh = settings.refresh;
        let refresh_settings = settings.clone();
        Ok(Self {
            provider: provider.to_string(),
            settings,
            state: RwLock::new(State {
                keys: Arc::new(KeySet::default()),
                digest: [0; 32],
                fetched_at: None,
                kid_fetch_at: None,
                next_refresh: refresh,
                discovered_uri: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
            unknown_kids: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(settings_cooldown(&refresh_settings))
                .build(),
            client,
            on_change,
        })
    }

    /// The keys to verify with, unless they are missing or older than `max_stale`.
    pub fn current(&self) -> Result<Arc<KeySet>, Unavailable> {
        let state = self.state.read().map_err(|_| Unavailable)?;
        match state.fetched_at {
            Some(at) if at.elapsed() <= self.settings.max_stale => Ok(state.keys.clone()),
            _ => Err(Unavailable),
        }
    }

    /// True once keys have been fetched and are not past `max_stale`.
    pub fn ready(&self) -> bool {
        self.current().is_ok()
    }

    /// Seconds a client should wait before retrying when keys are unavailable.
    pub fn retry_after_secs(&self) -> u64 {
        self.settings.cooldown.as_secs().max(1)
    }

    /// A token named a `kid` we do not have: refetch, unless another request is already
    /// fetching (then wait for it) or the last fetch *caused by an unknown kid* was within the
    /// cooldown (the cooldown bounds the fetches a flood of kids can cause, not the first one
    /// after a scheduled fetch). Returns the keys to retry with, or `None` when this `kid` is
    /// already known to be unknown.
    pub async fn refetch_for_unknown_kid(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        if self
            .unknown_kids
            .get(&kid_digest(kid))
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let _guard = self.fetching.lock().await;
        let in_cooldown = self
            .state
            .read()
            .ok()?
            .kid_fetch_at
            .is_some_and(|at| at.elapsed() < self.settings.cooldown);
        if !in_cooldown {
            if let Ok(mut s) = self.state.write() {
                s.kid_fetch_at = Some(Instant::now());
            }
            self.fetch_locked("unknown_kid").await.ok()?;
        }
        // Either our fetch, or one that finished while we waited: retry with what is current
        // (a kid that is still unknown fails at the lookup, before any signature work).
        self.current().ok()
    }

    /// The `kid` is still unknown after a refetch: remember it until the cooldown of the
    /// last kid-caused fetch ends (the earliest moment a new fetch could find it).
    pub fn remember_unknown_kid(&self, kid: Option<&str>) {
        let attempted = self.state.read().ok().and_then(|s| s.kid_fetch_at);
        if let Some(until) = attempted.map(|at| at + self.settings.cooldown) {
            if Instant::now() < until {
                self.unknown_kids.insert(kid_digest(kid), until);
            }
        }
    }

    /// A scheduled refresh; returns how long to wait until the next one.
    pub async fn refresh(&self) -> Duration {
        let _guard = self.fetching.lock().await;
        match self.fetch_locked("scheduled").await {
            Ok(next) => next,
            // Retry sooner than the full interval, but not in a tight loop.
            Err(()) => self.settings.cooldown.max(Duration::from_millis(100)),
        }
    }

    async fn fetch_locked(&self, why: &'static str) -> Result<Duration, ()> {
        let outcome = self.fetch_once().await;
        let m = metrics();
        match outcome {
            Ok((keys, warnings, max_age, digest)) => {
                for w in &warnings {
                    tracing::warn!(provider = %self.provider, "JWKS: {w}");
                }
                let next = max_age
                    .map(|a| a.clamp(self.settings.min_refresh, self.settings.max_refresh))
                    .unwrap_or(self.settings.refresh);
                let count = keys.len();
                let changed = {
                    let Ok(mut s) = self.state.write() else {
                        return Err(());
                    };
                    let changed = s.digest != digest;
                    s.digest = digest;
                    s.keys = Arc::new(keys);
                    s.fetched_at = Some(Instant::now());
                    s.next_refresh = next;
                    changed
                };
                if changed {
                    (self.on_change)();
                    tracing::info!(provider = %self.provider, keys = count, reason = why, "JWKS keys updated");
                }
                m.jwks_fetches
                    .with_label_values(&[self.provider.as_str(), "success"])
                    .inc();
                m.jwt_keys
                    .with_label_values(&[self.provider.as_str()])
                    .set(count as i64);
                Ok(next)
            }
            Err(reason) => {
                m.jwks_fetches
                    .with_label_values(&[self.provider.as_str(), reason])
                    .inc();
                let stale = self.current().is_err();
                if stale {
                    tracing::error!(provider = %self.provider, %reason, "JWKS fetch failed and no usable keys remain; requests for this provider get 503");
                } else {
                    tracing::warn!(provider = %self.provider, %reason, "JWKS fetch failed; serving the last good keys");
                }
                Err(())
            }
        }
    }

    /// The JWKS address: configured, or read from the discovery document (once, then kept;
    /// a failed JWKS fetch asks discovery again next time).
    async fn jwks_uri(&self) -> Result<String, &'static str> {
        if !self.settings.discovery {
            return Ok(self.settings.uri.clone());
        }
        if let Some(uri) = self
            .state
            .read()
            .ok()
            .and_then(|s| s.discovered_uri.clone())
        {
            return Ok(uri);
        }
        let uri = super::fetch::discovered(
            &self.client,
            &self.provider,
            &self.settings.uri,
            "jwks_uri",
            self.settings.max_bytes,
        )
        .await?;
        if let Ok(mut s) = self.state.write() {
            s.discovered_uri = Some(uri.clone());
        }
        Ok(uri)
    }

    async fn fetch_once(&self) -> Result<Fetched, &'static str> {
        let uri = self.jwks_uri().await?;
        let result = self.fetch_jwks(&uri).await;
        if result.is_err() && self.settings.discovery {
            // The provider may have moved its keys; look them up again next time.
            if let Ok(mut s) = self.state.write() {
                s.discovered_uri = None;
            }
        }
        result
    }

    /// GET with the size bound; the body and the Cache-Control max-age.
    async fn get_bounded(&self, uri: &str) -> Result<(Vec<u8>, Option<Duration>), &'static str> {
        let resp = self
            .client
            .get(uri)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| super::fetch::transport(&e))?;
        if !resp.status().is_success() {
            return Err("bad_status");
        }
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = super::fetch::read_bounded(resp, self.settings.max_bytes).await?;
        Ok((body, max_age))
    }

    async fn fetch_jwks(&self, uri: &str) -> Result<Fetched, &'static str> {
        let (body, max_age) = self.get_bounded(uri).await?;
        let (keys, warnings) = KeySet::from_jwks(&body).map_err(|_| "invalid")?;
        if keys.is_empty() {
            return Err("no_usable_keys");
        }
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
        Ok((keys, warnings, max_age, digest))
    }

    /// Seconds since the last successful fetch (for the metric).
    pub fn age_secs(&self) -> Option<f64> {
        let s = self.state.read().ok()?;
        s.fetched_at.map(|at| at.elapsed().as_secs_f64())
    }
}

fn kid_digest(kid: Option<&str>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    // A missing kid and an empty one are different lookups.
    match kid {
        Some(k) => {
            h.update([1]);
            h.update(k.as_bytes());
        }
        None => h.update([0]),
    }
    h.finalize().into()
}

fn settings_cooldown(s: &JwksSettings) -> Duration {
    s.cooldown.max(Duration::from_millis(1))
}

/// `max-age=N` from a Cache-Control value.
fn max_age(v: &str) -> Option<Duration> {
    v.split(',').find_map(|d| {
        let d = d.trim();
        let (k, n) = d.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| n.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

impl RemoteKeys {
    /// Keep the keys current until `shutdown` changes: refresh, then wait as long as the
    /// refresh says (the server's cache lifetime, or the retry back-off).
    pub async fn keep_fresh(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let wait = self.refresh().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("MAX-AGE = 60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
