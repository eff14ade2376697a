//! The `ProxyHttp` implementation, in Pingora's hook order. It stays thin: routing,
//! selection and header hygiene live in their own modules.

use super::response::{self, write_error, ErrorKind};
use crate::access_log::{self, AccessLog};
use crate::auth::Identity;
use crate::config::{HashKey, Timeouts};
use crate::identity;
use crate::metrics::{method_label, metrics, status_class};
use crate::policy::engine::{Engine, RequestFacts};
use crate::policy::{networks, Trace};
use crate::request_id;
use crate::routing::Route;
use crate::unix_now;
use crate::upstream::Pool;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    pub engine: Engine,
    pub namespace: identity::IdentityNamespace,
    pub pools: Vec<Arc<Pool>>,
    pub access_log: Option<AccessLog>,
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    request_id: String,
    route: Option<Arc<Route>>,
    pool: Option<Arc<Pool>>,
    /// Backends tried so far, in order; the last one is the current one.
    tried: Vec<SocketAddr>,
    /// Set when the gateway itself decides the answer.
    error: Option<ErrorKind>,
    /// The verified caller, on protected routes.
    identity: Option<std::sync::Arc<Identity>>,
    /// The canonical path and query to forward, when it differs from what was sent.
    rewritten: Option<String>,
    /// A report-mode policy would have refused with this code; the request was forwarded.
    reported: Option<&'static str>,
    /// The client, as decided from the peer and trusted proxies.
    client_ip: Option<IpAddr>,
    /// `RateLimit-Policy` and `RateLimit` for the response, when a limit applied.
    rate_headers: Option<(String, String)>,
    /// The connection's verified client certificate (mTLS listeners).
    client_cert: Option<Arc<crate::auth::mtls::ClientCert>>,
    /// The server name the client asked for (mTLS listeners).
    sni: Option<Arc<str>>,
    /// The body was read whole before forwarding (a signed request).
    body_read: bool,
    /// The request came over TLS.
    https: bool,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: String::new(),
            route: None,
            pool: None,
            tried: Vec::new(),
            error: None,
            identity: None,
            rewritten: None,
            reported: None,
            client_ip: None,
            rate_headers: None,
            client_cert: None,
            sni: None,
            body_read: false,
            https: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = request_id::from_headers(&session.req_header().headers);
        // Read once per request from what the handshake left on the connection.
        let tls = session.digest().and_then(|d| d.ssl_digest.as_ref());
        ctx.https = tls.is_some();
        let conn = tls.and_then(|s| s.extension.get::<super::mtls::ConnFacts>());
        if let Some(conn) = conn {
            if conn.rejected {
                return self
                    .answer(session, ctx, response::CLIENT_CERT_REVOKED, &[])
                    .await;
            }
            ctx.client_cert = conn.cert.clone();
            ctx.sni = conn.sni.clone();
        }
        match self.decide(session, ctx, None).await? {
            Decided::Answered(done) => Ok(done),
            Decided::NeedsBody => {
                // A signed request: the body is read whole (and kept for the upstream)
                // before anything is decided, so it is never partly forwarded (M15).
                let body = match read_signed_body(session).await? {
                    Ok(body) => body,
                    Err(kind) => return self.answer(session, ctx, kind, &[]).await,
                };
                ctx.body_read = true;
                match self.decide(session, ctx, Some(&body)).await? {
                    Decided::Answered(done) => Ok(done),
                    Decided::NeedsBody => {
                        self.answer(session, ctx, response::INTERNAL_ERROR, &[])
                            .await
                    }
                }
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(pool) = ctx.pool.clone() else {
            ctx.error = Some(response::INTERNAL_ERROR);
            return Error::e_explain(HTTPStatus(500), "no pool for the route");
        };
        let client_ip;
        let key: &[u8] = match &pool.hash_key {
            HashKey::None => b"",
            HashKey::Header(name) => session
                .req_header()
                .headers
                .get(name)
                .map_or(b"".as_slice(), |v| v.as_bytes()),
            HashKey::ClientAddress => {
                client_ip = client_ip_of(session).map(ip_bytes).unwrap_or_default();
                &client_ip
            }
        };
        let Some(addr) = pool.select(key, &ctx.tried) else {
            let kind = if ctx.tried.is_empty() {
                response::NO_HEALTHY_UPSTREAM
            } else {
                // Every healthy backend was tried and refused the connection.
                response::UPSTREAM_UNREACHABLE
            };
            ctx.error = Some(kind);
            return Error::e_explain(HTTPStatus(kind.status), kind.code);
        };
        ctx.tried.push(addr);
        let route = ctx.route.as_deref();
        let t = Timeouts {
            connect: route
                .and_then(|r| r.connect_timeout)
                .unwrap_or(pool.timeouts.connect),
            read: route
                .and_then(|r| r.read_timeout)
                .unwrap_or(pool.timeouts.read),
            write: route
                .and_then(|r| r.write_timeout)
                .unwrap_or(pool.timeouts.write),
            idle: pool.timeouts.idle,
        };
        Ok(Box::new(pool.peer(addr, t)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(addr)) = (&ctx.pool, ctx.tried.last()) {
            metrics()
                .upstream_connect_errors
                .with_label_values(&[pool.name.as_str(), &addr.to_string()])
                .inc();
            // Nothing was sent yet, so any method may go to another backend.
            e.set_retry(ctx.tried.len() <= pool.retries);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let forwarded_for = client_ip_of(session).map(|peer| {
            networks::forwarded_for(
                peer,
                &session.req_header().headers,
                &self.engine.trusted_proxies,
            )
        });
        let req = session.req_header();
        // HTTP/2 carries the host in :authority rather than a Host header.
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let view = UpstreamView {
            namespace: &self.namespace,
            key_headers: self
                .engine
                .api_keys
                .as_deref()
                .map_or(&[], |k| k.headers.as_slice()),
            route: ctx.route.as_deref(),
            identity: ctx.identity.as_deref(),
            assertion: ctx.pool.as_deref().and_then(|p| p.assertion.as_deref()),
            rewritten: ctx.rewritten.as_deref(),
            request_id: &ctx.request_id,
            forwarded_for,
            client_ip: ctx.client_ip,
            client_cert: ctx.client_cert.as_deref(),
            cert_forward: self.engine.client_certs.forward,
            https: ctx.https,
            host,
            now: unix_now(),
        };
        prepare_upstream_request(upstream_request, view)?;
        if ctx.body_read {
            // The client already had its `100 Continue`; the body goes with the request.
            upstream_request.remove_header(&http::header::EXPECT);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(request_id::HEADER, ctx.request_id.as_str())?;
        if let Some((policy, state)) = ctx.rate_headers.take() {
            upstream_response.insert_header("ratelimit-policy", policy)?;
            upstream_response.insert_header("ratelimit", state)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let kind = ctx.error.or_else(|| classify(e));
        let Some(kind) = kind else {
            // The client went away; there is nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        ctx.error = Some(kind);
        if ctx.request_id.is_empty() {
            ctx.request_id = request_id::generate();
        }
        if session.response_written().is_none() {
            // The connection is not reused after a failed proxy attempt (part of the request
            // body may be consumed); say so, so clients do not send on it again.
            session.set_keepalive(None);
            if let Err(err) = write_error(session, &kind, &ctx.request_id, &[]).await {
                tracing::debug!(error = %err, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: kind.status,
            can_reuse_downstream: false,
        }
    }

    /// A client that goes away mid-request is not the gateway's error: it is counted in the
    /// metrics and the access log (status 0), but not written to the error log, so that
    /// log stays for real faults.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        *e.esource() == pingora::ErrorSource::Downstream
            && matches!(
                e.etype(),
                ConnectionClosed | ReadError | WriteError | ReadTimedout | WriteTimedout
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route.as_deref().map_or("none", |r| r.name.as_str());
        let req = session.req_header();
        let elapsed = ctx.start.elapsed();
        let m = metrics();
        m.requests
            .with_label_values(&[route, method_label(&req.method), status_class(status)])
            .inc();
        m.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());

        let Some(log) = &self.access_log else {
            return;
        };
        let client = client_ip_of(session)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let backend = ctx.tried.last().map(|a| a.to_string()).unwrap_or_default();
        let error = ctx
            .error
            .map(|k| k.code)
            .or_else(|| e.map(|e| e.etype().as_str()));
        let req = session.req_header();
        let time = access_log::now_rfc3339();
        log.log(&access_log::Entry {
            time: &time,
            request_id: &ctx.request_id,
            client: &client,
            method: req.method.as_str(),
            path: req.uri.path(),
            host: req
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
            route,
            status,
            upstream: ctx.pool.as_deref().map_or("", |p| p.name.as_str()),
            backend: &backend,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            bytes_sent: session.body_bytes_sent(),
            bytes_received: session.body_bytes_read(),
            error,
            consumer: ctx.identity.as_deref().and_then(|i| i.client_id.as_deref()),
            key_id: ctx.identity.as_deref().and_then(|i| i.key_id.as_deref()),
            subject: ctx
                .identity
                .as_deref()
                .map(|i| i.subject.as_str())
                .filter(|s| !s.is_empty()),
            policy_report: ctx.reported,
        });
    }
}

/// The path and query to forward when they differ from what the client sent: the canonical
/// path, and the query without an API-key parameter (a key never reaches a backend).
pub fn forwarded_target(
    path: &str,
    canonical: Option<&str>,
    query: Option<&str>,
    key_param: Option<&str>,
) -> Option<String> {
    let stripped = match (query, key_param) {
        (Some(q), Some(p)) => crate::auth::api_key::query_without(q, p),
        _ => None,
    };
    let canonical = canonical.unwrap_or(path);
    if canonical == path && stripped.is_none() {
        return None;
    }
    Some(match stripped.as_deref().or(query) {
        Some(q) if !q.is_empty() => format!("{canonical}?{q}"),
        _ => canonical.to_string(),
    })
}

/// What decides the request sent upstream, besides the client's request itself.
pub struct UpstreamView<'a> {
    pub namespace: &'a identity::IdentityNamespace,
    /// API-key headers, removed like `Authorization`.
    pub key_headers: &'a [http::HeaderName],
    pub route: Option<&'a Route>,
    pub identity: Option<&'a Identity>,
    pub assertion: Option<&'a crate::config::Assertion>,
    /// The canonical path and query, when it differs from what the client sent.
    pub rewritten: Option<&'a str>,
    pub request_id: &'a str,
    pub forwarded_for: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// The verified client certificate, told to the backend in `X-Client-Cert-*` (or XFCC).
    pub client_cert: Option<&'a crate::auth::mtls::ClientCert>,
    pub cert_forward: crate::auth::mtls::Forward,
    pub https: bool,
    pub host: Option<&'a str>,
    pub now: u64,
}

/// Turn the client's request into the upstream request: hop-by-hop and identity-namespace
/// headers out, the verified identity (and its signed assertion) in, `Authorization` removed
/// on protected routes unless kept, the canonical path, and the forwarding headers. The proxy
/// and `portcullis explain` both use it, so explain shows exactly what would be sent.
pub fn prepare_upstream_request(req: &mut RequestHeader, v: UpstreamView<'_>) -> Result<()> {
    identity::strip_hop_by_hop(req);
    v.namespace.strip(req);
    // Only a certificate the listener verified; client-sent copies went with the namespace.
    match (v.client_cert, v.cert_forward) {
        (None, _) => {}
        (Some(cert), crate::auth::mtls::Forward::Headers) => {
            for (name, value) in cert.headers() {
                req.insert_header(name, value)?;
            }
        }
        (Some(cert), crate::auth::mtls::Forward::Xfcc) => {
            req.insert_header("x-forwarded-client-cert", cert.xfcc())?;
        }
    }
    if let Some(id) = v.identity {
        identity::inject_identity(req, id)?;
        if let Some(a) = v.assertion {
            let path = v.rewritten.unwrap_or_else(|| req.uri.path());
            let token = a
                .signer
                .sign(id, req.method.as_str(), path, v.request_id, v.now)
                .map_err(|e| Error::explain(InternalError, e))?;
            req.insert_header(a.header.clone(), token)?;
        }
    }
    // The backend gets the verified identity, not the token (unless the route asks).
    if v.route
        .is_some_and(|r| !r.auth.is_public() && !r.auth.keep_authorization)
    {
        req.remove_header(&http::header::AUTHORIZATION);
        for h in v.key_headers {
            req.remove_header(h);
        }
    }
    if let Some(target) = v.rewritten {
        // Forward exactly the path that was routed and decided on.
        let uri = http::Uri::builder()
            .path_and_query(target)
            .build()
            .map_err(|e| Error::because(InternalError, "canonical path", e))?;
        req.set_uri(uri);
    }
    identity::set_forwarded(req, v.forwarded_for, v.client_ip, v.https, v.host)?;
    req.insert_header(request_id::HEADER, v.request_id)?;
    Ok(())
}

impl Gateway {
    /// Answer a refusal of the engine: status, code, message and its headers.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        d: crate::policy::Denial,
    ) -> Result<bool> {
        let mut extra: Vec<(&'static str, String)> = Vec::new();
        if let Some(c) = d.challenge {
            extra.push(("www-authenticate", c));
        }
        if let Some(r) = d.retry_after {
            extra.push(("retry-after", r.to_string()));
        }
        if let Some(a) = d.allow {
            extra.push(("allow", a));
        }
        if let Some((policy, state)) = d.rate_headers {
            extra.push(("ratelimit-policy", policy));
            extra.push(("ratelimit", state));
        }
        let kind = ErrorKind {
            status: d.status,
            code: d.code,
            message: "",
        };
        ctx.error = Some(kind);
        response::write_error_message(session, &kind, &d.message, &ctx.request_id, &extra).await?;
        Ok(true)
    }

    /// Answer with an error of the gateway's own, ending the request.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        kind: ErrorKind,
        extra: &[(&'static str, String)],
    ) -> Result<bool> {
        ctx.error = Some(kind);
        write_error(session, &kind, &ctx.request_id, extra).await?;
        Ok(true)
    }
}

impl Gateway {
    /// Read the request into facts, decide, and apply the outcome to `ctx`; with `body` once a
    /// signed request's body has been read.
    async fn decide(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        body: Option<&[u8]>,
    ) -> Result<Decided> {
        let req = session.req_header();

        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (_, Some(_)) => return self.answered(session, ctx, response::AMBIGUOUS_HOST).await,
            (Some(h), None) => match h.to_str() {
                // An absolute-form target naming another host than Host (H19, P11).
                Ok(h)
                    if req
                        .uri
                        .authority()
                        .is_some_and(|a| !a.as_str().eq_ignore_ascii_case(h)) =>
                {
                    return self.answered(session, ctx, response::AMBIGUOUS_HOST).await
                }
                Ok(h) => Some(h),
                Err(_) => return self.answered(session, ctx, response::BAD_REQUEST).await,
            },
            (None, None) => req.uri.authority().map(|a| a.as_str()),
        };

        // X9: a connection made for one name (and maybe certified for it) is not used for
        // another: on mTLS listeners the Host must name the server the client asked for.
        if let (Some(sni), Some(h)) = (ctx.sni.as_deref(), host) {
            if !crate::routing::strip_port(h).eq_ignore_ascii_case(sni) {
                return self.answered(session, ctx, response::MISDIRECTED).await;
            }
        }

        if identity::connection_nominates_protected(&req.headers) {
            return self
                .answered(session, ctx, response::INVALID_CONNECTION_HEADER)
                .await;
        }

        // The target exactly as sent: the URI parser would silently drop a `#...` part or
        // take `api/admin` for something else, so the raw bytes are what get canonicalised.
        let raw = req.raw_path();
        let (raw_path, raw_query) = match raw.iter().position(|b| *b == b'?') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let Ok(path) = std::str::from_utf8(raw_path) else {
            return self.answered(session, ctx, response::BAD_REQUEST).await;
        };
        let query = raw_query.and_then(|q| std::str::from_utf8(q).ok());
        let facts = RequestFacts {
            client_cert: ctx.client_cert.as_deref(),
            method: &req.method,
            host,
            path,
            query,
            headers: &req.headers,
            peer: client_ip_of(session),
            now: unix_now(),
            extra_permission: None,
            https: ctx.https,
            body,
        };
        let outcome = self.engine.decide(&facts, &mut Trace::default()).await;
        if outcome.needs_body {
            return Ok(Decided::NeedsBody);
        }
        let raw_query = raw_query.map(String::from_utf8_lossy);
        ctx.rewritten = forwarded_target(
            path,
            outcome.path.as_deref(),
            raw_query.as_deref(),
            self.engine
                .api_keys
                .as_deref()
                .and_then(|k| k.query_param.as_deref()),
        );
        ctx.reported = outcome.reported.as_ref().map(|d| d.code);
        ctx.client_ip = outcome.client_ip;
        ctx.rate_headers = outcome.rate_headers;
        ctx.identity = outcome.identity;
        if let Some(route) = &outcome.route {
            ctx.pool = self.pools.get(route.upstream).cloned();
        }
        ctx.route = outcome.route;
        match outcome.denial {
            None => Ok(Decided::Answered(false)),
            Some(d) => self.refuse(session, ctx, d).await.map(Decided::Answered),
        }
    }

    async fn answered(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        kind: ErrorKind,
    ) -> Result<Decided> {
        self.answer(session, ctx, kind, &[])
            .await
            .map(Decided::Answered)
    }
}

/// What `Gateway::decide` did.
enum Decided {
    /// `true`: the answer was written; `false`: forward.
    Answered(bool),
    /// The route verifies a signature over the body: read it and decide again.
    NeedsBody,
}

/// The whole body of a signed request, at most `MAX_SIGNED_BODY` bytes (Pingora keeps that
/// much to send upstream after it was read here), within `SIGNED_BODY_TIMEOUT`.
async fn read_signed_body(
    session: &mut Session,
) -> Result<std::result::Result<bytes::Bytes, ErrorKind>> {
    use crate::auth::http_sig::MAX_SIGNED_BODY;
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_SIGNED_BODY as u64) {
        return Ok(Err(response::SIGNED_BODY_TOO_LARGE));
    }
    session.enable_retry_buffering();
    // A client waiting for `100 Continue` before it sends the body gets it now: the body is
    // wanted before the backend is contacted.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && !session.is_http2() {
        session
            .write_response_header(Box::new(ResponseHeader::build(100, Some(0))?), false)
            .await?;
    }
    let read = async {
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > MAX_SIGNED_BODY {
                return Ok(Err(response::SIGNED_BODY_TOO_LARGE));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Ok(body.freeze()))
    };
    match tokio::time::timeout(SIGNED_BODY_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Ok(Err(response::BODY_TIMEOUT)),
    }
}

/// How long a signed request's body may take to arrive.
const SIGNED_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The error answer for a Pingora error, or `None` when the client is gone.
fn classify(e: &Error) -> Option<ErrorKind> {
    use pingora::ErrorSource;
    let kind = match e.etype() {
        HTTPStatus(400) => response::BAD_REQUEST,
        HTTPStatus(s) if *s >= 500 => response::INTERNAL_ERROR,
        HTTPStatus(_) => response::BAD_REQUEST,
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
        | TLSHandshakeTimedout | InvalidCert | HandshakeError | TLSWantX509Lookup | BindError
        | SocketError | ConnectProxyFailure => response::UPSTREAM_UNREACHABLE,
        ReadTimedout | WriteTimedout if *e.esource() == ErrorSource::Upstream => {
            response::UPSTREAM_TIMEOUT
        }
        _ => match e.esource() {
            ErrorSource::Upstream => response::BAD_GATEWAY,
            ErrorSource::Downstream => match e.etype() {
                ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout => {
                    return None
                }
                _ => response::BAD_REQUEST,
            },
            ErrorSource::Internal | ErrorSource::Unset => response::INTERNAL_ERROR,
        },
    };
    Some(kind)
}

fn client_ip_of(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
