//! The floor: a bare Pingora 0.9 reverse proxy with no hooks but `upstream_peer` (one
//! backend, the same timeouts as Portcullis's defaults). The load test measures it beside
//! Portcullis so the cost of Pingora itself and the cost of Portcullis's hooks are told apart.
//!
//!   cargo run --release --example bare_pingora -- 127.0.0.1:18091 127.0.0.1:18080 [threads]
//!   cargo run --release --example bare_pingora -- - 127.0.0.1:18080 1 --tls 127.0.0.1:18448 cert.pem key.pem
//!
//! `--tls ADDR CERT KEY` adds a TLS listener made by Pingora itself (`TlsSettings::intermediate`,
//! OpenSSL's Mozilla "intermediate" profile, HTTP/2 offered by ALPN as Portcullis offers it);
//! LISTEN `-` leaves the plain listener out.
//!
//! The floor is taken at the transport settings Portcullis runs with by default, so the two
//! rows differ by the hooks only: at one thread Pingora's single-thread runtime
//! (`work_stealing` off, as Portcullis's default there), and no read buffer below HTTP on the
//! plain listener (Portcullis's `read_buffer_size` default). The TLS listener keeps Pingora's
//! default 64 KiB read buffer (Portcullis's TLS default is 4 KiB): Pingora's TLS listener
//! API takes no buffer setting.

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;
use std::process::exit;
use std::time::Duration;

// The same allocator as Portcullis, so only the hooks differ.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: bare_pingora LISTEN|- ORIGIN [THREADS] [--tls ADDR CERT KEY]";

struct Bare {
    origin: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.origin, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(Duration::from_secs(30));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

/// A TLS listener's address and the PEM files of its certificate chain and key.
struct TlsListener {
    address: String,
    certificate: String,
    key: String,
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\n{USAGE}");
    exit(2);
}

fn main() {
    // `--tls ADDR CERT KEY` may stand anywhere; the rest are the positional arguments.
    let mut positional = Vec::new();
    let mut tls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            let (Some(address), Some(certificate), Some(key)) =
                (args.next(), args.next(), args.next())
            else {
                usage("--tls takes ADDR CERT KEY");
            };
            tls = Some(TlsListener {
                address,
                certificate,
                key,
            });
        } else {
            positional.push(arg);
        }
    }
    let (Some(listen), Some(origin)) = (positional.first(), positional.get(1)) else {
        usage("LISTEN and ORIGIN are required");
    };
    let Ok(origin) = origin.parse() else {
        usage("ORIGIN must be IP:port");
    };
    let threads = positional.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    if listen == "-" && tls.is_none() {
        usage("LISTEN `-` (no plain listener) needs --tls");
    }
    let conf = ServerConf {
        threads,
        work_stealing: threads > 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { origin });
    if listen != "-" {
        proxy.add_listener(
            ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::default().read(0)),
        );
    }
    if let Some(t) = tls {
        let mut settings = match TlsSettings::intermediate(&t.certificate, &t.key) {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("TLS listener {}: {e}", t.address);
                exit(1);
            }
        };
        settings.enable_h2();
        proxy.add_tls_with_settings(&t.address, None, settings);
    }
    server.add_service(proxy);
    server.run_forever();
}
