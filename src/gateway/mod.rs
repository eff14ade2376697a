//! The only place that touches Pingora: the proxy, the admin listener and how they are put
//! together into one server.

pub mod admin;
pub mod mtls;
pub mod proxy;
pub mod response;
pub mod revocations;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::metrics::metrics;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// Keeps a shared revocation list in step with Redis (pub/sub, reload on reconnect).
struct RevocationSync {
    list: std::sync::Arc<crate::auth::revocation::Revocations>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RevocationSync {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.list.sync_loop(Duration::from_secs(30), shutdown).await;
    }
}

/// Pingora's own command-line switches, kept as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    pub daemon: bool,
    pub upgrade: bool,
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Build the server for a configuration; `run_forever` it to serve.
pub fn build_server(config: &Config, flags: RunFlags) -> Result<Server, String> {
    let s = &config.server;
    let state_file = config
        .revocation
        .as_ref()
        .and_then(|r| r.state_file.as_ref())
        .and_then(|f| f.to_str());
    for path in [&s.pid_file, &s.upgrade_sock]
        .into_iter()
        .map(String::as_str)
        .chain(state_file)
    {
        if let Some(dir) = std::path::Path::new(path).parent() {
            create_private_dir(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
    }
    let conf = ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        grace_period_seconds: Some(whole_seconds(s.grace_period)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds(s.graceful_shutdown_timeout)),
        daemon: flags.daemon,
        max_retries: crate::config::MAX_RETRIES + 1,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let (pools, health_services) =
        crate::upstream::build_pools(&config.upstreams).map_err(|e| e.to_string())?;
    for svc in health_services {
        server.add_boxed_service(svc);
    }

    let mut remote_keys = Vec::new();
    for p in &config.providers {
        if let crate::auth::provider::KeySource::Remote(r) = &p.keys {
            remote_keys.push(r.clone());
            server.add_service(pingora::services::background::background_service(
                &format!("jwks {}", p.name),
                crate::auth::jwks::JwksRefresher { keys: r.clone() },
            ));
        }
    }

    // Each mTLS listener's revocation lists, shared by its verify callback and the reloader.
    let mut crls: Vec<Option<Arc<crate::auth::crl::CrlFile>>> = Vec::new();
    for l in &config.listeners {
        let client = l.tls.as_ref().and_then(|t| t.client.as_ref());
        crls.push(
            match client.and_then(|c| c.crl_file.as_ref().map(|f| (c, f))) {
                None => None,
                Some((c, f)) => Some(Arc::new(
                    crate::auth::crl::CrlFile::load(f.into(), c.ca_file.clone())
                        .map_err(|e| format!("listener {}: {e}", l.address))?,
                )),
            },
        );
    }
    let mut files: Vec<Arc<dyn crate::reload::Reloadable>> = Vec::new();
    if let Some(keys) = &config.api_keys {
        metrics().api_keys.set(keys.current().len() as i64);
        files.push(keys.clone());
    }
    for c in crls.iter().flatten() {
        files.push(c.clone());
    }
    if let Some(s) = &config.signing {
        metrics().signing_keys.set(s.keys.current().len() as i64);
        files.push(s.keys.clone());
    }
    if !files.is_empty() {
        server.add_service(pingora::services::background::background_service(
            "file reloader",
            crate::reload::Reloader {
                files,
                interval: config.consumers_reload_interval,
            },
        ));
    }

    if let Some(r) = config.revocation.as_ref().filter(|r| r.shared) {
        server.add_service(pingora::services::background::background_service(
            "revocation sync",
            RevocationSync {
                list: r.list.clone(),
            },
        ));
    }

    let access_log = match &config.access_log {
        Some(path) => Some(
            AccessLog::start(path).map_err(|e| format!("cannot open access log {path}: {e}"))?,
        ),
        None => None,
    };
    let gateway = proxy::Gateway {
        engine: crate::policy::engine::Engine::from_config(config),
        namespace: config.identity_namespace.clone(),
        pools: pools.clone(),
        access_log,
    };
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "portcullis");
    for (l, crl) in config.listeners.iter().zip(crls) {
        let addr = l.address.to_string();
        match &l.tls {
            None => proxy.add_tcp(&addr),
            Some(t) => {
                let tls =
                    mtls::listener_settings(t, crl).map_err(|e| format!("listener {addr}: {e}"))?;
                proxy.add_tls_with_settings(&addr, None, tls);
            }
        }
    }
    server.add_service(proxy);

    let mut admin = Service::new(
        "portcullis admin".to_string(),
        pingora::apps::http_app::HttpServer::new_app(admin::AdminApp {
            assertion_jwks: admin::assertion_jwks(&pools),
            pools,
            remote_keys,
            api_keys: config.api_keys.clone(),
            limiter: config.rate_limits.limiter.clone(),
            revocation: config.revocation.clone(),
        }),
    );
    admin.add_tcp(&config.admin_address.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    let m = metrics();
    for p in &config.providers {
        m.jwt_keys
            .with_label_values(&[p.name.as_str()])
            .set(p.keys.len() as i64);
    }
    m.config_reloads.with_label_values(&["success"]).inc();
    m.config_last_reload.set(crate::unix_now() as i64);
    Ok(server)
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
