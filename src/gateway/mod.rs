//! The only place that touches Pingora: the proxy, the admin listener and how they are put
//! together into one server.

pub mod admin;
pub mod connection;
pub mod echo;
pub mod mtls;
pub mod proxy;
pub mod response;
pub mod revocations;
pub mod services;

use crate::access_log::AccessLog;
use crate::app::App;
use crate::auth::provider::KeySource;
use crate::metrics::metrics;
use crate::upstream::{self, MAX_RETRIES};
use connection::Connections;
use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;
use revocations::RevocationApi;
use std::path::Path;
use std::time::Duration;

/// Pingora's own command-line switches, kept as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    pub daemon: bool,
    pub upgrade: bool,
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Serve until told to stop; the exit status when the server could not be built.
pub fn serve(app: App, flags: RunFlags) -> std::process::ExitCode {
    match build_server(app, flags) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Build the server for a composed gateway; `run_forever` it to serve.
pub fn build_server(app: App, flags: RunFlags) -> Result<Server, String> {
    let App {
        engine,
        forward,
        upstreams,
        server: s,
        listeners,
        listener_crls,
        admin_address,
        access_log,
        revocation,
        state_paths,
        tasks,
    } = app;
    for path in &state_paths {
        if let Some(dir) = path.parent() {
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
        max_retries: MAX_RETRIES + 1,
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

    let (pools, health_services) = upstream::build_pools(&upstreams).map_err(|e| e.to_string())?;
    for svc in health_services {
        server.add_boxed_service(svc);
    }
    for task in tasks {
        server.add_boxed_service(services::service(task));
    }

    let m = metrics();
    let remote_keys = engine
        .providers()
        .iter()
        .filter_map(|p| match &p.keys {
            KeySource::Remote(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    for p in engine.providers() {
        m.jwt_keys
            .with_label_values(&[p.name.as_str()])
            .set(p.keys.len() as i64);
    }
    if let Some(keys) = engine.api_keys() {
        m.api_keys.set(keys.current().len() as i64);
    }
    if let Some(signing) = engine.signing() {
        m.signing_keys.set(signing.keys.current().len() as i64);
    }
    let admin_app = admin::AdminApp {
        assertion_jwks: admin::assertion_jwks(&pools),
        pools: pools.clone(),
        remote_keys,
        api_keys: engine.api_keys().cloned(),
        limiter: engine.limits().limiter.clone(),
        revocation: revocation.map(|(list, settings)| RevocationApi {
            list,
            shared: settings.shared(),
            token: settings.admin.token,
            default_ttl: settings.admin.default_ttl,
        }),
    };

    let access_log = match &access_log {
        Some(path) => Some(
            AccessLog::start(path).map_err(|e| format!("cannot open access log {path}: {e}"))?,
        ),
        None => None,
    };
    let gateway = proxy::Gateway {
        engine,
        forward,
        pools,
        access_log,
        body_pace: proxy::BodyPace::of(&s.connections),
    };
    let mut http = pingora::proxy::http_proxy(&server.configuration, gateway);
    // Pingora closes an HTTP/2 connection idle this long, and a connection after this many
    // requests; the HTTP/1.1 idle wait is the connection guard's (`connection.rs`).
    let mut options = HttpServerOptions::default();
    // Pingora counts reuses: a connection carries its first request and this many more.
    options.keepalive_request_limit = Some(s.max_requests_per_connection.saturating_sub(1));
    options.h2_idle_timeout = Some(s.keepalive_timeout);
    // Only connections `connection` found to be h2c reach Pingora's check for the preface
    // (TLS ones are told by ALPN, HTTP/1.1 ones are served without it).
    options.h2c = true;
    http.server_options = Some(options);
    // An HTTP/2 header list is held to the same size as an HTTP/1.1 head.
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(u32::try_from(s.connections.max_request_head_size).unwrap_or(u32::MAX));
    http.h2_options = Some(h2);
    let mut accepted = Vec::new();
    for (l, crl) in listeners.into_iter().zip(listener_crls) {
        let tls = match &l.tls {
            None => None,
            Some(t) => Some(
                mtls::listener_acceptor(t, crl)
                    .map_err(|e| format!("listener {}: {e}", l.address))?,
            ),
        };
        accepted.push((l, tls));
    }
    // TLS is not Pingora's to do here: `connection` runs the handshake under its deadline.
    // Pingora gives each connection a read buffer below HTTP and TLS, of the listener's size.
    let endpoints: Vec<ListenerConfig> = accepted
        .iter()
        .map(|(l, _)| {
            ListenerConfig::tcp(l.address.to_string())
                .l4_buffer(L4BufferSettings::default().read(l.read_buffer_size))
        })
        .collect();
    let mut proxy = Service::new(
        "portcullis".to_string(),
        Connections::new(
            http,
            accepted,
            s.connections,
            s.keepalive_timeout,
            s.max_requests_per_connection,
        ),
    );
    for endpoint in endpoints {
        proxy.add_listener(endpoint);
    }
    server.add_service(proxy);

    let mut admin = Service::new(
        "portcullis admin".to_string(),
        pingora::apps::http_app::HttpServer::new_app(admin_app),
    );
    admin.add_tcp(&admin_address.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    m.config_reloads.with_label_values(&["success"]).inc();
    m.config_last_reload.set(crate::unix_now() as i64);
    Ok(server)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
