//! `portcullis echo`: a small origin that answers every request with a JSON description of
//! what reached it (method, path, query, headers in order, body length and SHA-256). Point a
//! route at it to see exactly which headers a backend receives. A development origin, not
//! part of the gateway's request path; it lives here because this folder is where Pingora's
//! servers are implemented.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The JSON document the echo origin answers with.
#[derive(Serialize, serde::Deserialize, Debug)]
pub struct Echo {
    /// The address the echo server listens on (tells backends of a pool apart).
    pub server: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header, in the order received, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body_length: usize,
    pub body_sha256: String,
}

impl Echo {
    /// The first value of a header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct EchoApp {
    listen: String,
    /// `--log FILE`: one JSON line per request received, as the backend saw it.
    log: Option<std::sync::Mutex<std::fs::File>>,
}

#[async_trait]
impl ServeHttp for EchoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut hasher = Sha256::new();
        let mut body_length = 0;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body_length += chunk.len();
                    hasher.update(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    let mut resp = Response::new(format!("cannot read body: {e}\n").into_bytes());
                    *resp.status_mut() = StatusCode::BAD_REQUEST;
                    return resp;
                }
            }
        }
        let req = session.req_header();
        let echo = Echo {
            server: self.listen.clone(),
            method: req.method.to_string(),
            path: req.uri.path().to_string(),
            query: req.uri.query().map(str::to_string),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body_length,
            body_sha256: hex::encode(hasher.finalize()),
        };
        if let Some(log) = &self.log {
            // The whole description, headers included: what reached the origin.
            let line = serde_json::to_string(&echo).unwrap_or_default();
            if let Ok(mut f) = log.lock() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
        }
        let body = serde_json::to_vec_pretty(&echo).unwrap_or_default();
        let mut resp = Response::new(body);
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = resp.body().len().to_string().parse() {
            resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
        }
        resp
    }
}

/// Serve the echo origin on `listen` until interrupted, logging each request to `log` if given.
pub fn run(listen: &str, threads: usize, log: Option<&std::path::Path>) -> Result<(), String> {
    let log = match log {
        Some(path) => Some(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| format!("\"{listen}\" is not an IP:port address"))?;
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = Service::new(
        "portcullis echo".to_string(),
        pingora::apps::http_app::HttpServer::new_app(EchoApp {
            listen: addr.to_string(),
            log,
        }),
    );
    svc.add_tcp(&addr.to_string());
    server.add_service(svc);
    server.run_forever()
}
