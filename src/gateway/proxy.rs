//! The `ProxyHttp` implementation, in Pingora's hook order. It stays thin: the engine
//! decides (`engine::Engine::decide`), `forward::prepare` writes the upstream request, and
//! each hook here reads the decision and applies it.

use super::response::{self, write_error, write_preflight, write_refusal, ErrorKind};
use crate::access_log::{self, AccessLog};
use crate::auth::mtls::ClientCert;
use crate::auth::Identity;
use crate::config::ConnectionLimits;
use crate::engine::{Decision, Engine, RequestFacts};
use crate::forward::{self, Forward, ForwardPolicy};
use crate::metrics::{method_label, metrics, status_class};
use crate::policy::{Denial, Trace};
use crate::request_id::{self, RequestId};
use crate::routing::{Route, Upgrades};
use crate::unix_now;
use crate::upstream::Pool;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Gateway {
    pub engine: Engine,
    pub forward: ForwardPolicy,
    pub pools: Vec<Arc<Pool>>,
    pub access_log: Option<AccessLog>,
    pub body_pace: BodyPace,
}

/// How fast a request body must arrive: no read may wait longer than `timeout` (Pingora's
/// read timeout, set per request), and once under way the body gets `timeout` plus one second
/// for every `min_rate` bytes it has delivered (Apache's `mod_reqtimeout` rule), so a body
/// trickled forever ends in `408 body_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    timeout: Duration,
    min_rate: u64,
}

impl BodyPace {
    pub fn of(limits: &ConnectionLimits) -> Self {
        Self {
            timeout: limits.request_body_timeout,
            min_rate: limits.request_body_min_rate,
        }
    }

    /// Whether a body under way for `elapsed` that has delivered `bytes` keeps the pace.
    fn kept(&self, elapsed: Duration, bytes: u64) -> bool {
        self.min_rate == 0
            || elapsed
                <= self.timeout + Duration::from_secs_f64(bytes as f64 / self.min_rate as f64)
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    request_id: RequestId,
    /// The TLS facts of the connection, read once per request.
    conn: Conn,
    /// The engine's plan, for an allowed request.
    forward: Option<Forward>,
    /// The route and caller of a refused request, for the log.
    refused: Option<Refused>,
    /// Backends tried so far, in order; the last one is the current one.
    tried: Vec<SocketAddr>,
    /// Set when the gateway itself decides the answer.
    error: Option<ErrorKind>,
    /// The body was read whole before forwarding (a signed request).
    body_read: bool,
    /// A gRPC call. Its body is a stream of messages that come when the application sends
    /// them, so it is held to `request_body_timeout` between reads, as nginx does, and not to
    /// a pace; and an answer of the gateway's own goes to it as HTTP 200 with a grpc-status,
    /// but is counted and logged with its HTTP status (401, 403, 429, ...).
    grpc: bool,
    /// When the request body's first bytes came, and how many have come since.
    body_since: Option<Instant>,
    body_bytes: u64,
    /// When the backend accepted an upgrade (101), and the route's limits for it.
    upgraded: Option<(Instant, Upgrades)>,
}

/// Whom a refusal was for: the route and caller the engine had found.
struct Refused {
    route: Option<Arc<Route>>,
    identity: Option<Arc<Identity>>,
}

/// What the TLS handshake left on the connection.
#[derive(Default)]
struct Conn {
    https: bool,
    /// The verified client certificate (mTLS listeners).
    client_cert: Option<Arc<ClientCert>>,
    /// The server name the client asked for (mTLS listeners).
    sni: Option<Arc<str>>,
    /// A resumed session whose certificate was revoked since.
    rejected: bool,
}

impl Conn {
    fn of(session: &Session) -> Self {
        let tls = session.digest().and_then(|d| d.ssl_digest.as_ref());
        let facts = tls.and_then(|s| s.extension.get::<super::mtls::ConnFacts>());
        Self {
            https: tls.is_some(),
            client_cert: facts.and_then(|f| f.cert.clone()),
            sni: facts.and_then(|f| f.sni.clone()),
            rejected: facts.is_some_and(|f| f.rejected),
        }
    }
}

impl RequestCtx {
    fn route(&self) -> Option<&Route> {
        match (&self.forward, &self.refused) {
            (Some(f), _) => Some(&f.route),
            (None, Some(r)) => r.route.as_deref(),
            (None, None) => None,
        }
    }

