//! The composition root: the one place that turns a validated `Config` into the running
//! parts of a gateway. Only here are stores opened, Redis connections made, limiters built
//! and callbacks wired between modules; the proxy (`gateway`), `portcullis explain` and
//! `portcullis stdio` all start from the `App` it builds, so they decide with the same engine.
//!
//! Nothing here runs yet: background work is listed in `tasks` for the server to start, and
//! an `App` can be built (by `portcullis check`, say) without serving.

use crate::auth::crl::CrlFile;
use crate::auth::http_sig::Signing;
use crate::auth::jwks::RemoteKeys;
use crate::auth::nonces::{NonceCache, NonceStore};
use crate::auth::provider::{KeySource, Provider};
use crate::auth::revocation::{Entry, Revocations};
use crate::auth::Identity;
use crate::config::{
    Config, Listener, NonceSettings, Problem, Problems, RevocationSettings, ServerSettings,
    SigningSettings,
};
use crate::engine::Engine;
use crate::forward::{ForwardPolicy, UpstreamForward};
use crate::ratelimit::Limits;
use crate::redis_conn::LazyConnection;
use crate::reload::Reloadable;
use crate::routing::RouteTable;
use crate::upstream::{PoolSpec, Protocol};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A gateway, composed.
pub struct App {
    /// Decides every request.
    pub engine: Engine,
    /// What is done to every forwarded request.
    pub forward: ForwardPolicy,
    pub upstreams: Vec<PoolSpec>,
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    /// Each listener's client-certificate revocation lists (by listener index), shared by
    /// its handshake callback and the file reloader.
    pub listener_crls: Vec<Option<Arc<CrlFile>>>,
    pub admin_address: SocketAddr,
    pub access_log: Option<String>,
    /// The revocation list and its settings (the admin API's among them), when configured.
    pub revocation: Option<(Arc<Revocations>, RevocationSettings)>,
    /// Directories to make (private) before serving: where the pid file, the upgrade socket
    /// and a revocation state file go.
    pub state_paths: Vec<PathBuf>,
    /// Background work for the server to run.
    pub tasks: Vec<Task>,
}

/// Background work the running gateway does besides proxying.
pub enum Task {
    /// Keep one provider's keys current.
    RefreshKeys {
        provider: String,
        keys: Arc<RemoteKeys>,
    },
    /// Keep a shared revocation list in step with Redis.
    SyncRevocations(Arc<Revocations>),
    /// Reload these files when they change (and on `SIGHUP`).
    ReloadFiles {
        files: Vec<Arc<dyn Reloadable>>,
        interval: Duration,
    },
}

