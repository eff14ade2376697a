//! The floor: a bare Pingora 0.9 reverse proxy with no hooks but `upstream_peer` (one
//! backend, the same timeouts as Portcullis's defaults). The load test measures it beside
//! Portcullis so the cost of Pingora itself and the cost of Portcullis's hooks are told apart.
//!
//!   cargo run --release --example bare_pingora -- 127.0.0.1:18091 127.0.0.1:18080 [threads]

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::time::Duration;

// The same allocator as Portcullis, so only the hooks differ.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    origin: std::net::SocketAddr,
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(origin)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare_pingora LISTEN ORIGIN [THREADS]");
        std::process::exit(2);
    };
    let Ok(origin) = origin.parse() else {
        eprintln!("ORIGIN must be IP:port");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { origin });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