    fn identity(&self) -> Option<&Identity> {
        match (&self.forward, &self.refused) {
            (Some(f), _) => f.identity.as_deref(),
            (None, Some(r)) => r.identity.as_deref(),
            (None, None) => None,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: RequestId::default(),
            conn: Conn::default(),
            forward: None,
            refused: None,
            tried: Vec::new(),
            error: None,
            body_read: false,
            grpc: false,
            body_since: None,
            body_bytes: 0,
            upgraded: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = request_id::from_headers(&session.req_header().headers);
        ctx.grpc = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| response::is_grpc_content_type(v.as_bytes()));
        // A kept-alive connection's wait for its next request is the connection guard's
        // (`keepalive_timeout`, `connection.rs`); Pingora would otherwise time it itself, from
        // a client's `Keep-Alive: timeout=` even, and pay a timer per request for it.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(0));
        }
        // No read of the body waits longer than this (Pingora's default is 60 s).
        session.set_read_timeout(Some(self.body_pace.timeout));
        ctx.conn = Conn::of(session);
        if ctx.conn.rejected {
            return self
                .refuse(session, ctx, Denial::client_cert_revoked())
                .await;
        }
        let mut body = None;
        loop {
            let decision = {
                let req = session.req_header();
                let mut facts = RequestFacts::new(
                    &req.method,
                    req.raw_path(),
                    &req.headers,
                    peer_ip(session),
                    unix_now(),
                );
                facts.authority = req.uri.authority().map(|a| a.as_str());
                facts.client_cert = ctx.conn.client_cert.as_ref();
                facts.sni = ctx.conn.sni.as_deref();
                facts.https = ctx.conn.https;
                facts.body = body.as_deref();
                match self.engine.decide(&facts, &mut Trace::default()).await {
                    Decision::Forward(f) => Ok(f),
                    Decision::Preflight(p) => Err(Some(Answer::Preflight(p))),
                    Decision::Refuse(r) => Err(Some(Answer::Refusal(
                        r.denial,
                        Refused {
                            route: r.route,
                            identity: r.identity,
                        },
                    ))),
                    Decision::NeedsBody => Err(None),
                }
            };
            match decision {
                Ok(f) => {
                    // An upgraded connection waits for frames, not for a body at a pace.
                    if let (Some(_), Some(limits)) = (&f.upgrade, f.route.upgrades) {
                        session.set_read_timeout(Some(limits.idle_timeout));
                    }
                    ctx.forward = Some(f);
                    return Ok(false);
                }
                Err(Some(Answer::Refusal(denial, refused))) => {
                    ctx.refused = Some(refused);
                    return self.refuse(session, ctx, denial).await;
                }
                Err(Some(Answer::Preflight(p))) => {
                    ctx.refused = Some(Refused {
                        route: Some(p.route),
                        identity: None,
                    });
                    write_preflight(session, &p.headers, ctx.request_id.as_str()).await?;
                    return Ok(true);
                }
                // A signed request: the body is read whole (and kept for the upstream)
                // before anything is decided, so it is never partly forwarded (M15).
                Err(None) if body.is_none() => {
                    match read_signed_body(session, ctx, self.body_pace).await? {
                        Ok(b) => {
                            ctx.body_read = true;
                            body = Some(b);
                        }
                        Err(d) => return self.refuse(session, ctx, d).await,
                    }
                }
                Err(None) => return self.refuse(session, ctx, Denial::internal()).await,
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some((since, limits)) = ctx.upgraded {
            return past_lifetime(ctx, since, limits);
        }
        if !ctx.body_read
            && !ctx.grpc
            && !body_on_pace(ctx, self.body_pace, body.as_ref().map_or(0, |b| b.len()))
            && !end_of_stream
        {
            ctx.error = Some(response::BODY_TIMEOUT);
            return Error::e_explain(HTTPStatus(408), "the request body is too slow");
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.forward.as_ref().map(|f| f.route.clone()) else {
            ctx.error = Some(response::INTERNAL_ERROR);
            return Error::e_explain(HTTPStatus(500), "no decision to forward");
        };
        let Some(pool) = self.pools.get(route.upstream) else {
            ctx.error = Some(response::INTERNAL_ERROR);
            return Error::e_explain(HTTPStatus(500), "no pool for the route");
        };
        let key = pool.hash_key(session.req_header(), peer_ip(session));
        let Some(addr) = pool.select(&key, &ctx.tried) else {
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
        let mut timeouts = pool.timeouts_for(&route);
        if let (Some(_), Some(limits)) = (
            ctx.forward.as_ref().and_then(|f| f.upgrade.as_ref()),
            route.upgrades,
        ) {
            // After a 101 the backend may stay quiet for as long as the client may.
            timeouts.read = limits.idle_timeout;
        }
        Ok(Box::new(pool.peer(addr, timeouts)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(addr)) = (self.pool_of(ctx), ctx.tried.last()) {
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
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(plan) = &ctx.forward else {
            return Ok(());
        };
        forward::prepare(
            upstream_request,
            plan,
            &self.forward,
            &ctx.request_id,
            unix_now(),
        )?;
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
        upstream_response.insert_header(request_id::HEADER, ctx.request_id.header_value())?;
        if upstream_response.status == 101 {
            let upgrade = ctx.forward.as_ref().and_then(|f| {
                f.upgrade.as_ref()?;
                f.route.upgrades.map(|l| (f.route.name.clone(), l))
            });
            match upgrade {
                Some((route, limits)) => {
                    ctx.upgraded = Some((Instant::now(), limits));
                    metrics()
                        .upgraded_connections
                        .with_label_values(&[&route])
                        .inc();
                }
                // A 101 for a request that asked for no upgrade here cannot be relayed.
                None => {
                    ctx.error = Some(response::BAD_GATEWAY);
                    return Error::e_explain(HTTPStatus(502), "a 101 the gateway did not ask for");
                }
            }
        }
        if let Some(f) = ctx.forward.as_mut() {
            if let Some(rate) = f.rate_headers.take() {
                upstream_response.insert_header("ratelimit-policy", rate.policy)?;
                upstream_response.insert_header("ratelimit", rate.state)?;
            }
            // The backend's own CORS headers give way to the route's; its `Vary` is kept.
            for (name, value) in std::mem::take(&mut f.cors) {
                if name == "vary" {
                    upstream_response.append_header(name, value)?;
                } else {
                    upstream_response.insert_header(name, value)?;
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        // Frames from the backend count against the lifetime as the client's do.
        if let Some((since, limits)) = ctx.upgraded {
            past_lifetime(ctx, since, limits)?;
        }
        Ok(None)
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
            if let Err(err) = write_error(session, &kind, ctx.request_id.as_str()).await {
                tracing::debug!(error = %err, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: kind.status,
            can_reuse_downstream: false,
        }
    }

    /// A client that goes away mid-request, or pipelines one (S10), is not the gateway's error:
    /// it is counted in the metrics and the access log (status 0, or its 400), but not written
    /// to the error log, so that log stays for real faults.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        *e.esource() == pingora::ErrorSource::Downstream
            && matches!(
                e.etype(),
                // ConnectError: a pipelined request (S10), answered `400 pipelined_request`.
                ConnectionClosed
                    | ReadError
                    | WriteError
                    | ReadTimedout
                    | WriteTimedout
                    | ConnectError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let written = session.response_written().map_or(0, |r| r.status.as_u16());
        let status = match ctx.error {
            Some(kind) if ctx.grpc && written != 0 => kind.status,
            _ => written,
        };
        let route = ctx.route().map_or("none", |r| r.name.as_str());
        if ctx.upgraded.is_some() {
            metrics()
                .upgraded_connections
                .with_label_values(&[route])
                .dec();
        }
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
        let client = peer_ip(session)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let backend = ctx.tried.last().map(|a| a.to_string()).unwrap_or_default();
        let error = ctx
            .error
            .map(|k| k.code)
            .or_else(|| e.map(|e| e.etype().as_str()));
        let req = session.req_header();
        let time = access_log::now_rfc3339();
        let identity = ctx.identity();
        log.log(&access_log::Entry {
            time: &time,
            request_id: ctx.request_id.as_str(),
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
            upstream: self.pool_of(ctx).map_or("", |p| p.name.as_str()),
            backend: &backend,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            bytes_sent: session.body_bytes_sent(),
            bytes_received: session.body_bytes_read(),
            error,
            consumer: identity.and_then(|i| i.client_id.as_deref()),
            key_id: identity.and_then(|i| i.key_id.as_deref()),
            subject: identity
                .map(|i| i.subject.as_str())
                .filter(|s| !s.is_empty()),
            policy_report: ctx
                .forward
                .as_ref()
                .and_then(|f| f.reported.as_ref())
                .map(|d| d.code),
        });
    }
}

impl Gateway {
    /// The pool of the request's route, once there is one.
    fn pool_of(&self, ctx: &RequestCtx) -> Option<&Pool> {
        ctx.route()
            .and_then(|r| self.pools.get(r.upstream))
            .map(|p| &**p)
    }

    /// Answer with a refusal, ending the request.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, d: Denial) -> Result<bool> {
        ctx.error = Some(ErrorKind {
            status: d.status,
            code: d.code,
            message: "",
        });
        write_refusal(session, &d, ctx.request_id.as_str()).await?;
        Ok(true)
    }
}

/// An upgraded connection past its route's `max_lifetime` ends at its next frame.
fn past_lifetime(ctx: &RequestCtx, since: Instant, limits: Upgrades) -> Result<()> {
    if since.elapsed() <= limits.max_lifetime {
        return Ok(());
    }
    let route = ctx.route().map_or("none", |r| r.name.as_str());
    metrics()
        .upgraded_closed
        .with_label_values(&[route, "max_lifetime"])
        .inc();
    Error::e_explain(
        ConnectionClosed,
        "the upgraded connection reached its max_lifetime",
    )
}

/// What `request_filter` answers itself instead of forwarding.
enum Answer {
    Refusal(Denial, Refused),
    Preflight(crate::engine::Preflight),
}

/// The whole body of a signed request, at most `MAX_SIGNED_BODY` bytes (Pingora keeps that
/// much to send upstream after it was read here), at the body pace.
async fn read_signed_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pace: BodyPace,
) -> Result<std::result::Result<bytes::Bytes, Denial>> {
    use crate::auth::http_sig::MAX_SIGNED_BODY;
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_SIGNED_BODY as u64) {
        return Ok(Err(Denial::signed_body_too_large()));
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
    let mut body = bytes::BytesMut::new();
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // A read that stalls ends in Pingora's read timeout.
            Err(e) if *e.etype() == ReadTimedout => return Ok(Err(Denial::body_timeout())),
            Err(e) => return Err(e),
        };
        if body.len() + chunk.len() > MAX_SIGNED_BODY {
            return Ok(Err(Denial::signed_body_too_large()));
        }
        body.extend_from_slice(&chunk);
        if !body_on_pace(ctx, pace, chunk.len()) {
            return Ok(Err(Denial::body_timeout()));
        }
    }
    Ok(Ok(body.freeze()))
}

/// Counts `n` more body bytes; whether the body still keeps the pace.
fn body_on_pace(ctx: &mut RequestCtx, pace: BodyPace, n: usize) -> bool {
    let since = *ctx.body_since.get_or_insert_with(Instant::now);
    ctx.body_bytes += n as u64;
    pace.kept(since.elapsed(), ctx.body_bytes)
}

/// The error answer for a Pingora error, or `None` when the client is gone.
fn classify(e: &Error) -> Option<ErrorKind> {
    use pingora::ErrorSource;
    let kind = match e.etype() {
        // Pingora's only downstream connect error: bytes after the end of a request it is
        // still proxying (a pipelined request). The client's doing, not the backend's (S10).
        ConnectError if *e.esource() == ErrorSource::Downstream => response::PIPELINED_REQUEST,
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
                // The head is read (and timed) before the proxy runs: this is the body.
                ReadTimedout => response::BODY_TIMEOUT,
                ReadError | WriteError | ConnectionClosed | WriteTimedout => return None,
                _ => response::BAD_REQUEST,
            },
            ErrorSource::Internal | ErrorSource::Unset => response::INTERNAL_ERROR,
        },
    };
    Some(kind)
}

/// The TCP peer (not the client behind trusted proxies: that is the engine's `client_ip`).
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}