impl App {
    /// Compose the gateway a configuration describes. Errors are reported like the
    /// configuration's own, at the key whose setting could not be put to work.
    pub fn build(config: Config) -> Result<Self, Problems> {
        let Config {
            server,
            listeners,
            admin_address,
            access_log,
            providers,
            upstreams,
            routes,
            trusted_proxies,
            identity_namespace,
            api_keys,
            consumers_reload_interval,
            rate_limits,
            revocation,
            client_certs,
            signing,
            forward_auth,
        } = config;
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: String| {
            problems.push(Problem {
                path: path.into(),
                message,
            })
        };

        let limits = Limits::start(rate_limits)
            .map_err(|e| problem("rate_limits.redis.url", e))
            .unwrap_or_default();
        let signing = signing.and_then(|s| match start_signing(s) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                problem("request_signing.nonces.redis.url", e);
                None
            }
        });
        let mut state_paths = vec![
            PathBuf::from(&server.pid_file),
            PathBuf::from(&server.upgrade_sock),
        ];
        let revocation = revocation.and_then(|r| {
            state_paths.extend(r.state_file().map(PathBuf::from));
            match Revocations::new(r.backend.clone(), r.max_entries) {
                Ok(list) => {
                    evict_on_revoke(&list, &providers);
                    Some((Arc::new(list), r))
                }
                Err(e) => {
                    let at = if r.shared() {
                        "revocation.redis.url"
                    } else {
                        "revocation.state_file"
                    };
                    problem(at, e);
                    None
                }
            }
        });
        let mut listener_crls = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let client = l.tls.as_ref().and_then(|t| t.client.as_ref());
            let crl = match client.and_then(|c| c.crl_file.as_ref().map(|f| (c, f))) {
                None => None,
                Some((c, f)) => match CrlFile::load(f.into(), c.ca_file.clone()) {
                    Ok(crl) => Some(Arc::new(crl)),
                    Err(e) => {
                        problem(&format!("listeners[{i}].tls.client_crl_file"), e);
                        None
                    }
                },
            };
            listener_crls.push(crl);
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }

        let mut tasks = Vec::new();
        for p in &providers {
            if let KeySource::Remote(keys) = &p.keys {
                tasks.push(Task::RefreshKeys {
                    provider: p.name.clone(),
                    keys: keys.clone(),
                });
            }
        }
        let mut files: Vec<Arc<dyn Reloadable>> = Vec::new();
        if let Some(keys) = &api_keys {
            files.push(keys.clone());
        }
        for crl in listener_crls.iter().flatten() {
            files.push(crl.clone());
        }
        if let Some(s) = &signing {
            files.push(s.keys.clone());
        }
        for rego in routes.iter().filter_map(|r| r.auth.rego.as_ref()) {
            files.push(rego.clone());
        }
        if !files.is_empty() {
            tasks.push(Task::ReloadFiles {
                files,
                interval: consumers_reload_interval,
            });
        }
        if let Some((list, _)) = revocation.as_ref().filter(|(_, r)| r.shared()) {
            tasks.push(Task::SyncRevocations(list.clone()));
        }

        let forward = ForwardPolicy {
            namespace: identity_namespace,
            key_headers: api_keys
                .as_ref()
                .map(|k| k.headers.clone())
                .unwrap_or_default(),
            cert_forward: client_certs.forward,
            upstreams: upstreams
                .iter()
                .map(|u| UpstreamForward {
                    assertion: u.assertion.clone(),
                    trailers: u.protocol == Protocol::Http2,
                })
                .collect(),
        };
        let engine = Engine {
            routes: RouteTable::new(routes),
            providers,
            api_keys,
            revocations: revocation.as_ref().map(|(list, _)| list.clone()),
            cert_identities: client_certs,
            signing,
            forward_auth,
            trusted_proxies,
            limits,
        };
        Ok(Self {
            engine,
            forward,
            upstreams,
            server,
            listeners,
            listener_crls,
            admin_address,
            access_log,
            revocation,
            state_paths,
            tasks,
        })
    }

    /// Fetch every provider's remote keys once, as the running gateway has them before it
    /// reports ready: what `explain` and `stdio` do before deciding. The providers whose
    /// keys could not be fetched are returned, by name.
    pub async fn fetch_keys(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for p in self.engine.providers() {
            if let KeySource::Remote(r) = &p.keys {
                r.refresh().await;
                if !r.ready() {
                    missing.push(p.name.clone());
                }
            }
        }
        missing
    }

    /// The name of an upstream, by index.
    pub fn upstream_name(&self, index: usize) -> Option<&str> {
        self.upstreams.get(index).map(|u| u.name.as_str())
    }
}

fn start_signing(s: SigningSettings) -> Result<Signing, String> {
    let nonces = match s.nonces {
        NonceSettings::Memory { max_entries } => NonceStore::Memory(NonceCache::new(max_entries)),
        NonceSettings::Redis {
            url,
            timeout,
            key_prefix,
        } => NonceStore::Redis {
            conn: Box::new(LazyConnection::new(&url, timeout)?),
            prefix: key_prefix,
        },
    };
    Ok(Signing {
        keys: s.keys,
        rules: s.rules,
        nonces,
    })
}

/// A revoked entry leaves every cache at once (verified tokens and introspection answers),
/// whichever gateway of the fleet revoked it.
fn evict_on_revoke(list: &Revocations, providers: &[Provider]) {
    fn matches(e: &Entry, key: &[u8; 32], id: &Identity) -> bool {
        match e {
            Entry::Jti { jti, .. } => id.jti.as_deref() == Some(jti.as_str()),
            Entry::Subject { subject, before } => {
                id.subject == *subject && id.issued_at.is_none_or(|iat| iat <= *before)
            }
            Entry::Token { sha256, .. } => key == sha256,
        }
    }
    for p in providers {
        let cache = p.cache.clone();
        let introspection = p.introspection.clone();
        list.on_revoke(Box::new(move |e| {
            let entry = e.clone();
            cache.evict_if(move |k, id| matches(&entry, k, id));
            if let Some(i) = &introspection {
                let entry = e.clone();
                i.evict_if(move |k, id| matches(&entry, k, id));
            }
        }));
    }
}
